// `npm run bench`: the forwarding benchmark of issue 3.
//
// Builds its own namespaces (bench/topology.ts), then measures, in one run:
//   1. each generator straight into the next namespace (its ceiling),
//   2. the kernel forwarding the same generators' traffic (the reference),
//   3. the sixbed4 router 4→6 and 6→4 at 48 and 1280 bytes, and the same with
//      --fast-path on (which path each direction's packets took: the router's metrics),
//   4. the router with --batch 1, and with --workers 2 where the flag exists,
//   5. 6→4 towards, and 4→6 from, 1, 1,000 and 100,000 distinct peers.
// Absolute rates depend on the machine; only figures of the same run are
// compared. Every namespace is removed at the end, on failure and on Ctrl-C.
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { findSystemTool } from '../agent/host/tools.js';
import { requireRootReason } from '../lab/topology.js';
import { measure, newCtx, type Ctx, type Direction, type Group, type Row, type Spec, type Timing } from './measure.js';
import { hostSetup, setupLines, summary, table, writeJson, type Setup } from './report.js';
import { routerHasFlag, startBenchRouter, type RouterSetup, type RunningBenchRouter } from './routerctl.js';
import { runFlood, type FloodResult } from './flood.js';
import { bulkLines, runBulk, type BulkRow } from './bulk.js';
import {
  addCeilingSink,
  buildBenchNet,
  NET,
  removeCeilingSink,
  setTxChecksum,
  TX_CSUM_VETHS,
  txChecksumState,
  type BenchNet,
  type SinkId,
} from './topology.js';

const GROUPS: Group[] = ['ceiling', 'kernel', 'router', 'fast', 'stock', 'direct', 'batch', 'workers', 'peers'];
/** Groups outside the packets-per-second table: the flood scenario (bench/flood.ts), bulk TCP (bench/bulk.ts). */
const EXTRA_GROUPS = ['flood', 'bulk'] as const;
const ALL_GROUPS: readonly string[] = [...GROUPS, ...EXTRA_GROUPS];
const DEFAULT_JSON = fileURLToPath(new URL('../bench-results.json', import.meta.url));
/** A window in which other jobs used more than this % of a CPU is measured again. */
const INTERFERENCE_PCT = 15;
const RETRIES_PER_ROW = 2;
/** Whatever happens, the run ends (and cleans up) within this. */
// A full run with the fast rows takes 4 min, 7 when other jobs make it measure again (--retries 40).
const HARD_LIMIT_MS = 12 * 60_000;

const USAGE = `usage: npm run bench -- [--quick] [--duration S] [--only GROUPS] [--sizes 48,1280] [--json FILE] [--retries N] [--rps] [--tx-offload]

  --quick        1 s per measurement instead of 3 s
  --duration S   seconds per measurement window (overrides --quick)
  --only GROUPS  comma-separated subset of: ${ALL_GROUPS.join(',')}
                 (fast: the router with --fast-path on, both directions, each size;
                  direct: 4→6 with --fast-path on --fast-path-direct, each size, in the fast rows;
                  flood: a legitimate peer pings every 10 ms while one source, then many spoofed ones,
                  flood the router with junk;
                  bulk: TCP with iperf3 both ways: kernel forwarding, --fast-path off and auto)
  --sizes LIST   IPv6 packet sizes for the main rows (default 48,1280; 48..1280)
  --json FILE    where to write the results (default ${DEFAULT_JSON})
  --retries N    measurements repeated, in all, because other jobs took > ${INTERFERENCE_PCT}% of a CPU
                 (at most ${RETRIES_PER_ROW} per row; default 12)
  --rps          steer the router namespace's receive processing to CPU 0 and the other
                 namespaces' to CPU 1 (RPS), instead of leaving it on the sending CPU
  --tx-offload   leave tx checksum offload on the generators' veths and the router's uplink on for every
                 row but fast (default: off for every row: full UDP checksums on every wire, as from a NIC)
needs root (network namespaces, TUN devices) and ip, nft, sysctl, ping; taskset for CPU pinning.
`;

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      duration: { type: 'string' },
      only: { type: 'string' },
      sizes: { type: 'string' },
      json: { type: 'string' },
      rps: { type: 'boolean' },
      'tx-offload': { type: 'boolean' },
      retries: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const windowS = values.duration !== undefined ? Number(values.duration) : values.quick ? 1 : 3;
  if (!(windowS > 0 && windowS <= 30))
    throw new Error(`--duration ${values.duration}: use a number of seconds in (0, 30]`);
  const only = values.only ? values.only.split(',').map((s) => s.trim()) : [...ALL_GROUPS];
  const bad = only.filter((g) => !ALL_GROUPS.includes(g));
  if (bad.length) throw new Error(`--only: unknown group(s) ${bad.join(', ')}; use ${ALL_GROUPS.join(',')}`);
  const sizes = (values.sizes ?? '48,1280').split(',').map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 48 || s > 1280))
    throw new Error(`--sizes ${values.sizes}: IPv6 sizes 48..1280`);
  const retries = values.retries !== undefined ? Number(values.retries) : 12;
  if (!Number.isInteger(retries) || retries < 0) throw new Error(`--retries ${values.retries}: use a whole number`);
  return {
    windowS,
    warmupS: windowS < 2 ? 0.3 : 0.5,
    groups: new Set(only as Group[]),
    flood: only.includes('flood'),
    bulk: only.includes('bulk'),
    sizes,
    json: values.json ?? DEFAULT_JSON,
    rps: !!values.rps,
    retries,
    txOffload: !!values['tx-offload'],
  };
}

