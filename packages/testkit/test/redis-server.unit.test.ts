import { connect } from 'node:net';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { spawnRedisServer } from '../src/redis-server.js';

/** Resolves with the socket error code, or 'connected'. */
async function tryConnect(port: number): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  try {
    await once(socket, 'connect');
    return 'connected';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  } finally {
    socket.destroy();
  }
}

describe('spawnRedisServer', () => {
  it('starts a server that accepts connections, and kill9() makes the port refuse them', async () => {
    const server = await spawnRedisServer();
    try {
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      expect(await tryConnect(server.port)).toBe('connected');

      server.kill9();
      if (server.process.exitCode === null && server.process.signalCode === null) await once(server.process, 'exit');
      expect(server.process.signalCode).toBe('SIGKILL');
      expect(await tryConnect(server.port)).toBe('ECONNREFUSED');
    } finally {
      await server.stop(); // removes the temp dir even after kill9()
    }
  });
});
