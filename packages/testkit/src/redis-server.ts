/**
 * Real Redis servers for tests: a standalone server and a 3-master cluster.
 *
 * Tests never use a mock. In order of preference the standalone server comes
 * from REDIS_URL, a testcontainers container (only when a Docker engine
 * answers) or a `redis-server` child process on a free port. The Redis that may
 * be listening on 127.0.0.1:6379 is never used by default: it may hold
 * somebody else's data.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import type { RedisNode } from './child-connect.js';

const HOST = '127.0.0.1';
/** Image used when a Docker engine is available; matches the redis-server 7 used elsewhere. */
const REDIS_IMAGE = 'redis:7-alpine';

/** Options for {@link spawnRedisServer}. */
export interface SpawnRedisOptions {
  /** Fixed port; default is a free port picked by {@link freePort}. */
  port?: number;
  /** Extra redis-server arguments, or a function of the server's fresh temp dir returning them. */
  args?: string[] | ((dir: string) => string[]);
  /** A config file to write in the temp dir and pass first (redis-server's config file must be its first argument; sentinels need one). */
  configFile?: (dir: string) => { name: string; text: string };
}

/** A redis-server child process that answers commands. */
export interface SpawnedRedis {
  host: string;
  port: number;
  /** `redis://127.0.0.1:<port>` */
  url: string;
  process: ChildProcess;
  /** SIGTERM, SIGKILL after 3 s, then remove the temp dir. Idempotent; safe after {@link kill9}. */
  stop(): Promise<void>;
  /** Simulates a crash: SIGKILL without waiting. Call {@link stop} afterwards to clean up. */
  kill9(): void;
}

/** A standalone Redis for a test run. */
export interface StartedRedis {
  url: string;
  kind: 'env' | 'container' | 'spawned';
  stop(): Promise<void>;
}

/** A Redis Cluster for a test run. */
export interface StartedCluster {
  nodes: RedisNode[];
  stop(): Promise<void>;
}

/** Returns a TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not read a free port'))));
    });
  });
}

/**
 * Starts `redis-server` on 127.0.0.1 with no persistence and a fresh temp dir,
 * and resolves once it answers commands (polled with `INFO server`, whose
 * process_id proves the answer comes from this child and not another Redis).
 *
 * @throws if redis-server is not on the PATH, exits early, or does not answer within ~10 s.
 */
export async function spawnRedisServer(opts: SpawnRedisOptions = {}): Promise<SpawnedRedis> {
  requireBinary('redis-server');
  // freePort() closes its socket before redis-server binds, so a parallel test
  // can grab the same port in between: retry with another port in that case.
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      return await spawnOnce(port, opts.args, opts.configFile);
    } catch (err) {
      const portClash = String((err as Error).message).includes('Address already in use');
      if (opts.port !== undefined || attempt >= 3 || !portClash) throw err;
    }
  }
}

async function spawnOnce(port: number, args: SpawnRedisOptions['args'], configFile: SpawnRedisOptions['configFile']): Promise<SpawnedRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'keypool-redis-'));
  const extra = typeof args === 'function' ? args(dir) : (args ?? []);
  const conf = configFile?.(dir);
  if (conf) await writeFile(join(dir, conf.name), conf.text);
  const argv = [...(conf ? [join(dir, conf.name)] : []), '--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir, ...extra];
  const child = spawn('redis-server', argv, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });

  // Keep draining both pipes (a full pipe would block redis-server) and keep
  // the tail of the log: Redis reports startup errors there.
  let log = '';
  const keep = (chunk: Buffer) => (log = (log + chunk.toString()).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    const done = () => ((exited = true), live.delete(child), resolve());
    child.once('exit', done);
    child.once('error', (err) => ((log += `\n${err.message}`), done()));
  });
  live.add(child);
  registerExitHook();

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (!exited) {
        const escalate = setTimeout(() => child.kill('SIGKILL'), 3_000);
        child.kill('SIGTERM');
        await exit;
        clearTimeout(escalate); // a pending timer would keep the test process alive
      }
      await rm(dir, { recursive: true, force: true });
    })());

  const deadline = Date.now() + 10_000;
  while (!(await answeredBy(port, child.pid))) {
    if (exited || Date.now() > deadline) {
      const why = exited ? `exited (code ${child.exitCode}, signal ${child.signalCode})` : 'did not answer within 10 s';
      await stop();
      throw new Error(`redis-server on port ${port} ${why}. Its output:\n${log.trim()}`);
    }
    await sleep(50);
  }
  return { host: HOST, port, url: `redis://${HOST}:${port}`, process: child, stop, kill9: () => void child.kill('SIGKILL') };
}

/**
 * Starts the standalone Redis for a test run: REDIS_URL if set, else a
 * testcontainers container if a Docker engine answers, else a spawned redis-server.
 */
