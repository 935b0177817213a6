/**
 * The benchmarks' command line: every benchmark takes `--json` and `-h/--help` besides its own
 * options, all given as strings and checked here, so that a bad value stops the run before anything
 * is spawned, with a message that names the flag.
 */
import { parseArgs } from 'node:util';

const COMMON = {
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** Each option with its default: a string option, a boolean flag (false), or null: a string option without a default. */
type Spec = Record<string, string | boolean | null>;
type Value<D> = D extends boolean ? boolean : D extends string ? string : string | undefined;
/** The parsed values: booleans, and strings (undefined only for a string option without a default). */
export type Values<S extends Spec> = { -readonly [K in keyof S]: Value<S[K]> } & { json: boolean };

/**
 * Parse `argv` (default: the process's) with `spec` plus `--json` and `--help`; on `--help` print
 * `usage` and exit 0. Unknown flags and positionals are errors.
 */
export function parseBenchArgs<const S extends Spec>(usage: string, spec: S, argv?: string[]): Values<S> {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; default?: string | boolean }> = { ...COMMON };
  for (const [name, d] of Object.entries(spec)) options[name] = d === null ? { type: 'string' } : { type: typeof d === 'boolean' ? 'boolean' : 'string', default: d };
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as { values: Record<string, unknown> };
  if (values.help) {
    process.stdout.write(usage + '\n');
    process.exit(0);
  }
  return values as unknown as Values<S>;
}

/** A number flag within [min, max] (an integer when `int`); the message names the flag and its range. */
export function num(name: string, v: string, min: number, max = Infinity, int = false): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n))) {
    const range = max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new Error(`--${name} must be ${int ? 'an integer' : 'a number'} ${range}, got "${v}"`);
  }
  return n;
}

/** An integer flag within [min, max]. */
export const int = (name: string, v: string, min: number, max = Infinity): number => num(name, v, min, max, true);

/** A comma-separated list of numbers, each within [min, max]. */
export function numList(name: string, v: string, min: number, max = Infinity): number[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => num(name, s, min, max));
}

/** One of a few words. */
export function oneOf<const T extends string>(name: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v)) throw new Error(`--${name} must be ${allowed.join(' or ')}, got "${v}"`);
  return v as T;
}

/** A comma-separated subset of a few words. */
export function subset<const T extends string>(name: string, v: string, allowed: readonly T[]): Set<T> {
  const out = new Set(v.split(',').map((s) => s.trim()).filter(Boolean));
  for (const o of out) if (!(allowed as readonly string[]).includes(o)) throw new Error(`--${name}: unknown part "${o}" (use ${allowed.join(', ')})`);
  return out as Set<T>;
}

/** An on|off flag. */
export function onOff(name: string, v: string): boolean {
  if (v === 'on' || v === 'off') return v === 'on';
  throw new Error(`--${name} must be on or off, got "${v}"`);
}
