// The benchmark's output: setup lines, one table, a few conclusions drawn
// only from figures of the same run, and the same as JSON.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname } from 'node:path';

import type { Direction, Row } from './measure.js';
import { METRIC_DIRECTION } from './routerctl.js';

export interface Setup {
  date: string;
  cpuModel: string;
  cores: number;
  virtualised: boolean;
  kernel: string;
  node: string;
  loadStart: number[];
  loadEnd?: number[];
  pinning: string;
  /** Tx checksum offload of the generators' veths, and why. */
  checksum?: string;
  windowS: number;
  warmupS: number;
  workersFlag: boolean;
  notes: string[];
}

export function hostSetup(): Pick<
  Setup,
  'date' | 'cpuModel' | 'cores' | 'virtualised' | 'kernel' | 'node' | 'loadStart'
> {
  let cpuinfo = '';
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    /* not Linux: leave blank */
  }
  return {
    date: new Date().toISOString(),
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    virtualised: /^flags\s*:.*\bhypervisor\b/m.test(cpuinfo),
    kernel: release(),
    node: process.version,
    loadStart: loadavg(),
  };
}

export function setupLines(s: Setup): string[] {
  const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  return [
    `date     ${s.date}`,
    `host     ${s.cpuModel}, ${s.cores} CPUs${s.virtualised ? ' (virtual machine)' : ''}; kernel ${s.kernel}; node ${s.node}`,
    `load     ${load(s.loadStart)} (1/5/15 min) at start${s.loadEnd ? `, ${load(s.loadEnd)} at end` : ''}`,
    `cpus     ${s.pinning}`,
    ...(s.checksum ? [`csum     ${s.checksum}`] : []),
    `window   ${s.windowS} s per measurement after ${s.warmupS} s warm-up; generators send flat out; pps = what arrived at the sink`,
    `sizes    IPv6 packet bytes (4→6 datagrams carry them in UDP/IPv4, +28 bytes on the wire); Mbit/s counts IPv6 bytes`,
    ...s.notes.map((n) => `note     ${n}`),
  ];
}

const int = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '-');
const fix = (x: number | null | undefined, d = 1) =>
  x !== null && x !== undefined && Number.isFinite(x) ? x.toFixed(d) : '-';

/** The kernel reference a row of a given direction is compared with (same generator, same size). */
export function referenceFor(rows: Row[], r: Row): Row | undefined {
  if (r.group === 'ceiling') return undefined;
  if (r.group === 'kernel')
    return rows.find((x) => x.group === 'ceiling' && x.direction === r.direction && x.size === r.size && !x.error);
  return rows.find((x) => x.group === 'kernel' && x.direction === r.direction && x.size === r.size && !x.error);
}

/**
 * Which path the row's packets took, from the router's own metrics (whole run): "fast" when the kernel forwarded
 * them all, "slow" when the router process did, else the share of each. Undefined for rows without a router.
 */
export function pathSplit(r: Row): { fast: number; slow: number } | undefined {
  if (!r.router?.byPath) return undefined;
  const dir = METRIC_DIRECTION[r.direction];
  return { fast: r.router.byPath[`${dir}/fast`] ?? 0, slow: r.router.byPath[`${dir}/slow`] ?? 0 };
}

/** The fraction of a router row's packets forwarded by the fast path (NaN when it forwarded none at all). */
export function fastShare(r: Row): number {
  const p = pathSplit(r);
  return p && p.fast + p.slow > 0 ? p.fast / (p.fast + p.slow) : NaN;
}

export function pathLabel(r: Row): string {
  const p = pathSplit(r);
  if (!p) return r.group === 'kernel' ? 'kernel' : '-';
  const total = p.fast + p.slow;
  if (total === 0) return 'none';
  if (p.slow === 0) return 'fast';
  if (p.fast === 0) return 'slow';
  // Never round a mixed row to 100% of either.
  const f = Math.min(99, Math.max(1, Math.round((100 * p.fast) / total)));
  return `fast ${f}% slow ${100 - f}%`;
}

