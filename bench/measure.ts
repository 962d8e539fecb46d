// One measurement: start a generator, let it warm up, read every counter at
// the start and the end of a fixed window, stop, drain, read the totals.
//
// Rates come from what arrived at the sink during the window (never from
// what was sent); losses from the totals of the whole run once the path has
// drained. Each counter read is timed by itself, so the few milliseconds a
// read takes do not skew the rate.
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

import { setTimeout as sleep } from 'node:timers/promises';
import type { Netns } from '../lab/netns.js';
import type { Proc } from '../lab/proc.js';
import type { GenConfig, GenResult, GenSpec } from './generator.js';
import {
  busySeconds,
  cpuTimes,
  cpuUsage,
  ksoftirqdPids,
  processCpu,
  processMemory,
  totalCpuSeconds,
  type CpuTimes,
} from './procstat.js';
import {
  bpftoolProg,
  counterDelta,
  readRouterCounters,
  routerBpfStats,
  type BpfProgStats,
  type RunningBenchRouter,
} from './routerctl.js';
import { readLinks, readSink, readUdpSnmp, type Role, type SinkId } from './topology.js';

const GENERATOR = fileURLToPath(new URL('./generator.js', import.meta.url));

export type Direction = '4→6' | '6→4';
export type Group = 'ceiling' | 'kernel' | 'router' | 'fast' | 'stock' | 'direct' | 'batch' | 'workers' | 'peers';

export interface Spec {
  group: Group;
  /** Human-readable name of the row. */
  name: string;
  direction: Direction;
  size: number;
  /** Where the generator runs, what it sends, and the interface its packets leave by. */
  genNs: Role;
  gen: GenSpec;
  egress: string;
  sink: SinkId;
  /** Facts about the router configuration (for the row and the JSON). */
  batch?: number;
  workers?: number;
  peers?: number;
  flows?: number;
  /** The router runs with --fast-path on. */
  fastPath?: boolean;
  /**
   * Read the run statistics of the router's BPF programs over the window (they count only while
   * kernel.bpf_stats_enabled=1, which the caller sets: it costs time per run, so not in the main measurement).
   */
  bpfStats?: boolean;
}

/** One of the router's BPF programs over a window: how often it ran and how long a run took, inside the program. */
export interface BpfRow {
  id: number;
  name: string;
  /** Where it is attached: "wan1 ingress", ... */
  where: string;
  runs: number;
  nsPerRun: number;
  /** Runs per packet that arrived at the sink in the window. */
  runsPerPkt: number;
}

export interface Timing {
  warmupMs: number;
  windowMs: number;
  genCpus?: string;
}

export interface Row {
  group: Group;
  name: string;
  direction: Direction;
  size: number;
  batch?: number;
  workers?: number;
  peers?: number;
  flows?: number;
  /** Packets per second arriving at the sink during the window. */
  pps: number;
  /** IPv6 bits per second (packet size × pps), in Mbit/s. */
  mbps: number;
  /** Packets per second leaving the generator's namespace during the window. */
  sentPps: number;
  /** Whole run, after draining: left the generator namespace / arrived at the sink. */
  sent: number;
  received: number;
  lost: number;
  lossPct: number;
  router?: {
    cpuPct: number;
    /** Router CPU time per forwarded packet, and its user-space (JavaScript, addon) and kernel parts. */
    usPerPkt: number;
    userUsPerPkt: number;
    systemUsPerPkt: number;
    rssMB: number;
    peakRssMB: number;
    /** Over the whole run, from the router's own metrics. */
    forwarded: Record<string, number>;
    /** The same per "direction/path": path fast = forwarded in the kernel by the fast path, slow = by the router process. */
    byPath: Record<string, number>;
    /** Packets the fast path left to the router, by reason (whole run). */
    passed: Record<string, number>;
    dropped: Record<string, number>;
    droppedTotal: number;
  };
  genCpuPct: number | null;
  /** Busy time of all CPUs (everything on the machine) per packet received. */
  sysUsPerPkt: number;
  /**
   * CPU per packet of what moves the packets: generator + router + ksoftirqd
   * (softirq work runs in, and is charged to, one of these). Unlike
   * sysUsPerPkt, other jobs on the machine do not count.
   */
  pathUsPerPkt: number;
  /** Generator CPU per packet it sent. */
  genUsPerPkt: number | null;
  /** CPU used during the window by anything else (other jobs on the machine), in % of one CPU. */
  otherCpuPct: number;
  /** Busy time of CPU 0 (the router box when pinned and steered) per packet received. */
  cpu0UsPerPkt: number;
  cpus: Array<{ busy: number; softirq: number; steal: number }>;
  /** Where packets were lost in the router namespace (whole run). */
  lossAt: Record<string, number>;
  /** IPv6 neighbour entries in the router namespace after the run (NOARP ones included). */
  neighbours: number;
  generator?: GenResult;
  windowS: number;
  /** With spec.bpfStats: the router's BPF programs during the window, and the rate of that window. */
  bpf?: BpfRow[];
  bpfWindowPps?: number;
  /** path µs/pkt of that window: against the row's own, what the statistics cost. */
  bpfWindowPathUs?: number;
  error?: string;
}

