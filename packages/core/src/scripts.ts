import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Command, type Cluster, type Redis } from 'ioredis';
import { packageRoot } from './package-dir.js';

/**
 * The Lua loader. A script is `<name>-<numKeys>.lua`, or `<name>.lua` when the number of KEYS
 * varies and the caller passes numkeys (bullmq's convention): the file name is the one place a
 * key count is written. `--- @include "x"` lines pull in `includes/x.lua`, each include once per
 * script (at its first mention); a missing include or a cycle is an error that names it.
 * On Redis 7 and later the scripts run as Redis Functions: one library (`keypoolLibrary`) holds
 * every include once, at its top level, and each script as a function; its name and its functions'
 * carry a hash of the library's text, so two versions deployed side by side never run each other's
 * code. The library is loaded (FUNCTION LOAD) on every master at a client's first script call, and
 * again when FCALL answers that it is missing (a restart or failover that lost it). Where FUNCTION
 * is unknown (Redis 6) or not allowed (ACL), or with KEYPOOL_SCRIPT_MODE=evalsha, a script goes by
 * the SHA-1 of its inlined text (EVALSHA; EVAL with the source the first time on each connection,
 * and again after a NOSCRIPT); `command` (`kp_<name>_<hash>`) names a version in logs and tools.
 * Either way the commands are written by ScriptCommand below, not by ioredis' own script commands
 * (see there why). Only commands.ts calls them.
 */

const LUA_DIR = fileURLToPath(new URL('lua/', packageRoot(import.meta.url)));

/** The pool's scripts: lua/ holds exactly one file for each, and no other. */
export const SCRIPT_NAMES = [
  'acquire',
  'release',
  'extend',
  'sent',
  'upsertKey',
  'setState',
  'statusHead',
  'statusPage',
  'snapshotSave',
  'seriesRead',
  'seriesSweep',
  'probe',
  'housekeepLeases',
  'housekeepKeys',
  'tokenAdmit',
  'tokenSettle',
  'tokenCreate',
  'tokenRevoke',
  'tokenInfo',
  'tokenCount',
] as const;

export type ScriptName = (typeof SCRIPT_NAMES)[number];

export interface LoadedScript<N extends string = string> {
  name: N;
  /** File name in the scripts directory. */
  file: string;
  /** Number of KEYS from `<name>-<n>.lua`; undefined for `<name>.lua` (the caller passes numkeys). */
  keys: number | undefined;
  /** The source with its includes inlined. */
  lua: string;
  /** Versioned command name: `kp_<name>_<hash of the inlined source>`. */
  command: string;
}

/**
 * A Lua file's text. With KEYPOOL_VERIFY_STATE_CACHE=1 (tests), common.lua's kept states are
 * compared with a fresh decode each time one is handed out (a different library, by its hash).
 */
function readLua(path: string): string {
  const text = readFileSync(path, 'utf8');
  return process.env.KEYPOOL_VERIFY_STATE_CACHE === '1' ? text.replace('local VERIFY_STATE_CACHE = false', 'local VERIFY_STATE_CACHE = true') : text;
}

const FILE_RE = /^([A-Za-z][A-Za-z0-9]*)(?:-(\d+))?\.lua$/;
const INCLUDE_RE = /^--- @include "([\w-]+)"$/gm;

/**
 * The source of `dir/file` with its includes inlined from `dir/includes/`. An include named
 * twice (directly or through another include) is inlined once, where it is first named.
 */
export function inlineIncludes(dir: string, file: string): string {
  const done = new Set<string>();
  const expand = (path: string, chain: string[]): string =>
    readLua(join(dir, path)).replace(INCLUDE_RE, (_, name: string) => {
      if (chain.includes(name)) throw new Error(`circular @include in ${file}: ${[...chain, name].join(' -> ')}`);
      if (done.has(name)) return '';
      const inc = `includes/${name}.lua`;
      if (!existsSync(join(dir, inc))) throw new Error(`${path} includes "${name}", but ${join(dir, inc)} does not exist`);
      done.add(name);
      return expand(inc, [...chain, name]);
    });
  return expand(file, []);
}

