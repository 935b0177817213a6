/**
 * Deterministic token counts, replies and embeddings.
 *
 * The token rule (documented in ./index.ts):
 * - a text counts ceil(length / 4) tokens (length in UTF-16 code units, i.e. `string.length`);
 * - a chat message counts 4 + the tokens of its text (string content, or the `text` of its parts);
 * - /v1/completions and /v1/embeddings count each input text alone (no per-message overhead); an
 *   input given as a token array counts its length;
 * - /v1/responses counts `input` like messages (a string input is one message) plus `instructions`
 *   as one more message;
 * - the reply is min(max_tokens | max_completion_tokens | max_output_tokens | defaultMaxTokens,
 *   replyTokens) tokens, one word per token.
 */
import { createHash } from 'node:crypto';

export const CHARS_PER_TOKEN = 4;
export const MESSAGE_OVERHEAD_TOKENS = 4;

export function textTokens(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

/** The text of a message's content: a string, or the `text` fields of an array of parts. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string' ? (part as { text: string }).text : ''))
      .join('');
  }
  return '';
}

/** Σ over messages of (4 + ceil(chars / 4)). */
export function messagesTokens(messages: ReadonlyArray<{ content?: unknown }>): number {
  let total = 0;
  for (const m of messages) total += MESSAGE_OVERHEAD_TOKENS + textTokens(contentText(m?.content));
  return total;
}

const WORDS = [
  'the', 'quick', 'brown', 'fox', 'jumps', 'over', 'a', 'lazy', 'dog', 'while', 'keys', 'rotate',
  'in', 'pool', 'and', 'every', 'request', 'finds', 'its', 'way', 'to', 'an', 'upstream', 'that',
  'answers', 'with', 'tokens', 'of', 'fake', 'but', 'honest', 'text',
];

function seedOf(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32LE(0);
}

/** `n` tokens of reply for a prompt: one word each, the first without a leading space. Same prompt, same reply. */
export function replyTokens(prompt: string, n: number): string[] {
  let state = seedOf(prompt);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0; // LCG
    const word = WORDS[state % WORDS.length]!;
    out.push(i === 0 ? word : ` ${word}`);
  }
  return out;
}

/**
 * A unit vector of `dims` numbers for `text` under `model`: from SHA-256 of (model, text, block), so
 * the same input always gets the same vector and different inputs get unrelated ones.
 */
export function embeddingVector(model: string, text: string, dims: number): number[] {
  const values: number[] = [];
  for (let block = 0; values.length < dims; block++) {
    const digest = createHash('sha256').update(`${model}\n${block}\n${text}`).digest();
    for (let i = 0; i < 8 && values.length < dims; i++) values.push((digest.readUInt32LE(i * 4) / 4294967296) * 2 - 1);
  }
  const norm = Math.sqrt(values.reduce((s, v) => s + v * v, 0)) || 1;
  // rounded to float32 so that JSON and base64 answers carry the same numbers
  return values.map((v) => Math.fround(v / norm));
}

/** An embedding as OpenAI's `encoding_format: "base64"`: little-endian float32s, base64. */
export function embeddingBase64(vector: number[]): string {
  const buf = Buffer.alloc(vector.length * 4);
  vector.forEach((v, i) => buf.writeFloatLE(v, i * 4));
  return buf.toString('base64');
}
