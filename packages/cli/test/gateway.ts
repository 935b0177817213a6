/**
 * A gateway in the test process (real HTTP on a free port) over a pool on the test Redis (standalone
 * or cluster, per project) and the fake upstream, as packages/server/test/helpers.ts starts one.
 * The CLI under test runs as a child process against its URL.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KeyPool, type KeySpecInput } from '@keypool/core';
import { LogSink, testSettings } from '../../server/test/shared.js';
import { createGateway, type Gateway, type GatewaySettings } from '@keypool/server';
import { connectTestRedis, startFakeOpenAI, uniqueName, type FakeOpenAI, type FakeOpenAIOptions } from '@keypool/testkit';

export const ADMIN = 'admin-token-for-cli-tests-0123456789abcdef';

const SETTINGS: GatewaySettings = testSettings(ADMIN);

export { LogSink };

export interface TestGateway {
  url: string;
  fake: FakeOpenAI;
  pool: KeyPool;
  gateway: Gateway;
  logs: LogSink;
  /** Another listener on the same pool whose admin API is disabled (no admin token). */
  noAdminUrl: string;
  stop(): Promise<void>;
}

const listen = (app: Gateway['app']): Promise<Server> =>
  new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

export async function startGateway(opts: { fakeKeys: FakeOpenAIOptions['keys']; keys: Omit<KeySpecInput, 'baseURL'>[] }): Promise<TestGateway> {
  const fake = await startFakeOpenAI({ keys: opts.fakeKeys, models: ['gpt-4o', 'gpt-4o-mini'], latency: 2 });
  const logs = new LogSink();
  const redis = connectTestRedis();
  const pool = await KeyPool.connect({
    redis,
    config: { pool: uniqueName('cli'), keys: opts.keys.map((k) => ({ ...k, baseURL: fake.url })) },
    logger: logs.logger,
  });
  const gateway = createGateway({ pool, logger: logs.logger, settings: SETTINGS, routes: {} });
  const noAdmin = createGateway({ pool, logger: logs.logger, settings: { ...SETTINGS, adminToken: undefined }, routes: {} });
  const servers = [await listen(gateway.app), await listen(noAdmin.app)];
  return {
    url: urlOf(servers[0]!),
    noAdminUrl: urlOf(servers[1]!),
    fake,
    pool,
    gateway,
    logs,
    async stop() {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
      await pool.close();
      redis.disconnect();
      await fake.stop();
    },
  };
}
