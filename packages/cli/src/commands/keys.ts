/**
 * `keypool keys ...`: the keys of a running gateway's pool, through its admin API. A key is named
 * by its id (what `keypool keys list` shows) or by its name when no other key has that name.
 */
import { Option, type Command } from 'commander';
import type { KeyStatus } from '@keypool/core';
import type { Context } from '../context.js';
import { usageError } from '../errors.js';
import type { GatewayClient, KeyActionResult } from '../gateway-client.js';
import { addAdminOptions, examples, gatewayClient, integer, list, paragraphs, positive, type GatewayOptions, type KeyLimitOptions } from '../options.js';
import { keysTable } from './status.js';

/** The key actions of the admin API (POST /admin/keys/:id/<action>, remove is DELETE). */
const ACTIONS = {
  disable: { done: 'disabled', what: 'no new leases until `keypool keys enable`; leases in flight finish' },
  enable: { done: 'enabled', what: 'active again; also lifts a revocation (the provider answered 401/403) and a drain' },
  drain: { done: 'draining', what: 'no new leases; leases in flight finish; the key stays in the pool' },
  retire: { done: 'retiring', what: 'drain, then remove once the last lease in flight is released (the graceful remove)' },
  reset: { done: 'reset', what: 'close the breaker, end cooling, forget the health history and learnt limits' },
  'reset-budget': { done: 'budget reset', what: 'start the budget period again from zero spend' },
  remove: { done: 'removed', what: 'remove at once; releases of its leases in flight are then ignored (prefer retire)' },
} as const;

type Action = keyof typeof ACTIONS;

interface SetOptions extends GatewayOptions, KeyLimitOptions {
  models?: string[];
  name?: string;
  baseUrl?: string;
  provider?: string;
}