/** Every script of `dir` (its top-level `.lua` files), includes inlined, key count from the file name. */
export function loadScripts(dir: string): LoadedScript[] {
  const out: LoadedScript[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.lua')).sort()) {
    const m = FILE_RE.exec(file);
    if (!m) throw new Error(`${join(dir, file)}: a script file is named <name>.lua or <name>-<numKeys>.lua`);
    const name = m[1]!;
    const twin = out.find((s) => s.name === name);
    if (twin) throw new Error(`two files for script "${name}" in ${dir}: ${twin.file} and ${file}`);
    const lua = inlineIncludes(dir, file);
    const hash = createHash('sha1').update(lua).digest('hex').slice(0, 10);
    out.push({ name, file, keys: m[2] === undefined ? undefined : Number(m[2]), lua, command: `kp_${name}_${hash}` });
  }
  return out;
}

const isScriptName = (name: string): name is ScriptName => (SCRIPT_NAMES as readonly string[]).includes(name);

let loaded: LoadedScript<ScriptName>[] | undefined;

/** The pool's scripts with includes inlined, and their versioned command names. */
export function scripts(): LoadedScript<ScriptName>[] {
  if (loaded) return loaded;
  const all = loadScripts(LUA_DIR);
  const unknown = all.filter((s) => !isScriptName(s.name)).map((s) => s.file);
  const missing = SCRIPT_NAMES.filter((n) => !all.some((s) => s.name === n));
  if (unknown.length || missing.length) {
    throw new Error(`keypool scripts in ${LUA_DIR} do not match SCRIPT_NAMES (missing: ${missing.join(', ') || 'none'}; unknown: ${unknown.join(', ') || 'none'})`);
  }
  loaded = all.filter((s): s is LoadedScript<ScriptName> => isScriptName(s.name));
  return loaded;
}

type Client = Redis | Cluster;

/** One ARGV value or KEYS name as the wire carries it (ioredis' toArg: an unsafe integer goes whole). */
const argText = (v: string | number): string => (typeof v === 'string' ? v : Number.isInteger(v) && !Number.isSafeInteger(v) ? BigInt(v).toString() : String(v));
/** A RESP bulk string. */
const bulk = (text: string): string => '$' + Buffer.byteLength(text) + '\r\n' + text + '\r\n';
/** The same text as one flat string (a string built by + is a rope that every write would flatten again). */
const flat = (text: string): string => Buffer.from(text, 'utf8').toString('utf8');

/**
 * Values that go with many calls alike (a pool's settings, a topology's KEYS), encoded for the
 * wire once: a call writes them as one piece instead of converting and framing each value again.
 */
export class Packed<V extends string | number = string | number> {
  /** Their RESP bulk strings, one after the other. */
  readonly resp: string;

  constructor(readonly values: readonly V[]) {
    this.resp = flat(values.map((v) => bulk(argText(v))).join(''));
  }

  /** `list` with every Packed run put back as its values (for a reader of the arguments: tests, logs). */
  static unpack<V extends string | number>(list: readonly (V | Packed<V>)[] | Packed<V>): V[] {
    return list instanceof Packed ? [...list.values] : list.flatMap((v) => (v instanceof Packed ? v.values : [v]));
  }
}

/** An ARGV entry: a value, or a run of values packed once. */
export type ScriptArg = string | number | Packed;

const NOSCRIPT = 'NOSCRIPT';
const UTF8 = { replyEncoding: 'utf8' } as const;

/**
 * A script as the wire sends it: FCALL and its function's name; or EVALSHA and its sha, the first
 * time on a connection EVAL and its source.
 */
interface Wire {
  fn: string;
  fnHead: string;
  sha: string;
  shaHead: string;
  luaHead: string;
  /** The connections (sockets) this script was sent to as EVAL: from then on, EVALSHA. */
  loaded: WeakSet<object>;
}

