// The flood scenario: while one datagram source floods the router with junk
// (junk.ts) as fast as this machine can send, a legitimate peer behind a NAT
// pings the native side every 10 ms. With spoof, the flood comes from many
// sources (random IPv4s and ports, so it spreads over every SO_REUSEPORT
// socket; the /64 sources valid-looking 6bed4 peers): what an attacker who
// spoofs gets, at no cost to him. Measured: the peer's ping loss, the
// flood rate, the router's RSS before and after, and whether anything with a
// source inside the /64 other than the legitimate peer's reached the native
// side (the ISP namespace counts it with nft before anything else sees it).
//
// Topology: the lab's reference network (lab/topology.ts) with peer A
// behind the NAT as the legitimate peer and C, directly on the router's
// second leg, as the flooder. Used by `npm run bench` (the "flood" row) and,
// shortened, by test/bench/flood.test.ts.
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { findSystemTool, systemTool } from '../agent/host/tools.js';
import { buildTopology, TOPO, type Topology } from '../lab/topology.js';
import type { Netns } from '../lab/netns.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../lab/sixbed4.js';
import { processCpu, processMemory } from './procstat.js';
import { nicLike } from '../lab/fast-path.js';
import { performance } from 'node:perf_hooks';
import { makeAddress } from '../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parsePrefix64 } from '../lib/ip.js';
import type { FloodConfig } from './flooder.js';

const FLOODER = fileURLToPath(new URL('./flooder.js', import.meta.url));
const METRICS = '127.0.0.1:9464';

export interface FloodOptions {
  /** How long the flood (and the pings) last. */
  durationS: number;
  /** Extra router flags (e.g. ['--batch', '256']). */
  routerArgs?: string[];
  tag?: string;
  /** Hard cap on flood packets. */
  maxPackets?: number;
  /** Many spoofed sources instead of one (flooder.ts). */
  spoof?: boolean;
  /** Only these junk kinds (junk.ts). */
  kinds?: string[];
  /** The router with --fast-path on, and the wires as it needs them (full UDP checksums, IPv4 forwarding). */
  fastPath?: boolean;
  /** Pings (every 10 ms) after the flood, to see that the peer is still reachable. */
  afterPings?: number;
  /**
   * Ping for this long instead (every 10 ms), the flood starting 1 s into it and lasting until maxPackets are sent
   * (or durationS): the measurement, loss over the whole window and while the flood lasted.
   */
  pingS?: number;
  /** Flooder processes (default 1), each sending its share of maxPackets from its own port. */
  flooders?: number;
}

export interface FloodResult {
  pingsSent: number;
  pingsReceived: number;
  lossPct: number;
  floodSent: number;
  floodPps: number;
  /** Datagrams the router's engine saw (counted by the router), per second. */
  routerRxPps: number;
  rssBeforeMB: number;
  rssAfterMB: number;
  rssPeakMB: number;
  /** Packets with a source in the /64 other than the legitimate peer's that reached the native side. */
  spoofedAtIsp: number;
  drops: Record<string, number>;
  /** Datagrams the router host's kernel dropped because the socket buffer was full. */
  rcvbufErrors: number;
  /** The router's CPU during the flood (user + system, all threads), in percent of one core. */
  routerCpuPct: number;
  /** Whether the router was still running after the flood, and the pings after it. */
  routerAlive: boolean;
  afterSent: number;
  afterReceived: number;
  /** Failures of the router's periodic tasks (sixbed4_router_task_failures_total) during the run, by task. */
  taskFailures: Record<string, number>;
  /** Datagrams the fast path left to the router, by reason (with the fast path). */
  fastPassed?: Record<string, number>;
  /** Packets the kernel dropped because the router's TUN queue was full (what the kernel routes to peers). */
  tunTxDropped?: number;
  /** Packets the host's per-CPU input backlogs dropped (/proc/net/softnet_stat; all namespaces: a veth's receive). */
  backlogDrops?: number;
  /** Each of the router's UDP sockets' drops (buffer full), in /proc/net/udp's order (inode order, not binding). */
  socketDrops?: number[];
  /** With pingS: pings sent while the flood lasted, and how many of them were lost. */
  duringSent?: number;
  duringLost?: number;
  /** The router's log when it died. */
  routerOutput?: string;
}