// --- what is measured -------------------------------------------------------

/** 4→6: UDP/IPv4 from the peer to the router's 6bed4 port, IPv6 inside for the isp. */
function udpSpec(
  group: Group,
  name: string,
  size: number,
  sink: SinkId,
  flows = 1,
  to: string = NET.routerV4,
  port: number = NET.routerPort,
): Spec {
  return {
    group,
    name,
    direction: '4→6',
    size,
    genNs: 'peer',
    egress: NET.peerIf,
    sink,
    flows,
    gen: { mode: 'udp', size, bind: NET.peerV4, to, port, prefix: NET.prefix, innerDst: NET.ispV6, flows },
  };
}

/** 6→4: IPv6 from the isp's TUN generator, to peers' 6bed4 addresses (or a fixed address). */
function tunSpec(group: Group, name: string, size: number, sink: SinkId, peers = 1, dst?: string): Spec {
  return {
    group,
    name,
    direction: '6→4',
    size,
    genNs: 'isp',
    egress: NET.ispIf,
    sink,
    gen: dst
      ? { mode: 'tun', size, tun: NET.genTun, src: NET.remoteV6, dst }
      : {
          mode: 'tun',
          size,
          tun: NET.genTun,
          src: NET.remoteV6,
          peers: { prefix: NET.prefix, firstIPv4: NET.firstPeerV4, count: peers },
        },
    ...(dst ? {} : { peers }),
  };
}

/** 4→6 from `peers` distinct peers at once: the peer namespace's TUN generator (IPv4 sources 192.0.2.x). */
function tun4Spec(group: Group, name: string, size: number, peers: number): Spec {
  return {
    group,
    name,
    direction: '4→6',
    size,
    genNs: 'peer',
    egress: NET.peerIf,
    sink: 'toNative',
    peers,
    gen: {
      mode: 'tun4',
      size,
      tun: NET.genTun,
      to: NET.routerV4,
      port: NET.routerPort,
      prefix: NET.prefix,
      innerDst: NET.ispV6,
      peers: { firstIPv4: NET.firstPeerV4, count: peers },
    },
  };
}

/**
 * A row for the router. 4→6: from `flows` generator sockets, or, given
 * `peers`, from that many peers through the TUN generator; 6→4: to `peers`
 * distinct peers. (SO_REUSEPORT and the multi-queue TUN spread flows, not
 * packets, over workers: one flow always lands on one worker.)
 */
