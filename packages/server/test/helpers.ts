/**
 * The server's and the CLI's test gateways: one in the test process (real HTTP on a free port) over
 * a pool on the test Redis (standalone or cluster, per project) and the fake upstream; and the raw
 * HTTP client the tests that send malformed requests need.
 */
import { request, type IncomingMessage, type Server } from 'node:http';
import OpenAI from 'openai';
import { afterAll, afterEach } from 'vitest';
import type { AddressInfo } from 'node:net';
import { REDACT } from '@keypool/config';
import { connectTestRedis, startFakeOpenAI, uniqueName, type FakeOpenAI, type FakeOpenAIOptions } from '@keypool/testkit';
import { LogSink as BaseLogSink } from '@keypool/testkit/log-sink';
import { KeyPool, type KeySpecInput, type PoolConfigInput } from '@keypool/core';
import type { Route } from '@keypool/client';
import { answerClientErrors, createGateway, type Gateway, type GatewaySettings } from '../src/index.js';

export const ADMIN = 'admin-token-for-tests-0123456789abcdef';

/** Short deadlines and backoff, a small body limit, and the given admin token. */
export function testSettings(adminToken: string): GatewaySettings {
  return {
    adminToken,
    bodyLimit: 64 * 1024,
    deadlineMs: 5000,
    attemptTimeoutMs: 2000,
    maxAttempts: 4,
    backoff: { baseMs: 5, maxMs: 50 },
    defaultMaxOutputTokens: 64,
  };
}

export const DEFAULT_SETTINGS: GatewaySettings = testSettings(ADMIN);

/** A gateway token as it would appear in a line: `kpt_` and 43 base64url characters. */
const GATEWAY_TOKEN_RE = /kpt_[A-Za-z0-9_-]{43}/;

/** Every log line the gateway wrote, redacted as in production. */
export class LogSink extends BaseLogSink {
  constructor() {
    super(REDACT);
  }

  /**
   * Throws when a line holds one of `secrets` or any gateway token: run at every test gateway's
   * teardown, so every path a test drives (broken streams, timeouts, shutdown...) is scanned.
   */
  assertNoSecrets(secrets: readonly string[]): void {
    for (const line of this.lines) {
      const found = secrets.find((s) => s !== '' && line.includes(s)) ?? GATEWAY_TOKEN_RE.exec(line)?.[0];
      // the message names the line's log message, never the secret
      if (found !== undefined) throw new Error(`a log line holds a secret or a gateway token (${found.slice(0, 6)}...): ${String((JSON.parse(line) as { msg?: unknown }).msg)}`);
    }
  }
}

export interface TestGateway {
  url: string;
  fake: FakeOpenAI;
  pool: KeyPool;
  gateway: Gateway;
  /** A gateway token with no limits. */
  token: string;
  logs: LogSink;
  /** Another listener on the same pool whose admin API is disabled (no admin token), when asked for. */
  noAdminUrl?: string;
  stop(): Promise<void>;
}

const redis = connectTestRedis();
export const testRedis = redis;

/**
 * A gateway (in this process, real HTTP on a free port) over a pool on the test Redis and the fake
 * upstream. Its status is not shared (`status.snapshotMs` 0) unless `pool` says otherwise: a test
 * reads what a request just did; the sharing has tests of its own (core's status-pages.int.test.ts).
 */
export async function startGateway(opts: {
  fakeKeys: FakeOpenAIOptions['keys'];
  keys: Omit<KeySpecInput, 'baseURL'>[];
  fake?: Omit<FakeOpenAIOptions, 'keys'>;
  routes?: Record<string, Route>;
  settings?: Partial<GatewaySettings>;
  pool?: Partial<PoolConfigInput>;
  /** Another gateway on the same pool (a second process would do the same). */
  poolName?: string;
  upstreamURL?: string;
  /** Also start a listener without the admin API (noAdminUrl). */
  noAdmin?: boolean;
}): Promise<TestGateway> {
  const fake = await startFakeOpenAI({ keys: opts.fakeKeys, models: ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'], latency: 2, ...opts.fake });
  const logs = new LogSink();
  const pool = await KeyPool.connect({
    redis,
    config: { pool: opts.poolName ?? uniqueName('gw'), keys: opts.keys.map((k) => ({ ...k, baseURL: opts.upstreamURL ?? fake.url })), status: { snapshotMs: 0 }, ...opts.pool },
    logger: logs.logger,
  });
  const settings = { ...DEFAULT_SETTINGS, ...opts.settings };
  const gateway = createGateway({ pool, logger: logs.logger, settings, routes: opts.routes ?? {} });
  const servers = [await listen(gateway)];
  if (opts.noAdmin) servers.push(await listen(createGateway({ pool, logger: logs.logger, settings: { ...settings, adminToken: undefined }, routes: opts.routes ?? {} })));
  const { token } = await pool.tokens.create({ name: 'tests', allowCritical: true });
  return {
    url: urlOf(servers[0]!),
    ...(servers[1] ? { noAdminUrl: urlOf(servers[1]) } : {}),
    fake,
    pool,
    gateway,
    token,
    logs,
    async stop() {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
      await pool.close();
      await fake.stop();
      logs.assertNoSecrets([...opts.keys.map((k) => k.secret), ...(opts.fakeKeys ?? []).map((k) => (typeof k === 'string' ? k : k.key))]);
    },
  };
}

/** A gateway over `pool` (a pool of the test's own, e.g. on a Redis it kills) on a free port; its closing goes to `cleanups`. Its URL. */
export async function listenOn(pool: KeyPool, logs: LogSink, cleanups: (() => Promise<unknown>)[]): Promise<string> {
  const http = await listen(createGateway({ pool, logger: logs.logger, settings: DEFAULT_SETTINGS }));
  cleanups.push(() => new Promise((r) => http.close(r)));
  return urlOf(http);
}

const listen = (gateway: Gateway): Promise<Server> =>
  new Promise((resolve) => {
    const s = gateway.listen(0, '127.0.0.1', () => resolve(s));
    answerClientErrors(s);
  });
const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

export { uniqueName };

/** The models the two-key test gateways serve. */
export const MODELS = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'];

type StartOptions = Parameters<typeof startGateway>[0];

/**
 * `gw(opts)` for a test file: a gateway whose two keys (`a`, `b`: the given secrets) serve MODELS,
 * stopped after each test; the test Redis is disconnected after the file.
 */
export function twoKeyGateways(a: string, b: string): (opts?: Partial<StartOptions>) => Promise<TestGateway> {
  const gateways: TestGateway[] = [];
  afterEach(async () => {
    for (const g of gateways.splice(0)) await g.stop();
  });
  afterAll(() => testRedis.disconnect());
  return async (opts = {}) => {
    const g = await startGateway({
      fakeKeys: [
        { key: a, name: 'a' },
        { key: b, name: 'b' },
      ],
      keys: [
        { secret: a, name: 'a', models: MODELS },
        { secret: b, name: 'b', models: MODELS },
      ],
      ...opts,
    });
    gateways.push(g);
    return g;
  };
}

/** The official SDK against a test gateway (its token unless another is given), no SDK retries. */
export const sdkFor = (g: TestGateway, apiKey = g.token) => new OpenAI({ apiKey, baseURL: `${g.url}/v1`, maxRetries: 0 });

/** POST raw bytes to the gateway; the answer as status, headers and text. */
export function post(url: string, path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingMessage['headers']; text: string; json: any }> {
  return new Promise((resolve, reject) => {
    // host/port/path given apart: a URL string would resolve dot segments before sending
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path, method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
