/**
 * Benchmark child processes and their IPC channel, shared by the benchmarks that run several
 * processes (gateway.ts with gateway-child.ts, queue.ts with queue-worker.ts): the parent's
 * `BenchChild` (spawn, ready message, request/answer by id, stop) and the child's `serveRequests`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Every child process a run started: killed on the way out, whatever the way. */
export const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export interface BenchChildOptions {
  /** The child's script (run with tsx), its role (first argument) and a label for messages. */
  script: string;
  role: string;
  label?: string;
  /** Passed to the child as its second argument (JSON, base64). */
  config: unknown;
  nodeFlags?: string[];
  /** The child's environment (default: the parent's). */
  env?: NodeJS.ProcessEnv;
  /** Called when the child exits before stop() was asked (not while the run is being interrupted). */
  onUnexpectedExit?: (message: string) => void;
  /** SIGTERM and SIGKILL after stop() asked and the child has not exited (ms). Default 5000, 8000. */
  stopAfterMs?: [term: number, kill: number];
}

/** A child with its IPC channel: it sends `{type: 'ready', ...}` once up, then answers requests by id. */
export class BenchChild<Ready extends { type: 'ready'; pid: number }> {
  readonly proc: ChildProcess;
  readonly ready: Promise<Ready>;
  readonly label: string;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private readonly exited: Promise<void>;
  private stopping = false;
  private readonly stopAfterMs: [number, number];

  constructor(opts: BenchChildOptions) {
    const label = (this.label = opts.label ?? opts.role);
    this.stopAfterMs = opts.stopAfterMs ?? [5000, 8000];
    const arg = Buffer.from(JSON.stringify(opts.config)).toString('base64');
    this.proc = spawn(process.execPath, [...(opts.nodeFlags ?? []), '--import', 'tsx', opts.script, opts.role, arg], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: opts.env ?? process.env });
    children.add(this.proc);
    // stdout must stay the parent's (--json): whatever a child prints goes to stderr, prefixed
    for (const s of [this.proc.stdout!, this.proc.stderr!]) createInterface({ input: s }).on('line', (l) => process.stderr.write(`[${label}] ${l}\n`));
    let exitInfo = '';
    this.exited = new Promise((resolve) =>
      this.proc.once('exit', (code, signal) => {
        children.delete(this.proc);
        exitInfo = `${code ?? signal}`;
        if (!this.stopping) opts.onUnexpectedExit?.(`the ${label} process (pid ${this.proc.pid}) exited unexpectedly (${exitInfo})`);
        for (const p of this.pending.values()) p.reject(new Error(`${label} process exited (${exitInfo})`));
        this.pending.clear();
        resolve();
      }),
    );
    this.ready = new Promise<Ready>((resolve, reject) => {
      this.proc.on('message', (m: unknown) => {
        const msg = m as { type?: string; id?: number; ok?: boolean; value?: unknown; error?: string };
        if (msg.type === 'ready') return resolve(msg as Ready);
        const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id!);
        if (msg.ok) p.resolve(msg.value);
        else p.reject(new Error(`${label}: ${msg.error}`));
      });
      void this.exited.then(() => reject(new Error(`${label} process exited (${exitInfo}) before it was ready`)));
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  request<T>(type: string, extra: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (!this.proc.connected) return Promise.reject(new Error(`${this.label} process is gone`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.label}: no answer to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v as T)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.proc.send({ id, type, ...extra });
    });
  }

  /** Ask it to close and exit; SIGTERM, then SIGKILL, if it takes too long. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const term = setTimeout(() => this.proc.kill('SIGTERM'), this.stopAfterMs[0]);
    const kill = setTimeout(() => this.proc.kill('SIGKILL'), this.stopAfterMs[1]);
    if (this.proc.connected) this.proc.send({ id: 0, type: 'stop' });
    else this.proc.kill('SIGTERM');
    await this.exited;
    clearTimeout(term);
    clearTimeout(kill);
  }
}

// ---- the child's side ------------------------------------------------------------------------

export type Request = { id: number; type: string; file?: string; [k: string]: unknown };
export type Handler = (req: Request) => Promise<unknown>;

/** Send a message to the parent, if it is still there. */
export function send(msg: unknown): void {
  if (process.connected) process.send!(msg);
}

/**
 * Answer the parent's requests with `handlers` until it asks to stop (or goes away, or a signal
 * comes): then `shutdown`, and exit (forced after `forceExitMs`).
 */
export function serveRequests(handlers: Record<string, Handler>, shutdown: () => Promise<void>, opts: { label?: string; forceExitMs?: number } = {}): void {
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(1), opts.forceExitMs ?? 5000);
    force.unref();
    void shutdown()
      .catch((e: unknown) => process.stderr.write(`[${opts.label ?? 'bench child'}] shutdown: ${(e as Error)?.message ?? String(e)}\n`))
      .finally(() => process.exit(0));
  };
  process.on('message', (raw) => {
    const req = raw as Request;
    if (req.type === 'stop') {
      send({ id: req.id, ok: true, value: null });
      return stop();
    }
    const h = handlers[req.type];
    if (!h) return send({ id: req.id, ok: false, error: `unknown request ${req.type}` });
    h(req).then(
      (value) => send({ id: req.id, ok: true, value }),
      (e: unknown) => send({ id: req.id, ok: false, error: (e as Error)?.message ?? String(e) }),
    );
  });
  process.on('disconnect', stop);
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/**
 * A child script's entry: run `roles[argv[2]]` with the config the parent passed (argv[3], JSON,
 * base64); a child started by hand, without the IPC channel, says which script to run instead.
 */
export function runChildRole(name: string, parentScript: string, roles: Record<string, (cfg: never) => Promise<void>>): void {
  const [role, encoded] = process.argv.slice(2);
  if (!process.send) {
    process.stderr.write(`${name}: started without an IPC channel; run ${parentScript} instead\n`);
    process.exit(2);
  }
  const cfg: unknown = JSON.parse(Buffer.from(encoded ?? '', 'base64').toString('utf8') || 'null');
  const run = role ? roles[role] : undefined;
  const started = run ? run(cfg as never) : Promise.reject(new Error(`unknown role ${role}`));
  started.catch((e: unknown) => {
    process.stderr.write(`[${name} ${role}] failed to start: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
}
