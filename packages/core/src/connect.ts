/**
 * The one Redis connection factory: gateway, worker, CLI, secret sync and BullMQ all open their
 * connections here, from one description of where Redis is (a standalone URL, a Sentinel group or
 * a Cluster, each with TLS and an ACL user), with options chosen by what the connection is for.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

/** One Redis node. */
export interface RedisNodeAddress {
  host: string;
  port: number;
}

/** TLS settings (PEM contents, not file names: the config loader reads the files). */
export interface RedisTlsOptions {
  /** CA certificate(s) the server's certificate must chain to (a private CA). */
  ca?: string;
  /** Client certificate and key (servers started with tls-auth-clients yes). */
  cert?: string;
  key?: string;
  /** Name the server certificate must carry (SNI), when it is not the host connected to. */
  servername?: string;
  /** Default true; false accepts any certificate (tests only). */
  rejectUnauthorized?: boolean;
}

/**
 * Where Redis is. At most one of `url`, `sentinel`, `cluster`; `username`/`password`/`tls` apply to
 * the data nodes of any of them (they win over a password or user in the URL).
 */
export interface RedisConnection {
  /** redis:// or rediss:// (TLS). */
  url?: string;
  sentinel?: {
    nodes: RedisNodeAddress[];
    /** The master name the sentinels monitor (`sentinel monitor <name> ...`). */
    masterName: string;
    /** ACL user and password of the sentinels themselves (sentinel's requirepass / user). */
    username?: string;
    password?: string;
    /** Talk TLS to the sentinels too (with the same `tls` settings). */
    tls?: boolean;
  };
  cluster?: {
    /** Seed nodes; the rest of the cluster is discovered from them. */
    nodes: RedisNodeAddress[];
    /** Address a node announces -> address reachable from here ("10.0.0.5:6379" -> {host, port}). */
    natMap?: Record<string, RedisNodeAddress>;
  };
  username?: string;
  password?: string;
  tls?: RedisTlsOptions;
}

/**
 * What a connection is for; each picks its options:
 * - `pool`: the pool's client. Fails fast: no offline queue (a queued acquire run minutes later would
 *   leak a slot), one retry, commandTimeout.
 * - `bullmq`: BullMQ's connection: retries forever (maxRetriesPerRequest null), as BullMQ requires.
 * - `sync`: the secret protocol: fail fast, 2 s commands.
 * - `status`: the gateway's queue-status reader: fail fast, 2 s commands.
 * - `cli`: a short-lived command: waits for Redis only up to its connect timeout.
 */
export type RedisPurpose = 'pool' | 'bullmq' | 'sync' | 'status' | 'cli';

/** Options of {@link createRedis}. */
export interface CreateRedisOptions {
  /** Command timeout of the `pool` purpose (redisDown.timeoutMs); default 1000. */
  timeoutMs?: number;
  /** Default true: the caller calls connect(). */
  lazyConnect?: boolean;
  /** Extra ioredis options, applied last (tests, benchmarks). */
  redisOptions?: RedisOptions;
}

/**
 * A client still connected to a demoted master (after a Sentinel failover, or a managed service's
 * DNS switch) gets READONLY on its writes: reconnect, which asks the sentinels for the new master.
 * 2 = reconnect and resend the command (a READONLY write changed nothing); the pool's client does
 * not resend (1): its call fails under the Redis-down policy and the next one goes to the new master.
 */
function reconnectOnReadonly(resend: boolean): RedisOptions['reconnectOnError'] {
  return (err) => (/^READONLY/.test(err.message) ? (resend ? 2 : 1) : false);
}

function purposeOptions(purpose: RedisPurpose, o: CreateRedisOptions): RedisOptions {
  const timeoutMs = o.timeoutMs ?? 1000;
  switch (purpose) {
    case 'pool':
      return {
        // no auto-pipelining: it keeps one pipeline in flight per connection, so Node and Redis
        // take turns; plain writes let Redis read many callers' commands at once (bench: +55-80%)
        enableAutoPipelining: false,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: timeoutMs,
        connectTimeout: timeoutMs * 3,
        retryStrategy: (n) => Math.min(50 * 2 ** n, 2000),
        reconnectOnError: reconnectOnReadonly(false),
      };
    case 'bullmq':
      return {
        maxRetriesPerRequest: null,
        reconnectOnError: reconnectOnReadonly(true),
      };
    case 'sync':
      return {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: 2000,
        connectTimeout: 3000,
        reconnectOnError: reconnectOnReadonly(false),
      };
    case 'status':
      return {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: 2000,
        reconnectOnError: reconnectOnReadonly(false),
      };
    case 'cli':
      return {
        maxRetriesPerRequest: null,
        connectTimeout: 5000,
        reconnectOnError: reconnectOnReadonly(true),
      };
  }
}

