/**
 * @keypool/client: the official `openai` SDK surface backed by a keypool.
 *
 *   const pool = await KeyPool.connect({ redis, config });
 *   const openai = new PooledOpenAI({ pool });
 *   const reply = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
 */
export { PooledOpenAI, type CallOptions, type PooledOpenAIOptions } from './pooled-openai.js';
export { CallAbort, CallSignal, Dispatcher, TimedOut, TokenRefusedError, callController, type CallControl, type DispatchCall, type DispatchOptions, type Dispatched, type Failure, type Priority, type Route } from './dispatch.js';
export { PoolExhaustedError, isPoolExhausted } from '@keypool/core';
export { estimateChat, estimateCompletion, estimateEmbedding, estimateResponse, textTokens, type Estimate } from './estimate.js';