/**
 * One script call, written by hand: ioredis' own script commands convert and frame every value on
 * every call, and a pool's acquire and release carry about 40 values each, most of them the same
 * every time. Here a Packed run is written as it is. FCALL names the library's function; without
 * Functions, like ioredis' Script, the source goes as EVAL the first time on each connection and
 * EVALSHA after, and a NOSCRIPT reply (Redis lost its scripts) is answered by sending it again as
 * EVAL (ScriptRunner.lost).
 */
class ScriptCommand extends Command {
  constructor(
    private readonly wire: Wire,
    /** FCALL (the library's function), else EVALSHA. */
    private readonly fcall: boolean,
    keys: readonly string[] | Packed<string>,
    private readonly argv: readonly ScriptArg[],
    /** No caller waits on this reply on a request's path: it may share the next write (see Coalescer). */
    private readonly background: boolean,
  ) {
    const names = keys instanceof Packed ? keys.values : keys;
    // the real KEYS in args: a Cluster finds the slot from them
    super(fcall ? 'fcall' : 'evalsha', [fcall ? wire.fn : wire.sha, names.length, ...names], UTF8);
    this.keysResp = keys instanceof Packed ? keys.resp : null;
  }

  private readonly keysResp: string | null;

  override toWritable(socket: object): string {
    const w = this.wire;
    let head: string;
    if (this.fcall) head = w.fnHead;
    else if (w.loaded.has(socket)) head = w.shaHead;
    else {
      w.loaded.add(socket);
      this.name = 'eval';
      head = w.luaHead;
    }
    const a = this.args as string[];
    let count = a.length + 1;
    for (let i = 0; i < this.argv.length; i++) {
      const v = this.argv[i]!;
      count += v instanceof Packed ? v.values.length : 1;
    }
    let out = '*' + count + '\r\n' + head + bulk(String(a[1]));
    if (this.keysResp !== null) out += this.keysResp;
    else for (let i = 2; i < a.length; i++) out += bulk(a[i]!);
    for (let i = 0; i < this.argv.length; i++) {
      const v = this.argv[i]!;
      out += v instanceof Packed ? v.resp : bulk(argText(v));
    }
    // ioredis writes what this returns to `socket` as soon as it returns
    if (this.background) coalescer.hold(socket as Writable);
    else coalescer.release(socket as Writable);
    return out;
  }
}

/** How long a background command may wait for another to share its write with (ms). */
export const COALESCE_MS = 2;

/**
 * Background commands (a lease's release: the answer went out already) wait on a corked socket
 * for the next command or COALESCE_MS, whichever comes first, and go out in one write with it: a
 * write to Redis is a system call that wakes the server, about as costly on a busy machine as the
 * rest of a script call's client work. A command someone waits for (acquire) is never held: it
 * takes the held ones with it.
 */