/** The URL's parts as ioredis options (parsed here so that explicit fields win over the URL's). */
function urlOptions(url: string): RedisOptions {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`${describeRedis({ url })}: expected a redis:// or rediss:// URL`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  return {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(Number.isInteger(db) && db > 0 ? { db } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

function tlsOptions(tls: RedisTlsOptions | undefined): RedisOptions['tls'] | undefined {
  if (!tls) return undefined;
  const { ca, cert, key, servername, rejectUnauthorized } = tls;
  return {
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(servername !== undefined ? { servername } : {}),
    ...(rejectUnauthorized !== undefined ? { rejectUnauthorized } : {}),
  };
}

/** A connection given as a URL string is `{ url }`. */
export function toConnection(conn: RedisConnection | string): RedisConnection {
  return typeof conn === 'string' ? { url: conn } : conn;
}

/**
 * A client for `conn`, with the options of `purpose`. Not connected unless `lazyConnect: false`.
 * A Cluster for `cluster`, a Redis otherwise (Sentinel: ioredis asks the sentinels for the master,
 * follows a failover and reconnects on READONLY).
 */
export function createRedis(conn: RedisConnection | string, purpose: RedisPurpose, o: CreateRedisOptions = {}): Redis | Cluster {
  const c = toConnection(conn);
  const kinds = [c.url, c.sentinel, c.cluster].filter((k) => k !== undefined).length;
  if (kinds !== 1) throw new Error(`a Redis connection needs exactly one of url, sentinel, cluster (got ${kinds})`);
  const base = purposeOptions(purpose, o);
  const tls = tlsOptions(c.tls);
  const auth: RedisOptions = {
    ...(c.username !== undefined ? { username: c.username } : {}),
    ...(c.password !== undefined ? { password: c.password } : {}),
  };
  const lazyConnect = o.lazyConnect ?? true;
  if (c.cluster) {
    const redisOptions: RedisOptions = {
      ...base,
      ...auth,
      ...(tls ? { tls } : {}),
      ...o.redisOptions,
    };
    const options: ClusterOptions = {
      lazyConnect,
      redisOptions,
      enableOfflineQueue: base.enableOfflineQueue ?? true,
      enableAutoPipelining: false,
      slotsRefreshTimeout: Math.max(2000, base.connectTimeout ?? 3000),
      // TLS certificates name hosts, not the IPs the slot map lists: keep the names (ElastiCache's advice)
      ...(tls
        ? {
            dnsLookup: (address: string, cb: (err: Error | null, address: string) => void) => cb(null, address),
          }
        : {}),
      ...(base.maxRetriesPerRequest === null ? {} : { maxRedirections: 16 }),
      ...(c.cluster.natMap ? { natMap: c.cluster.natMap } : {}),
    };
    return new Cluster(c.cluster.nodes, options);
  }
  if (c.sentinel) {
    const s = c.sentinel;
    return new Redis({
      ...base,
      ...auth,
      lazyConnect,
      sentinels: s.nodes,
      name: s.masterName,
      role: 'master',
      ...(s.username !== undefined ? { sentinelUsername: s.username } : {}),
      ...(s.password !== undefined ? { sentinelPassword: s.password } : {}),
      ...(tls ? { tls, enableTLSForSentinelMode: true } : {}),
      ...(tls && s.tls ? { sentinelTLS: tls } : {}),
      // No failoverDetector: its +switch-master handler closes the connector while a reconnect may be
      // resolving the master, and ioredis (6.0) then ends the client for good (status 'end', no retry):
      // seen in 1 of 5 bench:failover runs. The dead master's closed socket, retryStrategy and the
      // READONLY reconnect below find the new master without it.
      failoverDetector: false,
      sentinelRetryStrategy: (n: number) => Math.min(100 * 2 ** n, 2000),
      ...o.redisOptions,
    });
  }
  const fromUrl = urlOptions(c.url!);
  return new Redis({
    ...base,
    ...fromUrl,
    ...auth,
    lazyConnect,
    ...(tls ? { tls } : {}),
    ...o.redisOptions,
  });
}

/** `conn` for a message or a log line: where it is, never a password. */
export function describeRedis(conn: RedisConnection | string): string {
  const c = toConnection(conn);
  const user = c.username !== undefined ? ` as user ${c.username}` : '';
  const tls = c.tls ? ' (TLS)' : '';
  const nodes = (n: RedisNodeAddress[]) => n.map((a) => `${a.host}:${a.port}`).join(',');
  if (c.sentinel) return `Sentinel master "${c.sentinel.masterName}" via ${nodes(c.sentinel.nodes)}${user}${tls}`;
  if (c.cluster) return `Cluster ${nodes(c.cluster.nodes)}${user}${tls}`;
  if (c.url === undefined) return '(no Redis configured)';
  try {
    const u = new URL(c.url);
    if (u.password) u.password = '***';
    return `${u.toString()}${user}${tls}`;
  } catch {
    return '(unparseable Redis URL)';
  }
}