export function table(rows: Row[]): string[] {
  const head = [
    'measurement',
    'size',
    'pps',
    'Mbit/s',
    'fwd path',
    'loss%',
    'lost at',
    'rtr CPU%',
    'rtr µs/pkt usr+sys',
    'path µs/pkt',
    'RSS MB',
    'rtr drops',
    'gen CPU%',
    'CPU0/1 busy%',
    'other%',
    'vs ref',
  ];
  const body = rows.map((r) => {
    if (r.error) return [r.name, String(r.size), `not measured: ${r.error}`];
    const ref = referenceFor(rows, r);
    return [
      r.name,
      String(r.size),
      int(r.pps),
      fix(r.mbps),
      pathLabel(r),
      fix(r.lossPct),
      lostAt(r),
      fix(r.router?.cpuPct, 0),
      r.router
        ? `${fix(r.router.usPerPkt, 2)} = ${fix(r.router.userUsPerPkt, 2)}+${fix(r.router.systemUsPerPkt, 2)}`
        : '-',
      fix(r.pathUsPerPkt, 2),
      fix(r.router?.rssMB, 0),
      r.router ? int(r.router.droppedTotal) : '-',
      fix(r.genCpuPct, 0),
      r.cpus.map((c) => fix(c.busy, 0)).join('/'),
      fix(r.otherCpuPct, 0),
      ref ? `${fix((100 * r.pps) / ref.pps, 0)}%` : '',
    ];
  });
  const widths = head.map((h, i) =>
    Math.max(h.length, ...body.filter((b) => b.length === head.length).map((b) => b[i]!.length)),
  );
  const line = (cells: string[]) =>
    cells.length === head.length
      ? cells.map((c, i) => (i < 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
      : `${cells[0]!.padEnd(widths[0]!)}  ${cells[1]!.padStart(widths[1]!)}  ${cells.slice(2).join(' ')}`;
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  out.push(...fastDetail(rows));
  out.push(
    '',
    "pps: packets/s arriving at the sink; fwd path: who forwarded the row's packets, from the router's metrics",
    '(sixbed4_router_packets_total{direction,path}, whole run): fast = the in-kernel fast path, slow = the router process;',
    'loss%: (left the generator namespace − arrived) / left, whole run;',
    'lost at: the biggest loss counter in the router namespace (sock: its UDP socket buffer was full; tun: the TUN queue',
    'towards the router was full; dev tx/rx: an interface dropped);',
    'rtr CPU%: router process utime+stime (all threads) / window; rtr µs/pkt: router CPU time / packet arrived,',
    'split into user space (JavaScript and the addon) + kernel (system calls and the softirq work they trigger);',
    'path µs/pkt: CPU time of generator + router + ksoftirqd / packet arrived: everything that moves the packets,',
    'kernel work included (softirqs are charged to the task they interrupt), other jobs on the machine excluded;',
    'other%: CPU taken by other jobs on the machine during the window (% of one CPU; such windows are retried);',
    "rtr drops: the router's own drop counters over the run; vs ref: sixbed4 rows against kernel forwarding",
    'with the same generator and size, kernel rows against the generator ceiling.',
  );
  return out;
}

/** Under the table: per fast row, the path split in numbers, what the fast path left to the router and why, BPF run time. */
export function fastDetail(rows: Row[]): string[] {
  const fast = rows.filter((r) => r.group === 'fast' && !r.error && r.router);
  if (fast.length === 0) return [];
  const out = ['', 'fast path rows (router with --fast-path on):'];
  for (const r of fast) {
    const p = pathSplit(r)!,
      dir = METRIC_DIRECTION[r.direction];
    const passed = Object.entries(r.router!.passed)
      .filter(([, v]) => v > 0)
      .sort((a, b) => b[1] - a[1]);
    out.push(
      `  ${r.direction} ${r.size} B: ${dir} fast ${int(p.fast)}, slow ${int(p.slow)}` +
        (passed.length
          ? `; left to the router by the fast path: ${passed
              .slice(0, 4)
              .map(([k, v]) => `${k} ${int(v)}`)
              .join(', ')}`
          : ''),
    );
    if (r.bpf) {
      const progs = r.bpf.filter((b) => b.runs > 0);
      out.push(
        `    BPF (a window with kernel.bpf_stats_enabled=1: ${int(r.bpfWindowPps ?? NaN)} pps, path ${fix(r.bpfWindowPathUs, 2)} µs/pkt): ` +
          (progs.length
            ? progs
                .map((b) => `${b.name} on ${b.where}: ${fix(b.nsPerRun, 0)} ns/run, ${fix(b.runsPerPkt, 2)} runs/pkt`)
                .join('; ')
            : r.bpf.length
              ? `the router's programs (${r.bpf.map((b) => `${b.name} on ${b.where}`).join(', ')}) did not run`
              : 'the router holds no BPF program'),
      );
    }
  }
  return out;
}

const pct = (x: number, of: number) => `${((100 * x) / of).toFixed(0)}%`;

/**
 * CPU a row adds per packet over its own generator alone (its path cost minus the ceiling's with the same
 * generator and size): what forwarding costs, wherever it ran, comparable across generators.
 */
export function addedUs(ok: Row[], r: Row): number {
  const ceil = ok.find((x) => x.group === 'ceiling' && x.direction === r.direction && x.size === r.size);
  return ceil ? r.pathUsPerPkt - ceil.pathUsPerPkt : NaN;
}

/** Kernel IPv6 forwarding at a size (the TUN generator's row, isp → peer): the reference per-packet cost. */
export function kernelV6(ok: Row[], size: number): Row | undefined {
  return ok.find((x) => x.group === 'kernel' && x.direction === '6→4' && x.size === size);
}

/** A fast row of the route-lookup variant (--fast-path-direct: run.ts names it so). */
const isDirect = (r: Row) => r.name.includes('fast path direct');
const fastLabel = (r: Row) => (isDirect(r) ? 'sixbed4 --fast-path on --fast-path-direct' : 'sixbed4 --fast-path on');

/** The fast path's goal: CPU added per packet within ×goal of kernel IPv6 forwarding's (same size), per fast row. */
export function fastGoal(ok: Row[], goal = 1.3): string[] {
  const parts: string[] = [];
  for (const fast of ok.filter((r) => r.group === 'fast')) {
    const ref = kernelV6(ok, fast.size);
    const share = fastShare(fast);
    const what = `${fast.direction} ${fast.size} B${isDirect(fast) ? ' direct' : ''}`;
    if (!ref) continue;
    const ratio = addedUs(ok, fast) / addedUs(ok, ref);
    if (!Number.isFinite(ratio)) continue;
    if (!(share > 0)) parts.push(`${what} ×${fix(ratio, 2)} (not the fast path: the router process forwarded them)`);
    else
      parts.push(
        `${what} ×${fix(ratio, 2)} ${ratio <= goal ? 'met' : 'not met'}${share < 1 ? ` (${(100 * share).toFixed(0)}% fast)` : ''}`,
      );
  }
  return parts.length
    ? [`fast path goal, CPU added per packet ≤ ×${goal} kernel IPv6 forwarding's: ${parts.join('; ')}`]
    : [];
}

/**
 * Against the stock C router, in the same run: the CPU each of ours adds per packet over the generator, as a share of
 * what the stock router adds. As installed is the fast path (Auto, the default, where it loads); goal ≤ ×goal.
 */
export function stockGoal(ok: Row[], goal = 0.5): string[] {
  const parts: string[] = [];
  for (const stock of ok.filter((r) => r.group === 'stock')) {
    const base = addedUs(ok, stock);
    if (!Number.isFinite(base) || base <= 0) continue;
    const same = (g: Row['group']) =>
      ok.find((r) => r.group === g && !isDirect(r) && r.direction === stock.direction && r.size === stock.size);
    const fast = same('fast'),
      ts = same('router');
    const ratio = (r: Row | undefined) => (r ? addedUs(ok, r) / base : NaN);
    const f = ratio(fast),
      t = ratio(ts);
    if (!Number.isFinite(f) && !Number.isFinite(t)) continue;
    parts.push(
      `${stock.direction} ${stock.size} B: as installed (fast path) ×${fix(f, 2)}` +
        (Number.isFinite(f) ? (f <= goal ? ' met' : ' not met') : '') +
        (fast && fastShare(fast) < 1 ? ` (${(100 * fastShare(fast)).toFixed(0)}% fast)` : '') +
        `, TypeScript path ×${fix(t, 2)}; stock ${int(stock.pps)} pps, ${fix(base, 2)} µs`,
    );
  }
  return parts.length
    ? [`against the stock 6bed4router, CPU added per packet (goal as installed ≤ ×${goal}): ${parts.join('; ')}`]
    : [];
}

/**
 * "CPU added per packet over the generator alone" (the generator's own cost cancels out: what forwarding adds per
 * packet, wherever it ran), with each row's ratio to kernel IPv6 forwarding's at that size; for 4→6 also kernel
 * IPv4 forwarding's, which uses the same (UDP) generator.
 */
function addedLine(
  ok: Row[],
  dir: Direction,
  size: number,
  rows: Array<[string, Row | undefined]>,
): string | undefined {
  const v6 = kernelV6(ok, size);
  const v4 =
    dir === '4→6' ? ok.find((x) => x.group === 'kernel' && x.direction === '4→6' && x.size === size) : undefined;
  const ref = v6 ? addedUs(ok, v6) : NaN;
  const parts = rows
    .filter((x): x is [string, Row] => !!x[1])
    .map(([label, r]) => {
      const us = addedUs(ok, r);
      return Number.isFinite(us)
        ? `${label} ${fix(us, 2)} µs (×${fix(us / ref, 1)}${r.group === 'fast' ? `; ${int(r.pps)} pps; ${fastPathWords(r)}` : ''})`
        : undefined;
    })
    .filter((x) => x !== undefined);
  if (!Number.isFinite(ref) || parts.length === 0) return undefined;
  const v4us = v4 ? addedUs(ok, v4) : NaN;
  return (
    `  CPU added per packet over the generator alone: kernel IPv6 forwarding ${fix(ref, 2)} µs` +
    (Number.isFinite(v4us) ? ` (IPv4, same generator as 4→6: ${fix(v4us, 2)} µs)` : '') +
    `; ${parts.join(', ')}`
  );
}

/** Which path a fast row's packets took, in words, so that no ratio is read as the fast path's when it is not. */
function fastPathWords(r: Row): string {
  const share = fastShare(r);
  if (!Number.isFinite(share)) return 'the router counted no packet in this direction';
  if (share === 1) return 'all packets in the kernel';
  if (share === 0) return 'all packets by the router process, none in the kernel';
  return `only ${(100 * share).toFixed(share > 0.99 ? 2 : 0)}% in the kernel, the rest by the router process`;
}

/** What limited a router row: the router (busy, or its queues overflowed) or the generator. */
function bound(r: Row): string {
  const queueLoss = (r.lossAt.udp_rcvbuf_errors ?? 0) + (r.lossAt['6bed4_tx_dropped'] ?? 0);
  const routerBusy = (r.router?.cpuPct ?? 0) >= 90 * (r.workers ?? 1);
  const genBusy = (r.genCpuPct ?? 0) >= 95;
  const lossy = queueLoss > 0.01 * r.sent;
  if (lossy)
    return `router-bound (${pct(queueLoss, r.sent)} lost in its queues${routerBusy ? '' : ', though its CPU was not busy'})`;
  if (routerBusy && genBusy) return 'router and generator both at full CPU, nothing lost: a lower bound for the router';
  if (routerBusy) return 'router-bound (its CPU is busy)';
  return 'generator-bound (the router had CPU to spare and lost nothing in its queues)';
}

/** The biggest loss counter of a row, in a few characters. */
function lostAt(r: Row): string {
  const [name, n] = Object.entries(r.lossAt)
    .filter(([, v]) => v > 0)
    .sort((x, y) => y[1] - x[1])[0] ?? ['', 0];
  if (!name || n < Math.max(1, r.lost * 0.1)) return '-';
  const short =
    name === 'udp_rcvbuf_errors'
      ? 'sock'
      : name === 'udp_sndbuf_errors'
        ? 'sndbuf'
        : name.replace(/^6bed4_tx_dropped$/, 'tun').replace(/_(tx|rx)_dropped$/, ' $1');
  return `${short} ${int(n)}`;
}

/** Conclusions that only compare figures measured in this run. */
export function summary(rows: Row[], target = 700_000): string[] {
  const ok = rows.filter((r) => !r.error);
  return [
    ...routerLines(ok),
    ...fastOnlyLines(ok),
    ...fastGoal(ok),
    ...stockGoal(ok),
    ...batchingLines(ok),
    ...workersLines(ok),
    ...statelessnessLines(ok),
    ...targetLines(ok, target),
  ];
}

/** Thousands of packets per second, as the summary writes rates. */
const kpps = (x: number) => `${Math.round(x / 1000).toLocaleString('en-US')}k pps`;

/**
 * Per direction and size, the router's main row against kernel forwarding and the generator ceiling, what bounds
 * it, and the CPU it adds per packet (beside the same row with --fast-path on).
 */
function routerLines(ok: Row[]): string[] {
  const out: string[] = [];
  for (const dir of ['4→6', '6→4'] as Direction[]) {
    for (const size of [48, 1280]) {
      const main = ok.find((r) => r.group === 'router' && r.direction === dir && r.size === size);
      if (!main) continue;
      const ref = referenceFor(ok, main);
      const ceil = ok.find((r) => r.group === 'ceiling' && r.direction === dir && r.size === size);
      out.push(
        `${dir} ${size} B: sixbed4 ${kpps(main.pps)}` +
          (ref ? ` = ${pct(main.pps, ref.pps)} of kernel forwarding (${kpps(ref.pps)})` : '') +
          (ceil ? `, ${pct(main.pps, ceil.pps)} of the generator ceiling (${kpps(ceil.pps)})` : '') +
          (main.router
            ? `; router ${main.router.cpuPct.toFixed(0)}% CPU, ${main.router.usPerPkt.toFixed(2)} µs/pkt; ${bound(main)}`
            : ''),
      );
      const fast = ok.find((r) => r.group === 'fast' && !isDirect(r) && r.direction === dir && r.size === size);
      const stock = ok.find((r) => r.group === 'stock' && r.direction === dir && r.size === size);
      const added = addedLine(ok, dir, size, [
        ['sixbed4', main],
        ['sixbed4 --fast-path on', fast],
        ['stock 6bed4router', stock],
      ]);
      if (added) out.push(added);
    }
  }
  return out;
}

/** Fast rows without their router row (--only fast), and the direct ones: against kernel forwarding all the same. */
function fastOnlyLines(ok: Row[]): string[] {
  const out: string[] = [];
  for (const fast of ok.filter(
    (r) =>
      r.group === 'fast' &&
      (isDirect(r) || !ok.find((m) => m.group === 'router' && m.direction === r.direction && m.size === r.size)),
  )) {
    const ref = referenceFor(ok, fast);
    out.push(
      `${fast.direction} ${fast.size} B: ${fastLabel(fast)} ${kpps(fast.pps)}` +
        (ref ? ` = ${pct(fast.pps, ref.pps)} of kernel forwarding (${kpps(ref.pps)})` : '') +
        `; ${fastPathWords(fast)}`,
    );
    const added = addedLine(ok, fast.direction, fast.size, [[fastLabel(fast), fast]]);
    if (added) out.push(added);
  }
  return out;
}

/** Batch 1 against the main (batch 64) rows at 48 bytes. */
function batchingLines(ok: Row[]): string[] {
  const out: string[] = [];
  for (const dir of ['4→6', '6→4'] as Direction[]) {
    const b64 = ok.find((r) => r.group === 'router' && r.direction === dir && r.size === 48);
    const b1 = ok.find((r) => r.group === 'batch' && r.direction === dir && r.size === 48);
    if (b64?.router && b1?.router) {
      out.push(
        `batching ${dir} 48 B: batch 1 → ${b64.batch}: ${kpps(b1.pps)} → ${kpps(b64.pps)} (×${(b64.pps / b1.pps).toFixed(2)}), ` +
          `router ${b1.router.usPerPkt.toFixed(2)} → ${b64.router.usPerPkt.toFixed(2)} µs/pkt`,
      );
    }
  }
  return out;
}

/** Each several-workers row against the one-worker row with the same traffic (batch, direction, size, flows, peers). */
function workersLines(ok: Row[]): string[] {
  const out: string[] = [];
  for (const w2 of ok.filter((r) => r.group === 'workers' && (r.workers ?? 1) > 1)) {
    const w1 = ok.find(
      (r) =>
        r !== w2 &&
        (r.workers ?? 1) === 1 &&
        r.batch === w2.batch &&
        r.direction === w2.direction &&
        r.size === w2.size &&
        (r.flows ?? 1) === (w2.flows ?? 1) &&
        (r.peers ?? 1) === (w2.peers ?? 1),
    );
    if (!w1?.router || !w2.router) continue;
    const what = w2.direction === '4→6' ? `${w2.flows} flows` : `${(w2.peers ?? 1).toLocaleString('en-US')} peers`;
    out.push(
      `workers ${w2.direction} 48 B, ${what}: 1 → ${w2.workers}: ${kpps(w1.pps)} → ${kpps(w2.pps)} (×${(w2.pps / w1.pps).toFixed(2)}), ` +
        `router ${w1.router.usPerPkt.toFixed(2)} → ${w2.router.usPerPkt.toFixed(2)} µs/pkt, ${w1.router.cpuPct.toFixed(0)} → ${w2.router.cpuPct.toFixed(0)}% CPU`,
    );
  }
  return out;
}

/**
 * Rate and router CPU per packet over 1 to 100,000 peers at 48 bytes: a stateless router costs the same per packet
 * whatever the number of peers. 6→4 also says when the kernel's neighbour table grew with them.
 */
function statelessnessLines(ok: Row[]): string[] {
  const out: string[] = [];
  for (const dir of ['6→4', '4→6'] as Direction[]) {
    // 6→4: the main row is the 1-peer point; 4→6: only the TUN-generator rows (they have peers set).
    const series = ok
      .filter(
        (r) =>
          r.direction === dir &&
          r.size === 48 &&
          (r.workers ?? 1) === 1 &&
          (r.group === 'peers' || (dir === '6→4' && r.group === 'router')),
      )
      .sort((x, y) => (x.peers ?? 1) - (y.peers ?? 1));
    if (series.length < 2) continue;
    const us = series.map((r) => r.router?.usPerPkt ?? NaN);
    out.push(
      `statelessness ${dir} 48 B: ${series
        .map(
          (r) =>
            `${(r.peers ?? 1).toLocaleString('en-US')} peer${(r.peers ?? 1) > 1 ? 's' : ''} ` +
            `${kpps(r.pps)}${r.router ? ` (${r.router.usPerPkt.toFixed(2)} µs/pkt)` : ''}`,
        )
        .join(', ')}; ` +
        `router µs/pkt most/fewest peers ×${fix(us[us.length - 1]! / us[0]!, 2)}; rate slowest/fastest ${fix(Math.min(...series.map((r) => r.pps)) / Math.max(...series.map((r) => r.pps)), 2)}`,
    );
    const last = series[series.length - 1]!;
    if (dir === '6→4' && last.neighbours > 100) {
      out.push(
        `  the router namespace's kernel ended with ${series.map((r) => int(r.neighbours)).join(' / ')} IPv6 neighbour entries: ` +
          'a /64 routed on-link to the TUN makes the kernel keep one (NOARP) entry per peer address, and garbage-collect ' +
          'them when there are more than net.ipv6.neigh.default.gc_thresh3 (1024); a route via a fixed link-local next hop keeps one',
      );
    }
  }
  return out;
}

/** When even the generators cannot reach the target rate, a line saying which figures compare instead. */
function targetLines(ok: Row[], target: number): string[] {
  const ceilings = ok.filter((r) => r.group === 'ceiling');
  if (!ceilings.length) return [];
  const best = Math.max(...ceilings.map((r) => r.pps));
  if (best >= target) return [];
  return [
    `target ${kpps(target)}: not reachable on this machine: the generators alone peak at ${kpps(best)} into the next namespace, ` +
      'so the ratios to kernel forwarding and the CPU µs/pkt above are the comparable figures',
  ];
}

export function writeJson(file: string, data: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
}
