/**
 * The per-key gauges of /metrics are written as exposition text directly (prom-client's labelled
 * gauges took 100-300 ms of the gateway's event loop per scrape with 1,000 keys): the same names,
 * HELP and TYPE once each, label values escaped as the text format wants.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { startGateway, type TestGateway } from './helpers.js';

const A = 'sk-test-metrics-text-aaaaaaaaaaaaaaaaa1';
let g: TestGateway | undefined;
afterAll(async () => g?.stop());

describe('/metrics key gauges', () => {
  it('one HELP and TYPE per gauge; a key name with a quote, a backslash and a newline is escaped', async () => {
    g = await startGateway({ fakeKeys: [{ key: A, name: 'a' }], keys: [{ secret: A, name: 'a "b" \\ c\nd', models: ['gpt-4o-mini'], rpm: 600 }] });
    const text = await (await fetch(`${g.url}/metrics`)).text();
    const id = keyIdOf(A, g.fake.url);
    const label = 'key_name="a \\"b\\" \\\\ c\\nd"';
    for (const name of ['keypool_key_state', 'keypool_key_in_flight', 'keypool_key_remaining', 'keypool_key_rate_limit', 'keypool_key_spend_usd', 'keypool_key_latency_seconds', 'keypool_key_error_rate']) {
      expect(text.match(new RegExp(`^# TYPE ${name} gauge$`, 'gm')), name).toHaveLength(1);
      expect(text.match(new RegExp(`^# HELP ${name} `, 'gm')), name).toHaveLength(1);
    }
    expect(text).toContain(`keypool_key_in_flight{key_id="${id}",${label}} 0\n`);
    expect(text).toContain(`keypool_key_state{key_id="${id}",${label},provider="openai",state="active"} 1\n`);
    expect(text).toContain(`keypool_key_rate_limit{key_id="${id}",${label},dimension="requests",kind="configured"} 600\n`);
    // every sample line is `name{labels} value` with no raw newline inside
    for (const line of text.split('\n').filter((l) => l.startsWith('keypool_key_'))) expect(line).toMatch(/^keypool_key_\w+\{(\w+="(?:[^"\\\n]|\\.)*",?)+\} [-+\d.e]+$/);
  });
});
