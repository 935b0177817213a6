/**
 * Change top-level members of a JSON object in its bytes, leaving every other byte as the caller
 * sent it: re-serialising a parsed body would round big integers (`"seed": 12345678901234567891`),
 * drop duplicate keys, unescape strings and reformat numbers, and the gateway promises to pass
 * bodies on unchanged but for `model` and `stream_options`. The text must be valid JSON (it was
 * parsed before); JSON's structural characters are ASCII and never occur inside a UTF-8 sequence,
 * so scanning bytes is safe.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN = new Set([0x7b, 0x5b]); // { [
const CLOSE = new Set([0x7d, 0x5d]); // } ]
const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

function skipWs(b: Buffer, i: number): number {
  while (WS.has(b[i]!)) i++;
  return i;
}

/** `i` at a string's opening quote; the index just past its closing quote. */
function endOfString(b: Buffer, i: number): number {
  for (i++; b[i] !== QUOTE; i++) if (b[i] === BACKSLASH) i++;
  return i + 1;
}

/** `i` at a value's first byte; the index just past it. */
function endOfValue(b: Buffer, i: number): number {
  if (b[i] === QUOTE) return endOfString(b, i);
  if (OPEN.has(b[i]!)) {
    for (let depth = 0; ; ) {
      if (b[i] === QUOTE) {
        i = endOfString(b, i);
        continue;
      }
      if (OPEN.has(b[i]!)) depth++;
      else if (CLOSE.has(b[i]!) && --depth === 0) return i + 1;
      i++;
    }
  }
  // number, true, false, null
  while (i < b.length && b[i] !== 0x2c && !CLOSE.has(b[i]!) && !WS.has(b[i]!)) i++;
  return i;
}

/** The top-level members of a JSON object (each occurrence of a key) and where its closing brace is. */
export function topLevelMembers(b: Buffer): { members: { key: string; from: number; to: number }[]; close: number } {
  const members: { key: string; from: number; to: number }[] = [];
  let i = skipWs(b, 0) + 1; // past '{'
  for (;;) {
    i = skipWs(b, i);
    if (b[i] === 0x7d) return { members, close: i };
    const keyEnd = endOfString(b, i);
    const key = JSON.parse(b.toString('utf8', i, keyEnd)) as string;
    const from = skipWs(b, skipWs(b, keyEnd) + 1); // past ':'
    const to = endOfValue(b, from);
    members.push({ key, from, to });
    i = skipWs(b, to);
    if (b[i] === 0x2c) i++;
  }
}

/**
 * The body with the values of the given top-level members replaced (every occurrence: JSON.parse
 * keeps the last, the provider may keep another), and those not present appended at the end.
 * Values are JSON texts.
 */
export function spliceMembers(body: Buffer, values: Record<string, string>): Buffer {
  const { members, close } = topLevelMembers(body);
  const edits: { from: number; to: number; text: string }[] = [];
  const missing = new Set(Object.keys(values));
  for (const m of members) {
    if (!Object.hasOwn(values, m.key)) continue;
    edits.push({ from: m.from, to: m.to, text: values[m.key]! });
    missing.delete(m.key);
  }
  const added = [...missing].map((k) => `${JSON.stringify(k)}:${values[k]}`).join(',');
  if (added) edits.push({ from: close, to: close, text: (members.length > 0 ? ',' : '') + added });
  const parts: Buffer[] = [];
  let at = 0;
  for (const e of edits.sort((x, y) => x.from - y.from)) {
    parts.push(body.subarray(at, e.from), Buffer.from(e.text));
    at = e.to;
  }
  parts.push(body.subarray(at));
  return Buffer.concat(parts);
}

/** `i` at a string's opening quote; just past its closing quote (found natively: a long string is not walked in JS); -1 if there is none. */
function skipString(b: Buffer, i: number): number {
  for (let q = b.indexOf(QUOTE, i + 1); q >= 0; q = b.indexOf(QUOTE, q + 1)) {
    let slashes = 0;
    while (b[q - 1 - slashes] === BACKSLASH) slashes++;
    if ((slashes & 1) === 0) return q + 1;
  }
  return -1;
}

const isOpen = (c: number) => c === 0x7b || c === 0x5b;
const isClose = (c: number) => c === 0x7d || c === 0x5d;
const isWs = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** `i` at a value's first byte; the index just past it, or -1 when the text ends first. */
function skipValue(b: Buffer, i: number): number {
  const n = b.length;
  let c = b[i]!;
  if (c === QUOTE) return skipString(b, i);
  if (isOpen(c)) {
    for (let depth = 0; i < n; ) {
      c = b[i]!;
      if (c === QUOTE) {
        i = skipString(b, i);
        if (i < 0) return -1;
        continue;
      }
      if (isOpen(c)) depth++;
      else if (isClose(c) && --depth === 0) return i + 1;
      i++;
    }
    return -1;
  }
  while (i < n && (c = b[i]!) !== 0x2c && !isClose(c) && !isWs(c)) i++;
  return i;
}

function skipSpace(b: Buffer, i: number): number {
  while (isWs(b[i]!)) i++;
  return i;
}

/** Smaller answers than this are parsed whole: JSON.parse is native, and walking them in JS costs more. */
const WALK_FROM = 2048;
const USAGE = Buffer.from('"usage"');

/**
 * The value of a top-level member `key` of a JSON object in `b` (the last, as JSON.parse keeps),
 * parsed, without parsing the rest when `b` is large: the gateway reads only `usage` of a
 * provider's answer, whose content may be long. undefined when the member is absent or the text is
 * not a JSON object. `walkFrom`: the size from which the bytes are walked (tests walk any size).
 */
export function memberOf(b: Buffer, key: string, walkFrom = WALK_FROM): unknown {
  if (b.length < walkFrom) {
    try {
      const whole: unknown = JSON.parse(b.toString('utf8'));
      return whole !== null && typeof whole === 'object' && !Array.isArray(whole) ? (whole as Record<string, unknown>)[key] : undefined;
    } catch {
      return undefined;
    }
  }
  const quoted = key === 'usage' ? USAGE : Buffer.from(JSON.stringify(key));
  let i = skipSpace(b, 0);
  if (b[i] !== 0x7b) return undefined;
  i++;
  let found: [number, number] | undefined;
  while (i < b.length) {
    i = skipSpace(b, i);
    if (b[i] === 0x7d) break;
    if (b[i] !== QUOTE) return undefined;
    const keyEnd = skipString(b, i);
    if (keyEnd < 0) return undefined;
    const isKey = keyEnd - i === quoted.length && b.compare(quoted, 0, quoted.length, i, keyEnd) === 0;
    i = skipSpace(b, keyEnd);
    if (b[i] !== 0x3a) return undefined; // ':'
    const from = skipSpace(b, i + 1);
    const to = skipValue(b, from);
    if (to < 0 || to === from) return undefined;
    if (isKey) found = [from, to];
    i = skipSpace(b, to);
    if (b[i] === 0x2c) i++;
    else if (b[i] !== 0x7d) return undefined;
  }
  if (!found) return undefined;
  try {
    return JSON.parse(b.toString('utf8', found[0], found[1]));
  } catch {
    return undefined;
  }
}
