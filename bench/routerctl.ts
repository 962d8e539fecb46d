// Running the real `sixbed4 router` for a measurement: started through the
// lab helper (the CLI, exactly as users run it), pinned to its CPUs, its pid
// found for /proc accounting, its counters read from the metrics endpoint.
import { CLI, scrape, startRouterIn } from '../agent/lab/sixbed4.js';
import { execCommand } from '../agent/host/command.js';
import { findSystemTool } from '../agent/host/tools.js';
import type { Netns } from '../agent/lab/netns.js';
import type { Proc } from '../agent/lab/proc.js';
import { processCmdline } from './procstat.js';
import { NET } from './topology.js';

export interface RouterSetup {
  batch: number;
  /** undefined: do not pass --workers (the router runs single-threaded, as before the flag). */
  workers?: number;
  /** CPU list for taskset (e.g. "0"), or undefined to leave it unpinned. */
  cpus?: string;
}

export interface RunningBenchRouter {
  proc: Proc;
  pid: number;
  stop(): Promise<void>;
}

/** Whether this build's router knows a flag: its usage text lists it. */
export async function routerHasFlag(flag: string): Promise<boolean> {
  const r = await execCommand([process.execPath, CLI, '--help'], { timeoutMs: 20_000 });
  return new RegExp(`(^|\\s)${flag}(\\s|=|$)`, 'm').test(r.stdout + r.stderr);
}

export async function startBenchRouter(rtr: Netns, s: RouterSetup): Promise<RunningBenchRouter> {
  const args = [
    '--prefix', NET.prefix, '--listen', NET.routerV4, '--port', String(NET.routerPort),
    '--metrics', NET.metrics, '--batch', String(s.batch),
    ...(s.workers !== undefined ? ['--workers', String(s.workers)] : []),
  ];
  const proc = await startRouterIn(rtr, args, 20_000);
  try {
    const pid = await routerPid(rtr, proc);
    if (s.cpus !== undefined && findSystemTool('taskset')) {
      // -a: every thread that exists now (worker threads are up once the router says ready).
      const r = await execCommand([findSystemTool('taskset')!, '-a', '-p', '-c', s.cpus, String(pid)]);
      if (r.code !== 0) throw new Error(`taskset -a -p -c ${s.cpus} ${pid} failed: ${r.stderr.trim()}`);
    }
    return { proc, pid, stop: async () => { await proc.stop('SIGTERM', 5000); } };
  } catch (e) {
    await proc.stop('SIGKILL');
    throw e;
  }
}

/**
 * The router's node process. `ip netns exec` execs in place, so the spawned
 * pid normally is node itself; checked against the namespace's pid list in
 * case a wrapper ever forks.
 */
async function routerPid(rtr: Netns, proc: Proc): Promise<number> {
  const r = await execCommand([findSystemTool('ip') ?? 'ip', 'netns', 'pids', rtr.name]);
  const pids = r.stdout.split(/\s+/).filter(Boolean).map(Number);
  const isRouter = (pid: number) => {
    const argv = processCmdline(pid);
    return argv.includes(CLI) && argv.includes('router');
  };
  if (proc.pid !== undefined && pids.includes(proc.pid) && isRouter(proc.pid)) return proc.pid;
  const found = pids.filter(isRouter);
  if (found.length !== 1) throw new Error(`cannot tell the router's pid in ${rtr.name} (candidates: ${found.join(', ') || 'none'})`);
  return found[0]!;
}

/** Forwarded and dropped packet counters of the router, by label. */
export interface RouterCounters { forwarded: Record<string, number>; dropped: Record<string, number>; }

export async function readRouterCounters(rtr: Netns): Promise<RouterCounters> {
  const m = await scrape(rtr, NET.metrics);
  const out: RouterCounters = { forwarded: {}, dropped: {} };
  for (const [k, v] of m) {
    // Both paths (the router's and the in-kernel fast path's) add up per direction.
    let x = /^sixbed4_router_packets_total\{direction="([^"]+)",path="[^"]+"\}$/.exec(k);
    if (x) out.forwarded[x[1]!] = (out.forwarded[x[1]!] ?? 0) + v;
    x = /^sixbed4_router_dropped_packets_total\{reason="([^"]+)"\}$/.exec(k);
    if (x) out.dropped[x[1]!] = v;
  }
  return out;
}

export function counterDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b)) if (b[k] !== (a[k] ?? 0)) out[k] = b[k]! - (a[k] ?? 0);
  return out;
}
