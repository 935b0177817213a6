/**
 * Bytes a process allocated on the V8 heap over a period, garbage collected or not: the growth of
 * the used heap between collections, summed (v8.GCProfiler gives the used heap before and after
 * each collection). Cheap enough to run during a measured slice (one record per GC, no sampling).
 * Buffers' backing stores live outside the V8 heap and are not counted.
 */
import v8 from 'node:v8';

interface GcRecord {
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

export class HeapAllocations {
  private profiler: v8.GCProfiler | undefined;
  private startUsed = 0;

  start(): void {
    this.profiler?.stop();
    this.profiler = new v8.GCProfiler();
    this.startUsed = v8.getHeapStatistics().used_heap_size;
    this.profiler.start();
  }

  /** Bytes allocated since start() and the young / full collections run meanwhile. */
  stop(): { allocatedBytes: number; youngGcs: number; fullGcs: number } {
    const endUsed = v8.getHeapStatistics().used_heap_size;
    const stats = ((this.profiler?.stop() as { statistics?: (GcRecord & { gcType: string })[] } | undefined)?.statistics ?? []) as (GcRecord & { gcType: string })[];
    this.profiler = undefined;
    let allocated = 0;
    let last = this.startUsed;
    let young = 0;
    for (const s of stats) {
      allocated += Math.max(0, s.beforeGC.heapStatistics.usedHeapSize - last);
      last = s.afterGC.heapStatistics.usedHeapSize;
      if (/scavenge/i.test(s.gcType)) young++;
    }
    allocated += Math.max(0, endUsed - last);
    return { allocatedBytes: allocated, youngGcs: young, fullGcs: stats.length - young };
  }
}