class Coalescer {
  /**
   * The corked sockets (one per Redis connection in use, most often one). An array, not a Set: a
   * Set that takes and drops a socket at every release rehashes every few calls, each time into a
   * new table in the old generation (garbage for the next full collection).
   */
  private readonly corked: Writable[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly flushAll = (): void => {
    const c = this.corked;
    while (c.length > 0) c.pop()!.uncork();
  };

  hold(socket: Writable): void {
    if (this.corked.includes(socket) || typeof socket.cork !== 'function') return;
    socket.cork();
    this.corked.push(socket);
    // armed when the first socket is held (so a stream of held commands cannot push it back for
    // ever); one timer, armed again rather than made again
    if (this.corked.length > 1) return;
    if (this.timer) this.timer.refresh();
    else {
      this.timer = setTimeout(this.flushAll, COALESCE_MS);
      this.timer.unref();
    }
  }

  release(socket: Writable): void {
    const c = this.corked;
    const i = c.indexOf(socket);
    if (i < 0) return;
    const last = c.pop()!;
    if (i < c.length) c[i] = last;
    // after this command's write (ioredis makes it when toWritable returns), in the same tick
    process.nextTick(uncork, socket);
  }
}
const uncork = (socket: Writable) => socket.uncork();
const coalescer = new Coalescer();

export interface ScriptLibrary {
  /** `keypool_<hash of the library's text>`. */
  name: string;
  /** The FUNCTION LOAD payload: `#!lua name=...`, every include once, then one function per script. */
  code: string;
  /** Script name -> its function's name (`<script>_<hash>`). */
  functions: Record<string, string>;
}

/**
 * The Redis Functions library of `dir`'s scripts `list`: each include once at the library's top
 * level (after every include a script names before it), each script's body wrapped as a function
 * of (KEYS, ARGV), so the body reads its keys and arguments as it does under EVAL. An include's
 * top level must only define (constants, local functions): it runs once, at FUNCTION LOAD, where
 * redis.call is not allowed, and its tables are shared by every call.
 */
export function buildLibrary(dir: string, list: readonly LoadedScript[]): ScriptLibrary {
  const seen: string[] = [];
  const before = new Map<string, Set<string>>();
  for (const s of list) {
    // the includes the script pulls in, in the order its inlined source defines them
    const mine: string[] = [];
    const walk = (path: string) => {
      for (const m of readLua(join(dir, path)).matchAll(INCLUDE_RE)) {
        const name = m[1]!;
        if (mine.includes(name)) continue;
        mine.push(name);
        walk(`includes/${name}.lua`);
      }
    };
    walk(s.file);
    mine.forEach((name, i) => {
      if (!seen.includes(name)) seen.push(name);
      const set = before.get(name) ?? new Set<string>();
      for (const earlier of mine.slice(0, i)) set.add(earlier);
      before.set(name, set);
    });
  }
  const order: string[] = [];
  while (order.length < seen.length) {
    const next = seen.find((n) => !order.includes(n) && [...before.get(n)!].every((b) => order.includes(b)));
    if (!next) throw new Error(`the scripts of ${dir} name their includes in orders no library can keep: ${seen.filter((n) => !order.includes(n)).join(', ')}`);
    order.push(next);
  }
  // an include's own includes are inlined where it names them (common's window), as in a script
  const done = new Set<string>();
  const expand = (name: string): string => {
    done.add(name);
    return readLua(join(dir, `includes/${name}.lua`)).replace(INCLUDE_RE, (_, inner: string) => (done.has(inner) ? '' : expand(inner)));
  };
  const prelude = order.map((name) => (done.has(name) ? '' : expand(name))).join('\n');
  const bodies = list.map((s) => ({ name: s.name, body: readLua(join(dir, s.file)).replace(INCLUDE_RE, '') }));
  // the names carry a hash of the whole library text (wrappers and flags included): a release that
  // changes only how the library is put together gets a library of its own too
  const parts = [`#!lua name=keypool_${HASH_MARK}`, prelude];
  for (const b of bodies) {
    const flags = isScriptName(b.name) ? FLAGS[b.name] : undefined;
    const fn = `'${b.name}_${HASH_MARK}'`;
    parts.push(
      flags
        ? `redis.register_function{function_name=${fn}, flags={${flags.map((f) => `'${f}'`).join(', ')}}, callback=function(KEYS, ARGV)\n${b.body}\nend}`
        : `redis.register_function(${fn}, function(KEYS, ARGV)\n${b.body}\nend)`,
    );
  }
  const template = parts.join('\n');
  const hash = createHash('sha1').update(template).digest('hex').slice(0, 10);
  const functions: Record<string, string> = {};
  for (const b of bodies) functions[b.name] = `${b.name}_${hash}`;
  return { name: `keypool_${hash}`, code: template.replaceAll(HASH_MARK, hash), functions };
}

/** Where the library's hash goes in its text, before it is known. */
const HASH_MARK = '@HASH@';

/**
 * Function flags (scripts not named: none, as EVAL's scripts, except that Redis then refuses the
 * whole call under OOM or on a read-only replica, where EVAL refused only a write that grows memory):
 * - `no-writes`: the scripts that only read (status, series, the token count) keep answering while
 *   Redis refuses writes (OOM, MISCONF, min-replicas), as they did under EVAL;
 * - `allow-oom`: the scripts that give capacity back (release, extend, lease housekeeping, the token
 *   view that reaps expired reservations) still run under OOM, as under EVAL (their first write, a
 *   ZREM, frees memory): else leases would pile up until their deadlines while Redis is full.
 */
const FLAGS: Partial<Record<ScriptName, readonly string[]>> = {
  statusHead: ['no-writes'],
  statusPage: ['no-writes'],
  seriesRead: ['no-writes'],
  tokenInfo: ['allow-oom'], // it reaps expired reservations as it reads
  tokenCount: ['no-writes'],
  release: ['allow-oom'],
  extend: ['allow-oom'],
  sent: ['allow-oom'], // its ZADD follows a ZREM of the same size
  housekeepLeases: ['allow-oom'],
};

let library: ScriptLibrary | undefined;

/** The pool's scripts as one Redis Functions library. */
export function keypoolLibrary(): ScriptLibrary {
  return (library ??= buildLibrary(LUA_DIR, scripts()));
}

/** How the scripts run: `fcall` (Redis Functions, Redis >= 7) or `evalsha` (Redis 6, or FUNCTION not allowed). */
export type ScriptMode = 'fcall' | 'evalsha';

/** FUNCTION refused: an unknown command (Redis 6) or one the ACL user may not run. */
const NO_FUNCTIONS = /unknown command|^NOPERM.*'(?:fcall|function)/i;
/** The library itself refused (it does not compile or register on this server): EVALSHA runs the same scripts. */
const BAD_LIBRARY = /Error (?:registering|compiling) function|Library .* doesn't exist|Missing library metadata/i;
/** FCALL of a function the server does not have (restarted without it, a new master...). */
const NOT_LOADED = /function not found/i;

const isReplyError = (e: unknown): e is Error => e instanceof Error && e.name === 'ReplyError';
const refusesLibrary = (e: Error): boolean => NO_FUNCTIONS.test(e.message) || BAD_LIBRARY.test(e.message);

/** KEYPOOL_SCRIPT_MODE=evalsha: never use Redis Functions (tests run both modes with it). */
export function forcedScriptMode(env: NodeJS.ProcessEnv = process.env): ScriptMode | undefined {
  return env.KEYPOOL_SCRIPT_MODE === 'evalsha' ? 'evalsha' : undefined;
}

/**
 * The scripts on one client, called by name; replies are parsed in commands.ts. The mode is found
 * at the first call (FUNCTION LOAD on every master: `fcall`; refused: `evalsha`) and kept; an
 * FCALL that finds its function missing loads the library again and calls once more, and one that
 * is refused (the server or the ACL changed) turns the client to EVALSHA for good.
 */
export class ScriptRunner {
  private readonly wires = {} as Record<ScriptName, Wire>;
  private detecting: Promise<void> | undefined;
  private loading: Promise<void> | undefined;
  private current: ScriptMode | undefined;

