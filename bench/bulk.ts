// Bulk TCP through the router (`npm run bench -- --only bulk`): what people
// move. iperf3 between the isp (2001:db8:ffff::1) and the peer namespace,
// both directions, on the bench's own namespaces (topology.ts), with GRO on
// the router's two interfaces as a NIC has it, and full checksums on every
// wire (tx checksumming off on the veths, as the fast path needs and a NIC
// gives). Rows:
// - kernel: IPv6 forwarding by the router namespace's kernel, from the peer
//   namespace's own IPv6 address, with the tunnel's segment size (MSS 1208:
//   what a 1280-byte tunnel MTU gives), the reference;
// - the router with `--fast-path off` (the TypeScript path), with the
//   default, `auto` (the in-kernel fast path where it loads: peers'
//   datagrams decapsulated at tc, after GRO), and with its XDP stage too
//   (`--fast-path-xdp auto`: decapsulated before GRO, at the veth's XDP
//   hook); our sixbed4 peer or the BPF peer at the far end, iperf3 bound to
//   the peer's 6bed4 address.
// Each row: Gbit/s received, TCP retransmissions, CPU used by everything that
// moves the bytes (iperf3's two ends, as iperf3 reports them; the router, the
// peer and ksoftirqd from /proc) per Gbit/s, the share of the row's packets
// each path carried (the router's metrics), and the peer's CPU: at 100% of a
// CPU the peer, not the router, sets the rate, and the row says so.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { execCommand } from '../agent/host/command.js';
import { makeAddress } from '../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parsePrefix64 } from '../lib/ip.js';
import { findSystemTool } from '../agent/host/tools.js';
import type { Netns } from '../lab/netns.js';
import type { Proc } from '../lab/proc.js';
import { scrape, startPeerIn } from '../lab/sixbed4.js';
import { TOPO } from '../lab/topology.js';
import { systemTool } from '../agent/host/tools.js';
import { ksoftirqdPids, processCpu, totalCpuSeconds, cpuTimes, busySeconds } from './procstat.js';
import { parseRouterCounters, startBenchRouter } from './routerctl.js';
import { buildBenchNet, NET, readLinks, readUdpSnmp, setTxChecksum, type BenchNet } from './topology.js';

/** auto-xdp: the default with the XDP stage (--fast-path-xdp auto): peers' datagrams decapsulated before GRO. */
export type BulkPath = 'kernel' | 'off' | 'auto' | 'auto-xdp';
/** The far end of the tunnel: our sixbed4 peer (TypeScript), or the bench's BPF peer (peer.bpf.c), which is not the bottleneck. */
export type BulkPeer = 'sixbed4' | 'kernel';
export type BulkDir = 'down' | 'up';

export interface BulkRow {
  name: string;
  path: BulkPath;
  peer?: BulkPeer;
  /** down: isp → peer (Internet → peer, to-peers); up: peer → isp (from-peers). */
  dir: BulkDir;
  gbps?: number;
  retransmits?: number;
  /** CPU seconds per second (100 = one CPU) of everything that moves the bytes, per Gbit/s. */
  cpuPctPerGbps?: number;
  /** The peer process's CPU, % of one CPU. */
  peerCpuPct?: number;
  /** Packets of the row's direction by path, from the router's metrics (fast: in the kernel; slow: the router process). */
  fast?: number;
  slow?: number;
  /** Of the fast ones (down), segments of merged packets with their outer UDP checksum, and without (docs/router.md). */
  mergedRight?: number;
  mergedNone?: number;
  /**
   * Packets lost on the way, by where: the peer's side (its TUN's queue full: the peer did not read fast enough; its
   * socket's buffer full) and the router's (its socket's buffer, its TUN's queue): which end could not keep up.
   */
  peerDrops?: number;
  routerDrops?: number;
  /** % of a CPU used by other processes on the machine during the run (shared machine). */
  otherPct?: number;
  error?: string;
}

