/**
 * The ops views behind a read token (issue 13, item 6): with server.statusToken set, /status and
 * /metrics answer only the status token or the admin token; /healthz and /readyz stay open for
 * load balancers; the dashboard page (no data in it) loads and asks for the token. Unset, they
 * stay open as before.
 */
import { describe, expect, it } from 'vitest';
import { ADMIN, twoKeyGateways } from './helpers.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa7777';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb8888';
const STATUS = 'status-token-for-tests-0123456789abcdef';
const gw = twoKeyGateways(A, B);
const get = (url: string, token?: string) => fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});

describe('ops views behind a read token', () => {
  it('with server.statusToken, /status and /metrics need the status or the admin token; /healthz, /readyz and the page stay open', async () => {
    const g = await gw({ settings: { statusToken: STATUS } });
    for (const path of ['/status', '/metrics']) {
      for (const token of [undefined, 'wrong-token-wrong-token-wrong', g.token, `${STATUS}x`]) {
        const r = await get(`${g.url}${path}`, token);
        expect.soft(r.status, `${path} with ${token?.slice(0, 8)}`).toBe(401);
        const body = (await r.json()) as { error: { code: string } };
        expect.soft(body.error.code).toBe('invalid_status_token');
        // nothing of the pool in the refusal
        expect.soft(JSON.stringify(body)).not.toContain(g.pool.name);
      }
      expect.soft((await get(`${g.url}${path}`, STATUS)).status, `${path} with the status token`).toBe(200);
      expect.soft((await get(`${g.url}${path}`, ADMIN)).status, `${path} with the admin token`).toBe(200);
    }
    const st = (await (await get(`${g.url}/status`, STATUS)).json()) as { pool: string };
    expect(st.pool).toBe(g.pool.name);
    for (const path of ['/healthz', '/readyz', '/dashboard']) expect.soft((await get(`${g.url}${path}`)).status, path).toBe(200);
    // refusals are logged without the token that was tried
    expect(g.logs.text).toMatch(/status request refused/);
    expect(g.logs.text).not.toContain('wrong-token');
  });

  it('with a status token and the admin API disabled, only the status token opens the views', async () => {
    // no admin token means no second token that opens them, not any token
    const g = await gw({ settings: { statusToken: STATUS, adminToken: undefined } });
    for (const path of ['/status', '/metrics']) {
      for (const token of [undefined, 'any-bearer-any-bearer-any-bearer', ADMIN, g.token]) {
        expect.soft((await get(`${g.url}${path}`, token)).status, `${path} with ${token?.slice(0, 8)}`).toBe(401);
      }
      expect.soft((await get(`${g.url}${path}`, STATUS)).status, `${path} with the status token`).toBe(200);
    }
  });

  it('without server.statusToken the views stay open, as before', async () => {
    const g = await gw();
    expect((await get(`${g.url}/status`)).status).toBe(200);
    expect((await get(`${g.url}/metrics`)).status).toBe(200);
  });
});
