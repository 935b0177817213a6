/** The environment variables that override the file (REDIS_URL, KEYPOOL_HOST, KEYPOOL_PORT...). */
import { PoolConfigSchema, type ConfigIssue } from '@keypool/core';
import { isObject, type Json, type JsonObject } from './issues.js';
import type { Section } from './schema.js';
import { LOG_LEVEL_MESSAGE, LOG_LEVELS } from './sections/log-level.js';
import { isRedisUrl, REDIS_URL_MESSAGE } from './sections/redis.js';
import { ADMIN_TOKEN_MESSAGE, PORT_MESSAGE } from './sections/server.js';

/** Env wins over the file. An invalid env value is reported under the env var's name and not applied. */
export function applyEnvOverrides(sections: Record<Section, Json | undefined>, poolPart: JsonObject, env: NodeJS.ProcessEnv, issues: ConfigIssue[]): void {
  // An empty variable counts as unset (compose files often pass `KEYPOOL_HOST=`).
  const get = (name: string) => (env[name] === '' ? undefined : env[name]);
  const section = (name: 'redis' | 'server'): JsonObject => {
    const cur = sections[name];
    if (isObject(cur)) return cur;
    // A wrong file value (say `server: 3`) is reported by the schema; the override still applies.
    if (cur !== undefined && cur !== null) return {};
    return (sections[name] = {});
  };
  const override = (name: string, ok: (v: string) => Json | undefined, message: string, put: (v: Json) => void) => {
    const raw = get(name);
    if (raw === undefined) return;
    const v = ok(raw);
    if (v === undefined) issues.push({ path: name, message });
    else put(v);
  };

  override('REDIS_URL', (v) => (isRedisUrl(v) ? v : undefined), REDIS_URL_MESSAGE, (v) => (section('redis').url = v));
  override('KEYPOOL_HOST', (v) => v, '', (v) => (section('server').host = v));
  override(
    'KEYPOOL_PORT',
    (v) => (/^\d{1,5}$/.test(v.trim()) && Number(v) <= 65535 ? Number(v) : undefined),
    PORT_MESSAGE,
    (v) => (section('server').port = v),
  );
  override('KEYPOOL_ADMIN_TOKEN', (v) => (v.length >= 24 ? v : undefined), ADMIN_TOKEN_MESSAGE, (v) => (section('server').adminToken = v));
  override('KEYPOOL_STATUS_TOKEN', (v) => (v.length >= 24 ? v : undefined), ADMIN_TOKEN_MESSAGE, (v) => (section('server').statusToken = v));
  override('KEYPOOL_LOG_LEVEL', (v) => ((LOG_LEVELS as readonly string[]).includes(v) ? v : undefined), LOG_LEVEL_MESSAGE, (v) => (sections.logLevel = v));
  const poolName = get('KEYPOOL_POOL');
  if (poolName !== undefined) {
    const r = PoolConfigSchema.shape.pool.safeParse(poolName);
    if (r.success) poolPart.pool = poolName;
    else issues.push(...r.error.issues.map((i) => ({ path: 'KEYPOOL_POOL', message: i.message })));
  }
}
