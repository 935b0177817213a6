/**
 * The Redis deployments users run, started for a test with the real redis-server: a TLS server
 * with a CA the test makes (openssl) and an ACL user, and a Sentinel group (one master, one replica,
 * three sentinels) whose master a test may kill. No vitest import: benchmarks use it too.
 *
 * redis-server's TLS options: https://redis.io/docs/latest/operate/oss_and_stack/management/security/encryption/
 * Sentinel's configuration: https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, spawnRedisServer, type SpawnedRedis } from './redis-server.js';

const run = promisify(execFile);
const HOST = '127.0.0.1';

/** PEM files made by {@link makeTlsFiles}: a CA, a server and a client certificate it signed, and an unrelated CA. */
export interface TlsFiles {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here: trusting it alone must fail. */
  otherCa: string;
  remove(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd, timeout: 30_000 }).catch((e: Error & { stderr?: string }) => {
    throw new Error(`openssl ${args[0]} failed: ${e.message}\n${e.stderr ?? ''}`);
  });
}

/** A private CA and certificates for 127.0.0.1 / localhost, in a temp dir (openssl on the PATH). */
export async function makeTlsFiles(): Promise<TlsFiles> {
  const dir = await mkdtemp(join(tmpdir(), 'keypool-tls-'));
  const days = ['-days', '2'];
  for (const ca of ['ca', 'other-ca']) {
    await openssl(
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${ca}.key`, '-out', `${ca}.crt`, ...days, '-subj', `/CN=keypool test ${ca}`],
      dir
    );
  }
  await run('sh', ['-c', 'printf "subjectAltName=DNS:localhost,IP:127.0.0.1\\n" > server.ext'], { cwd: dir });
  for (const [name, ext] of [
    ['server', ['-extfile', 'server.ext']],
    ['client', []],
  ] as const) {
    await openssl(
      [
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.csr`,
        '-subj',
        `/CN=${name === 'server' ? 'localhost' : 'keypool client'}`,
      ],
      dir
    );
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, ...days, ...ext], dir);
  }
  const f = (n: string) => join(dir, n);
  return {
    dir,
    ca: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    otherCa: f('other-ca.crt'),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A redis-server answering TLS on `tlsPort` (its plain `port` is for the harness only). */
export interface TlsRedis extends SpawnedRedis {
  tlsPort: number;
  files: TlsFiles;
  /** The ACL user, when one was asked for (the default user is then disabled). */
  user?: { name: string; password: string };
}

/**
 * Starts redis-server with TLS on a free port (`tls-auth-clients`: `yes` requires the client
 * certificate), and, with `user`, an ACL user allowed everything while the default user is turned
 * off: a connection without that user's password is refused.
 */
export async function spawnTlsRedis(
  opts: {
    user?: { name: string; password: string };
    authClients?: 'yes' | 'optional' | 'no';
  } = {}
): Promise<TlsRedis> {
  const files = await makeTlsFiles();
  const tlsPort = await freePort();
  let server: SpawnedRedis;
  try {
    server = await spawnRedisServer({
      args: [
        '--tls-port',
        String(tlsPort),
        '--tls-cert-file',
        files.serverCert,
        '--tls-key-file',
        files.serverKey,
        '--tls-ca-cert-file',
        files.ca,
        '--tls-auth-clients',
        opts.authClients ?? 'optional',
      ],
    });
  } catch (e) {
    await files.remove();
    throw e;
  }
  if (opts.user) {
    const admin = new Redis({
      host: HOST,
      port: server.port,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
    });
    try {
      await admin.connect();
      await admin.call('ACL', 'SETUSER', opts.user.name, 'on', `>${opts.user.password}`, '~*', '&*', '+@all');
      await admin.call('ACL', 'SETUSER', 'default', 'off');
    } finally {
      admin.disconnect();
    }
  }
  const stop = server.stop;
  return {
    ...server,
    tlsPort,
    files,
    ...(opts.user ? { user: opts.user } : {}),
    stop: async () => {
      await stop();
      await files.remove();
    },
  };
}

/** A Sentinel group: one master, one replica, three sentinels. */
export interface SentinelGroup {
  masterName: string;
  /** The data nodes as started (index 0 is the first master). */
  nodes: SpawnedRedis[];
  sentinels: SpawnedRedis[];
  /** The sentinels' addresses, for the connection config. */
  sentinelNodes: { host: string; port: number }[];
  /** The address the sentinels currently give for the master. */
  master(): Promise<{ host: string; port: number }>;
  /** kill -9 the current master; resolves with its port once the sentinels name another one. */
  killMaster(opts?: { waitForFailover?: boolean; timeoutMs?: number }): Promise<{
    killedPort: number;
    newMaster?: { host: string; port: number };
  }>;
  stop(): Promise<void>;
}

/** Options of {@link startSentinelGroup}. */
export interface SentinelGroupOptions {
  masterName?: string;
  /** Sentinel down-after-milliseconds (default 1000: a test failover takes seconds, not the default 30 s). */
  downAfterMs?: number;
  /** Sentinel failover-timeout (default 3000). */
  failoverTimeoutMs?: number;
}

async function ask(port: number, ...args: string[]): Promise<unknown> {
  const c = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    connectTimeout: 1000,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return await c.call(...(args as [string, ...string[]]));
  } finally {
    c.disconnect();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Starts a master, a replica of it (`--replicaof`) and three sentinels monitoring it (quorum 2),
 * with short timeouts; resolves once the replica is in sync and every sentinel sees the replica
 * and the two other sentinels. Every process is stopped by stop(), also after a failed start.
 */
export async function startSentinelGroup(opts: SentinelGroupOptions = {}): Promise<SentinelGroup> {
  const masterName = opts.masterName ?? 'kpmaster';
  const started: SpawnedRedis[] = [];
  const stop = async () => void (await Promise.all(started.map((s) => s.stop())));
  try {
    const master = await spawnRedisServer();
    started.push(master);
    const replica = await spawnRedisServer({
      args: ['--replicaof', HOST, String(master.port)],
    });
    started.push(replica);
    await waitFor('replica in sync', 30_000, async () => String(await ask(replica.port, 'INFO', 'replication')).includes('master_link_status:up'));
    const sentinels: SpawnedRedis[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await spawnRedisServer({
        configFile: () => ({
          name: 'sentinel.conf',
          text:
            [
              `sentinel monitor ${masterName} ${HOST} ${master.port} 2`,
              `sentinel down-after-milliseconds ${masterName} ${opts.downAfterMs ?? 1000}`,
              `sentinel failover-timeout ${masterName} ${opts.failoverTimeoutMs ?? 3000}`,
              `sentinel parallel-syncs ${masterName} 1`,
            ].join('\n') + '\n',
        }),
        args: ['--sentinel'],
      });
      started.push(s);
      sentinels.push(s);
    }
    await waitFor('sentinels see the replica and each other', 60_000, async () => {
      for (const s of sentinels) {
        const m = (await ask(s.port, 'SENTINEL', 'MASTER', masterName)) as string[];
        const f = Object.fromEntries(m.flatMap((v, i) => (i % 2 === 0 ? [[v, m[i + 1]]] : [])));
        if (Number(f['num-slaves']) < 1 || Number(f['num-other-sentinels']) < 2) return false;
      }
      return true;
    });
    const masterAddr = async () => {
      for (const s of sentinels) {
        const r = (await ask(s.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName).catch(() => null)) as [string, string] | null;
        if (r) return { host: r[0], port: Number(r[1]) };
      }
      throw new Error('no sentinel answers');
    };
    const nodes = [master, replica];
    return {
      masterName,
      nodes,
      sentinels,
      sentinelNodes: sentinels.map((s) => ({ host: s.host, port: s.port })),
      master: masterAddr,
      async killMaster(o = {}) {
        const cur = await masterAddr();
        const node = nodes.find((n) => n.port === cur.port);
        if (!node) throw new Error(`the master ${cur.host}:${cur.port} is not a node of this group`);
        node.kill9();
        if (o.waitForFailover === false) return { killedPort: cur.port };
        let next: { host: string; port: number } | undefined;
        await waitFor('sentinels promote a replica', o.timeoutMs ?? 30_000, async () => {
          next = await masterAddr();
          if (next.port === cur.port) return false;
          return String(await ask(next.port, 'ROLE')).startsWith('master');
        });
        return { killedPort: cur.port, newMaster: next! };
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