export function registerKeys(program: Command, ctx: Context): void {
  const keys = program
    .command('keys')
    .description("list a running gateway's keys and act on them (admin API)")
    .addHelpText(
      'after',
      paragraphs(
        "Every keys command uses the admin API: set KEYPOOL_ADMIN_TOKEN (or --admin-token) to the gateway's server.adminToken. A key is named by its id (keypool keys list) or by its name if no other key has it.",
        'The change applies to the whole pool (every gateway sharing it) at once, and the gateway logs it with who made it (x-keypool-actor: user@host).',
      ) +
        examples('keypool keys list', 'keypool keys disable openai-1', 'keypool keys set openai-1 --rpm 300 --max-concurrent 20', 'keypool keys retire 3f9a1c0b2d4e5f60'),
    );

  const ls = keys.command('list').description('one row per key, as in keypool status').addHelpText('after', examples('keypool keys list', 'keypool keys list --json'));
  addAdminOptions(ls).action(async (opts: GatewayOptions) => {
    const all = await gatewayClient(opts, true).listKeys();
    ctx.out(opts.json ? `${JSON.stringify({ keys: all }, null, 2)}\n` : all.length ? keysTable(all, { color: ctx.color, now: ctx.clock.now() }) : 'no keys in this pool\n');
  });

  for (const [action, { what }] of Object.entries(ACTIONS) as [Action, (typeof ACTIONS)[Action]][]) {
    const cmd = keys
      .command(`${action} <key>`)
      .description(what)
      .addHelpText('after', examples(`keypool keys ${action} openai-1`, `keypool keys ${action} 3f9a1c0b2d4e5f60 --url http://gateway.internal:8080`));
    addAdminOptions(cmd).action(async (ref: string, opts: GatewayOptions) => {
      const client = gatewayClient(opts, true);
      const key = await resolveKey(client, ref);
      const r = action === 'remove' ? await client.removeKey(key.id) : await client.keyAction(key.id, action);
      ctx.out(opts.json ? `${JSON.stringify(r, null, 2)}\n` : actionLine(action, key, r));
    });
  }

  const set = keys
    .command('set <key>')
    .description("change a key's limits (fields not given stay as they are)")
    .option('--rpm <n>', 'requests per minute (0 = no limit)', integer(0))
    .option('--tpm <n>', 'tokens per minute (0 = no limit)', integer(0))
    .option('--rpm-burst <n>', 'request bucket size (needs rpm)', integer(1))
    .option('--tpm-burst <n>', 'token bucket size, also the largest request (needs tpm)', integer(1))
    .option('--max-concurrent <n>', 'leases in flight at once (0 = no limit)', integer(0))
    .option('--weight <x>', 'relative share of traffic', positive)
    .option('--budget-usd <x>', 'spend cap in USD per budget period', positive)
    .addOption(new Option('--budget-period <period>', "budget period (UTC); default: the key's current one, else month").choices(['day', 'month', 'total']))
    .option('--models <list>', 'models the key serves, comma-separated (replaces the list)', list)
    .option('--name <name>', 'label for people')
    .addOption(new Option('--tpm-counts <how>', 'what the provider counts against TPM').choices(['estimate', 'usage']))
    // refused with what to do instead: a key's destination comes with its secret
    .addOption(new Option('--base-url <url>').hideHelp())
    .addOption(new Option('--provider <name>').hideHelp())
    .addHelpText(
      'after',
      paragraphs(
        'Sent as PATCH /admin/keys/<id>; every gateway sharing the pool applies the change at once. The key as it is now is printed.',
        "A key's base URL and provider cannot be changed here: they come with its secret from the config file or secret source (keypool secrets), where a new base URL makes a new key.",
      ) +
        examples('keypool keys set openai-1 --rpm 500 --tpm 200000', 'keypool keys set groq-1 --max-concurrent 4 --weight 0.5', 'keypool keys set openai-2 --budget-usd 50 --budget-period day'),
    );
  addAdminOptions(set).action(async (ref: string, opts: SetOptions) => {
    if (opts.baseUrl !== undefined || opts.provider !== undefined) {
      throw usageError(
        "a key's base URL and provider cannot be changed through the admin API: they come with its secret from the config file or secret source, so that nothing but that source decides where a secret is sent. Change them there (the key gets a new id; the old one is retired at the next secrets refresh, or with keypool keys retire)",
      );
    }
    const client = gatewayClient(opts, true);
    const patch: Record<string, unknown> = {};
    const fields = ['rpm', 'tpm', 'rpmBurst', 'tpmBurst', 'maxConcurrent', 'weight', 'models', 'name', 'tpmCounts'] as const;
    for (const f of fields) if (opts[f] !== undefined) patch[f] = opts[f];
    if (Object.keys(patch).length === 0 && opts.budgetUsd === undefined && opts.budgetPeriod === undefined) {
      throw usageError('nothing to change: give at least one of --rpm, --tpm, --rpm-burst, --tpm-burst, --max-concurrent, --weight, --budget-usd, --budget-period, --models, --name, --tpm-counts');
    }
    const key = await resolveKey(client, ref);
    if (opts.budgetUsd !== undefined || opts.budgetPeriod !== undefined) {
      const usd = opts.budgetUsd ?? key.status?.limits.budgetUsd;
      if (usd === null || usd === undefined) throw usageError(`key ${label(key)} has no budget: give --budget-usd with --budget-period`);
      patch.budget = { usd, period: opts.budgetPeriod ?? key.status?.limits.budgetPeriod ?? 'month' };
    }
    const r = await client.updateKey(key.id, patch);
    if (opts.json) ctx.out(`${JSON.stringify(r, null, 2)}\n`);
    else ctx.out(`updated key ${label(key)}: ${Object.keys(patch).join(', ')}\n${r.key ? keysTable([r.key], { color: ctx.color, now: ctx.clock.now() }) : ''}`);
  });
}

/** A key named on the command line: its id, and its status when the gateway knows it. */
interface KeyRef {
  id: string;
  status: KeyStatus | undefined;
}

/**
 * The key `ref` names: the one with that id, else the only one with that name. An unknown ref is
 * passed on as an id so that the gateway answers its own "no key with id" message.
 */
export async function resolveKey(client: GatewayClient, ref: string): Promise<KeyRef> {
  const all = await client.listKeys();
  const byId = all.find((k) => k.id === ref);
  if (byId) return { id: byId.id, status: byId };
  const named = all.filter((k) => k.name === ref);
  if (named.length === 1) return { id: named[0]!.id, status: named[0] };
  if (named.length > 1) throw usageError(`${named.length} keys are named '${ref}' (${named.map((k) => k.id).join(', ')}): give the id`);
  return { id: ref, status: undefined };
}

const label = (k: KeyRef) => (k.status?.name && k.status.name !== k.id ? `${k.status.name} (${k.id})` : k.id);

function actionLine(action: Action, key: KeyRef, r: KeyActionResult): string {
  const inFlight = r.inFlight ? `, ${r.inFlight} lease(s) in flight` : '';
  return `${ACTIONS[action].done}: key ${label(key)}, state now ${r.state}${inFlight}\n`;
}
