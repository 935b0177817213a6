import type { Server } from 'node:http';
import OpenAI from 'openai';
import { afterAll, afterEach } from 'vitest';
import type { AddressInfo } from 'node:net';
import { connectTestRedis, startFakeOpenAI, uniqueName, type FakeOpenAI, type FakeOpenAIOptions } from '@keypool/testkit';
import { KeyPool, type KeySpecInput, type PoolConfigInput } from '@keypool/core';
import type { Route } from '@keypool/client';
import { createGateway, type Gateway, type GatewaySettings } from '../src/index.js';
import { LogSink, testSettings } from './shared.js';

export const ADMIN = 'admin-token-for-tests-0123456789abcdef';

export const DEFAULT_SETTINGS: GatewaySettings = testSettings(ADMIN);

export { LogSink };

export interface TestGateway {
  url: string;
  fake: FakeOpenAI;
  pool: KeyPool;
  gateway: Gateway;
  /** A gateway token with no limits. */
  token: string;
  logs: LogSink;
  stop(): Promise<void>;
}

const redis = connectTestRedis();
export const testRedis = redis;

/** A gateway (in this process, real HTTP on a free port) over a pool on the test Redis and the fake upstream. */
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
}): Promise<TestGateway> {
  const fake = await startFakeOpenAI({ keys: opts.fakeKeys, models: ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'], latency: 2, ...opts.fake });
  const logs = new LogSink();
  const pool = await KeyPool.connect({
    redis,
    config: { pool: opts.poolName ?? uniqueName('gw'), keys: opts.keys.map((k) => ({ ...k, baseURL: opts.upstreamURL ?? fake.url })), ...opts.pool },
    logger: logs.logger,
  });
  const gateway = createGateway({ pool, logger: logs.logger, settings: { ...DEFAULT_SETTINGS, ...opts.settings }, routes: opts.routes ?? {} });
  const server: Server = await new Promise((resolve) => {
    const s = gateway.app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { token } = await pool.tokens.create({ name: 'tests' });
  return {
    url,
    fake,
    pool,
    gateway,
    token,
    logs,
    async stop() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await pool.close();
      await fake.stop();
    },
  };
}

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
