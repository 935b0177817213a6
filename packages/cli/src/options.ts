/**
 * Options shared by the commands that talk to a running gateway, and the argument parsers. A parser
 * throws commander's InvalidArgumentError: commander then prints `error: option '--rpm <n>'
 * argument 'x' is invalid. <why>` and the command exits 2.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { actor } from './context.js';
import { usageError } from './errors.js';
import { GatewayClient } from './gateway-client.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** A whole number >= min. */
export const integer =
  (min = 0) =>
  (value: string): number => {
    const n = Number(value);
    if (!/^\s*-?\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected a whole number >= ${min}`);
    return n;
  };

/** A finite number > 0. */
export function positive(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number > 0');
  return n;
}

/** `a,b, c` -> ['a', 'b', 'c']. */
export function list(value: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw new InvalidArgumentError('expected a comma-separated list, e.g. gpt-4o,gpt-4o-mini');
  return items;
}

/** An http(s) URL. */
export function httpUrl(value: string): string {
  try {
    const u = new URL(value);
    if (u.protocol === 'http:' || u.protocol === 'https:') return value;
  } catch {
    // reported below
  }
  throw new InvalidArgumentError('expected an http:// or https:// URL, e.g. http://127.0.0.1:8080');
}

export interface GatewayOptions {
  url: string;
  adminToken?: string;
  statusToken?: string;
  json?: boolean;
}

/** --url (env KEYPOOL_URL) and --json. */
export function addGatewayOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', 'gateway to talk to').env('KEYPOOL_URL').default(DEFAULT_URL).argParser(httpUrl))
    .option('--json', "print the gateway's JSON answer (for scripts) instead of text");
}

/** --url, --json and --admin-token (env KEYPOOL_ADMIN_TOKEN). */
export function addAdminOptions(cmd: Command): Command {
  return addGatewayOptions(cmd).addOption(
    new Option('--admin-token <token>', "the gateway's server.adminToken (prefer the env var: a flag shows in ps)").env('KEYPOOL_ADMIN_TOKEN'),
  );
}

/** --url, --json, --admin-token and --status-token (env KEYPOOL_STATUS_TOKEN): what reads /status. */
export function addStatusOptions(cmd: Command): Command {
  return addAdminOptions(cmd).addOption(
    new Option('--status-token <token>', "the gateway's server.statusToken, when it sets one (the admin token works too; prefer the env var)").env('KEYPOOL_STATUS_TOKEN'),
  );
}

/** A client of the gateway named by the options; with `admin`, the admin token must be known. */
export function gatewayClient(opts: GatewayOptions, admin = false): GatewayClient {
  if (admin && !opts.adminToken) {
    throw usageError("no admin token: set KEYPOOL_ADMIN_TOKEN (or pass --admin-token) to the gateway's server.adminToken");
  }
  return new GatewayClient({ url: opts.url, adminToken: opts.adminToken, statusToken: opts.statusToken, actor: actor() });
}

/** Help text lines `  $ keypool ...` under "Examples:". */
export function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;
}

/** Paragraphs for the help, each wrapped at 80 columns, a blank line before each. */
export function paragraphs(...texts: string[]): string {
  return texts.map((t) => `\n${wrap(t, 80)}\n`).join('');
}

function wrap(text: string, width: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join('\n');
}

/** The options that set a key's limits (keys set, secrets add). */
export interface KeyLimitOptions {
  rpm?: number;
  tpm?: number;
  rpmBurst?: number;
  tpmBurst?: number;
  maxConcurrent?: number;
  weight?: number;
  budgetUsd?: number;
  budgetPeriod?: 'day' | 'month' | 'total';
  tpmCounts?: 'estimate' | 'usage';
}
