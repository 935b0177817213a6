import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';
import { packageRoot } from './package-dir.js';

/**
 * The Lua scripts and the one module that calls them. Each script is `lua/<name>-<numKeys>.lua`;
 * `--- @include "x"` lines pull in `lua/includes/x.lua`. Scripts are registered with ioredis
 * `defineCommand` under a name carrying a hash of their text, so two versions deployed side by
 * side never run each other's code; ioredis handles EVALSHA and NOSCRIPT.
 */

const LUA_DIR = fileURLToPath(new URL('lua/', packageRoot(import.meta.url)));

function loadLua(file: string, seen = new Set<string>()): string {
  const text = readFileSync(LUA_DIR + file, 'utf8');
  return text.replace(/^--- @include "([\w-]+)"$/gm, (_, name: string) => {
    if (seen.has(name)) return '';
    seen.add(name);
    return loadLua(`includes/${name}.lua`, seen);
  });
}

interface ScriptDef {
  file: string;
  /** Fixed number of KEYS, or undefined when the caller passes numkeys (acquire: 4 + 2 per group). */
  keys: number | undefined;
}

const DEFS = {
  acquire: { file: 'acquire-4.lua', keys: undefined },
  release: { file: 'release-7.lua', keys: 7 },
  upsertKey: { file: 'upsertKey-5.lua', keys: undefined },
  setState: { file: 'setState-5.lua', keys: 5 },
  status: { file: 'status-5.lua', keys: 5 },
  extend: { file: 'extend-2.lua', keys: 2 },
  probe: { file: 'probe-3.lua', keys: 3 },
  housekeep: { file: 'housekeep-4.lua', keys: undefined },
  tokenAdmit: { file: 'tokenAdmit-3.lua', keys: 3 },
  tokenSettle: { file: 'tokenSettle-2.lua', keys: 2 },
  tokenCreate: { file: 'tokenCreate-3.lua', keys: 3 },
  tokenRevoke: { file: 'tokenRevoke-1.lua', keys: 1 },
  tokenInfo: { file: 'tokenInfo-4.lua', keys: 4 },
} satisfies Record<string, ScriptDef>;

export type ScriptName = keyof typeof DEFS;

interface Loaded {
  name: ScriptName;
  command: string;
  lua: string;
  keys: number | undefined;
}

let loaded: Loaded[] | undefined;

/** Script sources with includes inlined, and their versioned command names. */
export function scripts(): Loaded[] {
  loaded ??= (Object.entries(DEFS) as [ScriptName, ScriptDef][]).map(([name, def]) => {
    const lua = loadLua(def.file);
    const hash = createHash('sha1').update(lua).digest('hex').slice(0, 10);
    return { name, command: `kp_${name}_${hash}`, lua, keys: def.keys };
  });
  return loaded;
}

type Client = Redis | Cluster;
type Caller = (...args: (string | number)[]) => Promise<unknown>;

/** Typed calls of the scripts on one client. */
export class ScriptRunner {
  private readonly fns: Record<ScriptName, Caller>;

  constructor(client: Client) {
    const fns = {} as Record<ScriptName, Caller>;
    for (const s of scripts()) {
      const c = client as unknown as Record<string, Caller | undefined>;
      if (typeof c[s.command] !== 'function') {
        client.defineCommand(s.command, s.keys === undefined ? { lua: s.lua } : { lua: s.lua, numberOfKeys: s.keys });
      }
      fns[s.name] = (...args) => (client as unknown as Record<string, Caller>)[s.command]!(...args);
    }
    this.fns = fns;
  }

  call(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const def = DEFS[name];
    return def.keys === undefined ? this.fns[name](keys.length, ...keys, ...args) : this.fns[name](...keys, ...args);
  }
}

/** Redis key names of one pool. All share the hash tag `{pool}` so every script runs on a Cluster. */
export class PoolKeys {
  readonly cfg: string;
  readonly st: string;
  readonly leases: string;
  readonly meta: string;
  readonly spend: string;
  /** Gateway tokens: sha256 hex -> settings JSON (see lua/includes/tokens.lua). */
  readonly tok: string;
  /** Gateway token id -> sha256 hex. */
  readonly tokId: string;
  /** Gateway token id -> state (msgpack). */
  readonly tokSt: string;
  /** Gateway token reservations, scored by expiry. */
  readonly tokRes: string;
  /** Scheduler: job name -> JSON of its schedule and last run (written by @keypool/worker). */
  readonly sched: string;
  /** Scheduler: job name:outcome -> runs (counters). */
  readonly schedRuns: string;
  /** Scheduler: a capped stream of run events (started / completed / failed), for ops and tests. */
  readonly schedLog: string;
  /** LLM queue: finished jobs and their waits (completed, failed, waitMs, c:<epoch minute>). */
  readonly queueStats: string;
  /** Prefix of the pool's BullMQ queues (scheduler, llm): the pool's hash tag, so its Cluster slot. */
  readonly bull: string;
  private readonly prefix: string;

  constructor(pool: string) {
    this.prefix = `kp:{${pool}}:`;
    this.cfg = `${this.prefix}cfg`;
    this.st = `${this.prefix}st`;
    this.leases = `${this.prefix}leases`;
    this.meta = `${this.prefix}meta`;
    this.spend = `${this.prefix}spend`;
    this.tok = `${this.prefix}tok`;
    this.tokId = `${this.prefix}tok:id`;
    this.tokSt = `${this.prefix}tok:st`;
    this.tokRes = `${this.prefix}tok:res`;
    this.sched = `${this.prefix}sched`;
    this.schedRuns = `${this.prefix}sched:runs`;
    this.schedLog = `${this.prefix}sched:log`;
    this.queueStats = `${this.prefix}queue:stats`;
    this.bull = `${this.prefix}bull`;
  }

  /** Candidate set of a key group (keys serving the same models). */
  avail(group: string): string {
    return `${this.prefix}g:${group}:avail`;
  }

  /** Keys of a group that wait for a time to become usable, scored by that time. */
  wait(group: string): string {
    return `${this.prefix}g:${group}:wait`;
  }

  /** A pattern matching every Redis key of this pool (for tests and tools). */
  get pattern(): string {
    return `${this.prefix}*`;
  }
}
