/**
 * Running the real `keypool` binary as a child process (node bin/keypool-dev.js), as users do. No
 * vitest import here: the unit tests use it too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The sources' `keypool` (bin/keypool-dev.js: tsx, the @keypool/source condition); the installed one runs dist (test/packaging). */
export const BIN = fileURLToPath(new URL('../bin/keypool-dev.js', import.meta.url));
export const REPO = fileURLToPath(new URL('../../..', import.meta.url));

/** What the caller's environment must not leak into a child: every setting the CLI or the gateway reads. */
const SCRUB = [
  'KEYPOOL_URL',
  'KEYPOOL_ADMIN_TOKEN',
  'KEYPOOL_STATUS_TOKEN',
  'KEYPOOL_CONFIG',
  'KEYPOOL_HOST',
  'KEYPOOL_PORT',
  'KEYPOOL_POOL',
  'KEYPOOL_LOG_LEVEL',
  'REDIS_URL',
  'REDIS_SENTINELS',
  'REDIS_SENTINEL_MASTER',
  'REDIS_SENTINEL_PASSWORD',
  'REDIS_CLUSTER_SEEDS',
  'REDIS_USERNAME',
  'REDIS_PASSWORD',
  'REDIS_TLS_CA',
  'NO_COLOR',
  'FORCE_COLOR',
];

export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of SCRUB) delete env[k];
  for (const [k, v] of Object.entries(extra))
    if (v === undefined) delete env[k];
    else env[k] = v;
  return env;
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `keypool <args>`; resolves when it exits (killed after timeoutMs). */
export function keypool(args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: REPO,
      env: childEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A long-running `keypool serve` (or `keypool worker`): its JSON log lines as they come, and its exit. */
export interface ServeChild {
  child: ChildProcess;
  /** Parsed stdout lines (pino JSON); a line that is not JSON is kept as { raw }. */
  logs: Record<string, unknown>[];
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The first log line `match` accepts (waits for it; rejects if the process exits first or after timeoutMs). */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** The gateway's URL, from its "keypool gateway listening on ..." line. */
  listening(timeoutMs?: number): Promise<string>;
}

export function startServe(args: string[], env: Record<string, string | undefined>, cwd = REPO): ServeChild {
  return startLongRunning('serve', args, env, cwd);
}

/** `keypool <command> <args>` left running (serve or worker), as {@link startServe}. */
export function startLongRunning(command: 'serve' | 'worker', args: string[], env: Record<string, string | undefined>, cwd = REPO): ServeChild {
  const child = spawn(process.execPath, [BIN, command, ...args], {
    cwd,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let out = '';
  let err = '';
  let partial = '';
  const waiters = new Set<() => void>();
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const l of lines.filter(Boolean)) {
      try {
        logs.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        logs.push({ raw: l });
      }
    }
    for (const w of waiters) w();
  });
  child.stderr!.on('data', (c) => (err += c));
  const exited = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
  }>((resolve) => {
    child.once('exit', (code, signal) => {
      for (const w of waiters) w();
      resolve({ code, signal });
    });
  });
  const waitForLog = (match: (line: Record<string, unknown>) => boolean, timeoutMs = 30_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const hit = logs.find(match);
        if (hit) return done(() => resolve(hit));
        if (child.exitCode !== null || child.signalCode !== null) {
          done(() => reject(new Error(`keypool ${command} exited (${child.exitCode ?? child.signalCode}) first.\nstdout:\n${out}\nstderr:\n${err}`)));
        }
      };
      const timer = setTimeout(() => done(() => reject(new Error(`no such log line within ${timeoutMs} ms.\nstdout:\n${out}\nstderr:\n${err}`))), timeoutMs);
      const done = (f: () => void) => {
        clearTimeout(timer);
        waiters.delete(check);
        f();
      };
      waiters.add(check);
      check();
    });
  return {
    child,
    logs,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForLog,
    async listening(timeoutMs) {
      const line = await waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('keypool gateway listening on '), timeoutMs);
      return /listening on (\S+)/.exec(line.msg as string)![1]!;
    },
  };
}