interface Timed {
  value: number;
  t: number;
}

async function timed(read: () => Promise<number>): Promise<Timed> {
  const a = performance.now();
  const value = await read();
  return { value, t: (a + performance.now()) / 2 };
}

type Cpu = { user: number; system: number } | null;
interface Sample {
  sent: Timed;
  recv: Timed;
  t: number;
  cpus: CpuTimes[];
  rtrCpu: Cpu;
  genCpu: Cpu;
  softirqd: number;
  self: number;
}

export interface Ctx {
  ns: Record<Role, Netns>;
  router?: RunningBenchRouter;
  timing: Timing;
  /** ksoftirqd threads, whose CPU is part of the path's cost (see procstat.ts). */
  softirqd: number[];
}

export function newCtx(ns: Record<Role, Netns>, timing: Timing): Ctx {
  return { ns, timing, softirqd: ksoftirqdPids() };
}

async function sample(ctx: Ctx, spec: Spec, genPid?: number): Promise<Sample> {
  const t = performance.now();
  const cpus = cpuTimes();
  const rtrCpu = ctx.router ? processCpu(ctx.router.pid) : null;
  const genCpu = genPid !== undefined ? processCpu(genPid) : null;
  const softirqd = totalCpuSeconds(ctx.softirqd);
  const usage = process.cpuUsage();
  const self = (usage.user + usage.system) / 1e6;
  const [sent, recv] = await Promise.all([
    timed(async () => (await readLinks(ctx.ns[spec.genNs]))[spec.egress]?.txPackets ?? NaN),
    timed(() => readSink(ctx.ns, spec.sink)),
  ]);
  return { sent, recv, t, cpus, rtrCpu, genCpu, softirqd, self };
}

/** What the router namespace says about losses: full socket buffers and full TUN queues. */
async function lossCounters(rtr: Netns): Promise<Record<string, number>> {
  const [links, udp] = await Promise.all([readLinks(rtr), readUdpSnmp(rtr)]);
  const out: Record<string, number> = {
    udp_rcvbuf_errors: udp.RcvbufErrors ?? 0,
    udp_sndbuf_errors: udp.SndbufErrors ?? 0,
  };
  for (const [name, s] of Object.entries(links)) {
    if (name === 'lo') continue;
    out[`${name}_tx_dropped`] = s.txDropped;
    out[`${name}_rx_dropped`] = s.rxDropped;
  }
  return out;
}

export async function measure(ctx: Ctx, spec: Spec): Promise<Row> {
  const { warmupMs, windowMs } = ctx.timing;
  const rtr = ctx.ns.rtr;
  const [base, lossBase, ctrBase] = await Promise.all([
    sample(ctx, spec),
    lossCounters(rtr),
    ctx.router?.metrics ? readRouterCounters(rtr) : Promise.resolve(undefined),
  ]);
  const wantBpf = !!spec.bpfStats && !!ctx.router;
  const w = await runWindow(ctx, spec, warmupMs, windowMs, wantBpf);
  // Let queues (socket buffers, TUN rings) empty before the totals.
  await sleep(250);
  const [end, lossEnd, ctrEnd, neighbours] = await Promise.all([
    sample(ctx, spec),
    lossCounters(rtr),
    ctx.router?.metrics ? readRouterCounters(rtr) : Promise.resolve(undefined),
    // Kernel state that grows with peers even though the router keeps none.
    rtr.json<unknown[]>(['-6', 'neigh', 'show', 'nud', 'all']).then((n) => n.length),
  ]);
  const memory = ctx.router ? processMemory(ctx.router.pid) : null;

  const row = windowRow(spec, w, base, end, counterDelta(lossBase, lossEnd), neighbours);
  const { a, b } = w;
  const routerUser = a.rtrCpu && b.rtrCpu ? b.rtrCpu.user - a.rtrCpu.user : null;
  const routerSystem = a.rtrCpu && b.rtrCpu ? b.rtrCpu.system - a.rtrCpu.system : null;
  if (ctx.router && routerUser !== null && routerSystem !== null) {
    // A router without metrics (the stock one) has its CPU and memory figures; what it forwarded the sinks count.
    const none = { forwarded: {}, byPath: {}, passed: {}, dropped: {} };
    const [c0, c1] = ctrBase && ctrEnd ? [ctrBase, ctrEnd] : [none, none];
    const recvWindow = b.recv.value - a.recv.value;
    row.router = routerFigures(routerUser, routerSystem, recvWindow, row.windowS, memory, c0, c1);
  }
  if (wantBpf) {
    row.bpf = await bpfRows(rtr, w.bpfA, w.bpfB, b.recv.value - a.recv.value);
    row.bpfWindowPps = row.pps;
    row.bpfWindowPathUs = row.pathUsPerPkt;
  }
  return row;
}