/**
 * The nft rules that give the flooder's datagrams their spoofed sources: a /64 source's IPv4 and port (bytes 8..13
 * of the source address: at bits 192 and 224 of the UDP datagram) go to the outer header, and every other datagram
 * gets a random one of 256 addresses of 100.64.0.0/10 and of 256 ports. Sources of 100.64.0.0/10 keep the first byte's two low bits zero,
 * so the address's bytes 8..11 are the IPv4 as it is. nft fixes the IPv4 and UDP checksums as it rewrites.
 */
export function spoofRules(prefix64Hex: string, routerPort: number, flooderPort: number): string {
  // notrack: in the NAT's namespace the sources would otherwise be masqueraded (and each one cost a conntrack entry).
  const mine = `udp sport ${flooderPort}-${flooderPort + 15} udp dport ${routerPort}`;
  // The others' sources through typed maps, which put the bytes in network order (a plain numgen would not):
  // 256 addresses of 100.64.0.0/10 spread over it, 256 ports, 65,536 sources.
  const addrs = Array.from(
    { length: 256 },
    (_, i) => `${i} : 100.${64 + (i & 63)}.${(i * 37) & 255}.${1 + ((i * 91) % 254)}`,
  ).join(', ');
  const ports = Array.from({ length: 256 }, (_, i) => `${i} : ${1024 + i * 251}`).join(', ');
  return `
table ip flood_spoof {
  chain out {
    type filter hook output priority raw; policy accept;
    ${mine} @th,128,64 0x${prefix64Hex} notrack ip saddr set @th,192,32 udp sport set @th,224,16 accept
    ${mine} notrack ip saddr set numgen random mod 256 map { ${addrs} } udp sport set numgen random mod 256 map { ${ports} }
  }
}
`;
}

const FLOODER_PORT = 41000;
// Sources in the /64 that are neither the legitimate peer's nor the flooder's own address (which
// the router rightly forwards: the flooder is a peer too, it just also sends junk).
const ISP_COUNTER = (prefix: string, legit: string, flooder: string) => `
table inet flood_watch {
  chain pre {
    type filter hook prerouting priority -400; policy accept;
    ip6 saddr ${prefix} ip6 saddr != { ${legit}, ${flooder} } counter
  }
}
`;

export async function runFlood(o: FloodOptions): Promise<FloodResult> {
  const topo = await buildTopology({ tag: o.tag ?? 'flood', peerC: true });
  try {
    if (o.fastPath) await wiresAsNics(topo);
    const from = await floodSource(topo, !!o.spoof);
    const router = await startRouterIn(topo.router, [
      '--prefix',
      TOPO.prefix,
      '--listen',
      TOPO.routerV4,
      '--metrics',
      METRICS,
      ...(o.fastPath ? ['--fast-path', 'on'] : []),
      ...(o.routerArgs ?? []),
    ]);
    const routerPid = router.child.pid!;
    const legit = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    const flooderAddr = formatIPv6(makeAddress(parsePrefix64(TOPO.prefix).bytes, parseIPv4(from.v4), FLOODER_PORT, 1));
    await topo.isp.run([systemTool('nft'), '-f', '-'], { input: ISP_COUNTER(TOPO.prefix, legit.address, flooderAddr) });
    // Warm up the path (neighbour entries, the NAT mapping) before measuring.
    await ping6(topo.peers.A, TOPO.ispV6, { count: 3, interval: 0.05 });
    const rssBefore = processMemory(routerPid)?.rss ?? NaN;
    const before = await readCounters(topo, routerPid);

    const cfg: FloodConfig = {
      bind: from.v4,
      localPort: FLOODER_PORT,
      to: TOPO.routerV4,
      port: 25790,
      prefix: TOPO.prefix,
      native: TOPO.ispV6,
      durationMs: o.durationS * 1000 + 500,
      maxPackets: o.maxPackets ?? 2e9,
      ...(o.spoof ? { spoof: true } : {}),
      ...(o.kinds ? { kinds: o.kinds } : {}),
    };
    const start = () => startFlooders(from.ns, cfg, Math.min(16, Math.max(1, o.flooders ?? 1)));
    const w = o.pingS
      ? await pingAroundFlood(topo, o.pingS, o.durationS, routerPid, start)
      : await pingDuringFlood(topo, o.durationS, routerPid, start);

    // A second or two for the fast path's seen-map drain (once a second) to meet what the flood left in it.
    await sleep(o.afterPings ? 2000 : 500);
    const after = o.afterPings
      ? await ping6(topo.peers.A, TOPO.ispV6, { count: o.afterPings, interval: 0.01, timeoutS: 2 })
      : { sent: 0, received: 0 };
    if (!router.running) return deadRouterResult(w, rssBefore, after, router.output());
    const end = await readCounters(topo, routerPid);
    const socketDrops = await routerSocketDrops(topo.router);
    const spoofed = await ispCount(topo.isp);
    await router.stop();
    return floodResult(w, before, end, rssBefore, after, socketDrops, spoofed);
  } finally {
    await topo.destroy();
  }
}

