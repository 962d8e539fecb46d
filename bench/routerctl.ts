// Running the real `sixbed4 router` for a measurement: started through the
// lab helper (the CLI, exactly as users run it), pinned to its CPUs, its pid
// found for /proc accounting, its counters read from the metrics endpoint.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

import { CLI, scrape, startRouterIn } from '../lab/sixbed4.js';
import { execCommand } from '../agent/host/command.js';
import { findSystemTool } from '../agent/host/tools.js';
import type { Netns } from '../lab/netns.js';
import type { Proc } from '../lab/proc.js';
import { processCmdline } from './procstat.js';
import { NET } from './topology.js';
import { buildStock, STOCK_TUN } from '../test/helpers/stock6bed4.js';
import { eventually } from '../test/helpers/wait.js';

export interface RouterSetup {
  batch: number;
  /** undefined: do not pass --workers (the router runs single-threaded, as before the flag). */
  workers?: number;
  /** CPU list for taskset (e.g. "0"), or undefined to leave it unpinned. */
  cpus?: string;
  /**
   * Pass `--fast-path on` (the in-kernel fast path; the router refuses to start when it cannot run it); otherwise
   * `--fast-path off` (auto is the router's default: the TypeScript rows say off).
   */
  /** auto-xdp: auto with the XDP stage (--fast-path-xdp auto: peers' datagrams decapsulated before GRO). */
  fastPath?: boolean | 'auto' | 'direct' | 'auto-xdp';
  /**
   * The stock C router (`6bed4router -l ... -L ...`, built from test/stock/6bed4 as the interop tests build it)
   * instead of ours: the reference the "at most half the stock router's CPU per packet" is measured against.
   * Its per-packet printf goes to /dev/null (as a service whose output is discarded; to a journal it costs more).
   */
  stock?: boolean;
}

export interface RunningBenchRouter {
  proc: Proc;
  pid: number;
  /** It serves sixbed4's metrics (the stock router has none: its rows count at the sinks only). */
  metrics: boolean;
  stop(): Promise<void>;
}

/** Whether this build's router knows a flag: its usage text lists it. */
export async function routerHasFlag(flag: string): Promise<boolean> {
  const r = await execCommand([process.execPath, CLI, '--help'], { timeoutMs: 20_000 });
  return new RegExp(`(^|\\s)${flag}(\\s|=|$)`, 'm').test(r.stdout + r.stderr);
}

export async function startBenchRouter(rtr: Netns, s: RouterSetup): Promise<RunningBenchRouter> {
  if (s.stock) return startStockBenchRouter(rtr, s);
  const args = [
    '--prefix',
    NET.prefix,
    '--listen',
    NET.routerV4,
    '--port',
    String(NET.routerPort),
    '--metrics',
    NET.metrics,
    '--batch',
    String(s.batch),
    ...(s.workers !== undefined ? ['--workers', String(s.workers)] : []),
    '--fast-path',
    s.fastPath === 'auto' || s.fastPath === 'auto-xdp' ? 'auto' : s.fastPath ? 'on' : 'off',
    ...(s.fastPath === 'direct' ? ['--fast-path-direct'] : []),
    ...(s.fastPath === 'auto-xdp' ? ['--fast-path-xdp', 'auto'] : []),
  ];
  const proc = await startRouterIn(rtr, args, 20_000);
  try {
    const pid = await routerPid(rtr, proc);
    await pin(pid, s.cpus);
    return {
      proc,
      pid,
      metrics: true,
      stop: async () => {
        await proc.stop('SIGTERM', 5000);
      },
    };
  } catch (e) {
    await proc.stop('SIGKILL');
    throw e;
  }
}

/** taskset -a: every thread that exists now (worker threads are up once the router says ready). */
async function pin(pid: number, cpus: string | undefined): Promise<void> {
  if (cpus === undefined || !findSystemTool('taskset')) return;
  const r = await execCommand([findSystemTool('taskset')!, '-a', '-p', '-c', cpus, String(pid)]);
  if (r.code !== 0) throw new Error(`taskset -a -p -c ${cpus} ${pid} failed: ${r.stderr.trim()}`);
}

