// CPU and memory of processes and CPUs, from /proc. Process CPU is
// utime+stime of the whole thread group (worker threads included). This
// kernel accounts CPU time by sampling ticks (no IRQ time accounting), so a
// softirq that runs while the router is on the CPU (e.g. the kernel
// forwarding the packet it just wrote to its TUN) is charged to the router:
// its CPU figure is the full cost of what it triggers on its own CPU.
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** USER_HZ: /proc/<pid>/stat times are in these ticks (100 on every Linux we run on). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds used so far by pid and all its threads, in user space and in the kernel; null if it is gone. */
export function processCpu(pid: number): { user: number; system: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm)", which may itself contain spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    return { user: Number(f[11]) / CLK_TCK, system: Number(f[12]) / CLK_TCK };
  } catch {
    return null;
  }
}

/** Resident memory (VmRSS) and its peak (VmHWM) in bytes; null if the process is gone. */
export function processMemory(pid: number): { rss: number; hwm: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

/**
 * The per-CPU softirq threads. When receive processing runs long, the kernel
 * defers it to these, and then it is charged to them instead of to the
 * process whose packets caused it.
 */
export function ksoftirqdPids(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (/^ksoftirqd\/\d+$/.test(readFileSync(`/proc/${name}/comm`, 'utf8').trim())) out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Summed CPU seconds (user + system) of pids; ones that are gone count 0. */
export function totalCpuSeconds(pids: readonly number[]): number {
  let sum = 0;
  for (const pid of pids) {
    const c = processCpu(pid);
    if (c) sum += c.user + c.system;
  }
  return sum;
}

export function processCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Per-CPU jiffy counters from /proc/stat. */
export interface CpuTimes {
  busy: number;
  softirq: number;
  steal: number;
  total: number;
}

export function cpuTimes(): CpuTimes[] {
  const out: CpuTimes[] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    const v = m[2]!.trim().split(/\s+/).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
    const total = user + nice + system + idle + iowait + irq + softirq + steal;
    out[Number(m[1])] = { busy: total - idle - iowait, softirq, steal, total };
  }
  return out;
}

/** Per CPU, between two cpuTimes(): busy, softirq and steal as % of that CPU's time. */
export function cpuUsage(a: CpuTimes[], b: CpuTimes[]): Array<{ busy: number; softirq: number; steal: number }> {
  return b.map((y, i) => {
    const x = a[i] ?? { busy: 0, softirq: 0, steal: 0, total: 0 };
    const t = y.total - x.total || 1;
    return {
      busy: (100 * (y.busy - x.busy)) / t,
      softirq: (100 * (y.softirq - x.softirq)) / t,
      steal: (100 * (y.steal - x.steal)) / t,
    };
  });
}

/** Busy CPU seconds summed over all CPUs between two cpuTimes(). */
export function busySeconds(a: CpuTimes[], b: CpuTimes[]): number {
  let j = 0;
  b.forEach((y, i) => {
    j += y.busy - (a[i]?.busy ?? 0);
  });
  return j / CLK_TCK;
}