  /** `mode`: 'detect' (at the first call), or one forced; by default KEYPOOL_SCRIPT_MODE's, else 'detect'. */
  constructor(
    private readonly client: Client,
    mode: ScriptMode | 'detect' = forcedScriptMode() ?? 'detect',
    /** Told when the client turns to EVALSHA after a refusal (for a warning in the log). */
    private readonly onModeChange?: (mode: ScriptMode, why: string) => void,
  ) {
    const lib = keypoolLibrary();
    for (const s of scripts()) {
      const sha = createHash('sha1').update(s.lua).digest('hex');
      const fn = lib.functions[s.name]!;
      this.wires[s.name] = {
        fn,
        fnHead: flat(bulk('fcall') + bulk(fn)),
        sha,
        shaHead: flat(bulk('evalsha') + bulk(sha)),
        luaHead: flat(bulk('eval') + bulk(s.lua)),
        loaded: new WeakSet(),
      };
    }
    if (mode !== 'detect') this.current = mode;
  }

  /** The mode found (undefined before the first call). */
  get mode(): ScriptMode | undefined {
    return this.current;
  }

  /** Run `name` with `keys` and `args` (the number of keys goes with them). */
  call(name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background = false): Promise<unknown> {
    const mode = this.current;
    if (mode === 'evalsha') return this.send(false, name, keys, args, background);
    if (mode === undefined) return this.detectThenCall(name, keys, args, background);
    return this.send(true, name, keys, args, background).catch((e: unknown) => this.recover(e, name, keys, args, background));
  }

