/**
 * A gateway over a partitioned pool (`partitions: 3`, issue 15 item 3): KeyPool.connect gives it a
 * PartitionedPool and nothing else changes. Requests through the OpenAI SDK are served by keys of
 * every partition; /status sums the partitions and lists them; /metrics has every key's gauges; the
 * gateway token is admitted and settled exactly once per request (in partition 0).
 */
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeOpenAI, type FakeOpenAI } from '@keypool/testkit';
import { keyIdOf, partitionOf, PartitionedPool } from '@keypool/core';
import { startGateway, type TestGateway } from './helpers.js';

let g: TestGateway | undefined;
let fake: FakeOpenAI | undefined;
afterAll(async () => {
  await g?.stop();
  await fake?.stop();
});

describe('gateway over a partitioned pool', () => {
  it('serves from every partition; status, metrics and the token count over all of them', async () => {
    // secrets drawn so that each of the 3 partitions holds 2 keys (a key's id covers its destination)
    const secrets: string[] = [];
    const per = [0, 0, 0];
    fake = await startFakeOpenAI({ keys: [], models: ['gpt-4o-mini'], latency: 1 });
    for (let i = 0; secrets.length < 6; i++) {
      const s = `sk-test-partgw-aaaaaaaaaaaaaaaaaaaa-${String(i).padStart(4, '0')}`;
      const p = partitionOf(keyIdOf(s, fake.url), 3);
      if (per[p]! < 2) {
        per[p]!++;
        secrets.push(s);
      }
    }
    // keys added to the running fake: its URL (part of each id) stays
    const names = secrets.map((key) => fake!.setKey(key, { rpm: 600 }));
    g = await startGateway({
      fakeKeys: [],
      upstreamURL: fake.url,
      keys: secrets.map((secret, i) => ({ secret, name: `k${i}`, models: ['gpt-4o-mini'], rpm: 600 })),
      pool: { partitions: 3 },
    });
    expect(g.pool).toBeInstanceOf(PartitionedPool);
    const openai = new OpenAI({ apiKey: g.token, baseURL: `${g.url}/v1`, maxRetries: 0 });
    for (let i = 0; i < 30; i++) {
      const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hi ${i}` }] });
      expect(r.choices[0]!.message.content).toBeTruthy();
    }
    const st = (await (await fetch(`${g.url}/status`)).json()) as {
      keys: { id: string; name: string }[];
      partitions: { index: number; keys: number }[];
      spend: { byModel: Record<string, { requests: number }> };
      leasesInFlight: number;
    };
    expect(st.keys).toHaveLength(6);
    expect(st.partitions.map((p) => p.keys)).toEqual([2, 2, 2]);
    expect(st.spend.byModel['gpt-4o-mini']!.requests).toBe(30);
    expect(st.leasesInFlight).toBe(0);
    // every key's gauges, whatever its partition
    const text = await (await fetch(`${g.url}/metrics`)).text();
    for (const s of secrets) expect(text).toContain(`keypool_key_in_flight{key_id="${keyIdOf(s, fake.url)}"`);
    // the upstream saw requests on keys of every partition
    const counters = fake.counters();
    const used = new Set(secrets.filter((_, i) => counters[names[i]!]!.served > 0).map((s) => partitionOf(keyIdOf(s, fake!.url), 3)));
    expect(used.size).toBe(3);
    expect(secrets.reduce((n, _, i) => n + counters[names[i]!]!.served, 0)).toBe(30);
    // the gateway token: 30 requests admitted and settled, once each
    const [tok] = (await g.pool.tokens.list()).filter((t) => t.name === 'tests');
    expect(tok!.requests).toBe(30);
    expect(tok!.reservedUsd).toBe(0);
  });
});