export interface BulkOptions {
  durationS: number;
  /** Only these router rows (default both), these far ends (default both), and the kernel rows unless false. */
  paths?: readonly ('off' | 'auto' | 'auto-xdp')[];
  peers?: readonly BulkPeer[];
  kernelRows?: boolean;
}

/** The MSS of TCP through the tunnel (1280 - 40 - 20 - 12 bytes of timestamps): the kernel row uses it too. */
const TUNNEL_MSS = 1208;
const IPERF_PORT = 5201;
const MERGED_RIGHT = 'sixbed4_router_fast_path_merged_segments_total{checksum="right"}';
const MERGED_NONE = 'sixbed4_router_fast_path_merged_segments_total{checksum="none"}';

/** Runs the bulk rows on a bench network of its own; never throws (a failed row says why). */
export async function runBulk(opt: BulkOptions, progress: (s: string) => void): Promise<BulkRow[]> {
  const iperf = findSystemTool('iperf3');
  if (!iperf)
    return [
      { name: 'bulk TCP', path: 'kernel', dir: 'down', error: 'not available: needs iperf3 (apt-get install iperf3)' },
    ];
  const rows: BulkRow[] = [];
  let net: BenchNet | undefined;
  try {
    net = await buildBenchNet();
    const ns = net.ns;
    await setTxChecksum(ns, false);
    // The peer namespace's sink would drop the router's datagrams: the peer needs them.
    await ns.peer.run([systemTool('nft'), 'delete', 'table', 'inet', 'sixbed4_bench']);
    // GRO where traffic enters the router, as on a NIC: the isp's TCP arrives merged.
    for (const dev of [TOPO.routerUplinkIf, TOPO.routerWanCIf])
      await ns.rtr.run([systemTool('ethtool'), '-K', dev, 'gro', 'on']);
    const server = ns.isp.spawn([iperf, '-s', '-p', String(IPERF_PORT), '--forceflush']);
    try {
      await server.waitFor(/Server listening/, 10_000);
      // The peer namespace reaches the isp natively through the router for the kernel rows only: the tunnel rows
      // go by the peer's default route into its tunnel.
      const native = ['route', `${TOPO.uplinkPrefix}`, 'via', NET.routerPeerV6];
      await ns.peer.run(['ip', '-6', ...native.slice(0, 1), 'replace', ...native.slice(1)]);
      if (opt.kernelRows !== false)
        for (const dir of ['down', 'up'] as const) {
          rows.push(await row(ns, iperf, 'kernel', dir, NET.peerV6, opt, server, progress));
        }
      await ns.peer.run(['ip', '-6', ...native.slice(0, 1), 'del', ...native.slice(1)]);
      for (const peerKind of opt.peers ?? (['kernel', 'sixbed4'] as const)) {
        for (const path of opt.paths ?? (['off', 'auto', 'auto-xdp'] as const)) {
          let router;
          try {
            router = await startBenchRouter(ns.rtr, {
              batch: 64,
              ...(path !== 'off' ? { fastPath: path } : {}),
            });
          } catch (e) {
            for (const dir of ['down', 'up'] as const)
              rows.push({
                name: name(path, dir, peerKind),
                path,
                peer: peerKind,
                dir,
                error: `the router did not start: ${(e as Error).message.split('\n')[0]}`,
              });
            continue;
          }
          let peer: { proc?: Proc; address: string; stop(): Promise<void> } | undefined;
          try {
            if (peerKind === 'sixbed4') {
              const p = await startPeerIn(ns.peer, [
                '--router',
                `${NET.routerV4}:${NET.routerPort}`,
                '--default-route',
              ]);
              peer = {
                proc: p.proc,
                address: p.address,
                stop: async () => {
                  await p.proc.stop();
                },
              };
            } else {
              peer = await kernelPeer(ns);
            }
            await sleep(500);
            for (const dir of ['down', 'up'] as const) {
              rows.push(
                await row(
                  ns,
                  iperf,
                  path,
                  dir,
                  peer.address,
                  opt,
                  server,
                  progress,
                  { router: router.pid, ...(peer.proc ? { peer: peer.proc.pid! } : {}) },
                  peerKind,
                ),
              );
            }
          } catch (e) {
            rows.push({
              name: name(path, 'down', peerKind),
              path,
              peer: peerKind,
              dir: 'down',
              error: (e as Error).message.split('\n')[0]!,
            });
          } finally {
            await peer?.stop();
            await router.stop();
          }
        }
      }
    } finally {
      await server.stop();
    }
  } catch (e) {
    rows.push({ name: 'bulk TCP', path: 'kernel', dir: 'down', error: (e as Error).message.split('\n')[0]! });
  } finally {
    await net?.destroy();
  }
  return rows;
}