/** One measurement window: its samples at start (a) and end (b), the generator's result, the BPF statistics. */
interface Window {
  a: Sample;
  b: Sample;
  genResult?: GenResult;
  bpfA: BpfProgStats[];
  bpfB: BpfProgStats[];
}

/**
 * Runs the spec's generator (pinned where timing says) for the warm-up and the window, samples at both ends of the
 * window, and waits for the generator's result; the generator is killed whatever happens.
 */
async function runWindow(ctx: Ctx, spec: Spec, warmupMs: number, windowMs: number, wantBpf: boolean): Promise<Window> {
  // Slack after the window: on a loaded machine reading the counters at its start can take most of a second.
  const durationMs = warmupMs + windowMs + 1000;
  const cfg = { ...spec.gen, durationMs, maxPackets: Math.ceil(durationMs * 5000) } as GenConfig;
  const argv = [process.execPath, GENERATOR, JSON.stringify(cfg)];
  const gen: Proc = ctx.ns[spec.genNs].spawn(
    ctx.timing.genCpus !== undefined ? ['taskset', '-c', ctx.timing.genCpus, ...argv] : argv,
  );
  let bpfA: BpfProgStats[] = [],
    bpfB: BpfProgStats[] = [];
  try {
    await gen.waitFor(/^sending /, 15_000);
    await sleep(warmupMs);
    const a = await sample(ctx, spec, gen.pid);
    if (wantBpf) bpfA = await routerBpfStats(ctx.router!.pid);
    await sleep(windowMs);
    const b = await sample(ctx, spec, gen.pid);
    if (wantBpf) bpfB = await routerBpfStats(ctx.router!.pid);
    const line = await gen.waitFor(/^result /, durationMs + 10_000);
    const genResult = JSON.parse(line.slice('result '.length)) as GenResult;
    return { a, b, genResult, bpfA, bpfB };
  } finally {
    await gen.stop('SIGKILL', 2000);
  }
}

/**
 * A row's figures without the router's: rates over the window (a to b), totals over the whole run (base to end),
 * and where the CPU went in the window.
 */
