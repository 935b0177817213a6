/**
 * What a benchmark prints: exactly one JSON object on stdout with `--json`, else a readable report;
 * progress and logs always on stderr, so that `npm run -s bench:x -- --json | jq` works.
 */
import os from 'node:os';

/** Cores this process may use. */
export const CORES = os.availableParallelism?.() ?? os.cpus().length;

/** A progress logger writing `[label] message` lines to stderr. */
export const logger =
  (label: string) =>
  (msg: string): void =>
    void process.stderr.write(`[${label}] ${msg}\n`);

/** A number for a table: thousands separators, fixed decimals, `n/a` for null, undefined or NaN. */
export const fmt = (x: number | null | undefined, digits = 0): string =>
  x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** Rows as columns: the first left-aligned, the others right-aligned, two spaces apart. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

/** Label / value lines, labels padded to one width. */
export function list(rows: string[][]): string {
  const w = Math.max(...rows.map((r) => r[0]!.length));
  return rows.map((r) => `${r[0]!.padEnd(w)}  ${r[1] ?? ''}`).join('\n');
}

/** The machine a result was measured on. */
export function machine(): { node: string; cores: number; cpuModel: string; platform: string } {
  return { node: process.version, cores: CORES, cpuModel: os.cpus()[0]?.model ?? 'unknown', platform: `${process.platform}-${process.arch}` };
}

/** The result on stdout: one JSON line with `--json`, else `render(result)`. */
export function printResult<R>(result: R, json: boolean, render: (r: R) => string): void {
  process.stdout.write((json ? JSON.stringify(result) : render(result)) + '\n');
}