function name(path: BulkPath, dir: BulkDir, peer?: BulkPeer): string {
  const d = dir === 'down' ? 'isp → peer' : 'peer → isp';
  return path === 'kernel'
    ? `kernel IPv6 forwarding, ${d}`
    : `${path === 'auto-xdp' ? '--fast-path-xdp auto' : `--fast-path ${path}${path === 'auto' ? ' (default)' : ''}`}, ${peer === 'kernel' ? 'BPF' : 'TS'} peer, ${d}`;
}

/** The bench's BPF peer (peer.bpf.c) on the peer namespace's uplink, for the address of 203.0.113.2:PORT in the /64. */
const KERNEL_PEER_PORT = 40000;
async function kernelPeer(ns: BenchNet['ns']): Promise<{ address: string; stop(): Promise<void> }> {
  const peerV4 = parseIPv4(NET.peerV4),
    routerV4 = parseIPv4(NET.routerV4);
  const addr = makeAddress(parsePrefix64(NET.prefix).bytes, peerV4, KERNEL_PEER_PORT, 1),
    address = formatIPv6(addr);
  const mac = JSON.parse(await ns.rtr.run(['ip', '-j', 'link', 'show', 'dev', TOPO.routerWanCIf]))[0].address as string;
  const dv = new DataView(addr.buffer);
  const defs = [
    `-DPEER_V4=${peerV4 >>> 0}u`,
    `-DPEER_PORT=${KERNEL_PEER_PORT}`,
    `-DROUTER_V4=${routerV4 >>> 0}u`,
    `-DROUTER_PORT=${NET.routerPort}`,
    ...[0, 1, 2, 3].map((i) => `-DADDR${i}=${dv.getUint32(i * 4)}u`),
    ...mac.split(':').map((b, i) => `-DROUTER_MAC${i}=0x${b}`),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'sixbed4-bench-peer-'));
  const src = fileURLToPath(new URL('../../bench/peer.bpf.c', import.meta.url));
  const arch = (await execCommand(['gcc', '-dumpmachine'])).stdout.trim();
  const tc = systemTool('tc'),
    dev = NET.peerIf;
  try {
    for (const [obj, extra] of [
      ['in.o', ['-DPEER_IN']],
      ['out.o', []],
    ] as const) {
      const r = await execCommand([
        findSystemTool('clang') ?? 'clang',
        '-O2',
        '-target',
        'bpf',
        `-I/usr/include/${arch}`,
        ...extra,
        ...defs,
        '-c',
        src,
        '-o',
        join(dir, obj),
      ]);
      if (r.code !== 0) throw new Error(`clang bench/peer.bpf.c: ${r.stderr.trim()}`);
    }
    await ns.peer.run([tc, 'qdisc', 'add', 'dev', dev, 'clsact']);
    await ns.peer.run([tc, 'filter', 'add', 'dev', dev, 'ingress', 'bpf', 'da', 'obj', join(dir, 'in.o'), 'sec', 'tc']);
    await ns.peer.run([tc, 'filter', 'add', 'dev', dev, 'egress', 'bpf', 'da', 'obj', join(dir, 'out.o'), 'sec', 'tc']);
    // The address on the uplink; the isp through it at the tunnel's MTU (the egress program encapsulates), its
    // neighbour entry fixed (the program writes the router's MAC anyway).
    await ns.peer.ipBatch([
      `addr add ${address}/128 dev ${dev} nodad`,
      `route replace ${TOPO.uplinkPrefix} dev ${dev} src ${address} mtu 1280`,
      `neigh replace ${TOPO.ispV6} lladdr ${mac} dev ${dev} nud permanent`,
    ]);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    await ns.peer.run([tc, 'qdisc', 'del', 'dev', dev, 'clsact']).catch(() => undefined);
    throw e;
  }
  return {
    address,
    stop: async () => {
      rmSync(dir, { recursive: true, force: true });
      await ns.peer.run([tc, 'qdisc', 'del', 'dev', dev, 'clsact']);
      await ns.peer.ipBatch([
        `route del ${TOPO.uplinkPrefix} dev ${dev}`,
        `addr del ${address}/128 dev ${dev}`,
        `neigh del ${TOPO.ispV6} dev ${dev}`,
      ]);
    },
  };
}