export async function startRedis(): Promise<StartedRedis> {
  const url = process.env.REDIS_URL;
  if (url) return { url, kind: 'env', stop: async () => {} };
  const container = await tryContainer();
  if (container) return container;
  const server = await spawnRedisServer();
  return { url: server.url, kind: 'spawned', stop: server.stop };
}

async function tryContainer(): Promise<StartedRedis | undefined> {
  // Cheap check first, so machines without Docker never load testcontainers.
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return undefined;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await withTimeout(getContainerRuntimeClient(), 5_000, 'Docker engine did not answer within 5 s');
    const { RedisContainer } = await import('@testcontainers/redis');
    const container = await new RedisContainer(REDIS_IMAGE).start();
    return { url: container.getConnectionUrl(), kind: 'container', stop: async () => void (await container.stop()) };
  } catch (err) {
    console.warn(`[testkit] Docker not usable (${(err as Error).message.split('\n')[0]}); spawning redis-server instead`);
    return undefined;
  }
}

/**
 * Starts a 3-master Redis Cluster (no replicas) on 127.0.0.1, or uses
 * REDIS_CLUSTER_NODES (`host:port,host:port,...`) if set. Resolves once every
 * node reports `cluster_state:ok`.
 */
export async function startCluster(): Promise<StartedCluster> {
  const fromEnv = process.env.REDIS_CLUSTER_NODES;
  if (fromEnv) return { nodes: parseNodes(fromEnv), stop: async () => {} };
  requireBinary('redis-cli');

  const clusterArgs = (dir: string) => [
    '--cluster-enabled', 'yes',
    '--cluster-config-file', join(dir, 'nodes.conf'),
    '--cluster-node-timeout', '5000',
  ];
  const started = await Promise.allSettled([1, 2, 3].map(() => spawnRedisServer({ args: clusterArgs })));
  const servers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const stop = async () => void (await Promise.all(servers.map((s) => s.stop())));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }

  const nodes = servers.map(({ host, port }) => ({ host, port }));
  try {
    const addresses = nodes.map((n) => `${n.host}:${n.port}`);
    await promisify(execFile)('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 30_000,
    }).catch((err) => {
      // redis-cli reports most failures on stdout, which the default message omits.
      throw new Error(`redis-cli --cluster create failed: ${err.message}\n${err.stdout ?? ''}`);
    });
    // `create` returns once slots are assigned, but nodes agree on the
    // topology a little later; clients need every node to be ok.
    const deadline = Date.now() + 30_000;
    while (!(await allClusterOk(nodes))) {
      if (Date.now() > deadline) throw new Error(`cluster ${addresses.join(',')} never reached cluster_state:ok`);
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, stop };
}

async function allClusterOk(nodes: RedisNode[]): Promise<boolean> {
  const infos = await Promise.all(nodes.map((n) => command(n, 'CLUSTER', 'INFO').catch(() => '')));
  return infos.every((info) => String(info).includes('cluster_state:ok'));
}

function parseNodes(list: string): RedisNode[] {
  return list.split(',').map((entry) => {
    const [host, port] = entry.trim().split(':');
    if (!host || !Number(port)) throw new Error(`REDIS_CLUSTER_NODES entry "${entry}" is not host:port`);
    return { host, port: Number(port) };
  });
}

/**
 * True once the server on `port` answers and is process `pid`. Checking the
 * pid matters: if the port was taken (e.g. 6379), another Redis would answer
 * PING while ours is failing to bind.
 */
async function answeredBy(port: number, pid: number | undefined): Promise<boolean> {
  const info = String(await command({ host: HOST, port }, 'INFO', 'server').catch(() => ''));
  return pid !== undefined && info.includes(`process_id:${pid}\r\n`);
}

/** Runs one command on a fresh, non-retrying connection (so probing a dead port fails fast). */
async function command({ host, port }: RedisNode, name: string, ...args: string[]): Promise<unknown> {
  const client = new Redis({
    host,
    port,
    lazyConnect: true,
    connectTimeout: 1_000,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
  });
  client.on('error', () => {}); // failures surface through the rejected promise
  try {
    await client.connect();
    return await client.call(name, ...args);
  } finally {
    client.disconnect();
  }
}

function requireBinary(name: 'redis-server' | 'redis-cli'): void {
  const found = (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  if (!found) {
    throw new Error(
      `${name} is not on the PATH. Install it (Debian/Ubuntu: apt-get install redis-server redis-tools; macOS: brew install redis) ` +
        'or set REDIS_URL (and REDIS_CLUSTER_NODES for the cluster target) to a Redis the tests may use.',
    );
  }
}

// Safety net: if the test process dies without running teardown, do not leave
// redis-server processes behind (their temp dirs are small and in tmpdir).
const live = new Set<ChildProcess>();
let exitHookRegistered = false;
function registerExitHook(): void {
  if (exitHookRegistered) return;
  exitHookRegistered = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
