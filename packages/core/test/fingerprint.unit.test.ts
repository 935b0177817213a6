import { describe, expect, it } from 'vitest';
import { destinationOf, hintOf, keyIdOf } from '../src/fingerprint.js';

/** Small deterministic PRNG (mulberry32) so the property checks are reproducible. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function randomBody(rand: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += ALNUM[Math.floor(rand() * ALNUM.length)];
  return s;
}

const SECRET = 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789';

describe('keyIdOf', () => {
  it('is stable: same secret and destination, same id, across calls and processes (pinned value)', () => {
    expect(keyIdOf(SECRET)).toBe(keyIdOf(SECRET));
    expect(keyIdOf(SECRET)).toBe('3dc9106dc0d26090');
    expect(keyIdOf(SECRET, 'https://api.openai.com/v1')).toBe('3dc9106dc0d26090');
    expect(keyIdOf(SECRET, 'https://api.groq.com/openai/v1')).toBe('968eac7d5477e102');
  });

  it('covers the destination: the same secret for another origin or path is another key', () => {
    const ids = new Set(
      ['https://api.openai.com/v1', 'http://api.openai.com/v1', 'https://api.openai.com:8443/v1', 'https://attacker.example/v1', 'https://api.openai.com/v2', 'https://api.openai.com/v1?x=1'].map((u) =>
        keyIdOf(SECRET, u),
      ),
    );
    expect(ids.size).toBe(6);
  });

  it('gives one id to every spelling of one destination (case of scheme and host, default port, trailing slash)', () => {
    for (const u of ['HTTPS://API.OpenAI.com/v1', 'https://api.openai.com:443/v1/', 'https://api.openai.com/v1//', 'https://user@api.openai.com/v1#x']) {
      expect(destinationOf(u)).toBe('https://api.openai.com/v1');
      expect(keyIdOf(SECRET, u)).toBe(keyIdOf(SECRET));
    }
  });

  it('is 16 lowercase hex chars', () => {
    const rand = rng(1);
    for (let i = 0; i < 50; i++) expect(keyIdOf(`sk-${randomBody(rand, 40)}`)).toMatch(/^[0-9a-f]{16}$/);
    expect(keyIdOf('')).toMatch(/^[0-9a-f]{16}$/);
  });

  it('differs for different secrets, even one character apart', () => {
    const ids = new Set<string>();
    const rand = rng(2);
    for (let i = 0; i < 500; i++) ids.add(keyIdOf(`sk-${randomBody(rand, 40)}`));
    expect(ids.size).toBe(500);
    expect(keyIdOf(`${SECRET}x`)).not.toBe(keyIdOf(SECRET));
    expect(keyIdOf(SECRET.replace(/9$/, '8'))).not.toBe(keyIdOf(SECRET));
  });

  it('does not contain the secret or any 8-char window of it', () => {
    const rand = rng(3);
    for (let i = 0; i < 50; i++) {
      const secret = `sk-${randomBody(rand, 40)}`;
      const id = keyIdOf(secret);
      expect(id).not.toContain(secret);
      // ids are hex; check against windows of the secret's body that could be hex-looking too
      for (let j = 0; j + 8 <= secret.length; j++) expect(id).not.toContain(secret.slice(j, j + 8));
    }
  });
});

describe('hintOf', () => {
  it('keeps the well-known prefix and the last 4 characters only', () => {
    expect(hintOf('sk-proj-abcdefghijklmnopqrstuvwxyz1234')).toBe('sk-proj-...1234');
    expect(hintOf('sk-abcdefghijklmnopqrstuvwxWXYZ')).toBe('sk-...WXYZ');
    expect(hintOf('sk-ant-api03-abcdefghijklmnop9876')).toBe('sk-ant-api03-...9876');
    expect(hintOf('sk-or-v1-0123456789abcdef0123')).toBe('sk-or-v1-...0123');
    expect(hintOf('sk-svcacct-0123456789abcdefghij')).toBe('sk-svcacct-...ghij');
  });

  it('shows no prefix when the secret has none', () => {
    expect(hintOf('0123456789abcdef0123456789abcdef')).toBe('...cdef');
    expect(hintOf('AbCd-efghijklmnopqrstuvwxyz12')).toBe('...yz12');
  });

  it('keeps only published provider prefixes (Groq gsk_, xAI, Perplexity)', () => {
    expect(hintOf('gsk_abcdefghijklmnopqrstuvwxyz12')).toBe('gsk_...yz12');
    expect(hintOf('xai-abcdefghijklmnopqrstuvwxyz12')).toBe('xai-...yz12');
  });

  it('reveals at most the last 2 characters of a short secret (< 20 chars)', () => {
    expect(hintOf('sk-short-secret1')).toBe('...t1');
    expect(hintOf('sk-proj-abcdefghij')).toBe('...ij'); // 18 chars: no prefix either
    expect(hintOf('a')).toBe('...a');
    expect(hintOf('')).toBe('...');
    for (let n = 1; n < 20; n++) {
      const secret = 'sk-proj-ABCDEFGHIJKLMNOP'.slice(0, n);
      const hint = hintOf(secret);
      expect(hint.startsWith('...')).toBe(true);
      const revealed = hint.slice(3);
      expect(revealed.length).toBeLessThanOrEqual(2);
      expect(secret.endsWith(revealed)).toBe(true);
    }
  });

  it('switches from the short form to the long form at 20 characters', () => {
    expect(hintOf('sk-abcdefghijklmnop')).toBe('...op'); // 19
    expect(hintOf('sk-abcdefghijklmnopq')).toBe('sk-...nopq'); // 20
  });

  it('never contains 5+ consecutive characters of the secret other than the prefix and the last 4', () => {
    const rand = rng(42);
    const prefixes = ['', 'sk-', 'sk-proj-', 'sk-svcacct-', 'sk-admin-', 'sk-or-v1-', 'sk-ant-api03-'];
    for (let i = 0; i < 2000; i++) {
      const prefix = prefixes[i % prefixes.length]!;
      const body = randomBody(rand, 1 + Math.floor(rand() * 80));
      const secret = prefix + body;
      const hint = hintOf(secret);
      const expectedPrefix = secret.length >= 20 ? prefix : '';
      expect(hint.startsWith(`${expectedPrefix}...`), `${secret} -> ${hint}`).toBe(true);
      const tail = hint.slice(expectedPrefix.length + 3);
      expect(tail.length, `${secret} -> ${hint}`).toBeLessThanOrEqual(secret.length >= 20 ? 4 : 2);
      expect(secret.endsWith(tail)).toBe(true);
      // any 5-char window of the hint that occurs in the secret must lie inside the prefix
      for (let j = 0; j + 5 <= hint.length; j++) {
        const w = hint.slice(j, j + 5);
        if (secret.includes(w)) expect(j + 5 <= expectedPrefix.length, `${secret} -> ${hint} leaks ${w}`).toBe(true);
      }
      // the secret's body never appears beyond its last 4 chars
      if (body.length > 4) expect(hint).not.toContain(body.slice(0, 5));
    }
  });
});
