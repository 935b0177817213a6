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
 * Scripts go to Redis by the SHA-1 of their inlined text (EVALSHA; EVAL with the source the first
 * time on each connection, and again after a NOSCRIPT), so two versions deployed side by side never
 * run each other's code; `command` (`kp_<name>_<hash>`) names a version in logs and tools. The
 * commands are written by ScriptCommand below, not ioredis' defineCommand (see there why). Only
 * commands.ts calls them.
 */

const LUA_DIR = fileURLToPath(new URL('lua/', packageRoot(import.meta.url)));

/** The pool's scripts: lua/ holds exactly one file for each, and no other. */
export const SCRIPT_NAMES = [
  'acquire',
  'release',
  'extend',
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

const FILE_RE = /^([A-Za-z][A-Za-z0-9]*)(?:-(\d+))?\.lua$/;
const INCLUDE_RE = /^--- @include "([\w-]+)"$/gm;

/**
 * The source of `dir/file` with its includes inlined from `dir/includes/`. An include named
 * twice (directly or through another include) is inlined once, where it is first named.
 */
export function inlineIncludes(dir: string, file: string): string {
  const done = new Set<string>();
  const expand = (path: string, chain: string[]): string =>
    readFileSync(join(dir, path), 'utf8').replace(INCLUDE_RE, (_, name: string) => {
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

/** A script as the wire sends it: EVALSHA and its sha, or the first time on a connection EVAL and its source. */
interface Wire {
  sha: string;
  shaHead: string;
  luaHead: string;
  /** The connections (sockets) this script was sent to as EVAL: from then on, EVALSHA. */
  loaded: WeakSet<object>;
}

/**
 * One script call, written by hand: ioredis' own script commands convert and frame every value on
 * every call, and a pool's acquire and release carry about 40 values each, most of them the same
 * every time. Here a Packed run is written as it is. Like ioredis' Script, the source goes as EVAL
 * the first time on each connection and EVALSHA after; a NOSCRIPT reply (Redis lost its scripts)
 * is answered by ScriptRunner.call sending it again as EVAL.
 */
class ScriptCommand extends Command {
  constructor(
    private readonly wire: Wire,
    keys: readonly string[] | Packed<string>,
    private readonly argv: readonly ScriptArg[],
    /** No caller waits on this reply on a request's path: it may share the next write (see Coalescer). */
    private readonly background: boolean,
  ) {
    const names = keys instanceof Packed ? keys.values : keys;
    // the real KEYS in args: a Cluster finds the slot from them
    super('evalsha', [wire.sha, names.length, ...names], UTF8);
    this.keysResp = keys instanceof Packed ? keys.resp : null;
  }

  private readonly keysResp: string | null;

  override toWritable(socket: object): string {
    const w = this.wire;
    let head: string;
    if (w.loaded.has(socket)) head = w.shaHead;
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
  private readonly corked = new Set<Writable>();
  private timer: NodeJS.Timeout | undefined;
  private readonly flushAll = (): void => {
    for (const s of this.corked) s.uncork();
    this.corked.clear();
  };

  hold(socket: Writable): void {
    if (this.corked.has(socket) || typeof socket.cork !== 'function') return;
    socket.cork();
    this.corked.add(socket);
    // armed when the first socket is held (so a stream of held commands cannot push it back for
    // ever); one timer, armed again rather than made again
    if (this.corked.size > 1) return;
    if (this.timer) this.timer.refresh();
    else {
      this.timer = setTimeout(this.flushAll, COALESCE_MS);
      this.timer.unref();
    }
  }

  release(socket: Writable): void {
    if (!this.corked.delete(socket)) return;
    // after this command's write (ioredis makes it when toWritable returns), in the same tick
    process.nextTick(uncork, socket);
  }
}
const uncork = (socket: Writable) => socket.uncork();
const coalescer = new Coalescer();

/** The scripts, called by name on one client; replies are parsed in commands.ts. */
export class ScriptRunner {
  private readonly wires = {} as Record<ScriptName, Wire>;

  constructor(private readonly client: Client) {
    for (const s of scripts()) {
      const sha = createHash('sha1').update(s.lua).digest('hex');
      this.wires[s.name] = { sha, shaHead: flat(bulk('evalsha') + bulk(sha)), luaHead: flat(bulk('eval') + bulk(s.lua)), loaded: new WeakSet() };
    }
  }

  /** Run `name` with `keys` and `args` (the number of keys goes with them). */
  call(name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background = false): Promise<unknown> {
    return this.client.sendCommand(new ScriptCommand(this.wires[name], keys, args, background)) as Promise<unknown>;
  }

  /**
   * Whether `e` says Redis does not know the script (restarted, SCRIPT FLUSH, a failover to a
   * replica that never ran it); then the next call of `name` sends its source on every connection.
   */
  lost(name: ScriptName, e: unknown): boolean {
    if (!(e instanceof Error) || !e.message.startsWith(NOSCRIPT)) return false;
    this.wires[name].loaded = new WeakSet();
    return true;
  }
}
