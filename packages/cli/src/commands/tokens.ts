/**
 * `keypool tokens ...`: gateway tokens, what callers of the gateway send as their API key, each with
 * its own limits. Through the admin API. The token itself is shown once, by `create`; afterwards
 * only its id and hint (`kpt_...abcd`) are ever shown.
 */
import { Option, type Command } from 'commander';
import type { GatewayTokenInfo } from '@keypool/core';
import type { Context } from '../context.js';
import { usageError } from '../errors.js';
import { readSecretLine } from './secrets.js';
import { count, NONE, table, usd, type Cell } from '../format.js';
import type { GatewayClient } from '../gateway-client.js';
import { addAdminOptions, examples, gatewayClient, integer, list, paragraphs, positive, type GatewayOptions } from '../options.js';

interface CreateOptions extends GatewayOptions {
  name: string;
  rpm?: number;
  rpmBurst?: number;
  budgetUsd?: number;
  budgetPeriod?: 'day' | 'month' | 'total';
  models?: string[];
  weight?: number;
  allowCritical?: boolean;
}

export function registerTokens(program: Command, ctx: Context): void {
  const tokens = program
    .command('tokens')
    .description('create, list and revoke gateway tokens: the API keys callers of the gateway use (admin API)')
    .addHelpText(
      'after',
      paragraphs(
        "Every tokens command uses the admin API: set KEYPOOL_ADMIN_TOKEN (or --admin-token) to the gateway's server.adminToken. Callers of the gateway send a token as their API key (Authorization: Bearer <token>); its limits apply fleet-wide.",
      ) +
        examples(
          "export OPENAI_API_KEY=$(keypool tokens create --name billing-service --rpm 600 --budget-usd 50)",
          'keypool tokens list',
          'keypool tokens revoke 4be1f0c2a9d3',
        ),
    );

  const hash = tokens
    .command('hash')
    .description("print the sha256 of a gateway token read from stdin, to declare the token in the config's tokens: section")
    .addHelpText(
      'after',
      paragraphs(
        'A token declared in the config by its hash (tokens: [{sha256, name, rpm, budget, models}]) is registered at start and again whenever Redis comes back without it: its callers survive a Redis wipe. The token itself never goes in the config. Offline: no gateway needed.',
      ) + examples('printf %s "$TOKEN" | keypool tokens hash'),
    );
  hash.action(async () => {
    const token = await readSecretLine(process.stdin, 'the gateway token');
    // loaded here: the other tokens commands only talk HTTP
    const { isGatewayToken, tokenHashOf } = await import('@keypool/core');
    if (!isGatewayToken(token)) throw usageError('stdin does not hold a gateway token (kpt_ and 43 characters, as keypool tokens create prints it)');
    ctx.out(`${tokenHashOf(token)}\n`);
  });

  const create = tokens
    .command('create')
    .description('create a gateway token and print it (once: it cannot be shown again)')
    .requiredOption('--name <name>', 'who or what uses the token (shown in lists and logs)')
    .option('--rpm <n>', 'requests per minute, fleet-wide (default 0 = no limit)', integer(0))
    .option('--rpm-burst <n>', 'requests admitted at once after a quiet spell (needs --rpm; default 2 s of rpm)', integer(1))
    .option('--budget-usd <x>', 'spend cap in USD per budget period (default: none)', positive)
    .addOption(new Option('--budget-period <period>', "budget period: UTC calendar day or month, or the token's whole life (default month)").choices(['day', 'month', 'total']))
    .option('--models <list>', 'model or route names the token may ask for, comma-separated (default: all)', list)
    .option('--weight <x>', "the token's weight in the fair shares between tenants when the pool is the bottleneck (default 1, at most 1000)", positive)
    .option('--allow-critical', 'may ask for the critical class (x-keypool-priority: critical); without it such requests get 403')
    .addHelpText(
      'after',
      paragraphs(
        'Output: the token alone on stdout, so that $(keypool tokens create ...) captures it; a note on stderr gives its id and says that it will not be shown again (the gateway keeps only its hash). With --json, stdout is the JSON answer, token included.',
        "Callers use it as their API key, e.g. the openai SDK with apiKey: <token> and baseURL: <gateway url>/v1.",
      ) +
        examples(
          'keypool tokens create --name ci',
          "keypool tokens create --name batch-jobs --rpm 120 --rpm-burst 10 --budget-usd 20 --budget-period day --models gpt-4o-mini",
          "TOKEN=$(keypool tokens create --name notebook --budget-usd 5 --budget-period total)",
          'keypool tokens create --name support-bot --weight 3 --allow-critical',
        ),
    );
  addAdminOptions(create).action(async (opts: CreateOptions) => {
    if (opts.rpmBurst !== undefined && !opts.rpm) throw usageError('--rpm-burst needs --rpm');
    if (opts.budgetPeriod !== undefined && opts.budgetUsd === undefined) throw usageError('--budget-period needs --budget-usd');
    const spec: Record<string, unknown> = { name: opts.name };
    if (opts.rpm !== undefined) spec.rpm = opts.rpm;
    if (opts.rpmBurst !== undefined) spec.rpmBurst = opts.rpmBurst;
    if (opts.budgetUsd !== undefined) spec.budget = { usd: opts.budgetUsd, period: opts.budgetPeriod ?? 'month' };
    if (opts.models !== undefined) spec.models = opts.models;
    if (opts.weight !== undefined) spec.weight = opts.weight;
    if (opts.allowCritical) spec.allowCritical = true;
    const created = await gatewayClient(opts, true).createToken(spec);
    ctx.out(opts.json ? `${JSON.stringify(created, null, 2)}\n` : `${created.token}\n`);
    ctx.err(`created gateway token ${created.id} (${created.name}). It will not be shown again: store it now.\n`);
  });

  const ls = tokens.command('list').description('one row per gateway token (never the token: its id and hint)').addHelpText('after', examples('keypool tokens list', 'keypool tokens list --json'));
  addAdminOptions(ls).action(async (opts: GatewayOptions) => {
    const all = await gatewayClient(opts, true).listTokens();
    ctx.out(opts.json ? `${JSON.stringify({ tokens: all }, null, 2)}\n` : all.length ? tokensTable(all, ctx.color) : 'no gateway tokens\n');
  });

  const revoke = tokens
    .command('revoke <token>')
    .description('revoke a gateway token (by id, or by name when no other token has it): requests with it get 401 at once')
    .addHelpText('after', examples('keypool tokens revoke 4be1f0c2a9d3', 'keypool tokens revoke billing-service'));
  addAdminOptions(revoke).action(async (ref: string, opts: GatewayOptions) => {
    const client = gatewayClient(opts, true);
    const id = await resolveToken(client, ref);
    const r = await client.revokeToken(id);
    ctx.out(opts.json ? `${JSON.stringify(r, null, 2)}\n` : `revoked: gateway token ${id}${id !== ref ? ` (${ref})` : ''}; requests with it now get 401\n`);
  });
}