/**
 * With the fast path, the wires as a real uplink's: full UDP checksums on what reaches the router (from the NAT and
 * the flooder) and on what it sends, and IPv4 forwarding for the kernel's route lookup (agent/lab/fast-path.ts).
 */
async function wiresAsNics(topo: Topology): Promise<void> {
  await nicLike(topo.nat, TOPO.natWanIf);
  await nicLike(topo.peers.C, TOPO.peerIf);
  await nicLike(topo.router, TOPO.routerWanIf);
  await topo.router.run([
    'sysctl',
    '-qw',
    `net.ipv4.conf.${TOPO.routerWanIf}.forwarding=1`,
    `net.ipv4.conf.${TOPO.routerWanCIf}.forwarding=1`,
  ]);
}

/**
 * Where the flood comes from. One source floods from C, on the router's second leg. Many sources flood from the
 * NAT's namespace, whose wire is the router's uplink (wan0): where the fast path is, and where the legitimate peer's
 * packets come in; nft there gives the datagrams their spoofed sources (spoofRules).
 */
async function floodSource(topo: Topology, spoof: boolean): Promise<{ ns: Netns; v4: string }> {
  const from = spoof ? { ns: topo.nat, v4: TOPO.natV4 } : { ns: topo.peers.C, v4: TOPO.peerCV4 };
  if (spoof) {
    const hex = Buffer.from(parsePrefix64(TOPO.prefix).bytes.subarray(0, 8)).toString('hex');
    await from.ns.run([systemTool('nft'), '-f', '-'], { input: spoofRules(hex, 25790, FLOODER_PORT) });
  }
  return from;
}

/** What a flood sent, as its flooders report it at their end. */
interface FloodSent {
  sent: number;
  elapsedMs: number;
}

/**
 * Starts n flooder processes, each with its share of maxPackets from its own port, and resolves once all flood.
 * Flooders on CPU 1, router left to the scheduler (the flood is what competes with it). Several flooders read as
 * one: done() sums their figures, and resolves when the last is done.
 */
async function startFlooders(
  ns: Netns,
  cfg: FloodConfig,
  n: number,
): Promise<{ done(timeoutMs: number): Promise<FloodSent> }> {
  const taskset = findSystemTool('taskset');
  const fs = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const argv = [
        process.execPath,
        FLOODER,
        JSON.stringify({
          ...cfg,
          localPort: FLOODER_PORT + i,
          maxPackets: Math.ceil(cfg.maxPackets / n),
          seed: 1 + i,
        }),
      ];
      const f = ns.spawn(taskset ? [taskset, '-c', '1', ...argv] : argv);
      await f.waitFor(/flooding/, 10_000);
      return f;
    }),
  );
  return {
    async done(ms: number): Promise<FloodSent> {
      const all = (await Promise.all(fs.map((f) => f.waitFor(/"sent"/, ms)))).map(
        (l) => JSON.parse(l.slice(l.indexOf('{'))) as FloodSent,
      );
      return { sent: all.reduce((a, x) => a + x.sent, 0), elapsedMs: Math.max(...all.map((x) => x.elapsedMs)) };
    },
  };
}

