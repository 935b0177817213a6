/**
 * The gateway end to end: the official `openai` package as the caller, real HTTP, the fake
 * upstream behind, a real Redis under the pool.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import OpenAI from 'openai';
import { describe, expect, it, vi } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { MODELS, post, sdkFor, twoKeyGateways, type TestGateway } from './helpers.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb2222';

const gw = twoKeyGateways(A, B);
const sdk = sdkFor;
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 8 };
const served = (g: TestGateway) => Object.values(g.fake.counters()).reduce((n, c) => n + c.requests, 0);
const keyOf = async (g: TestGateway, secret: string) => (await g.pool.status()).keys.find((k) => k.id === keyIdOf(secret, g.fake.url))!;

describe('gateway: the official SDK through /v1', () => {
  it('x-keypool-acquire-ms: the time a request waited for its key, the provider\'s time left out', async () => {
    // one request per rolling second on each key: the third request waits about a window for a slot
    const g = await gw({
      keys: [
        { secret: A, name: 'a', models: MODELS, rpm: 60, window: 1 },
        { secret: B, name: 'b', models: MODELS, rpm: 60, window: 1 },
      ],
      fake: { latency: 150 },
    });
    const openai = sdk(g);
    const waits: number[] = [];
    const sentAt: number[] = [];
    for (let i = 0; i < 3; i++) {
      sentAt.push(performance.now());
      const { response } = await openai.chat.completions.create(ask).withResponse();
      waits.push(Number(response.headers.get('x-keypool-acquire-ms')));
    }
    // the first two found a key free (the 150 ms of the provider not counted); the third waited
    // for the first's slot: a window (1 s plus the 20 ms margin) after the first was admitted
    expect(waits[0]).toBeLessThan(300);
    expect(waits[1]).toBeLessThan(300);
    const slotFree = sentAt[0]! + 1020 - sentAt[2]!;
    expect(waits[2]).toBeGreaterThan(slotFree - 300);
    expect(waits[2]).toBeLessThan(slotFree + 300);
    expect(waits[2]).toBeGreaterThan(200);
  });

  it('chat, completions, embeddings and responses are served, priced and reconciled', async () => {
    const g = await gw();
    const openai = sdk(g);
    const { data: chat, response } = await openai.chat.completions.create(ask).withResponse();
    expect(chat.choices[0]!.message.content!.length).toBeGreaterThan(0);
    expect(chat.usage!.completion_tokens).toBe(8);
    expect(response.headers.get('x-keypool-model')).toBe('gpt-4o-mini');
    expect([keyIdOf(A, g.fake.url), keyIdOf(B, g.fake.url)]).toContain(response.headers.get('x-keypool-key-id'));
    const cost = Number(response.headers.get('x-keypool-cost-usd'));
    // gpt-4o-mini: $0.15 / $0.60 per million tokens
    expect(cost).toBeCloseTo((chat.usage!.prompt_tokens * 0.15 + 8 * 0.6) / 1e6, 10);

    const comp = await openai.completions.create({ model: 'gpt-4o-mini', prompt: 'say hi', max_tokens: 4 });
    expect(comp.usage!.completion_tokens).toBe(4);
    const emb = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['one', 'two'] });
    expect(emb.data).toHaveLength(2);
    const resp = await openai.responses.create({ model: 'gpt-4o-mini', input: 'hi', max_output_tokens: 5 });
    expect(resp.usage!.output_tokens).toBe(5);

    const st = await g.pool.status();
    expect(st.keys.reduce((n, k) => n + k.inFlight, 0)).toBe(0);
    expect(st.spend!.byModel['gpt-4o-mini']!.requests).toBe(3);
    // the token was charged what the keys spent (settled in the background, once the answers are out)
    await expect.poll(async () => (await g.pool.tokens.list())[0]!.requests).toBe(4);
    const [tok] = await g.pool.tokens.list();
    expect(tok!.spendUsd).toBeCloseTo(st.keys.reduce((n, k) => n + (k.spendUsd ?? 0), 0), 9);
  });

  it('streams chat through the SDK; the usage chunk is passed only when asked for; the lease is released with the usage', async () => {
    const g = await gw({ fake: { latency: 2, chunkDelayMs: 5 } });
    const openai = sdk(g);
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const c of await openai.chat.completions.create({ ...ask, stream: true })) chunks.push(c);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
    expect(chunks.some((c) => c.usage)).toBe(false);
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('').trim().split(/\s+/)).toHaveLength(8);

    const withUsage: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const c of await openai.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } })) withUsage.push(c);
    expect(withUsage.at(-1)!.usage!.completion_tokens).toBe(8);

    const st = await g.pool.status();
    expect(st.keys.reduce((n, k) => n + k.inFlight, 0)).toBe(0);
    expect(st.spend!.byModel['gpt-4o-mini']!.requests).toBe(2);
    // both streams were charged their real usage (8 completion tokens each)
    const counted = Object.values(g.fake.counters()).reduce((n, c) => n + c.completionTokens, 0);
    expect(counted).toBe(16);
  });

  it('every lease says when its request left (Lease.sent: a windowed key counts it from then), plain and streamed', async () => {
    const g = await gw();
    const release = vi.spyOn(g.pool, 'release');
    const t0 = Date.now();
    await sdk(g).chat.completions.create(ask);
    for await (const _ of await sdk(g).chat.completions.create({ ...ask, stream: true }));
    await expect.poll(() => release.mock.calls.length).toBe(2);
    const t1 = Date.now();
    for (const [lease, outcome] of release.mock.calls) {
      expect(outcome.status).toBe(200);
      expect(lease.sentAt).toBeGreaterThanOrEqual(t0);
      expect(lease.sentAt).toBeLessThanOrEqual(t1);
    }
  });

  it('stream bytes arrive as the upstream sends them, not at the end', async () => {
    const g = await gw({ fake: { latency: 2, chunkDelayMs: 60 } });
    const t0 = Date.now();
    const times: number[] = [];
    for await (const _ of await sdk(g).chat.completions.create({ ...ask, max_tokens: 6, stream: true })) times.push(Date.now() - t0);
    // 8 chunks 60 ms apart: the first must not wait for the last
    expect(times.length).toBeGreaterThanOrEqual(7);
    expect(times.at(-1)! - times[0]!).toBeGreaterThan(250);
  });

  it('a request body goes upstream byte for byte, unknown fields included, with the key and only the headers the gateway passes on', async () => {
    const seen: { path: string; body: string; auth: string; headers: Record<string, string | string[] | undefined> }[] = [];
    const capture: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        seen.push({ path: req.url!, body, auth: String(req.headers.authorization), headers: req.headers });
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }));
      });
    });
    await new Promise<void>((r) => capture.listen(0, '127.0.0.1', r));
    try {
      const up = `http://127.0.0.1:${(capture.address() as AddressInfo).port}/v1`;
      const g = await gw({ upstreamURL: up });
      const raw = '{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi"}],"x_vendor_field":{"a":[1,2.50]},"temperature":1.0}';
      const r = await post(g.url, '/v1/chat/completions', raw, { authorization: `Bearer ${g.token}`, 'openai-beta': 'assistants=v2', 'x-caller-secret': 'not-for-the-provider', 'user-agent': 'caller/1.0' });
      expect(r.status).toBe(200);
      expect(r.json.choices[0].message.content).toBe('ok');
      expect(seen).toHaveLength(1);
      const h = seen[0]!.headers;
      expect(h.host).toBe(new URL(up).host);
      expect(h['openai-beta']).toBe('assistants=v2');
      expect(h['x-caller-secret']).toBeUndefined();
      expect(h['user-agent']).toBe('keypool-gateway');
      expect(h.accept).toBe('application/json');
      expect(h['content-length']).toBe(String(Buffer.byteLength(raw)));
      expect(seen[0]!.path).toBe('/v1/chat/completions');
      expect(seen[0]!.body).toBe(raw);
      // the provider sees a pool key, never the caller's gateway token
      expect([`Bearer ${A}`, `Bearer ${B}`]).toContain(seen[0]!.auth);
    } finally {
      capture.close();
    }
  });

  it('a route picks a model; the answer says which route and model served it', async () => {
    const g = await gw({ routes: { smart: { models: ['gpt-4o', 'gpt-4o-mini'] } } });
    const { data, response } = await sdk(g).chat.completions.create({ ...ask, model: 'smart' }).withResponse();
    expect(data.model).toBe('gpt-4o-mini'); // normal priority: cheapest first
    expect(response.headers.get('x-keypool-route')).toBe('smart');
    expect(response.headers.get('x-keypool-model')).toBe('gpt-4o-mini');
    const critical = await sdk(g).chat.completions.create({ ...ask, model: 'smart' }, { headers: { 'x-keypool-priority': 'critical' } });
    expect(critical.model).toBe('gpt-4o');
    const models = await sdk(g).models.list();
    expect(models.data.map((m) => m.id).sort()).toEqual(['gpt-4o', 'gpt-4o-mini', 'smart', 'text-embedding-3-small']);
  });

  it('fails over: a key the provider rate-limits is skipped and the caller sees no error', async () => {
    // learning off: the pool believes its config (no limit), so key a's 429 is a surprise it must route around
    const g = await gw({
      fakeKeys: [
        { key: A, name: 'a', rpm: 1 },
        { key: B, name: 'b' },
      ],
      pool: { limits: { learn: false } },
    });
    const openai = sdk(g);
    // every call succeeds, also the one(s) that met key a's 429
    for (let i = 0; i < 60 && !(g.fake.counters().a?.rate429 ?? 0); i++) await openai.chat.completions.create(ask);
    expect(g.fake.counters().a!.rate429).toBe(1);
    // after its 429 the pool cooled key a instead of sending it more
    expect((await keyOf(g, A)).state).toBe('cooling');
    const text = await (await fetch(`${g.url}/metrics`)).text();
    expect(text).toMatch(new RegExp(`keypool_upstream_responses_total\\{key_id="${keyIdOf(A, g.fake.url)}",key_name="a",status="429"\\} [1-9]`));
  });

  it('learns a key\'s limit from its first answer and never meets its 429', async () => {
    // the same provider, learning on: key a says "1 request a minute" in its first answer's headers
    const g = await gw({
      fakeKeys: [
        { key: A, name: 'a', rpm: 1 },
        { key: B, name: 'b' },
      ],
    });
    const openai = sdk(g);
    // until key a has answered once and that answer's release (after the answer is out) taught the pool
    for (let i = 0; i < 30 && !g.fake.counters().a?.requests; i++) await openai.chat.completions.create(ask);
    await expect.poll(async () => (await keyOf(g, A)).reportedLimits?.rpm, { timeout: 5000 }).toBe(1);
    expect((await keyOf(g, A)).effectiveLimits?.rpm).toBe(1);
    const before = { ...g.fake.counters().a! };
    for (let i = 0; i < 20; i++) await openai.chat.completions.create(ask);
    // once the pool knew, key a got nothing more in its minute, so the provider refused it nothing more
    const a = g.fake.counters().a!;
    expect(a.rate429).toBe(before.rate429);
    expect(a.requests).toBe(before.requests);
  });

  it('/metrics shows each key\'s configured, effective and provider-reported rate limits', async () => {
    // key a: configured 600 rpm, its provider allows 300 and says so in x-ratelimit-limit-requests
    const g = await gw({
      fakeKeys: [{ key: A, name: 'a', rpm: 300, tpm: 50_000 }],
      keys: [{ secret: A, name: 'a', models: MODELS, rpm: 600, tpm: 100_000 }],
    });
    const id = keyIdOf(A, g.fake.url);
    const gauge = (dimension: string, kind: string) => new RegExp(`keypool_key_rate_limit\\{key_id="${id}",key_name="a",dimension="${dimension}",kind="${kind}"\\} (\\d+)`);
    const before = await (await fetch(`${g.url}/metrics`)).text();
    expect(before).toMatch(gauge('requests', 'configured'));
    expect(gauge('requests', 'effective').exec(before)?.[1]).toBe('600');
    expect(before).not.toMatch(/keypool_key_rate_limit\{[^}]*kind="reported"/); // none reported yet
    await sdk(g).chat.completions.create(ask);
    // the lease is released after the answer is out: poll
    await expect.poll(async () => gauge('requests', 'effective').exec(await (await fetch(`${g.url}/metrics`)).text())?.[1]).toBe('300');
    const text = await (await fetch(`${g.url}/metrics`)).text();
    const value = (dimension: string, kind: string) => gauge(dimension, kind).exec(text)?.[1];
    expect([value('requests', 'configured'), value('requests', 'effective'), value('requests', 'reported')]).toEqual(['600', '300', '300']);
    expect([value('tokens', 'configured'), value('tokens', 'effective'), value('tokens', 'reported')]).toEqual(['100000', '50000', '50000']);
  });

  it('fails over: 5xx answers are retried on another key with backoff', async () => {
    const g = await gw();
    g.fake.setFault({ kind: 'error', status: 503, count: 3, key: 'a' });
    const openai = sdk(g);
    // every call succeeds while key a answers 503 three times (whichever calls land on it)
    let calls = 0;
    while ((g.fake.counters().a?.status['503'] ?? 0) < 3 && calls < 60) {
      await openai.chat.completions.create(ask);
      calls++;
    }
    const c = g.fake.counters();
    expect(c.a!.status['503']).toBe(3);
    expect(c.b!.served + c.a!.served).toBe(calls);
    const text = await (await fetch(`${g.url}/metrics`)).text();
    expect(text).toMatch(/keypool_upstream_responses_total\{key_id="[^"]+",key_name="a",status="503"\} 3/);
    expect(text).toContain(`keypool_gateway_requests_total{endpoint="chat.completions",route="",model="gpt-4o-mini",status="200"} ${calls}`);
  });

  it('a stream the client drops stops the upstream call and releases the lease', async () => {
    const g = await gw({ fake: { latency: 2, chunkDelayMs: 50 } });
    const ac = new AbortController();
    const stream = await sdk(g).chat.completions.create({ ...ask, max_tokens: 100, stream: true }, { signal: ac.signal });
    let n = 0;
    try {
      for await (const _ of stream) if (++n === 3) ac.abort();
    } catch {
      // the SDK may end the loop or throw when aborted: either way the gateway sees the client go
    }
    expect(n).toBe(3);
    await expect.poll(async () => (await g.pool.status()).keys.reduce((s, k) => s + k.inFlight, 0), { timeout: 3000 }).toBe(0);
    // far fewer than 100 tokens went out
    const c = Object.values(g.fake.counters());
    expect(c.reduce((s, x) => s + x.requests, 0)).toBe(1);
    const text = await (await fetch(`${g.url}/metrics`)).text();
    expect(text).toMatch(/keypool_gateway_requests_total\{endpoint="chat.completions",route="",model="gpt-4o-mini",status="499"\} 1/);
  });

  it('a stream the provider breaks ends with an error event the SDK raises, and counts against the key', async () => {
    const g = await gw({ fake: { latency: 2, chunkDelayMs: 5 } });
    g.fake.setFault({ kind: 'break-stream', afterChunks: 3, count: 1 });
    const stream = await sdk(g).chat.completions.create({ ...ask, stream: true });
    await expect(
      (async () => {
        for await (const _ of stream);
      })(),
    ).rejects.toThrow(/broke the stream|ended the stream/);
    await expect.poll(async () => (await g.pool.status()).keys.reduce((s, k) => s + k.inFlight, 0)).toBe(0);
  });
});

describe('gateway: bad input never reaches a key', () => {
  it('answers each kind of bad request with the right OpenAI-shaped error, and the upstream sees none of them', async () => {
    const g = await gw({ settings: { bodyLimit: 1024 } });
    const auth = { authorization: `Bearer ${g.token}` };
    const cases: [string, string | Buffer, Record<string, string>, number, string | null][] = [
      ['/v1/chat/completions', JSON.stringify(ask), {}, 401, 'missing_api_key'],
      ['/v1/chat/completions', JSON.stringify(ask), { authorization: 'Bearer kpt_not_a_real_token' }, 401, 'invalid_api_key'],
      ['/v1/chat/completions', JSON.stringify(ask), { authorization: `Bearer ${A}` }, 401, 'invalid_api_key'],
      ['/v1/chat/completions', '{"model": "gpt-4o-mini", "messages": [', auth, 400, 'invalid_json'],
      ['/v1/chat/completions', '[1,2]', auth, 400, 'invalid_json'],
      ['/v1/chat/completions', '', auth, 400, null],
      ['/v1/chat/completions', JSON.stringify({ messages: ask.messages }), auth, 400, null],
      ['/v1/chat/completions', JSON.stringify({ model: 'gpt-4o-mini', messages: 'hi' }), auth, 400, null],
      ['/v1/chat/completions', JSON.stringify({ ...ask, stream: 'yes' }), auth, 400, null],
      ['/v1/embeddings', JSON.stringify({ model: 'text-embedding-3-small' }), auth, 400, null],
      ['/v1/chat/completions', JSON.stringify({ ...ask, model: 'gpt-9-ultra' }), auth, 404, 'model_not_found'],
      ['/v1/chat/completions', JSON.stringify({ ...ask, messages: [{ role: 'user', content: 'x'.repeat(5000) }] }), auth, 413, 'body_too_large'],
      ['/v1/chat/completions', Buffer.from([0xff, 0xfe, 0x00, 0x7b]), auth, 400, 'invalid_json'],
      ['/v1/../admin/tokens', '{"name":"evil"}', auth, 400, 'invalid_path'],
      ['/v1/%2e%2e/admin/tokens', '{"name":"evil"}', auth, 400, 'invalid_path'],
      ['/v1/chat/completions/../../admin/tokens', '{"name":"evil"}', auth, 400, 'invalid_path'],
      ['/v1/chat%2Fcompletions', JSON.stringify(ask), auth, 400, 'invalid_path'],
      ['/v1/./chat/completions', JSON.stringify(ask), auth, 400, 'invalid_path'],
      ['/v1/files', '{}', auth, 404, 'unknown_url'],
      ['//v1/chat/completions', JSON.stringify(ask), auth, 400, 'invalid_path'],
    ];
    for (const [path, body, headers, status, code] of cases) {
      const r = await post(g.url, path, body, headers);
      expect.soft(r.status, `${path} ${String(body).slice(0, 40)}`).toBe(status);
      expect.soft(r.json?.error?.message, path).toEqual(expect.any(String));
      if (code) expect.soft(r.json?.error?.code, path).toBe(code);
      expect.soft(r.text).not.toMatch(/at .*\.ts:\d+/); // no stack traces
    }
    // a model that is not a string says so (not "is required")
    const numeric = await post(g.url, '/v1/chat/completions', JSON.stringify({ ...ask, model: 42 }), auth);
    expect(numeric.status).toBe(400);
    expect(numeric.json.error).toMatchObject({ param: 'model', message: expect.stringContaining("'model' must be a string") });
    expect(served(g)).toBe(0);
    expect((await g.pool.tokens.list()).map((t) => t.name)).toEqual(['tests']);
  });

  it('reads a body once against the limit whatever its framing: chunked past the limit is 413, a gzip, br or deflate body decoded (its decoded size against the limit), another encoding 415, /v1 paths match as express did', async () => {
    const g = await gw({ settings: { bodyLimit: 1024 } });
    const auth = { authorization: `Bearer ${g.token}` };
    const big = JSON.stringify({ ...ask, messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
    const chunked = await post(g.url, '/v1/chat/completions', big, { ...auth, 'transfer-encoding': 'chunked' });
    expect(chunked.status).toBe(413);
    expect(chunked.json.error.code).toBe('body_too_large');
    expect(chunked.json.error.message).toContain('1024 bytes');
    // encoded bodies: decoded, and the limit holds for what they decode to
    const notGzip = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { ...auth, 'content-encoding': 'gzip' });
    expect(notGzip.status).toBe(400);
    expect(notGzip.json.error.code).toBe('invalid_body');
    expect(notGzip.json.error.message).toContain('could not be read as gzip');
    const bomb = gzipSync(big);
    expect(bomb.length).toBeLessThan(1024);
    const bombed = await post(g.url, '/v1/chat/completions', bomb, { ...auth, 'content-encoding': 'gzip' });
    expect(bombed.status).toBe(413);
    const zstd = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { ...auth, 'content-encoding': 'zstd' });
    expect(zstd.status).toBe(415);
    expect(zstd.json.error.code).toBe('unsupported_encoding');
    expect(served(g)).toBe(0);
    for (const [enc, data] of [['gzip', gzipSync(JSON.stringify(ask))], ['br', brotliCompressSync(JSON.stringify(ask))], ['deflate', deflateSync(JSON.stringify(ask))]] as const) {
      const r = await post(g.url, '/v1/chat/completions', data, { ...auth, 'content-encoding': enc });
      expect(r.status, enc).toBe(200);
    }
    expect(served(g)).toBe(3);
    // a small chunked body is read whole; the mount path and a trailing slash match in any case
    const ok = await post(g.url, '/V1/chat/completions/', JSON.stringify(ask), { ...auth, 'transfer-encoding': 'chunked' });
    expect(ok.status).toBe(200);
    expect(ok.headers['x-keypool-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(served(g)).toBe(4);
    const wrongMethod = await fetch(`${g.url}/v1/chat/completions`, { headers: auth });
    expect(wrongMethod.status).toBe(404);
    expect(((await wrongMethod.json()) as { error: { code: string } }).error.code).toBe('unknown_url');
  });

  it('gateway tokens: revoked, limited to models, rate-limited and budgeted, fleet-wide', async () => {
    const g = await gw();
    const { token: limited } = await g.pool.tokens.create({ name: 'limited', rpm: 60, rpmBurst: 2, models: ['gpt-4o-mini'] });
    const openai = sdk(g, limited);
    await openai.chat.completions.create(ask);
    await openai.chat.completions.create(ask);
    const third = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { authorization: `Bearer ${limited}` });
    expect(third.status).toBe(429);
    expect(third.json.error.code).toBe('token_rate_limited');
    expect(Number(third.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    const other = await post(g.url, '/v1/chat/completions', JSON.stringify({ ...ask, model: 'gpt-4o' }), { authorization: `Bearer ${limited}` });
    expect(other.status).toBe(403);
    expect(other.json.error.code).toBe('model_not_allowed');
    // critical only for a token allowed it (allowCritical); nothing of a key is spent on a refusal
    const before = served(g);
    const { token: plain } = await g.pool.tokens.create({ name: 'plain' });
    const crit = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { authorization: `Bearer ${plain}`, 'x-keypool-priority': 'critical' });
    expect(crit.status).toBe(403);
    expect(crit.json.error.type).toBe('permission_error');
    expect(crit.json.error.code).toBe('priority_not_allowed');
    expect(crit.json.error.message).toContain('allowCritical');
    expect(served(g)).toBe(before);
    const { token: boss } = await g.pool.tokens.create({ name: 'boss', allowCritical: true, weight: 3 });
    const allowed = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { authorization: `Bearer ${boss}`, 'x-keypool-priority': 'critical' });
    expect(allowed.status).toBe(200);

    const { token: t2, info } = await g.pool.tokens.create({ name: 'to-revoke' });
    await sdk(g, t2).chat.completions.create(ask);
    await g.pool.tokens.revoke(info.id);
    // this process saw t2 admitted a moment ago, so its admission ran beside the acquire: the key
    // leased meanwhile goes back at once
    await expect(sdk(g, t2).chat.completions.create(ask)).rejects.toMatchObject({ status: 401 });
    expect(served(g)).toBe(4); // the two of limited, boss and t2
    expect((await g.pool.status()).keys.reduce((n, k) => n + k.inFlight, 0)).toBe(0);
    expect((await g.pool.status()).leasesInFlight).toBe(0);
  });

  it('unknown tokens never take a request from a key (their admission comes before any acquire)', async () => {
    const g = await gw({ keys: [{ secret: A, name: 'a', models: MODELS, rpm: 60, rpmBurst: 5 }] });
    const before = (await keyOf(g, A)).left!.requests;
    for (let i = 0; i < 20; i++) {
      const r = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { authorization: `Bearer kpt_${'x'.repeat(43)}` });
      expect(r.status).toBe(401);
    }
    expect((await keyOf(g, A)).left!.requests).toBe(before);
  });

  it('429 with Retry-After when no key can serve within the deadline', async () => {
    const g = await gw({
      keys: [{ secret: A, name: 'a', models: MODELS, rpm: 60, rpmBurst: 1 }],
      settings: { deadlineMs: 300 },
    });
    await sdk(g).chat.completions.create(ask);
    const r = await post(g.url, '/v1/chat/completions', JSON.stringify(ask), { authorization: `Bearer ${g.token}` });
    expect(r.status).toBe(429);
    expect(r.json.error.code).toBe('pool_exhausted');
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // the token got its request back: no key served it
    const [tok] = await g.pool.tokens.list();
    await expect.poll(async () => (await g.pool.tokens.list())[0]!.requests).toBe(1);
    expect(tok).toBeDefined();
  });

  it('an upstream 400 about a parameter is passed on as the provider wrote it, without retries', async () => {
    const g = await gw();
    const r = await post(g.url, '/v1/chat/completions', JSON.stringify({ ...ask, max_tokens: -3 }), { authorization: `Bearer ${g.token}` });
    expect(r.status).toBe(400);
    expect(r.json.error.message).toMatch(/max_tokens/);
    expect(served(g)).toBe(1);
  });
});
