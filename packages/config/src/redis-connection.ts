/**
 * The `redis` section as the connection factory's {@link RedisConnection}: node lists parsed, the
 * TLS files read. Gateway, worker and CLI all go through here, then through core's createRedis.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, type ConfigIssue, type RedisConnection, type RedisNodeAddress } from '@keypool/core';
import { parseNode, type RedisSection } from './sections/redis.js';

const TLS_FILES = ['ca', 'cert', 'key'] as const;

const node = (v: string): RedisNodeAddress => parseNode(v)!;

/** Make the TLS file names of `section` absolute (relative to the config file) and check each can be read. */
export function resolveTlsFiles(section: RedisSection, file: string | undefined, issues: ConfigIssue[]): RedisSection {
  if (!section.tls) return section;
  const tls = { ...section.tls };
  for (const k of TLS_FILES) {
    const name = tls[k];
    if (name === undefined) continue;
    const abs = file !== undefined ? resolve(dirname(file), name) : resolve(name);
    tls[k] = abs;
    try {
      readFileSync(abs);
    } catch (e) {
      issues.push({
        path: `redis.tls.${k}`,
        message: `cannot read ${abs} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): name a readable PEM file`,
      });
    }
  }
  return { ...section, tls };
}

/**
 * Where the section says Redis is, or undefined when it names none (serve then starts an embedded
 * redis-server; the worker and queue commands refuse).
 *
 * @throws ConfigError naming the file when a TLS file cannot be read.
 */
export function redisConnection(section: RedisSection | undefined): RedisConnection | undefined {
  if (!section || (section.url === undefined && !section.sentinel && !section.cluster)) return undefined;
  const issues: ConfigIssue[] = [];
  const read = (k: (typeof TLS_FILES)[number], name: string | undefined) => {
    if (name === undefined) return {};
    try {
      return { [k]: readFileSync(name, 'utf8') };
    } catch (e) {
      issues.push({
        path: `redis.tls.${k}`,
        message: `cannot read ${name} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): name a readable PEM file`,
      });
      return {};
    }
  };
  const t = section.tls;
  const tls = t
    ? {
        ...read('ca', t.ca),
        ...read('cert', t.cert),
        ...read('key', t.key),
        ...(t.servername !== undefined ? { servername: t.servername } : {}),
        rejectUnauthorized: t.rejectUnauthorized,
      }
    : undefined;
  if (issues.length) throw new ConfigError(issues, 'redis section');
  const s = section.sentinel;
  const c = section.cluster;
  return {
    ...(section.url !== undefined ? { url: section.url } : {}),
    ...(s
      ? {
          sentinel: {
            nodes: s.nodes.map(node),
            masterName: s.masterName,
            ...(s.username !== undefined ? { username: s.username } : {}),
            ...(s.password !== undefined ? { password: s.password } : {}),
            tls: s.tls,
          },
        }
      : {}),
    ...(c
      ? {
          cluster: {
            nodes: c.nodes.map(node),
            ...(c.natMap
              ? {
                  natMap: Object.fromEntries(Object.entries(c.natMap).map(([k, v]) => [k, node(v)])),
                }
              : {}),
          },
        }
      : {}),
    ...(section.username !== undefined ? { username: section.username } : {}),
    ...(section.password !== undefined ? { password: section.password } : {}),
    ...(tls ? { tls } : {}),
  };
}
