/**
 * CPU of the benchmark's processes and of the machine, read from /proc (Linux), so that a figure
 * can say where the time went and how busy the shared machine was while it was taken. Every reader
 * answers NaN (or null) where /proc is not there rather than failing the run.
 */
import { readFileSync } from 'node:fs';

const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat times are in 1/100 s

/** CPU seconds (user + system, and system alone) of a process; NaN when unreadable. */
export function procCpuSeconds(pid: number | undefined): { total: number; kernel: number } {
  if (!pid) return { total: NaN, kernel: NaN };
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15
    return { total: (Number(fields[11]) + Number(fields[12])) / CLK_TCK, kernel: Number(fields[12]) / CLK_TCK };
  } catch {
    return { total: NaN, kernel: NaN };
  }
}

/** Nanoseconds the process's main thread spent runnable but waiting for a CPU (/proc/<pid>/schedstat). */
export function procRunqueueWaitNs(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]);
  } catch {
    return NaN;
  }
}

export interface MachineCpu {
  busy: number;
  steal: number;
  total: number;
}

/** Machine-wide CPU jiffies: busy (not idle/iowait), steal, total; null when unreadable. */
export function machineCpu(): MachineCpu | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
    const total = user + nice + system + idle + iowait + irq + softirq + steal;
    return { busy: user + nice + system + irq + softirq, steal, total };
  } catch {
    return null;
  }
}

/** Busy and steal shares of the machine between two readings; null when either is missing. */
export function machineShares(a: MachineCpu | null, b: MachineCpu | null): { busy: number; steal: number } | null {
  if (!a || !b || !(b.total > a.total)) return null;
  const total = b.total - a.total;
  return { busy: (b.busy - a.busy) / total, steal: (b.steal - a.steal) / total };
}
