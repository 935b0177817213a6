/**
 * Per class and per tenant traffic in /status, /metrics and /status/series after known traffic
 * through the gateway (real Redis, the fake upstream enforcing a small limit so that some answers
 * are 429s): what the counters say matches what was sent, and no secret shows.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from './helpers.js';

const A = 'sk-test-traffic-aaaaaaaaaaaaaaaaaaaaa1';
const B = 'sk-test-traffic-bbbbbbbbbbbbbbbbbbbbb2';
let g: TestGateway | undefined;
afterAll(async () => g?.stop());

describe('traffic in /status, /metrics and /status/series', () => {
  it('counts per class and tenant, 429s from the upstream, per key; metrics and series agree; no secret', async () => {
    g = await startGateway({
      // b's provider allows 1 request a minute: the pool (told 600) learns it from the 429s
      fakeKeys: [{ key: A, name: 'a' }, { key: B, name: 'b', rpm: 1, latency: 100 }],
      keys: [
        { secret: A, name: 'alpha', models: ['gpt-4o-mini'], rpm: 600 },
        { secret: B, name: 'bravo', models: ['gpt-4o'], rpm: 600 },
      ],
    });
    const gw = g;
    const ask = (model: string) =>
      fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gw.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
      }).then((r) => r.status);
    for (let i = 0; i < 5; i++) expect(await ask('gpt-4o-mini')).toBe(200);
    // at once, before any answer tells the pool what the provider allows
    await Promise.all([0, 1, 2, 3].map(() => ask('gpt-4o')));
    const fake = await gw.fake.counters();
    expect(fake['b']!.rate429).toBeGreaterThan(0);

    const st = (await (await fetch(`${gw.url}/status`)).json()) as {
      traffic: { last60s: { requests: number; refused: number; upstream429: number; byClass: Record<string, { admitted: number; waited: number; refused: number; waitP50Ms: number | null }>; byTenant: Record<string, { admitted: number; waited: number; refused: number }> } };
    };
    const w = st.traffic.last60s;
    // every upstream attempt had a lease: alpha's 5, bravo's (answered or 429)
    expect(w.requests).toBe(fake['a']!.requests + fake['b']!.requests);
    expect(w.upstream429).toBe(fake['b']!.rate429);
    expect(w.byClass['normal']!.admitted + w.byClass['normal']!.waited).toBe(w.requests);
    expect(w.byClass['normal']!.waitP50Ms).toBe(0);
    expect(w.byClass['low']).toMatchObject({ admitted: 0, waited: 0, refused: 0 });
    // the tenant: the gateway token's id
    const tenants = Object.keys(w.byTenant);
    expect(tenants).toHaveLength(1);
    expect(w.byTenant[tenants[0]!]).toMatchObject({ admitted: w.byClass['normal']!.admitted, waited: w.byClass['normal']!.waited, refused: w.byClass['normal']!.refused });

    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toContain(`keypool_traffic_requests{window="60s",class="normal",result="admitted"} ${w.byClass['normal']!.admitted}\n`);
    expect(metrics).toContain(`keypool_traffic_upstream_429{window="15m"} ${fake['b']!.rate429}\n`);
    expect(metrics).toContain(`keypool_traffic_tenant_requests{window="60s",tenant="${tenants[0]}",result="admitted"} ${w.byTenant[tenants[0]!]!.admitted}\n`);
    expect(metrics).toMatch(/^# TYPE keypool_traffic_wait_seconds gauge$/m);
    // this process's own counters and its wait histogram per class
    const own = [...metrics.matchAll(/^keypool_admissions_total\{class="normal",tenant="([^"]*)",result="(\w+)"\} (\d+)$/gm)];
    expect(own.length).toBeGreaterThan(0);
    const ownAdmitted = own.filter((m) => m[2] !== 'refused').reduce((n, m) => n + Number(m[3]), 0);
    expect(ownAdmitted).toBe(w.requests);
    expect(metrics).toMatch(/^keypool_admission_wait_seconds_count\{class="normal"\} \d+$/m);

    const series = await (await fetch(`${gw.url}/status/series`)).text();
    const s = JSON.parse(series) as { requests: number[]; upstream429: number[]; keys: { top: { label: string; requests: number[]; upstream429: number[] }[] } };
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(s.requests)).toBe(w.requests);
    expect(sum(s.upstream429)).toBe(fake['b']!.rate429);
    const byLabel = Object.fromEntries(s.keys.top.map((k) => [k.label, k]));
    expect(sum(byLabel['alpha']!.requests)).toBe(fake['a']!.requests);
    expect(sum(byLabel['bravo']!.requests)).toBe(fake['b']!.requests);
    expect(sum(byLabel['bravo']!.upstream429)).toBe(fake['b']!.rate429);
    // a bad since is a clear 400
    const bad = await fetch(`${gw.url}/status/series?since=yesterday`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/since must be a Unix time in whole seconds/);
    const since = await fetch(`${gw.url}/status/series?since=${Math.floor(Date.now() / 1000) - 30}`);
    expect(((await since.json()) as { points: number }).points).toBeLessThanOrEqual(40);

    for (const secret of [A, B]) {
      for (const text of [JSON.stringify(st), metrics, series]) {
        expect(text).not.toContain(secret);
        expect(text).not.toContain(secret.slice(-10));
      }
    }
  });
});
