/** The environment variables that override the file (REDIS_URL, REDIS_SENTINELS, REDIS_PASSWORD, KEYPOOL_HOST, KEYPOOL_PORT...). */
import { resolve } from 'node:path';
import { PoolConfigSchema, type ConfigIssue } from '@keypool/core';
import { isObject, type Json, type JsonObject } from './issues.js';
import type { Section } from './schema.js';
import { LOG_LEVEL_MESSAGE, LOG_LEVELS } from './sections/log-level.js';
import { isRedisUrl, parseNode, REDIS_NODE_MESSAGE, REDIS_URL_MESSAGE } from './sections/redis.js';
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

  // Where Redis is: one of REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_SEEDS replaces the file's choice
  const targets = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_SEEDS'].filter((n) => get(n) !== undefined);
  if (targets.length > 1) issues.push({ path: targets[1]!, message: `set one of ${targets.join(', ')}: each names where Redis is` });
  const target = (name: string, ok: (v: string) => Json | undefined, message: string, put: (v: Json) => void) => {
    if (targets.length <= 1) override(name, ok, message, put);
  };
  const only = (keep: 'url' | 'sentinel' | 'cluster') => {
    const r = section('redis');
    for (const k of ['url', 'sentinel', 'cluster'] as const) if (k !== keep) delete r[k];
    return r;
  };
  const sub = (name: 'sentinel' | 'cluster'): JsonObject => {
    const r = section('redis');
    const cur = r[name];
    return isObject(cur) ? cur : (r[name] = {});
  };
  const nodeList = (v: string) => {
    const list = v.split(',').map((n) => n.trim()).filter(Boolean);
    return list.length > 0 && list.every((n) => parseNode(n)) ? list : undefined;
  };
  target('REDIS_URL', (v) => (isRedisUrl(v) ? v : undefined), REDIS_URL_MESSAGE, (v) => (only('url').url = v));
  target('REDIS_SENTINELS', nodeList, `${REDIS_NODE_MESSAGE}, comma-separated`, (v) => (only('sentinel'), (sub('sentinel').nodes = v)));
  // the sentinel's own settings apply to a Sentinel target only: left over beside another one they say so
  const sentinelVar = (name: string, field: 'masterName' | 'password') =>
    override(name, (v) => v, '', (v) => {
      if (isObject(section('redis').sentinel)) sub('sentinel')[field] = v;
      else issues.push({ path: name, message: `applies to Redis Sentinel only, and Redis is not Sentinel here (REDIS_URL, REDIS_CLUSTER_SEEDS or the file's redis section say where it is): unset ${name}, or set REDIS_SENTINELS` });
    });
  sentinelVar('REDIS_SENTINEL_MASTER', 'masterName');
  sentinelVar('REDIS_SENTINEL_PASSWORD', 'password');
  target('REDIS_CLUSTER_SEEDS', nodeList, `${REDIS_NODE_MESSAGE}, comma-separated`, (v) => (only('cluster'), (sub('cluster').nodes = v)));
  override('REDIS_USERNAME', (v) => v, '', (v) => (section('redis').username = v));
  override('REDIS_PASSWORD', (v) => v, '', (v) => (section('redis').password = v));
  // a path from the environment is relative to the working directory, not to the file
  override('REDIS_TLS_CA', (v) => resolve(v), '', (v) => {
    const r = section('redis');
    r.tls = { ...(isObject(r.tls) ? r.tls : {}), ca: v };
  });
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
