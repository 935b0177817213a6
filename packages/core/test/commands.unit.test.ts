/**
 * The typed command layer without Redis: each function builds the KEYS and ARGV its script's
 * header names and turns the reply tuple into a typed object; a key that moved to another group
 * is followed; a refusal that ends an operation becomes the same error everywhere.
 */
import { describe, expect, it } from 'vitest';
import { PoolCommands, TokenCommands, refusalError, type CommandLink } from '../src/commands.js';
import { Packed } from '../src/scripts.js';
import { InvalidArgumentError, KeyNotFoundError, PoolKeys, RequestTooLargeError, parsePoolConfig } from '../src/index.js';

const keys = new PoolKeys('unit');
const config = parsePoolConfig({});

/** A link that answers each script call with the next reply and records what it was given. */
function fakeLink(...replies: unknown[]) {
  const calls: { name: string; keys: string[]; args: (string | number)[] }[] = [];
  const link: CommandLink = {
    script: async (name, k, args) => {
      calls.push({ name, keys: Packed.unpack(k), args: Packed.unpack(args) });
      return replies.shift();
    },
    hget: async () => null,
    hgetall: async () => ({}),
    hscan: async () => ['0', []],
    call: async () => null,
  };
  return { link, calls };
}

const NORMAL = { priority: 'normal', tenant: '' };

