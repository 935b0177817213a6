/**
 * Text output: tables whose columns fit their content, numbers as people read them, and ANSI
 * colours only when asked for (stdout is a terminal).
 */

export type Style = 'bold' | 'dim' | 'red' | 'green' | 'yellow';

const SGR: Record<Style, [number, number]> = { bold: [1, 22], dim: [2, 22], red: [31, 39], green: [32, 39], yellow: [33, 39] };

/** A cell: plain text, or text with a style applied when colours are on. */
export type Cell = string | { text: string; style?: Style | undefined };

const textOf = (c: Cell) => (typeof c === 'string' ? c : c.text);

export function paint(text: string, style: Style | undefined, color: boolean): string {
  if (!color || !style || !text) return text;
  const [on, off] = SGR[style];
  return `\u001b[${on}m${text}\u001b[${off}m`;
}

/** Display width: code points (the tables hold names, numbers and a few symbols, no wide characters). */
const width = (s: string) => [...s].length;

/**
 * Rows under a header, columns separated by two spaces and as wide as their widest cell, no
 * trailing spaces. `right` names the columns (by index) to align right (numbers).
 */
export function table(header: string[], rows: Cell[][], opts: { color: boolean; right?: number[] }): string {
  const right = new Set(opts.right ?? []);
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(textOf(r[i] ?? '')))));
  const line = (cells: Cell[], headerStyle?: Style) =>
    cells
      .map((c, i) => {
        const text = textOf(c);
        const pad = ' '.repeat(widths[i]! - width(text));
        const styled = paint(text, headerStyle ?? (typeof c === 'string' ? undefined : c.style), opts.color);
        return right.has(i) ? pad + styled : i === cells.length - 1 ? styled : styled + pad;
      })
      .join('  ')
      .trimEnd();
  return [line(header, 'bold'), ...rows.map((r) => line(r))].join('\n') + '\n';
}

/** `-` for absent values. */
export const NONE = '-';

/** 12345 -> `12345`; null (no limit) -> `-`. */
export const count = (n: number | null | undefined) => (n === null || n === undefined ? NONE : String(Math.round(n)));

/** Dollars with enough digits to show small spends: `$0.0042`, `$12.50`. */
export function usd(n: number | null | undefined): string {
  if (n === null || n === undefined) return NONE;
  if (n === 0) return '$0';
  return `$${Math.abs(n) < 1 ? n.toFixed(4) : n.toFixed(2)}`;
}

/** 0.0123 -> `1.2%`. */
export const percent = (rate: number | null | undefined) => (rate === null || rate === undefined ? NONE : `${(rate * 100).toFixed(1)}%`);

/** A duration in ms as `850ms`, `42s`, `5m10s`, `3h12m`, `2d4h`. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  return `${Math.floor(h / 24)}d${h % 24 ? `${h % 24}h` : ''}`;
}

/** Time from `now` until an ISO instant, or undefined when absent or past. */
export function until(iso: string | null | undefined, now: number): string | undefined {
  if (!iso) return undefined;
  const ms = Date.parse(iso) - now;
  return ms > 0 ? duration(ms) : undefined;
}
