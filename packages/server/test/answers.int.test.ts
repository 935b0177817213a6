/**
 * Answers that tell a caller what to do (issue 13, item 5): a request shaped wrong is a 400 before
 * any key; a request no wait can admit gets no Retry-After and no 429 (SDKs retry those); what
 * node answers itself is in the OpenAI error shape.
 */
import { connect } from 'node:net';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { post, sdkFor, twoKeyGateways } from './helpers.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa5555';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb6666';
const gw = twoKeyGateways(A, B);
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 8 };
const upstreamRequests = (g: Awaited<ReturnType<typeof gw>>) => Object.values(g.fake.counters()).reduce((n, c) => n + c.requests, 0);

describe('answers: bad requests are 400s before any key', () => {
  it('a stream_options that is not an object is a 400 naming it, and nothing goes upstream', async () => {
    const g = await gw();
    for (const so of ['abc', [1, 2], 3, true]) {
      const r = await post(g.url, '/v1/chat/completions', JSON.stringify({ ...ask, stream: true, stream_options: so }), { authorization: `Bearer ${g.token}` });
      expect.soft(r.status, JSON.stringify(so)).toBe(400);
      expect.soft(r.json?.error?.param, JSON.stringify(so)).toBe('stream_options');
    }
    expect(upstreamRequests(g)).toBe(0);
    // an object, or null, still streams
    const r = await post(g.url, '/v1/chat/completions', JSON.stringify({ ...ask, stream: true, stream_options: null }), { authorization: `Bearer ${g.token}` });
    expect(r.status).toBe(200);
  });

  it("a request whose estimate exceeds the token's whole budget is a 400 request_too_large without Retry-After; one that fits goes through", async () => {
    const g = await gw();
    const { token } = await g.pool.tokens.create({ name: 'small', budget: { usd: 0.001, period: 'day' } });
    const r = await post(g.url, '/v1/chat/completions', JSON.stringify({ ...ask, max_tokens: 400_000 }), { authorization: `Bearer ${token}` });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('request_too_large');
    expect(r.headers['retry-after']).toBeUndefined();
    expect(upstreamRequests(g)).toBe(0);
    // nothing was reserved or charged for it
    const info = (await g.pool.tokens.list()).find((t) => t.name === 'small')!;
    expect(info.reservedUsd + info.spendUsd).toBe(0);
    await sdkFor(g, token).chat.completions.create(ask);
  });
});

describe('answers: no key can serve, and waiting will not help', () => {
  it('every key revoked by the provider: 502 upstream_auth_failed, then 503 no_usable_key naming the reason; never a 429', async () => {
    const g = await gw();
    g.fake.setKey(A, { revoked: true });
    g.fake.setKey(B, { revoked: true });
    const sdk = sdkFor(g);
    const first = (await sdk.chat.completions.create(ask).catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
    expect(first.status).toBe(502);
    expect(first.code).toBe('upstream_auth_failed');
    const next = (await sdk.chat.completions.create(ask).catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
    expect(next.status).toBe(503);
    expect(next.code).toBe('no_usable_key');
    expect(next.message).toMatch(/unavailable: every key that serves it is revoked/);
    expect(next.headers?.get('retry-after')).toBeNull();
  });
});

describe('answers: what node refuses itself', () => {
  it('headers larger than node accepts get a 431 in the OpenAI error shape', async () => {
    const g = await gw();
    const { port } = new URL(g.url);
    const text = await new Promise<string>((resolve, reject) => {
      const s = connect(Number(port), '127.0.0.1', () => {
        s.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(40_000)}\r\n\r\n`);
      });
      let got = '';
      s.on('data', (c) => (got += c));
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    expect(text).toMatch(/^HTTP\/1\.1 431 /);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { error: { code: string; type: string } };
    expect(body.error).toMatchObject({ code: 'headers_too_large', type: 'invalid_request_error' });
  });
});
