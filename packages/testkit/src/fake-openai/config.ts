/**
 * The command-line syntax of keys and models (used by ./cli.ts; handy for benchmarks too).
 *
 * key:   <secret>[:name=<name>][:rpm=<n>][:tpm=<n>][:limiter=minute|window-1s|window-10s|bucket][:burst=<s>]
 *        [:latency=<ms>|<p50>/<p99>][:chunk=<ms>][:models=<a>+<b>][:revoked]
 * model: <id>[:type=chat|embedding][:latency=...][:chunk=<ms>][:reply=<tokens>][:dims=<n>]
 */
import { parseLatency } from './latency.js';
import { LIMITER_MODES, type LimiterMode } from './limits.js';
import type { FakeKeyOptions, FakeModelOptions } from './types.js';

function number(value: string | undefined, what: string): number {
  const n = Number(value);
  if (value === undefined || value === '' || !Number.isFinite(n) || n < 0) throw new TypeError(`${what} must be a number >= 0, got "${value ?? ''}"`);
  return n;
}

function fields(spec: string): [string, Array<[string, string | undefined]>] {
  const [head = '', ...rest] = spec.split(':');
  return [
    head.trim(),
    rest.map((f) => {
      const i = f.indexOf('=');
      return i < 0 ? [f.trim(), undefined] : [f.slice(0, i).trim(), f.slice(i + 1).trim()];
    }),
  ];
}

/** `sk-a:rpm=60:tpm=10000` -> `{ key: 'sk-a', rpm: 60, tpm: 10000 }` */
export function parseKeySpec(spec: string): FakeKeyOptions {
  const [key, rest] = fields(spec);
  if (!key) throw new TypeError('a key spec needs the key before any ":"');
  const o: FakeKeyOptions = { key };
  for (const [name, value] of rest) {
    if (name === 'name' && value) o.name = value;
    else if (name === 'rpm') o.rpm = number(value, 'rpm');
    else if (name === 'tpm') o.tpm = number(value, 'tpm');
    else if (name === 'limiter') {
      if (!LIMITER_MODES.includes(value as LimiterMode)) throw new TypeError(`limiter must be one of ${LIMITER_MODES.join(', ')}, got "${value ?? ''}"`);
      o.limiter = value as LimiterMode;
    } else if (name === 'burst') o.burstSeconds = number(value, 'burst');
    else if (name === 'latency' && value) o.latency = parseLatency(value);
    else if (name === 'chunk') o.chunkDelayMs = number(value, 'chunk');
    else if (name === 'models' && value) o.models = value.split('+').filter(Boolean);
    else if (name === 'revoked' && value === undefined) o.revoked = true;
    else throw new TypeError(`unknown key field "${name}" (expected name, rpm, tpm, limiter, burst, latency, chunk, models, revoked)`);
  }
  return o;
}

/** `gpt-4o-mini:latency=50/400:reply=64` -> `{ id: 'gpt-4o-mini', latency: { p50Ms: 50, p99Ms: 400 }, replyTokens: 64 }` */
export function parseModelSpec(spec: string): FakeModelOptions {
  const [id, rest] = fields(spec);
  if (!id) throw new TypeError('a model spec needs the model id before any ":"');
  const o: FakeModelOptions = { id };
  for (const [name, value] of rest) {
    if (name === 'type' && (value === 'chat' || value === 'embedding')) o.type = value;
    else if (name === 'latency' && value) o.latency = parseLatency(value);
    else if (name === 'chunk') o.chunkDelayMs = number(value, 'chunk');
    else if (name === 'reply') o.replyTokens = number(value, 'reply');
    else if (name === 'dims') o.dimensions = number(value, 'dims');
    else throw new TypeError(`unknown model field "${name}" (expected type, latency, chunk, reply, dims)`);
  }
  return o;
}

/** A comma-separated list of specs. */
export function parseList<T>(text: string, parse: (spec: string) => T): T[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(parse);
}