interface IperfJson {
  end?: {
    sum_received?: { bits_per_second: number };
    sum_sent?: { retransmits?: number };
    cpu_utilization_percent?: { host_total: number; remote_total: number };
  };
  error?: string;
}

async function row(
  ns: BenchNet['ns'],
  iperf: string,
  path: BulkPath,
  dir: BulkDir,
  from: string,
  opt: BulkOptions,
  server: Proc,
  progress: (s: string) => void,
  pids?: { router: number; peer?: number },
  peer?: BulkPeer,
): Promise<BulkRow> {
  const base = { name: name(path, dir, peer), path, dir, ...(peer ? { peer } : {}) };
  progress(`  ${base.name}, ${opt.durationS} s ... `);
  const metrics = async (): Promise<Record<string, number>> => {
    if (!pids) return {};
    const m = await scrape(ns.rtr, NET.metrics);
    return { ...parseRouterCounters(m).byPath, right: m.get(MERGED_RIGHT) ?? 0, none: m.get(MERGED_NONE) ?? 0 };
  };
  const ours = () =>
    totalCpuSeconds([...(pids ? [pids.router] : []), ...(pids?.peer ? [pids.peer] : []), ...ksoftirqdPids()]);
  const d0 = await drops(ns),
    m0 = await metrics(),
    c0 = ours(),
    p0 = pids?.peer ? cpuOf(pids.peer) : 0,
    t0 = cpuTimes(),
    w0 = Date.now();
  const argv = [
    iperf,
    '-6',
    '-c',
    TOPO.ispV6,
    '-p',
    String(IPERF_PORT),
    '-B',
    from,
    '-t',
    String(opt.durationS),
    '-J',
    ...(path === 'kernel' ? ['-M', String(TUNNEL_MSS)] : []),
    ...(dir === 'down' ? ['-R'] : []),
  ];
  const r = await ns.peer.exec(argv, { timeoutMs: (opt.durationS + 30) * 1000 });
  const wallS = (Date.now() - w0) / 1000,
    c1 = ours(),
    p1 = pids?.peer ? cpuOf(pids.peer) : 0,
    t1 = cpuTimes(),
    m1 = await metrics(),
    d1 = await drops(ns);
  let j: IperfJson;
  try {
    j = JSON.parse(r.stdout) as IperfJson;
  } catch {
    progress('failed\n');
    return {
      ...base,
      error: `iperf3 exited ${r.code}: ${(r.stderr || r.stdout).trim().split('\n')[0]} ${server.output().split('\n').slice(-2).join(' ')}`,
    };
  }
  if (j.error || !j.end?.sum_received) {
    progress('failed\n');
    return { ...base, error: `iperf3: ${j.error ?? 'no result'}` };
  }
  const gbps = j.end.sum_received.bits_per_second / 1e9;
  const iperfPct =
    (j.end.cpu_utilization_percent?.host_total ?? 0) + (j.end.cpu_utilization_percent?.remote_total ?? 0);
  const oursPct = ((c1 - c0) / wallS) * 100 + iperfPct;
  const metricDir = dir === 'down' ? 'tun_to_udp' : 'udp_to_tun';
  const out: BulkRow = {
    ...base,
    gbps,
    retransmits: j.end.sum_sent?.retransmits ?? 0,
    cpuPctPerGbps: oursPct / gbps,
    otherPct: Math.max(0, (busySeconds(t0, t1) / wallS) * 100 - oursPct),
    peerDrops: d1.peer - d0.peer,
    routerDrops: d1.router - d0.router,
    ...(pids
      ? {
          ...(pids.peer ? { peerCpuPct: ((p1 - p0) / wallS) * 100 } : {}),
          fast: (m1[`${metricDir}/fast`] ?? 0) - (m0[`${metricDir}/fast`] ?? 0),
          slow: (m1[`${metricDir}/slow`] ?? 0) - (m0[`${metricDir}/slow`] ?? 0),
          mergedRight: (m1.right ?? 0) - (m0.right ?? 0),
          mergedNone: (m1.none ?? 0) - (m0.none ?? 0),
        }
      : {}),
  };
  progress(`${gbps.toFixed(2)} Gbit/s\n`);
  return out;
}

