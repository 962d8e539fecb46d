// The flood scenario: while one datagram source floods the router with junk
// (junk.ts) as fast as this machine can send, a legitimate peer behind a NAT
// pings the native side every 10 ms. Measured: the peer's ping loss, the
// flood rate, the router's RSS before and after, and whether anything with a
// source inside the /64 other than the legitimate peer's reached the native
// side (the ISP namespace counts it with nft before anything else sees it).
//
// Topology: the lab's reference network (lab/topology.ts) with peer A
// behind the NAT as the legitimate peer and C, directly on the router's
// second leg, as the flooder. Used by `npm run bench` (the "flood" row) and,
// shortened, by test/bench/flood.test.ts.
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { findSystemTool, systemTool } from '../agent/host/tools.js';
import { buildTopology, TOPO } from '../lab/topology.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../lab/sixbed4.js';
import { processMemory } from './procstat.js';
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
}

export interface FloodResult {
  pingsSent: number; pingsReceived: number; lossPct: number;
  floodSent: number; floodPps: number;
  /** Datagrams the router's engine saw (counted by the router), per second. */
  routerRxPps: number;
  rssBeforeMB: number; rssAfterMB: number; rssPeakMB: number;
  /** Packets with a source in the /64 other than the legitimate peer's that reached the native side. */
  spoofedAtIsp: number;
  drops: Record<string, number>;
  /** Datagrams the router host's kernel dropped because the socket buffer was full. */
  rcvbufErrors: number;
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
    const taskset = findSystemTool('taskset');
    const router = await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS, ...(o.routerArgs ?? [])]);
    const routerPid = router.child.pid!;
    const legit = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    const flooderAddr = formatIPv6(makeAddress(parsePrefix64(TOPO.prefix).bytes, parseIPv4(TOPO.peerCV4), FLOODER_PORT, 1));
    await topo.isp.run([systemTool('nft'), '-f', '-'], { input: ISP_COUNTER(TOPO.prefix, legit.address, flooderAddr) });
    // Warm up the path (neighbour entries, the NAT mapping) before measuring.
    await ping6(topo.peers.A, TOPO.ispV6, { count: 3, interval: 0.05 });
    const rssBefore = processMemory(routerPid)?.rss ?? NaN;
    const m0 = await scrape(topo.router, METRICS);
    const snmp0 = await udpRcvbufErrors(topo.router);
    const cfg: FloodConfig = {
      bind: TOPO.peerCV4, localPort: FLOODER_PORT, to: TOPO.routerV4, port: 25790, prefix: TOPO.prefix, native: TOPO.ispV6,
      durationMs: o.durationS * 1000 + 500, maxPackets: o.maxPackets ?? 2e9,
    };
    const argv = [process.execPath, FLOODER, JSON.stringify(cfg)];
    // Flooder on CPU 1, router left to the scheduler (the flood is what competes with it).
    const flooder = topo.peers.C.spawn(taskset ? [taskset, '-c', '1', ...argv] : argv);
    await flooder.waitFor(/flooding/, 10_000);
    await sleep(200);
    const count = Math.round(o.durationS * 100);
    const ping = await ping6(topo.peers.A, TOPO.ispV6, { count, interval: 0.01, timeoutS: 2 });
    const doneLine = await flooder.waitFor(/"sent"/, o.durationS * 1000 + 15_000);
    const done = JSON.parse(doneLine.slice(doneLine.indexOf('{'))) as { sent: number; elapsedMs: number };
    await sleep(500);
    const m1 = await scrape(topo.router, METRICS);
    const mem = processMemory(routerPid);
    const snmp1 = await udpRcvbufErrors(topo.router);
    const spoofed = await ispCount(topo.isp);
    const rx = (m1.get('sixbed4_router_received_packets_total{side="udp"}') ?? 0) - (m0.get('sixbed4_router_received_packets_total{side="udp"}') ?? 0);
    const drops: Record<string, number> = {};
    for (const [k, v] of m1) {
      const r = /^sixbed4_router_dropped_packets_total\{reason="([^"]+)"\}$/.exec(k);
      if (r && v - (m0.get(k) ?? 0) > 0) drops[r[1]!] = v - (m0.get(k) ?? 0);
    }
    await router.stop();
    return {
      pingsSent: ping.sent, pingsReceived: ping.received, lossPct: ping.sent ? (100 * (ping.sent - ping.received)) / ping.sent : 100,
      floodSent: done.sent, floodPps: Math.round((done.sent * 1000) / done.elapsedMs),
      routerRxPps: Math.round(rx / (done.elapsedMs / 1000)),
      rssBeforeMB: rssBefore / 2 ** 20, rssAfterMB: (mem?.rss ?? NaN) / 2 ** 20, rssPeakMB: (mem?.hwm ?? NaN) / 2 ** 20,
      spoofedAtIsp: spoofed, drops, rcvbufErrors: snmp1 - snmp0,
    };
  } finally {
    await topo.destroy();
  }
}

/** Udp RcvbufErrors of the namespace's kernel (datagrams dropped because the socket buffer was full). */
async function udpRcvbufErrors(ns: { run(argv: string[]): Promise<string> }): Promise<number> {
  const text = await ns.run(['cat', '/proc/net/snmp']);
  const lines = text.split('\n').filter((l) => l.startsWith('Udp:'));
  const keys = lines[0]!.split(/\s+/), vals = lines[1]!.split(/\s+/);
  return Number(vals[keys.indexOf('RcvbufErrors')]);
}

async function ispCount(isp: { run(argv: string[]): Promise<string> }): Promise<number> {
  const j = JSON.parse(await isp.run([systemTool('nft'), '-j', 'list', 'table', 'inet', 'flood_watch'])) as { nftables: { rule?: { expr: { counter?: { packets: number } }[] } }[] };
  let n = 0;
  for (const item of j.nftables) for (const e of item.rule?.expr ?? []) if (e.counter) n += e.counter.packets;
  return n;
}

/** Standalone: `node dist/bench/flood.js [seconds] [router flags...]` prints the result as JSON. */
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [secs, ...rest] = process.argv.slice(2);
  runFlood({ durationS: Number(secs ?? 10), routerArgs: rest }).then(
    (r) => { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); },
    (e: Error) => { process.stderr.write(`${e.stack}\n`); process.exitCode = 1; },
  );
}
