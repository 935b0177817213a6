/**
 * The Lua loader on fixture directories (test/fixtures/lua-*): key counts from file names, includes
 * inlined once, and the errors a packaging mistake gets (a missing include, a cycle, two files for
 * one script). Then the package's own scripts against SCRIPT_NAMES.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SCRIPT_NAMES, inlineIncludes, keypoolLibrary, loadScripts, scripts } from '../src/scripts.js';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}/`, import.meta.url));
const count = (text: string, needle: string) => text.split(needle).length - 1;

describe('script loader', () => {
  it('takes the number of KEYS from <name>-<n>.lua, and none (numkeys from the caller) from <name>.lua', () => {
    const loaded = loadScripts(fixture('lua-ok'));
    expect(loaded.map((s) => [s.name, s.file, s.keys])).toEqual([
      ['pair', 'pair-2.lua', 2],
      ['spread', 'spread.lua', undefined],
    ]);
    for (const s of loaded) expect(s.command).toMatch(new RegExp(`^kp_${s.name}_[0-9a-f]{10}$`));
  });

  it('inlines an include named twice (through two other includes) once, where it is first named', () => {
    const lua = inlineIncludes(fixture('lua-ok'), 'pair-2.lua');
    expect(count(lua, '@shared-body')).toBe(1);
    expect(count(lua, '@first-body')).toBe(1);
    expect(count(lua, '@second-body')).toBe(1);
    expect(lua.indexOf('@shared-body')).toBeLessThan(lua.indexOf('@first-body'));
    expect(lua.indexOf('@first-body')).toBeLessThan(lua.indexOf('@second-body'));
    expect(lua).not.toMatch(/^--- @include/m);
  });

  it('a missing include is an error naming the file that includes it and the file it looked for', () => {
    const dir = fixture('lua-missing');
    expect(() => loadScripts(dir)).toThrow(`broken-1.lua includes "nowhere", but ${dir}includes/nowhere.lua does not exist`);
  });

  it('a circular include is an error naming the cycle, not silently dropped', () => {
    expect(() => loadScripts(fixture('lua-cycle'))).toThrow('circular @include in loop-1.lua: ping -> pong -> ping');
  });

  it('two files for one script name are an error: the key count could not be told', () => {
    expect(() => loadScripts(fixture('lua-twins'))).toThrow(/two files for script "same" in .*: same-2\.lua and same\.lua/);
  });
});

describe("the package's scripts", () => {
  const all = scripts();

  it('are exactly SCRIPT_NAMES, one file each', () => {
    expect(all.map((s) => s.name).sort()).toEqual([...SCRIPT_NAMES].sort());
    const files = readdirSync(fileURLToPath(new URL('../lua/', import.meta.url))).filter((f) => f.endsWith('.lua'));
    expect(all.map((s) => s.file).sort()).toEqual(files.sort());
  });

  it('acquire, upsertKey and the housekeeping scripts take a variable number of KEYS; the others a fixed one', () => {
    const variable = ['acquire', 'upsertKey', 'housekeepLeases', 'housekeepKeys'];
    const keys = Object.fromEntries(all.map((s) => [s.name, s.keys]));
    expect(keys).toMatchObject({ acquire: undefined, upsertKey: undefined, housekeepLeases: undefined, housekeepKeys: undefined, release: 11, setState: 5, tokenRevoke: 1, statusHead: 3, statusPage: 3, seriesRead: 1 });
    for (const s of all) if (!variable.includes(s.name)) expect(s.keys).toBeGreaterThan(0);
  });

  it('make one Functions library: every include once, one function per script, named by the hash of the text', () => {
    const lib = keypoolLibrary();
    expect(lib.code.startsWith(`#!lua name=${lib.name}\n`)).toBe(true);
    const hash = lib.name.replace('keypool_', '');
    expect(hash).toMatch(/^[0-9a-f]{10}$/);
    expect(count(lib.code, 'local function nowMs()')).toBe(1);
    expect(count(lib.code, 'local function windowEarliest(')).toBe(1);
    expect(lib.code).not.toMatch(/^--- @include/m);
    for (const s of all) {
      expect(lib.functions[s.name]).toBe(`${s.name}_${hash}`);
      expect(count(lib.code, `'${s.name}_${hash}'`)).toBe(1);
    }
    // flags where EVAL's behaviour must be kept: reads answer while Redis refuses writes, releases run under OOM
    expect(lib.code).toContain(`redis.register_function{function_name='statusPage_${hash}', flags={'no-writes'}, callback=function(KEYS, ARGV)`);
    expect(lib.code).toContain(`redis.register_function{function_name='release_${hash}', flags={'allow-oom'}, callback=function(KEYS, ARGV)`);
    expect(lib.code).toContain(`redis.register_function('acquire_${hash}', function(KEYS, ARGV)`);
    // the hash covers the whole text, wrappers and flags included
    expect(createHash('sha1').update(lib.code.replaceAll(hash, '@HASH@')).digest('hex').slice(0, 10)).toBe(hash);
    // window.lua is used by common.lua: defined before common's first use of it
    expect(lib.code.indexOf('local function windowEarliest(')).toBeLessThan(lib.code.indexOf('local function evaluate('));
  });

  it("health.lua's written-out histogram format and empty histogram have one counter per bucket", () => {
    const src = readFileSync(fileURLToPath(new URL('../lua/includes/health.lua', import.meta.url)), 'utf8');
    const nb = /local BOUNDS = \{([^}]*)\}/.exec(src)![1]!.split(',').filter((x) => x.trim()).length + 1;
    expect(/^local HFMT = '<((?:I4)*)'$/m.exec(src)![1]!.length).toBe(2 * nb);
    expect(/^local EMPTY = '((?:\\0)*)'$/m.exec(src)![1]!.length).toBe(2 * 4 * nb);
  });

  it('each name only its own includes: in the library every include is visible to every script, but EVALSHA (Redis 6, ACLs) runs a script alone', () => {
    const code = (lua: string) => lua.replace(/--\[\[[\s\S]*?\]\]/g, '').replace(/--.*$/gm, '').replace(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"/g, "''");
    const defined = (lua: string) => {
      const names = new Set<string>();
      for (const m of code(lua).matchAll(/^local (?:function ([A-Za-z_]\w*)|([A-Za-z_][\w, ]*?)\s*=)/gm)) {
        for (const n of (m[1] ?? m[2]!).split(',')) names.add(n.trim());
      }
      return names;
    };
    const dir = fileURLToPath(new URL('../lua/includes/', import.meta.url));
    const prelude = new Set(readdirSync(dir).flatMap((f) => [...defined(readFileSync(dir + f, 'utf8'))]));
    expect(prelude.has('nowMs')).toBe(true);
    const missing: string[] = [];
    for (const s of all) {
      const own = defined(s.lua);
      const body = code(s.lua);
      for (const n of prelude) if (!own.has(n) && new RegExp(`\\b${n}\\b`).test(body)) missing.push(`${s.file} uses ${n}`);
    }
    expect(missing).toEqual([]);
  });

  it('have every include inlined, "common" once', () => {
    for (const s of all) {
      expect(s.lua).not.toMatch(/^--- @include/m);
      expect(count(s.lua, 'local function nowMs()')).toBe(1);
    }
  });
});