  /**
   * Whether `e` says Redis does not know the script (EVALSHA: restarted, SCRIPT FLUSH, a failover
   * to a replica that never ran it); then the next call of `name` sends its source on every connection.
   */
  lost(name: ScriptName, e: unknown): boolean {
    if (!(e instanceof Error) || !e.message.startsWith(NOSCRIPT)) return false;
    this.wires[name].loaded = new WeakSet();
    return true;
  }

  private send(fcall: boolean, name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background: boolean): Promise<unknown> {
    return this.client.sendCommand(new ScriptCommand(this.wires[name], fcall, keys, args, background)) as Promise<unknown>;
  }

  private async detectThenCall(name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background: boolean): Promise<unknown> {
    await (this.detecting ??= this.detect().finally(() => (this.detecting = undefined)));
    return this.call(name, keys, args, background);
  }

  /** An FCALL failed: load the library again and retry once when it is missing; turn to EVALSHA when FCALL is refused. */
  private async recover(e: unknown, name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background: boolean): Promise<unknown> {
    if (!isReplyError(e)) throw e;
    if (NOT_LOADED.test(e.message)) {
      await this.reload();
      return this.send(this.current !== 'evalsha', name, keys, args, background);
    }
    if (NO_FUNCTIONS.test(e.message)) {
      this.use('evalsha', e.message);
      return this.send(false, name, keys, args, background);
    }
    throw e;
  }

  /** Load the library again (it went missing): a server that now refuses it turns this client to EVALSHA. */
  private async reload(): Promise<void> {
    try {
      await this.load();
    } catch (e) {
      if (!(isReplyError(e) && refusesLibrary(e))) throw e;
      this.use('evalsha', e.message);
    }
  }

  private use(mode: ScriptMode, why?: string): void {
    if (why !== undefined && this.current !== mode) this.onModeChange?.(mode, why);
    this.current = mode;
  }

  private async detect(): Promise<void> {
    if (this.current) return;
    try {
      await this.load();
      this.use('fcall');
    } catch (e) {
      if (isReplyError(e) && refusesLibrary(e)) this.use('evalsha', e.message);
      else throw e;
    }
  }

  /** FUNCTION LOAD the library on every master (one that has it already is fine: same name, same text). */
  private load(): Promise<void> {
    return (this.loading ??= this.loadAll().finally(() => (this.loading = undefined)));
  }

  private async loadAll(): Promise<void> {
    const code = keypoolLibrary().code;
    const nodes: Redis[] = this.client.isCluster ? (this.client as Cluster).nodes('master') : [this.client as Redis];
    if (nodes.length === 0) throw new Error('no Cluster master known yet');
    const results = await Promise.allSettled(
      nodes.map((n) =>
        n.call('FUNCTION', 'LOAD', code).catch((e: unknown) => {
          if (!(isReplyError(e) && /already exists/i.test(e.message))) throw e;
        }),
      ),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    // a refusal of the library (Redis 6, the ACL, a library this server cannot compile) is an
    // answer: the client runs EVALSHA; a master that cannot take it now (unreachable, LOADING,
    // READONLY after a failover, OOM...) gets it at the first FCALL that finds it missing there,
    // so one such master does not stop the pool's work on the others
    const refused = failed.find((e) => isReplyError(e) && refusesLibrary(e));
    if (refused) throw refused;
    if (failed.length === nodes.length) throw failed[0];
  }
}
