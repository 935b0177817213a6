/**
 * The V8 heap a gateway process holds once @keypool/server is imported, after a full GC: what a
 * gateway pays at startup for the modules it loads (the AWS SDK, node-vault and bullmq are loaded
 * at first use, so a gateway without them never holds them). Runs the sources through tsx, whose
 * own share is printed apart (the heap before the import).
 *
 *   node --expose-gc --conditions=@keypool/source --import tsx scripts/bench/import-heap.ts [--json]
 */
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc (see the header of this file)');
const mb = (b: number) => Math.round((b / 1048576) * 10) / 10;
gc();
const before = process.memoryUsage().heapUsed;
await import('@keypool/server');
gc();
const after = process.memoryUsage().heapUsed;
const result = { heapBeforeImportMB: mb(before), heapAfterImportMB: mb(after), importMB: mb(after - before) };
process.stdout.write(process.argv.includes('--json') ? JSON.stringify(result) + '\n' : `heap before import ${result.heapBeforeImportMB} MB (node + tsx), after importing @keypool/server ${result.heapAfterImportMB} MB (+${result.importMB} MB)\n`);