function routerSpec(
  group: Group,
  dir: Direction,
  size: number,
  setup: RouterSetup,
  traffic: { flows?: number; peers?: number } = {},
): Spec {
  const plural = (n: number, what: string) => `${n.toLocaleString('en-US')} ${what}${n === 1 ? '' : 's'}`;
  const what =
    traffic.peers !== undefined && (dir === '4→6' || traffic.peers > 1)
      ? plural(traffic.peers, 'peer')
      : (traffic.flows ?? 1) > 1
        ? plural(traffic.flows!, 'flow')
        : '';
  const config = [
    `batch ${setup.batch}`,
    ...(setup.workers !== undefined ? [plural(setup.workers, 'worker')] : []),
  ].join(', ');
  const mode =
    setup.fastPath === 'direct'
      ? ' fast path direct'
      : setup.fastPath === 'auto'
        ? ' fast path auto'
        : setup.fastPath
          ? ' fast path on'
          : '';
  const name = `sixbed4 ${dir}${what ? ` ${what}` : ''}${mode} (${config})`;
  const s =
    dir === '6→4'
      ? tunSpec(group, name, size, 'toPeers', traffic.peers ?? 1)
      : traffic.peers !== undefined
        ? tun4Spec(group, name, size, traffic.peers)
        : udpSpec(group, name, size, 'toNative', traffic.flows ?? 1);
  return {
    ...s,
    batch: setup.batch,
    ...(setup.workers !== undefined ? { workers: setup.workers } : {}),
    ...(setup.fastPath ? { fastPath: true } : {}),
  };
}

// --- running it ---------------------------------------------------------------

type Options = ReturnType<typeof options>;

/** What this host and this router build offer, found once before anything is measured. */
interface Host {
  /** generators and the router on CPUs of their own (2+ CPUs and taskset) */
  pin: boolean;
  workersFlag: boolean;
  fastFlag: boolean;
  /** tx checksum offload can be switched (the fast rows need full checksums) */
  ethtool: boolean;
}

