/**
 * @keypool/server: the keypool gateway in front of a KeyPool: an OpenAI-compatible proxy (/v1, on
 * plain node:http), and an express app for status, health, Prometheus metrics, the admin API and a
 * dashboard. Serve `createGateway(...).handler` (or call its `listen`).
 *
 *   const config = loadGatewayConfig({ file: 'keypool.yaml' });
 *   const serving = await serve(config);          // listens; serving.close() drains and stops
 */
export { createGateway, type Gateway, type GatewayOptions, type GatewaySettings } from './app.js';
export { answerClientErrors } from './errors.js';
export { startEmbeddedRedis } from './embedded-redis.js';
export { GatewayMetrics } from './metrics.js';
export { serve, type ServeOptions, type Serving } from './runner.js';
export { QueueStatusReader, type QueueStatus } from './queue-status.js';
