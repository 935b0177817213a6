/**
 * @keypool/server: the keypool gateway. An express app in front of a KeyPool: an OpenAI-compatible
 * proxy (/v1), status, health, Prometheus metrics, the admin API and a dashboard.
 *
 *   const config = loadGatewayConfig({ file: 'keypool.yaml' });
 *   const serving = await serve(config);          // listens; serving.close() drains and stops
 */
export { createGateway, type Gateway, type GatewayOptions, type GatewaySettings } from './app.js';
// the config lives in @keypool/config; re-exported so that existing imports of these names keep working
export { loadGatewayConfig, QueueSectionSchema, SchedulerSectionSchema, type GatewayConfig, type LoadGatewayConfigOptions, type QueueSection, type SchedulerSection } from '@keypool/config';
export { startEmbeddedRedis } from './embedded-redis.js';
export { GatewayMetrics } from './metrics.js';
export { REDACT, rootLogger } from '@keypool/config';
export { serve, type ServeOptions, type Serving } from './runner.js';
export { QueueStatusReader, type QueueStatus } from './queue-status.js';