describe('PoolCommands', () => {
  it('acquire: a lease reply and a refusal, -1 read as "not by waiting"', async () => {
    const { link, calls } = fakeLink([1, 'k1', '7:k1:10:0', 1_000_300, 1_000, 250, 4, 1], [0, 'circuit_open', -1, 5], [0, 'cooling', 1200, 5], [0, 'cooling', 1200, 5]);
    const cmd = new PoolCommands(link, keys, config);
    const scriptKeys = [keys.cfg, keys.st, keys.leases, keys.meta, keys.avail('g'), keys.wait('g')];
    expect(await cmd.acquire(scriptKeys, 10, 0, '', 0, NORMAL)).toEqual({ ok: true, keyId: 'k1', leaseId: '7:k1:10:0', deadline: 1_000_300, at: 1_000.25, version: 4, probe: true });
    expect(await cmd.acquire(scriptKeys, 10, 0, 'x,y', 0, NORMAL)).toEqual({ ok: false, reason: 'circuit_open', retryAfterMs: null, version: 5 });
    expect(await cmd.acquire(scriptKeys, 10, 0, '', 0, NORMAL)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 1200, version: 5 });
    // ARGV in the header's order: tokens, cost, lease timeout, recheck, random, excluded, candidates, seed
    const [tokens, cost, timeout, recheck, pick, excluded, candidates] = calls[1]!.args;
    expect([tokens, cost, timeout, recheck, excluded, candidates]).toEqual([10, 0, config.leaseTimeoutMs, config.concurrencyRecheckMs, 'x,y', config.candidates]);
    expect(pick).toBeGreaterThanOrEqual(0);
    // no token: its five arguments are placeholders, then the class and the tenant, then the
    // class's rule (keepFree of normal, higherWaitedMs, reserveAheadMs), the weight ('' = none named), tenantWindowMs,
    // the caller's wait so far, counted, spread
    expect(calls[1]!.args.slice(10, 25)).toEqual(['', '', 0, 0, '0', 'normal', '', 0, 1000, 0, '', 2000, 0, '0', 1]);
    expect(calls[1]!.keys).toEqual(scriptKeys);
    // ARGV[26]: the Redis time after which the caller no longer waits: none before any answer, then
    // the Redis clock learnt from the first answer (1,000.25 ms) plus the Redis timeout, and the
    // time gone since
    expect(calls[0]!.args[25]).toBe(0);
    const until = calls[1]!.args[25] as number;
    expect(until).toBeGreaterThanOrEqual(1_000 + config.redisDown.timeoutMs);
    expect(until).toBeLessThan(1_000 + config.redisDown.timeoutMs + 1_000);
    // ARGV[27]: the class's headroom (priority.headroom; normal's is 0 by default, low's 1)
    expect(calls[1]!.args[26]).toBe(0);
    await cmd.acquire(scriptKeys, 10, 0, '', 0, { priority: 'low', tenant: '' });
    expect(calls[3]!.args[26]).toBe(config.priority.headroom.low);
    expect(config.priority.headroom.low).toBe(1);
  });

  it("acquire: 'expired' (Redis ran the call after its caller stopped waiting) is tried again at once, on the clock it tells", async () => {
    const redisNow = Date.now() + 60_000; // Redis's clock a minute ahead of ours
    const { link, calls } = fakeLink([0, 'rate_limited', 50, 3], [0, 'expired', 0, 3, Math.floor(redisNow), 0], [0, 'rate_limited', 50, 3]);
    const cmd = new PoolCommands(link, keys, config);
    const scriptKeys = [keys.cfg, keys.st, keys.leases, keys.meta, keys.avail('g'), keys.wait('g')];
    await cmd.acquire(scriptKeys, 10, 0, '', 0, NORMAL);
    expect(await cmd.acquire(scriptKeys, 10, 0, '', 0, NORMAL)).toEqual({ ok: false, reason: 'busy', retryAfterMs: 0, version: 3 });
    await cmd.acquire(scriptKeys, 10, 0, '', 0, NORMAL);
    const until = calls[2]!.args[25] as number;
    expect(until).toBeGreaterThanOrEqual(redisNow + config.redisDown.timeoutMs - 5);
    expect(until).toBeLessThan(redisNow + config.redisDown.timeoutMs + 1_000);
  });

  it('setState follows a key that moved to another group, at most 3 times', async () => {
    const { link, calls } = fakeLink([0, 'moved', 'g2'], [0, 'moved', 'g3'], [1, 'disabled', 'closed', 0]);
    const cmd = new PoolCommands(link, keys, config);
    expect(await cmd.setState('k1', 'disable', 'g1')).toEqual({ ok: true, state: 'disabled', breaker: 'closed', inFlight: 0 });
    expect(calls.map((c) => [c.keys[2], c.args[2]])).toEqual([
      [keys.avail('g1'), 'g1'],
      [keys.avail('g2'), 'g2'],
      [keys.avail('g3'), 'g3'],
    ]);

    const always = fakeLink(...['g2', 'g3', 'g4', 'g5', 'g6'].map((g) => [0, 'moved', g]));
    expect(await new PoolCommands(always.link, keys, config).setState('k1', 'enable', 'g1')).toEqual({ ok: false, reason: 'moved', group: 'g5' });
    expect(always.calls).toHaveLength(4);
  });

  it('release tells each move to its caller, and reads the refusals', async () => {
    const { link } = fakeLink([0, 'moved', 'g2'], [1, 'active', 'closed', 'cooling', 2_000, 500], [0, 'unknown_lease']);
    const cmd = new PoolCommands(link, keys, config);
    let moves = 0;
    const args = { leaseId: '1:k:0:0', outcome: 'rate_limited' as const, latencyMs: 5, tokens: -1, costNanos: -1, coolMs: 2000, model: 'm', route: '' };
    expect(await cmd.release('g1', args, () => moves++)).toEqual({ ok: true, keyState: 'active', breaker: 'closed', transition: 'cooling', at: 2_000.5 });
    expect(moves).toBe(1);
    expect(await cmd.release('g2', args)).toEqual({ ok: false, reason: 'unknown_lease' });
  });

  it("release's ARGV[30]: the send time on Redis's clock, -1 when not given or before any answer", async () => {
    const redisNow = Date.now() + 60_000; // Redis's clock a minute ahead of ours
    const { link, calls } = fakeLink([1, 'active', 'closed', '', Math.floor(redisNow), 0], [1, 'active', 'closed', '', Math.floor(redisNow), 0], [1, 'active', 'closed', '', Math.floor(redisNow), 0]);
    const cmd = new PoolCommands(link, keys, config);
    const args = { leaseId: '1:k:0:0:5:1', outcome: 'ok' as const, latencyMs: 5, tokens: -1, costNanos: -1, coolMs: -1, model: 'm', route: '' };
    const sentAt = Date.now() - 40;
    await cmd.release('g', { ...args, sentAt }); // no answer yet: the clock is unknown
    await cmd.release('g', { ...args, sentAt });
    await cmd.release('g', args);
    expect(calls.map((c) => c.args.length)).toEqual([30, 30, 30]);
    expect(calls[0]!.args[29]).toBe(-1);
    // 40 ms before our now, on Redis's clock (a minute ahead); the estimate errs early, never late
    const sent = calls[1]!.args[29] as number;
    expect(sent).toBeLessThanOrEqual(redisNow - 40 + 1);
    expect(sent).toBeGreaterThan(redisNow - 40 - 1_000);
    expect(calls[2]!.args[29]).toBe(-1);
  });

  it('sentLate: sent-1.lua only for a send more than half the window margin after the admission, on Redis\'s clock, and not before it is known', async () => {
    const redisNow = Date.now() + 60_000;
    const r = fakeLink([1, 'active', 'closed', '', Math.floor(redisNow), 0], 1);
    const c2 = new PoolCommands(r.link, keys, config);
    c2.sentLate('1:k:0:0:5:1', redisNow - 100, Date.now()); // Redis's clock not known yet: nothing
    expect(r.calls).toHaveLength(0);
    await c2.release('g', { leaseId: '1:k:0:0:5:1', outcome: 'ok', latencyMs: 1, tokens: -1, costNanos: -1, coolMs: -1, model: 'm', route: '' });
    const now = Date.now();
    c2.sentLate('2:k:0:0:5:2', redisNow, now); // on time
    c2.sentLate('4:k:0:0:5:4', redisNow - 8, now); // 8 ms late: left to the margin (20 ms) and the release
    c2.sentLate('3:k:0:0:5:3', redisNow - 100, now); // 100 ms late
    expect(r.calls.map((c) => c.name)).toEqual(['release', 'sent']);
    expect(r.calls[1]!.keys).toEqual([keys.win]);
    expect(r.calls[1]!.args[0]).toBe('3:k:0:0:5:3');
    expect(r.calls[1]!.args[1]).toBeLessThanOrEqual(redisNow + 1);
    expect(r.calls[1]!.args[1]).toBeGreaterThan(redisNow - 1_000);
  });

  it('housekeepLeases and housekeepKeys: KEYS for every group, the ids after the settings, the periods started read as numbers', async () => {
    const { link, calls } = fakeLink([32, 1], [['k1:1500000000', 'k2:0'], 1, 2], [[], 0, 1]);
    const cmd = new PoolCommands(link, keys, config);
    expect(await cmd.housekeepLeases(['a', 'b'])).toEqual({ reaped: 32, more: true });
    expect(calls[0]!.keys).toEqual([keys.cfg, keys.st, keys.leases, keys.meta, keys.avail('a'), keys.wait('a'), keys.avail('b'), keys.wait('b')]);
    expect(calls[0]!.args).toEqual(['a,b', 32]);
    const reply = await cmd.housekeepKeys(['a', 'b'], ['k1', 'k2']);
    expect(reply).toEqual({ periodsStarted: [{ keyId: 'k1', spentNanos: 1_500_000_000 }, { keyId: 'k2', spentNanos: 0 }], healthWindowsCleared: 1, done: 2 });
    expect(calls[1]!.keys).toEqual([keys.st, keys.avail('a'), keys.wait('a'), keys.avail('b'), keys.wait('b')]);
    expect(calls[1]!.args[0]).toBe('a,b');
    expect(calls[1]!.args.slice(-2)).toEqual(['k1', 'k2']);
    expect(await cmd.housekeepKeys(['a'], ['k3'])).toEqual({ periodsStarted: [], healthWindowsCleared: 0, done: 1 });
  });
});