/** The id of the token `ref` names: that id, else the only token not revoked with that name. */
async function resolveToken(client: GatewayClient, ref: string): Promise<string> {
  const all = await client.listTokens();
  if (all.some((t) => t.id === ref)) return ref;
  const named = all.filter((t) => t.name === ref && !t.revokedAt);
  if (named.length === 1) return named[0]!.id;
  if (named.length > 1) throw usageError(`${named.length} tokens are named '${ref}' (${named.map((t) => t.id).join(', ')}): give the id`);
  return ref;
}

const TOKEN_HEADER = ['ID', 'NAME', 'HINT', 'RPM', 'BUDGET', 'MODELS', 'SPEND', 'REQUESTS', 'REVOKED'];

export function tokensTable(tokens: GatewayTokenInfo[], color: boolean): string {
  const rows = tokens.map((t): Cell[] => [
    t.id,
    t.name,
    t.hint,
    t.rpm > 0 ? `${t.rpm} (burst ${t.rpmBurst})` : NONE,
    t.budget ? `${usd(t.budget.usd)}/${t.budget.period}` : NONE,
    t.models.length ? t.models.join(',') : 'all',
    usd(t.spendUsd),
    count(t.requests),
    t.revokedAt ? { text: `yes, ${t.revokedAt.slice(0, 19).replace('T', ' ')} UTC`, style: 'red' } : 'no',
  ]);
  return table(TOKEN_HEADER, rows, { color, right: [6, 7] });
}
