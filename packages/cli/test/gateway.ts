/**
 * The CLI's test gateway: packages/server/test/helpers.ts's, with its own admin token, a pool name
 * of its own and a second listener whose admin API is disabled. The CLI under test runs as a child
 * process against its URL.
 */
import { afterAll } from 'vitest';
import { uniqueName } from '@keypool/testkit';
import { startGateway as startServerGateway, testRedis, type TestGateway as ServerGateway } from '../../server/test/helpers.js';

export const ADMIN = 'admin-token-for-cli-tests-0123456789abcdef';

export interface TestGateway extends ServerGateway {
  noAdminUrl: string;
}

afterAll(() => testRedis.disconnect());

export async function startGateway(opts: Pick<Parameters<typeof startServerGateway>[0], 'fakeKeys' | 'keys' | 'settings'>): Promise<TestGateway> {
  const g = await startServerGateway({ ...opts, fake: { models: ['gpt-4o', 'gpt-4o-mini'] }, poolName: uniqueName('cli'), settings: { adminToken: ADMIN, ...opts.settings }, noAdmin: true });
  return { ...g, noAdminUrl: g.noAdminUrl! };
}