describe('TokenCommands', () => {
  it('admit: a refusal of an unknown token has no id; settings come back parsed when asked for', async () => {
    const rec = { id: 'abcdefabcdef', hint: 'kpt_...abcd', name: 'n', rpm: 0, rb: 0, bud: -1, per: 'total', models: [] };
    const { link } = fakeLink([0, 'unknown', -1, ''], [1, rec.id, `${rec.id}:1:0`, JSON.stringify(rec), 5, 7, -1]);
    const cmd = new TokenCommands(link.script, keys, config);
    expect(await cmd.admit('h', 'm', 0, true)).toEqual({ ok: false, reason: 'unknown', retryAfterMs: null, id: undefined });
    expect(await cmd.admit('h', 'm', 0, true)).toEqual({ ok: true, id: rec.id, reservation: `${rec.id}:1:0`, settings: rec, spentNanos: 5, reservedNanos: 7, periodEnd: -1 });
  });
});

describe('refusalError: one error per refusal that ends an operation', () => {
  it('maps each to its error class and message', () => {
    expect(refusalError({ reason: 'not_found', keyId: 'k1' })).toEqual(new KeyNotFoundError('k1'));
    expect(refusalError({ reason: 'moved', keyId: 'k1' })).toBeInstanceOf(KeyNotFoundError);
    const big = refusalError({ reason: 'too_large', model: 'm', tokens: 5000, maxTokens: 1000 });
    expect(big).toBeInstanceOf(RequestTooLargeError);
    expect(big).toMatchObject({ estimatedTokens: 5000, maxTokens: 1000 });
    expect(refusalError({ reason: 'conflict', keyId: 'k1', doing: 'updated' })).toEqual(new InvalidArgumentError('key k1 kept changing while being updated; try again'));
    expect(refusalError({ reason: 'exists' })).toEqual(new InvalidArgumentError('could not give the new token a unique id; try again'));
  });
});