/** Drops at each end: TUN queues (tx dropped: the reader fell behind) and UDP socket buffers. */
async function drops(ns: BenchNet['ns']): Promise<{ peer: number; router: number }> {
  const end = async (n: Netns) => {
    const links = await readLinks(n),
      udp = await readUdpSnmp(n);
    const tun = Object.entries(links)
      .filter(([name]) => name.startsWith('6bed4'))
      .reduce((a, [, l]) => a + l.txDropped + l.rxDropped, 0);
    return tun + (udp.RcvbufErrors ?? 0) + (udp.SndbufErrors ?? 0);
  };
  return { peer: await end(ns.peer), router: await end(ns.rtr) };
}

function cpuOf(pid: number): number {
  const c = processCpu(pid);
  return c ? c.user + c.system : 0;
}

/** The bulk table, with what each figure means and whether the peer set the rate. */
export function bulkLines(rows: BulkRow[]): string[] {
  if (!rows.length) return [];
  const kernel = (dir: BulkDir) => rows.find((r) => r.path === 'kernel' && r.dir === dir && r.gbps !== undefined)?.gbps;
  const out = [
    '',
    "bulk TCP (iperf3, one stream, GRO on the router's interfaces; kernel row at the tunnel's MSS 1208; other%: CPU the",
    "machine's other jobs took meanwhile, a shared machine's noise; BPF peer: bench/peer.bpf.c, TS peer: sixbed4 peer):",
    'measurement                                          Gbit/s  × kernel  retrans  CPU%/Gbit/s  fast share  peer CPU%  drops peer/rtr  other%',
  ];
  for (const r of rows) {
    if (r.error) {
      out.push(`${r.name.padEnd(52)} ${r.error}`);
      continue;
    }
    const k = kernel(r.dir);
    // Never rounded up to 100% when the router took any.
    const pct =
      r.fast === undefined || r.fast + r.slow! === 0
        ? 0
        : Math.min((100 * r.fast) / (r.fast + r.slow!), r.slow ? 99.9 : 100);
    const share = r.fast === undefined ? '-' : r.fast + r.slow! === 0 ? 'none' : `${pct.toFixed(1)}%`;
    out.push(
      `${r.name.padEnd(52)} ${r.gbps!.toFixed(2).padStart(6)}  ${(r.path === 'kernel' || !k ? '' : `×${(r.gbps! / k).toFixed(2)}`).padStart(8)}  ` +
        `${String(r.retransmits).padStart(7)}  ${r.cpuPctPerGbps!.toFixed(0).padStart(11)}  ${share.padStart(10)}  ` +
        `${(r.peerCpuPct === undefined ? '-' : r.peerCpuPct.toFixed(0)).padStart(9)}  ${(r.peerDrops === undefined || r.path === 'kernel' ? '-' : `${r.peerDrops}/${r.routerDrops}`).padStart(14)}  ` +
        `${r.otherPct!.toFixed(0).padStart(6)}`,
    );
  }
  // The peer set the rate where it used a whole CPU, or where the losses were at its end rather than the router's.
  const peerBound = rows.filter(
    (r) => r.path !== 'kernel' && ((r.peerCpuPct ?? 0) >= 90 || r.peerDrops! > r.routerDrops!),
  );
  out.push(
    peerBound.length
      ? `peer-bound (its CPU ≥ 90%, or more drops at the peer than at the router: the peer, not the router, set the rate): ${peerBound.map((r) => r.name).join('; ')}`
      : "no row was peer-bound (the peer's CPU under 90%, and no more drops at the peer than at the router)",
  );
  for (const [path, mode] of [
    ['auto', 'the default mode'],
    ['auto-xdp', '--fast-path-xdp auto'],
  ] as const)
    for (const dir of ['down', 'up'] as const) {
      const k = kernel(dir),
        f = rows.find((r) => r.path === path && r.peer === 'kernel' && r.dir === dir && r.gbps !== undefined);
      if (k && f)
        out.push(
          `goal, ${dir === 'down' ? 'download' : 'upload'} with ${mode} (BPF peer) ≥ 50% of kernel forwarding: ${((100 * f.gbps!) / k).toFixed(0)}% ${f.gbps! >= k / 2 ? 'met' : 'not met'}`,
        );
    }
  const down = rows.find((r) => r.path === 'auto' && r.peer === 'kernel' && r.dir === 'down' && r.fast !== undefined);
  if (down && down.fast! + down.slow! > 0) {
    const pct = (100 * down.fast!) / (down.fast! + down.slow!);
    out.push(
      `goal, share of a download's packets on the fast path ≥ 99%: ${pct.toFixed(1)}% ${pct >= 99 ? 'met' : 'not met'} ` +
        `(${down.fast} fast, ${down.slow} through the router; ${down.mergedRight! + down.mergedNone!} as segments of merged packets, ` +
        `${down.mergedNone} of them without an outer UDP checksum)`,
    );
  }
  return out;
}

/**
 * Run alone (as root, after a build): `node dist/bench/bulk.js [--paths off,auto,auto-xdp] [--peers kernel,sixbed4]
 * [--no-kernel] [--duration S]`: only the rows asked for, e.g. the TypeScript path's before and after a change.
 */
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      paths: { type: 'string' },
      peers: { type: 'string' },
      'no-kernel': { type: 'boolean' },
      duration: { type: 'string' },
    },
  });
  const list = <T extends string>(v: string | undefined, all: readonly T[]): T[] | undefined =>
    v === undefined
      ? undefined
      : v.split(',').map((x) => {
          if (!all.includes(x as T)) throw new Error(`${x}: use ${all.join(', ')}`);
          return x as T;
        });
  const rows = await runBulk(
    {
      durationS: Number(values.duration ?? 8),
      ...(values.paths !== undefined ? { paths: list(values.paths, ['off', 'auto', 'auto-xdp'] as const)! } : {}),
      ...(values.peers !== undefined ? { peers: list(values.peers, ['kernel', 'sixbed4'] as const)! } : {}),
      kernelRows: values['no-kernel'] !== true,
    },
    (s) => process.stderr.write(`${s}\n`),
  );
  for (const l of bulkLines(rows)) console.log(l);
}
