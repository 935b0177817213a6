/**
 * Script calls on the wire (scripts.ts ScriptRunner): what Redis receives is the script's own
 * FCALL or EVAL/EVALSHA with the values it was given, Packed runs included, and a background call (a
 * release) waits for the next command to share its socket write, or COALESCE_MS at most.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnRedisServer, type SpawnedRedis } from '@keypool/testkit';
import { COALESCE_MS, Packed, ScriptRunner, keypoolLibrary, scripts } from '../src/scripts.js';
import { fakeSecret, makePool } from './helpers.js';

let server: SpawnedRedis;
beforeAll(async () => {
  server = await spawnRedisServer();
});
afterAll(async () => {
  await server?.stop();
});

/** Counts the writes (system calls, after Node's corking) of a client's socket. */
function countWrites(client: Redis): { writes: number[] } {
  const s = client.stream as Socket & { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
  const seen = { writes: [] as number[] };
  const write = s._write.bind(s);
  const writev = s._writev.bind(s);
  s._write = (...a: unknown[]) => {
    seen.writes.push(1);
    write(...a);
  };
  s._writev = (chunks: unknown, ...rest: unknown[]) => {
    seen.writes.push((chunks as unknown[]).length);
    writev(chunks, ...rest);
  };
  return seen;
}

/** The bytes a client's socket writes from now on, one Buffer a write. */
function captureWrites(client: Redis): Buffer[] {
  const s = client.stream as Socket & { _write: (chunk: Buffer, ...rest: unknown[]) => void };
  const write = s._write.bind(s);
  const sent: Buffer[] = [];
  s._write = (chunk: Buffer, ...rest: unknown[]) => {
    sent.push(Buffer.from(chunk));
    write(chunk, ...rest);
  };
  return sent;
}

describe('script calls on the wire', () => {
  it('Packed runs go as their values; replies come back as for plain values', async () => {
    const client = new Redis(server.port, '127.0.0.1');
    try {
      await client.hset('wire:{t}:tok', 'a', '1', 'b', '2');
      const runner = new ScriptRunner(client);
      // tokenCount-1.lua: HLEN of its one key
      expect(await runner.call('tokenCount', new Packed(['wire:{t}:tok']), [])).toBe(2);
      expect(await runner.call('tokenCount', ['wire:{t}:tok'], [])).toBe(2);
      // an unsafe integer goes whole (as ioredis writes it), numbers and strings alike in a run
      expect(new Packed([2 ** 60, 1.5, 'x']).resp).toBe('$19\r\n1152921504606846976\r\n$3\r\n1.5\r\n$1\r\nx\r\n');
    } finally {
      client.disconnect();
    }
  });

  it('writes EVALSHA with every value as a RESP bulk string, lengths in UTF-8 bytes, Packed runs in place', async () => {
    const client = new Redis(server.port, '127.0.0.1');
    try {
      await client.hset('wire:{t}:tok3', 'a', '1');
      const runner = new ScriptRunner(client, 'evalsha');
      await runner.call('tokenCount', ['wire:{t}:tok3'], []); // EVAL once on this connection
      const sent = captureWrites(client);
      // tokenCount reads no ARGV: these only travel
      expect(await runner.call('tokenCount', ['wire:{t}:tok3'], ['é', 12, new Packed([1, 'x']), ''])).toBe(1);
      const sha = createHash('sha1').update(scripts().find((x) => x.name === 'tokenCount')!.lua).digest('hex');
      expect(Buffer.concat(sent).toString('utf8')).toBe(`*9\r\n$7\r\nevalsha\r\n$40\r\n${sha}\r\n$1\r\n1\r\n$13\r\nwire:{t}:tok3\r\n$2\r\né\r\n$2\r\n12\r\n$1\r\n1\r\n$1\r\nx\r\n$0\r\n\r\n`);
    } finally {
      client.disconnect();
    }
  });

  it('writes FCALL of the library\'s function the same way, where the scripts run as Redis Functions', async () => {
    const client = new Redis(server.port, '127.0.0.1');
    try {
      await client.hset('wire:{t}:tok4', 'a', '1');
      const runner = new ScriptRunner(client, 'detect');
      await runner.call('tokenCount', ['wire:{t}:tok4'], []); // loads the library
      expect(runner.mode).toBe('fcall');
      const sent = captureWrites(client);
      expect(await runner.call('tokenCount', new Packed(['wire:{t}:tok4']), ['é', new Packed([1, 'x'])])).toBe(1);
      const fn = keypoolLibrary().functions.tokenCount!;
      expect(Buffer.concat(sent).toString('utf8')).toBe(`*7\r\n$5\r\nfcall\r\n$${fn.length}\r\n${fn}\r\n$1\r\n1\r\n$13\r\nwire:{t}:tok4\r\n$2\r\né\r\n$1\r\n1\r\n$1\r\nx\r\n`);
    } finally {
      client.disconnect();
    }
  });

  it('a background call waits for the next command and goes out in the same write; alone, it goes within COALESCE_MS', async () => {
    const client = new Redis(server.port, '127.0.0.1');
    try {
      await client.hset('wire:{t}:tok2', 'a', '1');
      const runner = new ScriptRunner(client);
      await runner.call('tokenCount', ['wire:{t}:tok2'], []); // EVAL once on this connection
      const seen = countWrites(client);
      const late = runner.call('tokenCount', ['wire:{t}:tok2'], [], true);
      const now = runner.call('tokenCount', ['wire:{t}:tok2'], []);
      expect(await Promise.all([late, now])).toEqual([1, 1]);
      expect(seen.writes).toEqual([2]);

      seen.writes.length = 0;
      const t0 = performance.now();
      expect(await runner.call('tokenCount', ['wire:{t}:tok2'], [], true)).toBe(1);
      const took = performance.now() - t0;
      expect(seen.writes).toEqual([1]);
      expect(took).toBeGreaterThanOrEqual(COALESCE_MS - 1);
      expect(took).toBeLessThan(COALESCE_MS + 200);

      // a command that is not a script call is held too (it goes with the window), never lost
      seen.writes.length = 0;
      const bg = runner.call('tokenCount', ['wire:{t}:tok2'], [], true);
      expect(await Promise.all([bg, client.hget('wire:{t}:tok2', 'a')])).toEqual([1, '1']);
      expect(seen.writes).toEqual([2]);
    } finally {
      client.disconnect();
    }
  });
  it('background calls held on two connections: a command on one sends its own, the other still goes within COALESCE_MS', async () => {
    const clients = [new Redis(server.port, '127.0.0.1'), new Redis(server.port, '127.0.0.1')];
    try {
      await clients[0]!.hset('wire:{t}:tok3', 'a', '1');
      const runners = clients.map((c) => new ScriptRunner(c));
      for (const r of runners) await r.call('tokenCount', ['wire:{t}:tok3'], []); // EVAL once on each connection
      // either connection first: the one a foreground command releases is taken out of the held
      // ones, the other stays held until the window ends
      for (const first of [0, 1]) {
        const seen = clients.map(countWrites);
        const held = runners.map((r) => r.call('tokenCount', ['wire:{t}:tok3'], [], true));
        const now = runners[first]!.call('tokenCount', ['wire:{t}:tok3'], []);
        expect(await now).toBe(1);
        expect(seen[first]!.writes).toEqual([2]);
        expect(await Promise.all(held)).toEqual([1, 1]);
        expect(seen[1 - first]!.writes).toEqual([1]);
      }
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it("a lease's release goes at once unless the caller says nobody waits for it (the gateway's)", async () => {
    const client = new Redis(server.port, '127.0.0.1');
    const tp = await makePool({ keys: [{ secret: fakeSecret('wire-release'), models: ['m'], rpm: 600 }] }, client);
    try {
      // (a first acquire and release load the scripts on this connection)
      const first = await tp.pool.acquire({ model: 'm' });
      if (!first.ok) throw new Error(first.reason);
      await first.release({ status: 200, latencyMs: 1 });
      for (const background of [false, true]) {
        const l = await tp.pool.acquire({ model: 'm' });
        if (!l.ok) throw new Error(l.reason);
        const seen = countWrites(client);
        const done = l.release({ status: 200, latencyMs: 1 }, { background });
        // a turn of the event loop, far below COALESCE_MS
        await new Promise((r) => setImmediate(r));
        expect([background, seen.writes.length]).toEqual([background, background ? 0 : 1]);
        expect((await done).released).toBe(true);
        expect(seen.writes.length).toBe(1);
      }
    } finally {
      await tp.pool.close();
      client.disconnect();
    }
  });
});
