import { describe, expect, it } from 'vitest';
import { parseKeySpec } from '../src/config.js';
import { hintOf, keyIdOf } from '../src/fingerprint.js';
import { groupOf, recordOfSpec, settingsOf, toRecord, type KeySettings } from '../src/records.js';

const SECRET = 'sk-proj-Lm3Nq8Rt2Vx6Zb1Dc5Fg9Hj4Kp7Ws0Y';

function settings(input: Record<string, unknown>): KeySettings {
  const { secret: _secret, ...rest } = parseKeySpec({ secret: SECRET, ...input });
  return rest;
}

describe('groupOf', () => {
  it('is a 12-hex-char id', () => {
    expect(groupOf(['gpt-4o'])).toMatch(/^[0-9a-f]{12}$/);
  });

  it('ignores order and duplicates', () => {
    const g = groupOf(['gpt-4o', 'gpt-4o-mini', 'o3']);
    expect(groupOf(['o3', 'gpt-4o-mini', 'gpt-4o'])).toBe(g);
    expect(groupOf(['gpt-4o-mini', 'gpt-4o', 'gpt-4o', 'o3', 'o3'])).toBe(g);
  });

  it('differs for different model sets', () => {
    const g = groupOf(['gpt-4o', 'gpt-4o-mini']);
    expect(groupOf(['gpt-4o'])).not.toBe(g);
    expect(groupOf(['gpt-4o', 'gpt-4o-mini', 'o3'])).not.toBe(g);
    // names are not simply concatenated: ["ab","c"] is not ["a","bc"]
    expect(groupOf(['ab', 'c'])).not.toBe(groupOf(['a', 'bc']));
  });
});

describe('toRecord / settingsOf', () => {
  it('round-trips every setting', () => {
    const s = settings({
      name: 'team-a primary',
      provider: 'deepseek',
      baseURL: 'https://api.deepseek.com/v1',
      models: ['deepseek-chat', 'deepseek-reasoner'],
      rpm: 600,
      tpm: 100_000,
      rpmBurst: 4,
      tpmBurst: 20_000,
      maxConcurrent: 8,
      budget: { usd: 12.5, period: 'day' },
      weight: 3,
    });
    const r = toRecord('id1', 'hint1', s);
    expect(settingsOf(r)).toEqual(s);
    // and rebuilding from the recovered settings gives the same record
    expect(toRecord('id1', 'hint1', settingsOf(r))).toEqual(r);
  });

  it('round-trips a minimal key (no optional fields appear out of nowhere)', () => {
    const s = settings({ models: ['gpt-4o'] });
    const r = toRecord('id2', 'hint2', s);
    expect(settingsOf(r)).toEqual(s);
    expect(Object.keys(settingsOf(r)).sort()).toEqual(Object.keys(s).sort());
    expect(r).not.toHaveProperty('name');
    expect(r).not.toHaveProperty('budget');
    expect(r).not.toHaveProperty('rpmBurst');
  });

  it('stores models sorted and without duplicates, and groups by them', () => {
    const r = toRecord('id', 'h', settings({ models: ['o3', 'gpt-4o', 'o3'] }));
    expect(r.models).toEqual(['gpt-4o', 'o3']);
    expect(r.g).toBe(groupOf(['gpt-4o', 'o3']));
  });

  it('fills the short fields the Lua scripts read', () => {
    const r = toRecord('id', 'h', settings({ models: ['gpt-4o'], rpm: 600, tpm: 90_000, maxConcurrent: 5, weight: 2 }));
    expect(r.rb).toBe(20); // 2 s of 600 rpm
    expect(r.tb).toBe(32_768);
    expect(r.mc).toBe(5);
    expect(r.w).toBe(2);
    const explicit = toRecord('id', 'h', settings({ models: ['gpt-4o'], rpm: 600, rpmBurst: 4, tpm: 90_000, tpmBurst: 1000 }));
    expect([explicit.rb, explicit.tb]).toEqual([4, 1000]);
  });

  it('stores the budget in nano-dollars, -1 and period total when there is none', () => {
    const r = toRecord('id', 'h', settings({ models: ['gpt-4o'], budget: { usd: 12.5, period: 'day' } }));
    expect(r.bud).toBe(12_500_000_000);
    expect(r.per).toBe('day');
    expect(toRecord('id', 'h', settings({ models: ['m'], budget: { usd: 0.1 } })).bud).toBe(100_000_000);
    expect(toRecord('id', 'h', settings({ models: ['m'], budget: { usd: 0.1 } })).per).toBe('month');
    const none = toRecord('id', 'h', settings({ models: ['m'] }));
    expect(none.bud).toBe(-1);
    expect(none.per).toBe('total');
  });
});

describe('recordOfSpec', () => {
  it('names the key by its fingerprint and hint', () => {
    const r = recordOfSpec(parseKeySpec({ secret: SECRET, models: ['gpt-4o'] }));
    expect(r.id).toBe(keyIdOf(SECRET));
    expect(r.hint).toBe(hintOf(SECRET));
    expect(r.hint).toBe('sk-proj-...Ws0Y');
  });

  it('never puts the secret (or any 8-char piece of it) in the record JSON', () => {
    const r = recordOfSpec(
      parseKeySpec({
        secret: SECRET,
        name: 'prod',
        models: ['gpt-4o', 'gpt-4o-mini'],
        rpm: 60,
        tpm: 1000,
        maxConcurrent: 2,
        budget: { usd: 5 },
      }),
    );
    const json = JSON.stringify(r);
    expect(json).not.toContain(SECRET);
    for (let i = 0; i + 8 <= SECRET.length; i++) {
      const piece = SECRET.slice(i, i + 8);
      if (piece === 'sk-proj-') continue; // the public prefix
      expect(json).not.toContain(piece);
    }
    expect(r).not.toHaveProperty('secret');
  });
});