/**
 * The stock router on the bench's address and /64. It opens its TUN (`6bed4`) itself; the /64 is routed into it by
 * hand, as its man page says. Ready once the TUN is up and its UDP socket listens (its output goes to /dev/null, so
 * the LISTEN lines the interop tests wait for are not there).
 */
async function startStockBenchRouter(rtr: Netns, s: RouterSetup): Promise<RunningBenchRouter> {
  const bin = await buildStock(NET.routerV4);
  const proc = rtr.spawn([
    'sh',
    '-c',
    'exec "$0" "$@" >/dev/null 2>&1',
    bin.router,
    '-l',
    NET.routerV4,
    '-L',
    NET.prefix,
  ]);
  try {
    await eventually(
      'the stock router: its TUN up and its UDP socket bound',
      async () => {
        if (!proc.running) throw new Error(`the stock router exited: ${JSON.stringify(proc.exitStatus)}`);
        const links = await rtr.json<{ ifname: string; flags: string[] }[]>(['link', 'show']);
        const up = links.some((l) => l.ifname === STOCK_TUN && l.flags.includes('UP'));
        const ss = await rtr.exec(['ss', '-uln', `sport = :${NET.routerPort}`]);
        return up && ss.stdout.includes(`${NET.routerV4}:${NET.routerPort}`);
      },
      10_000,
      100,
    );
    await rtr.ip(['-6', 'route', 'replace', NET.prefix, 'dev', STOCK_TUN]);
    const pid = proc.pid!;
    await pin(pid, s.cpus);
    return {
      proc,
      pid,
      metrics: false,
      stop: async () => {
        await proc.stop('SIGTERM', 5000);
      },
    };
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
  if (found.length !== 1)
    throw new Error(`cannot tell the router's pid in ${rtr.name} (candidates: ${found.join(', ') || 'none'})`);
  return found[0]!;
}

/** Forwarded and dropped packet counters of the router, by label. */
export interface RouterCounters {
  /** Per direction (udp_to_tun, tun_to_udp, relay), both paths added up. */
  forwarded: Record<string, number>;
  /** Per "direction/path" (path: fast = in the kernel, slow = by the router process), as the router counts them. */
  byPath: Record<string, number>;
  /** Packets the fast path left to the router, by the metric's labels (e.g. reason="udp_checksum"). */
  passed: Record<string, number>;
  dropped: Record<string, number>;
}

/** The metrics' direction label of a row's direction. */
export const METRIC_DIRECTION = { '4→6': 'udp_to_tun', '6→4': 'tun_to_udp' } as const;

export function parseRouterCounters(m: Map<string, number>): RouterCounters {
  const out: RouterCounters = { forwarded: {}, byPath: {}, passed: {}, dropped: {} };
  const labels = (text: string) =>
    Object.fromEntries([...text.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
  for (const [k, v] of m) {
    let x = /^sixbed4_router_packets_total\{(.*)\}$/.exec(k);
    if (x) {
      const l = labels(x[1]!);
      if (!l.direction) continue;
      // Both paths (the router's and the in-kernel fast path's) add up per direction.
      out.forwarded[l.direction] = (out.forwarded[l.direction] ?? 0) + v;
      const key = `${l.direction}/${l.path ?? 'slow'}`;
      out.byPath[key] = (out.byPath[key] ?? 0) + v;
      continue;
    }
    x = /^sixbed4_router_fast_path_passed_total\{(.*)\}$/.exec(k);
    if (x) {
      // e.g. side="udp",reason="udp_checksum" → "udp/udp_checksum" (side: udp = from peers, tun = from the kernel).
      const { side, reason, ...rest } = labels(x[1]!);
      const key = [side, reason, ...Object.entries(rest).map(([a, b]) => `${a}=${b}`)].filter(Boolean).join('/');
      out.passed[key] = (out.passed[key] ?? 0) + v;
      continue;
    }
    x = /^sixbed4_router_dropped_packets_total\{reason="([^"]+)"\}$/.exec(k);
    if (x) out.dropped[x[1]!] = v;
  }
  return out;
}

export async function readRouterCounters(rtr: Netns): Promise<RouterCounters> {
  return parseRouterCounters(await scrape(rtr, NET.metrics));
}

/** A BPF program the router holds, with its run statistics (counted only while kernel.bpf_stats_enabled=1). */
export interface BpfProgStats {
  id: number;
  /** Where it is attached, from the router's link fds: e.g. "ifindex 3 ingress" (empty if not through a link). */
  attach: { ifindex: number; type: string }[];
  runTimeNs: number;
  runCnt: number;
}

/**
 * The BPF programs whose fds the router (pid) holds, from /proc/PID/fdinfo: programs give prog_id, run_time_ns and
 * run_cnt (what `bpftool prog show` prints), links give the program's ifindex and attach type. Found through the
 * router's own fds, so other programs on the host (other tests' routers) never count.
 */
export function routerBpfPrograms(pid: number): BpfProgStats[] {
  const progs = new Map<number, BpfProgStats>();
  const links: { prog: number; ifindex: number; type: string }[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  for (const fd of fds) {
    let target: string, info: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (!target.startsWith('anon_inode:bpf')) continue;
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim();
    const num = (k: string) => Number(field(k) ?? NaN);
    if (target === 'anon_inode:bpf-prog') {
      const id = num('prog_id');
      if (Number.isFinite(id)) progs.set(id, { id, attach: [], runTimeNs: num('run_time_ns'), runCnt: num('run_cnt') });
    } else if (target === 'anon_inode:bpf_link' && field('ifindex') !== undefined) {
      const at = String(field('attach_type') ?? '');
      links.push({ prog: num('prog_id'), ifindex: num('ifindex'), type: /\(([^)]+)\)/.exec(at)?.[1] ?? at });
    }
  }
  for (const l of links) {
    // A program held only through its link: its statistics come from bpftool (below).
    if (!progs.has(l.prog)) progs.set(l.prog, { id: l.prog, attach: [], runTimeNs: NaN, runCnt: NaN });
    progs.get(l.prog)!.attach.push({ ifindex: l.ifindex, type: l.type });
  }
  return [...progs.values()].sort((a, b) => a.id - b.id);
}

/** `bpftool prog show id ID`: the program's name and run statistics, or null without bpftool (or once it is gone). */
export async function bpftoolProg(id: number): Promise<{ name: string; runTimeNs: number; runCnt: number } | null> {
  const tool = findSystemTool('bpftool');
  if (!tool) return null;
  const r = await execCommand([tool, '-j', 'prog', 'show', 'id', String(id)], { timeoutMs: 10_000 });
  if (r.code !== 0) return null;
  const j = JSON.parse(r.stdout) as { name?: string; run_time_ns?: number; run_cnt?: number };
  return { name: j.name ?? `prog ${id}`, runTimeNs: j.run_time_ns ?? 0, runCnt: j.run_cnt ?? 0 };
}

/** routerBpfPrograms, with bpftool's figures for the programs the router holds only through a link. */
export async function routerBpfStats(pid: number): Promise<BpfProgStats[]> {
  const progs = routerBpfPrograms(pid);
  await Promise.all(
    progs
      .filter((p) => !Number.isFinite(p.runCnt))
      .map(async (p) => {
        const b = await bpftoolProg(p.id);
        if (b) {
          p.runTimeNs = b.runTimeNs;
          p.runCnt = b.runCnt;
        }
      }),
  );
  return progs;
}

export function counterDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b)) if (b[k] !== (a[k] ?? 0)) out[k] = b[k]! - (a[k] ?? 0);
  return out;
}
