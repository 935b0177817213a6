/**
 * What the pressure benchmark's workers send and answer (scripts/bench/pressure.ts starts them,
 * pressure/worker.ts is one): the request every call sends (fixed-length messages, so the fake
 * charges each one the same), the naive client's retry rule, a worker's config and its figures.
 */
import type OpenAI from 'openai';

export const MODEL = 'gpt-4o-mini';
export const MAX_TOKENS = 96;
/** Fixed-length message texts: every request costs the same (the request number is padded in). */
const SYSTEM_TEXT = 'You are a terse assistant. Answer in one short paragraph. '.repeat(4).slice(0, 200);
const USER_BASE = 'Summarise the following note about key pools, rate limits and fleets of stateless workers. ';
const USER_LEN = 400;
/** The naive client's retries. */
export const NAIVE = { attempts: 5, baseMs: 100 } as const;

function userText(i: number): string {
  const head = `#${String(i).padStart(6, '0')} ${USER_BASE}`;
  return (head + 'lorem ipsum dolor sit amet '.repeat(20)).slice(0, USER_LEN);
}

/** The messages of request number i: the same length for every i. */
export function messagesFor(i: number): OpenAI.Chat.ChatCompletionMessageParam[] {
  return [
    { role: 'system', content: SYSTEM_TEXT },
    { role: 'user', content: userText(i) },
  ];
}

/** One worker's share of the run (the parent gives each its own seed and rate). */
export interface WorkerConfig {
  mode: 'keypool' | 'naive';
  index: number;
  seed: number;
  ratePerSec: number;
  seconds: number;
  deadlineMs: number;
  fakeUrl: string;
  redisUrl: string;
  pool: string;
  keys: { name: string; secret: string; rpm: number; tpm: number }[];
}

/** A worker's figures, once every call it made has ended. */
export interface WorkerResult {
  index: number;
  offered: number;
  succeeded: number;
  /** ms from scheduled start to the end of the call, per request: successes and failures */
  okLatencies: number[];
  failLatencies: number[];
  failures: Record<string, number>;
  /** how late the event loop started requests after their scheduled time (ms): p99, max */
  startLagP99Ms: number;
  startLagMaxMs: number;
  /** naive: attempts per call; keypool: transitions seen by this process (cooling, opened...) */
  attempts?: Record<string, number>;
  transitions?: { atMs: number; key: string; transition: string }[];
  /** keypool, process 0: the pool's status at the end */
  status?: unknown;
}