/** The measurement window: the pings, the flood, and the router's CPU time at its start and end. */
interface FloodWindow {
  ping: { sent: number; received: number };
  done: FloodSent;
  /** with pingS: pings sent while the flood lasted, and how many of them were lost */
  during?: { sent: number; lost: number };
  cpu0: ReturnType<typeof processCpu>;
  c0: number;
  cpu1: ReturnType<typeof processCpu>;
  c1: number;
}

type StartFlooders = () => ReturnType<typeof startFlooders>;

/**
 * The measurement (pingS): pings first; the flood 1 s later, for as long as it takes to send maxPackets; the
 * pings go on after it. Loss over the whole window, and over the pings sent while the flood lasted.
 */
async function pingAroundFlood(
  topo: Topology,
  pingS: number,
  durationS: number,
  routerPid: number,
  start: StartFlooders,
): Promise<FloodWindow> {
  const pinger = topo.peers.A.spawn([
    'ping',
    '-6',
    '-n',
    '-i',
    '0.01',
    '-W',
    '2',
    '-c',
    String(Math.round(pingS * 100)),
    TOPO.ispV6,
  ]);
  const p0 = performance.now();
  await sleep(1000);
  const cpu0 = processCpu(routerPid);
  const c0 = performance.now();
  const flooders = await start();
  const f0 = performance.now() - p0;
  const done = await flooders.done(durationS * 1000 + 15_000);
  const f1 = f0 + done.elapsedMs;
  const cpu1 = processCpu(routerPid);
  const c1 = performance.now();
  await pinger.exited;
  const got = new Set([...pinger.output().matchAll(/icmp_seq=(\d+) /g)].map((m) => Number(m[1])));
  const sentN = Number(/(\d+) packets transmitted/.exec(pinger.output())?.[1] ?? 0);
  // ping numbers from 1, one every 10 ms: those sent while the flood lasted.
  const first = Math.ceil(f0 / 10) + 1,
    last = Math.floor(f1 / 10) + 1;
  let lost = 0;
  for (let q = first; q <= last; q++) if (!got.has(q)) lost++;
  const during = { sent: Math.max(0, last - first + 1), lost };
  return { ping: { sent: sentN, received: got.size }, done, during, cpu0, c0, cpu1, c1 };
}

/** The short measurement: the flood first, then pings for durationS while it lasts. */
async function pingDuringFlood(
  topo: Topology,
  durationS: number,
  routerPid: number,
  start: StartFlooders,
): Promise<FloodWindow> {
  const flooders = await start();
  await sleep(200);
  const cpu0 = processCpu(routerPid);
  const c0 = performance.now();
  const ping = await ping6(topo.peers.A, TOPO.ispV6, {
    count: Math.round(durationS * 100),
    interval: 0.01,
    timeoutS: 2,
  });
  const done = await flooders.done(durationS * 1000 + 15_000);
  const cpu1 = processCpu(routerPid);
  const c1 = performance.now();
  return { ping, done, cpu0, c0, cpu1, c1 };
}

/** Counters read before and after the flood: the router's metrics and memory, the kernel's drop counters. */
interface Counters {
  metrics: Awaited<ReturnType<typeof scrape>>;
  mem: ReturnType<typeof processMemory>;
  rcvbufErrors: number;
  tunTxDropped: number;
  backlogDrops: number;
}