function windowRow(
  spec: Spec,
  { a, b, genResult }: Window,
  base: Sample,
  end: Sample,
  lossAt: Record<string, number>,
  neighbours: number,
): Row {
  const recvWindow = b.recv.value - a.recv.value;
  const pps = recvWindow / ((b.recv.t - a.recv.t) / 1000);
  const sentPps = (b.sent.value - a.sent.value) / ((b.sent.t - a.sent.t) / 1000);
  const windowS = (b.t - a.t) / 1000;
  const sent = end.sent.value - base.sent.value;
  const received = end.recv.value - base.recv.value;
  const routerUser = a.rtrCpu && b.rtrCpu ? b.rtrCpu.user - a.rtrCpu.user : null;
  const routerSystem = a.rtrCpu && b.rtrCpu ? b.rtrCpu.system - a.rtrCpu.system : null;
  const sentWindow = b.sent.value - a.sent.value;
  const softirqdS = b.softirqd - a.softirqd;
  const genCpuS = a.genCpu && b.genCpu ? b.genCpu.user + b.genCpu.system - a.genCpu.user - a.genCpu.system : null;
  return {
    group: spec.group,
    name: spec.name,
    direction: spec.direction,
    size: spec.size,
    ...(spec.batch !== undefined ? { batch: spec.batch } : {}),
    ...(spec.workers !== undefined ? { workers: spec.workers } : {}),
    ...(spec.peers !== undefined ? { peers: spec.peers } : {}),
    ...(spec.flows !== undefined ? { flows: spec.flows } : {}),
    pps,
    mbps: (pps * spec.size * 8) / 1e6,
    sentPps,
    sent,
    received,
    lost: sent - received,
    lossPct: sent > 0 ? (100 * (sent - received)) / sent : 0,
    genCpuPct: genCpuS !== null ? (100 * genCpuS) / windowS : null,
    genUsPerPkt: genCpuS !== null && sentWindow > 0 ? (genCpuS * 1e6) / sentWindow : null,
    // The generator's and ksoftirqd's work is per packet sent (it includes the
    // kernel's receive of packets the router then had no room for), the
    // router's per packet it delivered.
    // Without the generator's CPU (it ended before the window did, e.g. on a loaded machine) there is no path figure.
    pathUsPerPkt:
      recvWindow > 0 && sentWindow > 0 && genCpuS !== null
        ? ((genCpuS + softirqdS) * 1e6) / sentWindow + (((routerUser ?? 0) + (routerSystem ?? 0)) * 1e6) / recvWindow
        : NaN,
    otherCpuPct:
      (100 *
        Math.max(
          0,
          busySeconds(a.cpus, b.cpus) -
            (genCpuS ?? 0) -
            (routerUser ?? 0) -
            (routerSystem ?? 0) -
            softirqdS -
            (b.self - a.self),
        )) /
      windowS,
    sysUsPerPkt: recvWindow > 0 ? (busySeconds(a.cpus, b.cpus) * 1e6) / recvWindow : NaN,
    cpu0UsPerPkt: recvWindow > 0 ? (busySeconds(a.cpus.slice(0, 1), b.cpus.slice(0, 1)) * 1e6) / recvWindow : NaN,
    cpus: cpuUsage(a.cpus, b.cpus),
    lossAt,
    neighbours,
    ...(genResult ? { generator: genResult } : {}),
    windowS,
  };
}

/** The counters routerFigures reads (all empty for a router without metrics). */
type RouterCounters = Pick<
  Awaited<ReturnType<typeof readRouterCounters>>,
  'forwarded' | 'byPath' | 'passed' | 'dropped'
>;

/** The router's part of a row: its CPU in the window per packet delivered, its memory, its counters over the run. */
function routerFigures(
  routerUser: number,
  routerSystem: number,
  recvWindow: number,
  windowS: number,
  memory: ReturnType<typeof processMemory>,
  ctrBase: RouterCounters,
  ctrEnd: RouterCounters,
): NonNullable<Row['router']> {
  const dropped = counterDelta(ctrBase.dropped, ctrEnd.dropped);
  const perPkt = (s: number) => (recvWindow > 0 ? (s * 1e6) / recvWindow : NaN);
  return {
    cpuPct: (100 * (routerUser + routerSystem)) / windowS,
    usPerPkt: perPkt(routerUser + routerSystem),
    userUsPerPkt: perPkt(routerUser),
    systemUsPerPkt: perPkt(routerSystem),
    rssMB: (memory?.rss ?? NaN) / 2 ** 20,
    peakRssMB: (memory?.hwm ?? NaN) / 2 ** 20,
    forwarded: counterDelta(ctrBase.forwarded, ctrEnd.forwarded),
    byPath: counterDelta(ctrBase.byPath, ctrEnd.byPath),
    passed: counterDelta(ctrBase.passed, ctrEnd.passed),
    dropped,
    droppedTotal: Object.values(dropped).reduce((x, y) => x + y, 0),
  };
}

async function bpfRows(rtr: Netns, a: BpfProgStats[], b: BpfProgStats[], packets: number): Promise<BpfRow[]> {
  type L = Array<{ ifindex: number; ifname: string }>;
  const names = new Map((await rtr.json<L>(['link', 'show'])).map((l) => [l.ifindex, l.ifname]));
  return Promise.all(
    b.map(async (pb) => {
      const pa = a.find((x) => x.id === pb.id);
      const runs = pb.runCnt - (pa?.runCnt ?? 0),
        ns = pb.runTimeNs - (pa?.runTimeNs ?? 0);
      return {
        id: pb.id,
        name: (await bpftoolProg(pb.id))?.name ?? `prog ${pb.id}`,
        where:
          pb.attach.map((x) => `${names.get(x.ifindex) ?? `ifindex ${x.ifindex}`} ${x.type}`).join(', ') ||
          'not attached',
        runs,
        nsPerRun: runs > 0 ? ns / runs : NaN,
        runsPerPkt: packets > 0 ? runs / packets : NaN,
      };
    }),
  );
}
