import { describe, expect, it } from 'vitest';
import { memberOf, spliceMembers } from '../src/json-splice.js';

const splice = (text: string, values: Record<string, string>) => spliceMembers(Buffer.from(text), values).toString('utf8');

/**
 * A random JSON value for the property tests below: numbers, tricky strings (`strings`), literals,
 * arrays and objects (keys drawn from `keys`, numbered), nested at most 3 deep.
 */
function randomValue(rnd: (n: number) => number, strings: readonly string[], keys: readonly string[]): (depth: number) => unknown {
  const value = (depth: number): unknown => {
    switch (rnd(depth > 2 ? 4 : 6)) {
      case 0:
        return rnd(1e6) / 7;
      case 1:
        return strings[rnd(strings.length)];
      case 2:
        return [true, false, null][rnd(3)];
      case 3:
        return -1 - rnd(100);
      case 4:
        return Array.from({ length: rnd(4) }, () => value(depth + 1));
      default:
        return Object.fromEntries(Array.from({ length: rnd(4) }, (_, i) => [`${keys[rnd(keys.length)]!}${i}`, value(depth + 1)]));
    }
  };
  return value;
}
const TRICKY = ['', 'a"b', '}]{[', '\\', 'é\n', ','];

describe('spliceMembers: top-level members changed, every other byte kept', () => {
  it('replaces a value in place and keeps numbers, escapes and spacing as sent', () => {
    const raw = '{ "model" : "smart", "seed":12345678901234567891, "t":1.0, "s":"caf\\u00e9 \\"model\\": x", "n":{"model":"inner"} }';
    expect(splice(raw, { model: '"gpt-4o"' })).toBe(raw.replace('"smart"', '"gpt-4o"'));
  });

  it('appends a member that is not there, and replaces one of any JSON type', () => {
    expect(splice('{"model":"m","stream":true}', { stream_options: '{"include_usage":true}' })).toBe('{"model":"m","stream":true,"stream_options":{"include_usage":true}}');
    expect(splice('{"model":"m",\n "stream_options": null\n}', { stream_options: '{"include_usage":true}' })).toBe('{"model":"m",\n "stream_options": {"include_usage":true}\n}');
    expect(splice('{"a":[1,{"b":"]}"}],"model":"m"}', { model: '"x"', stream_options: '{}' })).toBe('{"a":[1,{"b":"]}"}],"model":"x","stream_options":{}}');
    expect(splice('{}', { model: '"x"' })).toBe('{"model":"x"}');
  });

  it('replaces every occurrence of a duplicated key', () => {
    expect(splice('{"model":"a","model":"b"}', { model: '"c"' })).toBe('{"model":"c","model":"c"}');
  });

  it('keeps bytes outside the edits even when they are not valid UTF-8 text', () => {
    const body = Buffer.concat([Buffer.from('{"model":"a","x":"'), Buffer.from([0xc3, 0xa9, 0xe2, 0x82, 0xac]), Buffer.from('"}')]);
    const out = spliceMembers(body, { model: '"b"' });
    expect(out.subarray(out.indexOf('"x":')).equals(body.subarray(body.indexOf('"x":')))).toBe(true);
  });

  it('agrees with JSON.parse on random documents', () => {
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const value = randomValue(rnd, TRICKY, ['k']);
    for (let n = 0; n < 300; n++) {
      const doc: Record<string, unknown> = Object.fromEntries(Array.from({ length: 1 + rnd(5) }, (_, i) => [['model', 'stream_options', 'x', 'y', 'z'][rnd(5)]! + (i > 2 ? i : ''), value(0)]));
      const text = JSON.stringify(doc, null, rnd(2) ? 2 : undefined);
      const out = JSON.parse(splice(text, { model: '"m2"', stream_options: '{"include_usage":true}' }));
      expect(out).toEqual({ ...doc, model: 'm2', stream_options: { include_usage: true } });
    }
  });
});

describe('memberOf: one top-level member read without parsing the rest', () => {
  // walked at any size (large answers are walked; small ones parsed whole: both must agree)
  const member = (text: string, key = 'usage') => {
    const walked = memberOf(Buffer.from(text), key, 0);
    expect(memberOf(Buffer.from(text), key, Infinity)).toEqual(walked);
    return walked;
  };

  it('reads the top-level member, never one nested or quoted inside a string, the last of duplicates', () => {
    const answer = '{"id":"x","choices":[{"message":{"content":"say \\"usage\\": {\\"prompt_tokens\\": 9}","usage":{"prompt_tokens":1}}}],"usage" : {"prompt_tokens":12,"completion_tokens":3,"details":{"cached":1}},"x_groq":{"usage":{"prompt_tokens":99}}}';
    expect(member(answer)).toEqual({ prompt_tokens: 12, completion_tokens: 3, details: { cached: 1 } });
    expect(member('{"usage":{"a":1},"usage":{"a":2}}')).toEqual({ a: 2 });
    expect(member('{"usage":null}')).toBeNull();
    expect(member('{"model":"m"}')).toBeUndefined();
    // a content ending in backslashes: the closing quote is the one after an even run of them
    expect(member('{"c":"a\\\\","usage":{"t":5},"d":"\\\\\\""}')).toEqual({ t: 5 });
  });

  it('is undefined for text that is not a JSON object, and never loops or throws on a truncated one', () => {
    for (const t of ['', '[]', '"usage"', '{"usage":', '{"usage":{"a":1}', '{"usage" {"a":1}}', '{"a":"unterminated', '{"usage":{"a":"x}', 'null']) {
      expect(member(t)).toBeUndefined();
    }
  });

  it('agrees with JSON.parse on random documents', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    const value = randomValue(rnd, [...TRICKY, '"usage":{'], ['usage', 'k']);
    for (let n = 0; n < 300; n++) {
      const doc: Record<string, unknown> = Object.fromEntries(Array.from({ length: 1 + rnd(5) }, (_, i) => [['usage', 'model', 'choices'][rnd(3)]! + (i > 2 ? i : ''), value(0)]));
      const text = JSON.stringify(doc, null, rnd(2) ? 2 : undefined);
      expect(memberOf(Buffer.from(text), 'usage', 0)).toEqual(doc.usage);
      expect(memberOf(Buffer.from(text), 'usage')).toEqual(doc.usage);
    }
  });
});
