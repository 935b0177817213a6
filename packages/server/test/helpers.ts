import type { Server } from 'node:http';
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
