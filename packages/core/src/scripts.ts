import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';
import { packageRoot } from './package-dir.js';

/**
 * The Lua loader. A script is `<name>-<numKeys>.lua`, or `<name>.lua` when the number of KEYS
 * varies and the caller passes numkeys (bullmq's convention): the file name is the one place a
 * key count is written. `--- @include "x"` lines pull in `includes/x.lua`, each include once per
 * script (at its first mention); a missing include or a cycle is an error that names it.
 * Scripts are registered with ioredis `defineCommand` under a name carrying a hash of their text,
 * so two versions deployed side by side never run each other's code; ioredis handles EVALSHA and
 * NOSCRIPT. Only commands.ts calls them.
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
type Caller = (...args: (string | number)[]) => Promise<unknown>;
type Call = (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;

/** The scripts defined on one client, called by name; replies are parsed in commands.ts. */
export class ScriptRunner {
  private readonly fns = {} as Record<ScriptName, Call>;

  constructor(client: Client) {
    const c = client as unknown as Record<string, Caller | undefined>;
    for (const s of scripts()) {
      if (typeof c[s.command] !== 'function') {
        client.defineCommand(s.command, s.keys === undefined ? { lua: s.lua } : { lua: s.lua, numberOfKeys: s.keys });
      }
      this.fns[s.name] =
        s.keys === undefined ? (keys, args) => c[s.command]!(keys.length, ...keys, ...args) : (keys, args) => c[s.command]!(...keys, ...args);
    }
  }

  call(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    return this.fns[name](keys, args);
  }
}