async function readCounters(topo: Topology, routerPid: number): Promise<Counters> {
  const metrics = await scrape(topo.router, METRICS);
  const mem = processMemory(routerPid);
  const rcvbufErrors = await udpRcvbufErrors(topo.router);
  const tunTx = await tunTxDropped(topo.router),
    backlog = backlogDrops();
  return { metrics, mem, rcvbufErrors, tunTxDropped: tunTx, backlogDrops: backlog };
}

/** Per reason, the router's drops, task failures and fast-path passes the run added (those that grew only). */
function metricDeltas(m0: Counters['metrics'], m1: Counters['metrics']) {
  const drops: Record<string, number> = {},
    taskFailures: Record<string, number> = {},
    fastPassed: Record<string, number> = {};
  for (const [k, v] of m1) {
    const r = /^sixbed4_router_dropped_packets_total\{reason="([^"]+)"\}$/.exec(k);
    if (r && v - (m0.get(k) ?? 0) > 0) drops[r[1]!] = v - (m0.get(k) ?? 0);
    const f = /^sixbed4_router_task_failures_total\{task="([^"]+)"\}$/.exec(k);
    if (f && v - (m0.get(k) ?? 0) > 0) taskFailures[f[1]!] = v - (m0.get(k) ?? 0);
    const p = /^sixbed4_router_fast_path_passed_total\{side="udp",reason="([^"]+)"\}$/.exec(k);
    if (p && v - (m0.get(k) ?? 0) > 0) fastPassed[p[1]!] = v - (m0.get(k) ?? 0);
  }
  return { drops, taskFailures, fastPassed };
}

/** The result when the router died in the flood: what the pings and flooders saw, and the router's log. */
function deadRouterResult(
  w: FloodWindow,
  rssBefore: number,
  after: { sent: number; received: number },
  routerOutput: string,
): FloodResult {
  const { ping, done } = w;
  return {
    pingsSent: ping.sent,
    pingsReceived: ping.received,
    lossPct: ping.sent ? (100 * (ping.sent - ping.received)) / ping.sent : 100,
    floodSent: done.sent,
    floodPps: Math.round((done.sent * 1000) / done.elapsedMs),
    routerRxPps: NaN,
    rssBeforeMB: rssBefore / 2 ** 20,
    rssAfterMB: NaN,
    rssPeakMB: NaN,
    spoofedAtIsp: NaN,
    drops: {},
    rcvbufErrors: NaN,
    routerCpuPct: NaN,
    routerAlive: false,
    afterSent: after.sent,
    afterReceived: after.received,
    taskFailures: {},
    routerOutput,
  };
}

function floodResult(
  w: FloodWindow,
  c0: Counters,
  c1: Counters,
  rssBefore: number,
  after: { sent: number; received: number },
  socketDrops: number[],
  spoofed: number,
): FloodResult {
  const { ping, done, during, cpu0, c0: t0, cpu1, c1: t1 } = w;
  const rx =
    (c1.metrics.get('sixbed4_router_received_packets_total{side="udp"}') ?? 0) -
    (c0.metrics.get('sixbed4_router_received_packets_total{side="udp"}') ?? 0);
  const { drops, taskFailures, fastPassed } = metricDeltas(c0.metrics, c1.metrics);
  return {
    pingsSent: ping.sent,
    pingsReceived: ping.received,
    lossPct: ping.sent ? (100 * (ping.sent - ping.received)) / ping.sent : 100,
    floodSent: done.sent,
    floodPps: Math.round((done.sent * 1000) / done.elapsedMs),
    routerRxPps: Math.round(rx / (done.elapsedMs / 1000)),
    rssBeforeMB: rssBefore / 2 ** 20,
    rssAfterMB: (c1.mem?.rss ?? NaN) / 2 ** 20,
    rssPeakMB: (c1.mem?.hwm ?? NaN) / 2 ** 20,
    spoofedAtIsp: spoofed,
    drops,
    rcvbufErrors: c1.rcvbufErrors - c0.rcvbufErrors,
    routerCpuPct:
      cpu0 && cpu1 ? Math.round((100 * (cpu1.user + cpu1.system - cpu0.user - cpu0.system) * 1000) / (t1 - t0)) : NaN,
    routerAlive: true,
    afterSent: after.sent,
    afterReceived: after.received,
    taskFailures,
    fastPassed,
    tunTxDropped: c1.tunTxDropped - c0.tunTxDropped,
    backlogDrops: c1.backlogDrops - c0.backlogDrops,
    socketDrops,
    ...(during ? { duringSent: during.sent, duringLost: during.lost } : {}),
  };
}