async function main(): Promise<number> {
  let opt: Options;
  try {
    opt = options();
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const why = requireRootReason() ?? (findSystemTool('ping') ? null : 'missing command ping (install iputils-ping)');
  if (why) {
    process.stderr.write(
      `bench: cannot run: ${why}.\nThe benchmark builds network namespaces and TUN devices; as root: sudo npm run bench\n`,
    );
    return 1;
  }

  const host: Host = {
    pin: cpus().length >= 2 && findSystemTool('taskset') !== null,
    workersFlag: await routerHasFlag('--workers'),
    fastFlag: await routerHasFlag('--fast-path'),
    ethtool: findSystemTool('ethtool') !== null,
  };
  const setup = describeSetup(opt, host);
  for (const l of setupLines(setup)) process.stdout.write(`${l}\n`);
  process.stdout.write('\n');

  const t0 = Date.now();
  const rows = await measureRows(opt, host);
  if (!rows) return 1;
  // The flood and bulk TCP build their own networks (the lab's reference topology), after the one above is gone.
  const flood = opt.flood ? await floodRows(opt.windowS) : [];
  const bulk: BulkRow[] = opt.bulk
    ? await runBulk({ durationS: opt.windowS >= 3 ? 8 : 4 }, (s) => process.stderr.write(s))
    : [];
  return report(opt, setup, t0, rows, flood, bulk);
}

/** The setup block printed first and kept in the JSON: machine, pinning, checksums, and notes on what is missing. */
function describeSetup(opt: Options, { pin, workersFlag, fastFlag, ethtool }: Host): Setup {
  const host = hostSetup();
  const setup: Setup = {
    ...host,
    pinning: !pin
      ? 'no pinning (fewer than 2 CPUs or no taskset): generator and router share the CPUs'
      : opt.rps
        ? "CPU 0 = the router box: router pinned there (taskset) and the router namespace's receive processing steered there (RPS); " +
          "CPU 1 = the rest: generators (pinned) and the isp/peer namespaces' receive processing (RPS). --workers 2 runs unpinned on both"
        : 'router pinned to CPU 0, generators to CPU 1 (taskset); no RPS: a packet handed over a veth or TUN is processed in the ' +
          "sender's softirq, so kernel forwarding runs on the generator's CPU. --workers 2 runs unpinned on both",
    windowS: opt.windowS,
    warmupS: opt.warmupS,
    workersFlag,
    checksum: !ethtool
      ? 'no ethtool: tx checksum offload left as the veths come (on): datagrams sent on this host carry partial UDP checksums, ' +
        'which the fast path leaves to the router'
      : `tx checksum offload of the generators' veths and the router's uplink (${TX_CSUM_VETHS.map((v) => `${v.role} ${v.dev}`).join(', ')}) ` +
        `${opt.txOffload ? 'off for the fast rows, on for the others (--tx-offload)' : 'off for every row'}: off, the kernel finishes ` +
        'every UDP checksum before the wire, as a real NIC does; on, a same-host sender leaves a partial one, which the fast ' +
        'path cannot verify (4→6), and the router keeps 6→4 out of the fast path on an uplink that leaves checksums to the next hop',
    notes: [],
  };
  if (host.loadStart[0]! > 0.5)
    setup.notes.push(
      `load ${host.loadStart[0]!.toFixed(2)} at start: other jobs may compete for the CPUs (other% shows how much they took in each window)`,
    );
  if (!workersFlag) setup.notes.push('this router has no --workers flag: the workers rows are not available');
  if (!fastFlag && opt.groups.has('fast'))
    setup.notes.push('this router has no --fast-path flag: the fast rows are not available');
  return setup;
}

/**
 * The packets-per-second rows, on the bench's own namespaces. Every namespace and the router go at the end, on
 * failure, on Ctrl-C and at the hard time limit. Undefined when the run failed (said on stderr).
 */
async function measureRows(opt: Options, host: Host): Promise<Row[] | undefined> {
  const rows: Row[] = [];
  let net: BenchNet | undefined;
  let bench: RowBench | undefined;
  const cleanup = async () => {
    bpfStats.restore();
    await bench?.stopRouter();
    await net?.destroy();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\nbench: ${sig}: cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: still running after ${HARD_LIMIT_MS / 60_000} min: giving up\n`);
    void cleanup().finally(() => process.exit(1));
  }, HARD_LIMIT_MS);
  watchdog.unref();

  try {
    net = await buildBenchNet(host.pin && opt.rps ? { rps: { routerCpu: 0, otherCpu: 1 } } : {});
    const timing: Timing = {
      warmupMs: opt.warmupS * 1000,
      windowMs: opt.windowS * 1000,
      ...(host.pin ? { genCpus: '1' } : {}),
    };
    bench = new RowBench(opt, host, net, newCtx(net.ns, timing), rows);
    await bench.measureAll();
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    return undefined;
  } finally {
    await cleanup();
    clearTimeout(watchdog);
  }
  return rows;
}

/** Workers are compared on traffic they can spread: several 4→6 flows, 6→4 to many peers. */
const MANY = { flows: 16, peers: 1_000 };

/**
 * One run of the packets-per-second rows on one bench network: the groups in their order, each measured with
 * retries, the router started and stopped per router setup, tx checksum offload switched for the fast rows.
 * A class because those share state: the rows so far, the retry budget, the running router, the offload setting.
 */
class RowBench {
  private router: RunningBenchRouter | undefined;
  /** tx checksum offload as it is now on the generators' veths and the router's uplink (on as the veths come) */
  private txOn = true;
  private retriesLeft: number;
  /** router setups: batch 64, and one worker and pinned to CPU 0 where there is the flag and the CPU */
  private readonly one: { workers?: number };
  private readonly cpu0: { cpus?: string };

  constructor(
    private readonly opt: Options,
    private readonly host: Host,
    private readonly net: BenchNet,
    private readonly ctx: Ctx,
    private readonly rows: Row[],
  ) {
    this.retriesLeft = opt.retries;
    this.one = host.workersFlag ? { workers: 1 } : {};
    this.cpu0 = host.pin ? { cpus: '0' } : {};
  }

  private has(g: Group): boolean {
    return this.opt.groups.has(g);
  }

  async measureAll(): Promise<void> {
    // Full UDP checksums from the generators (see topology.ts), for every row unless --tx-offload.
    await this.txChecksum(this.opt.txOffload);
    if (this.has('ceiling')) await this.ceilingRows();
    if (this.has('kernel')) await this.kernelRows();
    await this.routerRows();
    if (this.has('fast')) await this.fastRows();
    if (this.has('stock')) await this.stockRows();
    if (this.has('direct') && this.host.fastFlag) await this.directRows();
    if (this.has('batch')) await this.batchRows();
    if (this.has('workers')) await this.workersRows();
  }

  /** Stops the router if one runs (cleanup on failure or a signal). */
  async stopRouter(): Promise<void> {
    await this.router?.stop().catch(() => {});
  }

  // --- the row groups

  /** Each generator straight into the next namespace: what the generators can send at all. */
  private async ceilingRows(): Promise<void> {
    await addCeilingSink(this.net.ns.rtr);
    try {
      for (const size of this.opt.sizes) {
        await this.run(udpSpec('ceiling', 'ceiling: UDP generator → next ns', size, 'ceilUdp'));
        await this.run(tunSpec('ceiling', 'ceiling: TUN generator → next ns', size, 'ceilTun'));
      }
    } finally {
      await removeCeilingSink(this.net.ns.rtr);
    }
  }

  /** The kernel forwarding the same generators' traffic: the reference the router's rows are compared with. */
  private async kernelRows(): Promise<void> {
    for (const size of this.opt.sizes) {
      await this.run(udpSpec('kernel', 'kernel IPv4 forwarding (UDP gen)', size, 'v4Ref', 1, NET.ispV4, 9));
      await this.run(tunSpec('kernel', 'kernel IPv6 forwarding (TUN gen)', size, 'v6Ref', 1, NET.peerV6));
    }
  }

  /** The router's main rows, its peers rows and its one-worker workers rows: one router setup, one start. */
  private async routerRows(): Promise<void> {
    const s: RouterSetup = { batch: 64, ...this.one, ...this.cpu0 };
    const specs: Spec[] = [];
    if (this.has('router')) {
      for (const size of this.opt.sizes)
        specs.push(routerSpec('router', '4→6', size, s), routerSpec('router', '6→4', size, s));
    }
    if (this.has('peers')) {
      // 6→4: the 1-peer figure is the main 48-byte row when that is measured.
      if (!this.has('router') || !this.opt.sizes.includes(48)) specs.push(routerSpec('peers', '6→4', 48, s));
      for (const peers of [1_000, 100_000]) specs.push(routerSpec('peers', '6→4', 48, s, { peers }));
      // 4→6 from many peers needs the TUN generator, for 1 peer too (same generator, same cost).
      for (const peers of [1, 1_000, 100_000]) specs.push(routerSpec('peers', '4→6', 48, s, { peers }));
    }
    if (this.has('workers') && this.host.workersFlag) {
      specs.push(routerSpec('workers', '4→6', 48, s, { flows: MANY.flows }));
      if (!this.has('peers')) specs.push(routerSpec('workers', '6→4', 48, s, { peers: MANY.peers }));
    }
    await this.withRouter(s, specs);
  }

  /**
   * The stock C router (test/stock/6bed4, built as the interop tests build it) on the same address, /64 and
   * generators: the reference "as installed, at most half the stock router's CPU per packet" is measured against.
   */
  private async stockRows(): Promise<void> {
    const s: RouterSetup = { batch: 64, ...this.cpu0, stock: true };
    const specs: Spec[] = [];
    for (const size of this.opt.sizes)
      for (const dir of ['4→6', '6→4'] as const) {
        const { batch: _batch, ...spec } = routerSpec('stock', dir, size, s);
        specs.push({ ...spec, name: `stock 6bed4router ${dir}` });
      }
    await this.withRouter(s, specs);
  }

  /**
   * The same rows as the router's, with --fast-path on: whatever each direction does with the flag, the row says
   * (from the router's metrics) which path its packets took. The fast path needs full UDP checksums.
   */
  private async fastRows(): Promise<void> {
    const s: RouterSetup = { batch: 64, ...this.one, ...this.cpu0, fastPath: true };
    const specs: Spec[] = [];
    for (const size of this.opt.sizes)
      specs.push(routerSpec('fast', '4→6', size, s), routerSpec('fast', '6→4', size, s));
    if (!this.host.fastFlag) {
      for (const spec of specs) this.rows.push(failedRow(spec, 'not available: the router has no --fast-path flag'));
      return;
    }
    await this.withFullChecksums(() =>
      this.withRouter(s, specs, async (spec) => {
        const row = await this.run(spec);
        if (!row.error) await this.bpfWindow(spec, row);
      }),
    );
  }

  /**
   * One more window of a fast row with the kernel's BPF run statistics on (they add two clock reads per run, so
   * they stay off in the row's own measurement): ns per packet inside the router's programs, added to the row.
   */
  private async bpfWindow(spec: Spec, row: Row): Promise<void> {
    process.stderr.write(`    the same with kernel.bpf_stats_enabled=1 ... `);
    try {
      bpfStats.enable();
      const r = await measure(this.ctx, { ...spec, bpfStats: true });
      row.bpf = r.bpf ?? [];
      row.bpfWindowPps = r.pps;
      row.bpfWindowPathUs = r.pathUsPerPkt;
      process.stderr.write(
        `${Math.round(r.pps).toLocaleString('en-US')} pps; ` +
          `${(r.bpf ?? []).map((p) => `${p.name} ${Number.isFinite(p.nsPerRun) ? p.nsPerRun.toFixed(0) : '-'} ns/run`).join(', ') || 'no BPF program'}\n`,
      );
    } catch (e) {
      process.stderr.write(`failed: ${(e as Error).message.split('\n')[0]}\n`);
    } finally {
      bpfStats.restore();
    }
  }

  /**
   * The route-lookup variant of 4→6 (from-peers sends to the FIB's egress, no second receive pass): in the fast
   * rows, so the summary and the goal line give its ratio to kernel forwarding beside the others'.
   */
  private async directRows(): Promise<void> {
    const s: RouterSetup = { batch: 64, ...this.one, ...this.cpu0, fastPath: 'direct' };
    await this.withFullChecksums(() =>
      this.withRouter(
        s,
        this.opt.sizes.map((size) => routerSpec('fast', '4→6', size, s)),
      ),
    );
  }

  /** The router without batching (one packet per system call), to set against the batch 64 rows. */
  private async batchRows(): Promise<void> {
    const s: RouterSetup = { batch: 1, ...this.one, ...this.cpu0 };
    await this.withRouter(s, [routerSpec('batch', '4→6', 48, s), routerSpec('batch', '6→4', 48, s)]);
  }

  /** Two workers need both CPUs, so they share CPU 1 with the generator (unpinned). */
  private async workersRows(): Promise<void> {
    const s: RouterSetup = { batch: 64, workers: 2 };
    const specs = [
      routerSpec('workers', '4→6', 48, s, { flows: MANY.flows }),
      routerSpec('workers', '6→4', 48, s, { peers: MANY.peers }),
    ];
    if (this.host.workersFlag) await this.withRouter(s, specs);
    else for (const spec of specs) this.rows.push(failedRow(spec, 'not available: the router has no --workers flag'));
  }

  // --- how a row is measured

  /**
   * Measures one row and adds it (a failed measurement as a failed row, the run goes on). This machine may be
   * shared: a window in which other jobs took a good part of a CPU is measured again (within a budget), and the
   * quietest kept.
   */
  private async run(spec: Spec): Promise<Row> {
    process.stderr.write(`  ${spec.name} ${spec.size} B ... `);
    let row: Row | undefined;
    try {
      for (let attempt = 0; ; attempt++) {
        if (this.ctx.router && !this.ctx.router.proc.running)
          throw new Error(`the router exited: ${lastLine(this.ctx.router.proc.output())}`);
        const r = await measure(this.ctx, spec);
        if (!row || quieter(r, row)) row = r;
        process.stderr.write(`${Math.round(r.pps).toLocaleString('en-US')} pps`);
        if ((r.otherCpuPct <= INTERFERENCE_PCT && whole(r)) || this.retriesLeft === 0 || attempt === RETRIES_PER_ROW)
          break;
        this.retriesLeft--;
        process.stderr.write(
          whole(r)
            ? ` (other jobs took ${r.otherCpuPct.toFixed(0)}% of a CPU: again) ... `
            : ' (the generator ended before the window: again) ... ',
        );
      }
      process.stderr.write('\n');
    } catch (e) {
      row = failedRow(spec, (e as Error).message.split('\n')[0]!);
      process.stderr.write(`failed: ${row.error}\n`);
    }
    this.rows.push(row);
    return row;
  }

  /**
   * Runs specs against one router; if it does not start, says so in their rows and carries on (a router that
   * refuses --fast-path on on this kernel makes its rows "not available", with its reason).
   */
  private async withRouter(
    s: RouterSetup,
    specs: Spec[],
    each: (spec: Spec) => Promise<unknown> = (spec) => this.run(spec),
  ): Promise<void> {
    if (specs.length === 0) return;
    let router: RunningBenchRouter;
    try {
      router = this.router = await startBenchRouter(this.net.ns.rtr, s);
    } catch (e) {
      const why = lastLine((e as Error).message);
      const msg =
        s.fastPath && /--fast-path on:/.test(why) ? `not available: ${why}` : `the router did not start: ${why}`;
      process.stderr.write(`  ${msg}\n`);
      for (const spec of specs) this.rows.push(failedRow(spec, msg));
      return;
    }
    this.ctx.router = router;
    try {
      for (const spec of specs) await each(spec);
    } finally {
      delete this.ctx.router;
      await router.stop();
      this.router = undefined;
    }
  }

  /** Runs `f` with tx checksum offload off (the fast path needs full checksums), then back as --tx-offload says. */
  private async withFullChecksums(f: () => Promise<void>): Promise<void> {
    await this.txChecksum(false);
    try {
      await f();
    } finally {
      await this.txChecksum(this.opt.txOffload);
    }
  }

  /** Switches tx checksum offload (where ethtool is) and checks that it took on every veth. */
  private async txChecksum(on: boolean): Promise<void> {
    if (!this.host.ethtool || on === this.txOn) return;
    await setTxChecksum(this.net.ns, on);
    const now = await txChecksumState(this.net.ns);
    if (Object.values(now).some((x) => x !== on))
      throw new Error(`ethtool -K tx ${on ? 'on' : 'off'} did not take: ${JSON.stringify(now)}`);
    this.txOn = on;
  }
}

/** A window with a path figure (without one, the generator's CPU could not be read at its end: it counts as worst). */
const whole = (x: Row) => Number.isFinite(x.pathUsPerPkt);

/** Whether window r is to be kept over the one kept so far: a whole one first, then the one others disturbed least. */
function quieter(r: Row, kept: Row): boolean {
  return (whole(r) && !whole(kept)) || (whole(r) === whole(kept) && r.otherCpuPct < kept.otherCpuPct);
}

/** The flood scenario's rows (bench/flood.ts builds its own network), each failure kept as a row. */
async function floodRows(windowS: number): Promise<FloodRow[]> {
  const flood: FloodRow[] = [];
  const durationS = windowS >= 3 ? 10 : 3;
  const runs: { name: string; o: Parameters<typeof runFlood>[0] }[] = [8, 1].map((sockets) => ({
    name: `flood (--sockets ${sockets})`,
    o: { durationS, routerArgs: ['--sockets', String(sockets)], tag: 'bflood' },
  }));
  // Many sources (the issue's measurement): up to a million datagrams from two flooders, the peer pinging 15 s
  // around them; the TypeScript path, then the fast path.
  for (const fastPath of [false, true]) {
    runs.push({
      name: `many sources${fastPath ? ', fast path' : ''}`,
      o: { durationS: 5, maxPackets: 1_000_000, spoof: true, fastPath, flooders: 2, pingS: 15, tag: 'bfloodm' },
    });
  }
  for (const { name, o } of runs) {
    process.stderr.write(`  ${name}, ... `);
    try {
      const result = await runFlood(o);
      flood.push({ name, result });
      process.stderr.write(`loss ${result.lossPct.toFixed(1)}%\n`);
    } catch (e) {
      flood.push({ name, error: (e as Error).message.split('\n')[0]! });
      process.stderr.write(`failed: ${(e as Error).message}\n`);
    }
  }
  return flood;
}

/**
 * Prints the tables and summary, writes the JSON; the exit code: 1 when a row failed for another reason than
 * "not available" (what this host or router build lacks is no failure).
 */
function report(opt: Options, setup: Setup, t0: number, rows: Row[], flood: FloodRow[], bulk: BulkRow[]): number {
  setup.loadEnd = loadavg();
  const lines = [
    ...(rows.length ? [...table(rows), '', ...summary(rows)] : []),
    ...floodLines(flood),
    ...bulkLines(bulk),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  process.stdout.write(
    `load at end: ${setup.loadEnd.map((x) => x.toFixed(2)).join(' ')}; took ${((Date.now() - t0) / 1000).toFixed(0)} s\n`,
  );
  writeJson(opt.json, { setup, rows, summary: summary(rows), flood, bulk });
  process.stdout.write(`results written to ${opt.json}\n`);
  return rows.some((r) => r.error && !r.error.startsWith('not available')) ||
    flood.some((f) => f.error) ||
    bulk.some((b) => b.error && !b.error.startsWith('not available'))
    ? 1
    : 0;
}

type FloodRow = { name: string; result?: FloodResult; error?: string };

/** The flood rows: the legitimate peer's loss under the flood, the flood's rate, the router's memory. */
function floodLines(flood: FloodRow[]): string[] {
  if (flood.length === 0) return [];
  const out = [
    '',
    'flood: one source (or, "many sources", random spoofed ones over every socket, up to 1M datagrams) sends junk',
    'flat out; a legitimate peer behind NAT pings the ISP every 10 ms ("while": loss of the pings sent while the flood lasted)',
    'measurement                      legit loss   pings      flood pps  router read pps  rcvbuf drops  RSS MB before → after  spoofed at ISP  while   CPU',
  ];
  for (const f of flood) {
    const name = f.name.padEnd(32);
    if (!f.result) {
      out.push(`${name} failed: ${f.error}`);
      continue;
    }
    const r = f.result;
    out.push(
      `${name} ${`${r.lossPct.toFixed(1)}%`.padStart(10)}   ${`${r.pingsReceived}/${r.pingsSent}`.padEnd(9)} ${r.floodPps.toLocaleString('en-US').padStart(10)}  ` +
        `${r.routerRxPps.toLocaleString('en-US').padStart(15)}  ${r.rcvbufErrors.toLocaleString('en-US').padStart(12)}  ` +
        `${`${r.rssBeforeMB.toFixed(0)} → ${r.rssAfterMB.toFixed(0)}`.padStart(21)}  ${String(r.spoofedAtIsp).padStart(14)}  ` +
        `${(r.duringSent ? `${((100 * r.duringLost!) / r.duringSent).toFixed(1)}%` : '-').padStart(6)}  ${`${r.routerCpuPct}%`.padStart(4)}`,
    );
  }
  return out;
}

/**
 * kernel.bpf_stats_enabled (host-wide): on only for the windows that read the programs' run time, then back to
 * what it was, also on failure and Ctrl-C.
 */
const bpfStats = (() => {
  const FILE = '/proc/sys/kernel/bpf_stats_enabled';
  let saved: string | undefined;
  return {
    enable() {
      if (saved === undefined) saved = readFileSync(FILE, 'utf8').trim();
      writeFileSync(FILE, '1');
    },
    restore() {
      if (saved === undefined) return;
      try {
        writeFileSync(FILE, saved);
      } catch {
        /* nothing more to do */
      }
      saved = undefined;
    },
  };
})();

function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^--- /.test(l));
  return lines.find((l) => /error|sixbed4:/i.test(l)) ?? lines[lines.length - 1] ?? '';
}

function failedRow(spec: Spec, error: string): Row {
  return {
    group: spec.group,
    name: spec.name,
    direction: spec.direction,
    size: spec.size,
    ...(spec.batch !== undefined ? { batch: spec.batch } : {}),
    ...(spec.workers !== undefined ? { workers: spec.workers } : {}),
    ...(spec.peers !== undefined ? { peers: spec.peers } : {}),
    ...(spec.flows !== undefined ? { flows: spec.flows } : {}),
    pps: NaN,
    mbps: NaN,
    sentPps: NaN,
    sent: 0,
    received: 0,
    lost: 0,
    lossPct: NaN,
    genCpuPct: null,
    genUsPerPkt: null,
    otherCpuPct: NaN,
    sysUsPerPkt: NaN,
    pathUsPerPkt: NaN,
    cpu0UsPerPkt: NaN,
    cpus: [],
    lossAt: {},
    neighbours: NaN,
    windowS: 0,
    error,
  };
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
