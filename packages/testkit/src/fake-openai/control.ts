/**
 * Driving a fake upstream that runs in another process (the CLI, a benchmark's child) over its
 * control endpoints: the same operations as on {@link FakeOpenAI}, asynchronous.
 */
import type { FakeFault, FakeKeyCounters, FakeKeySettings, LimiterMode } from './types.js';

/** What a key looks like over `GET /_fake/keys` and `POST /_fake/keys/:key` (never the secret). */
export interface FakeKeyInfo {
  name: string;
  hint: string;
  rpm: number;
  tpm: number;
  models: string[] | null;
  latency: FakeKeySettings['latency'];
  chunkDelayMs: number | null;
  revoked: boolean;
  limiter: LimiterMode;
  burstSeconds: number;
}

export interface FakeOpenAIControl {
  counters(): Promise<Record<string, FakeKeyCounters>>;
  reset(options?: { countersOnly?: boolean }): Promise<void>;
  keys(): Promise<FakeKeyInfo[]>;
  setKey(key: string, settings: FakeKeySettings): Promise<FakeKeyInfo>;
  setFault(fault: FakeFault | FakeFault[]): Promise<FakeFault[]>;
  clearFaults(): Promise<void>;
  faults(): Promise<FakeFault[]>;
}

/** A control client for the fake at `url` (its base URL ending in /v1, or its origin). */
export function fakeOpenAIControl(url: string): FakeOpenAIControl {
  const origin = url.replace(/\/+$/, '').replace(/\/v1$/, '');
  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${origin}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = (await res.json()) as T & { error?: { message?: string } };
    if (!res.ok) throw new Error(`fake-openai ${method} ${path}: ${res.status} ${data.error?.message ?? ''}`);
    return data;
  }
  return {
    counters: () => call('GET', '/_fake/counters'),
    reset: async (options = {}) => void (await call('POST', '/_fake/reset', options)),
    keys: () => call('GET', '/_fake/keys'),
    setKey: (key, settings) => call('POST', `/_fake/keys/${encodeURIComponent(key)}`, settings),
    setFault: (fault) => call('POST', '/_fake/faults', fault),
    clearFaults: async () => void (await call('DELETE', '/_fake/faults')),
    faults: () => call('GET', '/_fake/faults'),
  };
}