/** Udp RcvbufErrors of the namespace's kernel (datagrams dropped because the socket buffer was full). */
async function udpRcvbufErrors(ns: { run(argv: string[]): Promise<string> }): Promise<number> {
  const text = await ns.run(['cat', '/proc/net/snmp']);
  const lines = text.split('\n').filter((l) => l.startsWith('Udp:'));
  const keys = lines[0]!.split(/\s+/),
    vals = lines[1]!.split(/\s+/);
  return Number(vals[keys.indexOf('RcvbufErrors')]);
}

/** The drops column of /proc/net/udp for the router's port (25790 = 0x64BE), socket by socket. */
async function routerSocketDrops(ns: { run(argv: string[]): Promise<string> }): Promise<number[]> {
  const lines = (await ns.run(['cat', '/proc/net/udp']))
    .split('\n')
    .filter((l) => /^\s*\d+: [0-9A-F]{8}:64BE /.test(l));
  return lines.map((l) => Number(l.trim().split(/\s+/).at(-1)));
}

/** The router's TUN device's tx_dropped (its queue to the router process was full). */
async function tunTxDropped(ns: { run(argv: string[]): Promise<string> }): Promise<number> {
  return Number((await ns.run(['cat', '/sys/class/net/6bed4/statistics/tx_dropped']).catch(() => 'NaN')).trim());
}

/** The per-CPU input backlogs' drops so far (second column of /proc/net/softnet_stat, hex), summed over CPUs. */
function backlogDrops(): number {
  return readFileSync('/proc/net/softnet_stat', 'utf8')
    .trim()
    .split('\n')
    .reduce((a, l) => a + parseInt(l.split(/\s+/)[1] ?? '0', 16), 0);
}

async function ispCount(isp: { run(argv: string[]): Promise<string> }): Promise<number> {
  const j = JSON.parse(await isp.run([systemTool('nft'), '-j', 'list', 'table', 'inet', 'flood_watch'])) as {
    nftables: { rule?: { expr: { counter?: { packets: number } }[] } }[];
  };
  let n = 0;
  for (const item of j.nftables) for (const e of item.rule?.expr ?? []) if (e.counter) n += e.counter.packets;
  return n;
}

/**
 * Standalone: `node dist/bench/flood.js [seconds] [--spoof] [--fast] [--kinds=a,b] [--max=N] [--after=N] [--ping=S]
 * [router flags...]` prints the result as JSON.
 */
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [secs, ...args] = process.argv.slice(2);
  const own = (name: string) => args.find((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  const value = (name: string) => own(name)?.split('=')[1];
  const rest = args.filter(
    (a) =>
      !['spoof', 'fast', 'kinds', 'max', 'after', 'ping', 'flooders'].some(
        (n) => a === `--${n}` || a.startsWith(`--${n}=`),
      ),
  );
  runFlood({
    durationS: Number(secs ?? 10),
    routerArgs: rest,
    spoof: !!own('spoof'),
    fastPath: !!own('fast'),
    ...(value('kinds') ? { kinds: value('kinds')!.split(',') } : {}),
    ...(value('max') ? { maxPackets: Number(value('max')) } : {}),
    afterPings: Number(value('after') ?? 0),
    ...(value('ping') ? { pingS: Number(value('ping')) } : {}),
    flooders: Number(value('flooders') ?? 1),
  }).then(
    (r) => {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    },
    (e: Error) => {
      process.stderr.write(`${e.stack}\n`);
      process.exitCode = 1;
    },
  );
}
