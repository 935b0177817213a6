/**
 * @keypool/worker: the scheduler of a keypool fleet on BullMQ job schedulers (secret refresh,
 * health probes, budget periods, housekeeping), each run once per interval across all workers.
 */
export * from './scheduler.js';
export * from './probe.js';
export * from './run.js';
export * from './queue.js';
export * from './llm-worker.js';
