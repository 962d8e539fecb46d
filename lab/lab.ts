// `sixbed4 lab`: the whole product in one command on any Linux box with
// root. It builds a small Internet of network namespaces (an ISP with native
// IPv6, the router host, a NAT with two IPv4-only peers behind it, a second
// NAT with a third), runs our router and peers in it, proves connectivity in
// every direction, says which peers went direct, prints what it saw, and
// removes everything, also on Ctrl-C.
import type { Logger } from '../lib/log.js';
import { buildTopology, requireRootReason, TOPO, type Topology } from './topology.js';
import { cleanupAll, uniqueName } from './netns.js';
import type { Proc } from './proc.js';
import { ping6, scrape, startPeerIn, startRouterIn, type PingResult } from './sixbed4.js';
import { addSecondNat, NAT_D, type SecondNat } from './second-nat.js';
import { labFastPath, useLabFastPath } from './fast-path.js';

export interface LabOptions {
  keepSeconds: number;
  fastPath?: boolean;
}

const METRICS = '127.0.0.1:9464';

export async function runLab(opts: LabOptions, log: Logger): Promise<number> {
  if (opts.fastPath) useLabFastPath(true);
  const why = requireRootReason();
  if (why) {
    process.stderr.write(`sixbed4 lab: ${why}\n`);
    return 2;
  }
  let topo: Topology | undefined;
  let second: SecondNat | undefined;
  const procs: Proc[] = [];
  let interrupted = false;
  // Named up front, so Ctrl-C while the topology is being built can still find what exists.
  const prefix = uniqueName('lab');
  const teardown = async () => {
    for (const p of procs.reverse()) await p.stop();
    await second?.destroy();
    await topo?.destroy();
    await cleanupAll(prefix);
  };
  const onSignal = () => {
    interrupted = true;
    log.warn('interrupted: tearing the lab down');
    void teardown().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    log.info('[1/5] building namespaces: isp, router, nat, peer A, peer B, natd, peer D');
    topo = await buildTopology({ tag: 'lab', prefix });
    second = await addSecondNat(topo);
    log.info(`[2/5] starting the 6bed4 router in ${topo.router.name}`, { prefix: TOPO.prefix, listen: TOPO.routerV4 });
    procs.push(
      await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]),
    );
    log.info('[3/5] starting peers A and B behind the NAT, D behind the second NAT');
    const [a, b, d] = await Promise.all([
      startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']),
      startPeerIn(topo.peers.B, ['--router', TOPO.routerV4, '--default-route']),
      startPeerIn(second.peer, ['--router', TOPO.routerV4, '--default-route']),
    ]);
    procs.push(a.proc, b.proc, d.proc);
    log.info('[4/5] pinging in every direction');
    const checks: [string, Promise<PingResult>][] = [
      ['peer A -> isp', ping6(topo.peers.A, TOPO.ispV6)],
      ['isp -> peer A', ping6(topo.isp, a.address)],
      ['peer B -> isp', ping6(topo.peers.B, TOPO.ispV6)],
      ['isp -> peer B', ping6(topo.isp, b.address)],
      ['peer A -> peer B', ping6(topo.peers.A, b.address)],
      ['peer B -> peer A', ping6(topo.peers.B, a.address)],
      ['peer A -> peer D', ping6(topo.peers.A, d.address, { count: 10 })],
      ['peer D -> peer A', ping6(second.peer, a.address, { count: 10 })],
    ];
    const results: [string, PingResult][] = [];
    for (const [name, p] of checks) results.push([name, await p]);
    // A pair is direct when each peer got the other's answer to its probes (agent/peer/direct.ts).
    const directTo = (from: Proc, to: string) => from.output().includes(`direct path to ${mapping(to)}: it answered`);
    // A and B share a NAT that does not hairpin (as most home routers): their probes cannot be answered.
    const pairs: [string, boolean][] = [
      ['A <-> B', directTo(a.proc, b.address) && directTo(b.proc, a.address)],
      ['A <-> D', directTo(a.proc, d.address) && directTo(d.proc, a.address)],
    ];
    const metrics = await scrape(topo.router, METRICS);
    log.info('[5/5] summary');
    const ok = results.every(([, r]) => r.received === r.sent);
    process.stdout.write(
      summary(
        topo,
        [
          ['A', TOPO.peerAV4, a.address],
          ['B', TOPO.peerBV4, b.address],
          ['D', NAT_D.peerV4, d.address],
        ],
        results,
        pairs,
        metrics,
      ),
    );
    if (opts.keepSeconds > 0) {
      log.info(`keeping the lab for ${opts.keepSeconds} s (Ctrl-C ends it early)`, {
        namespaces: topo.names.join(' '),
      });
      await new Promise((r) => setTimeout(r, opts.keepSeconds * 1000));
    }
    return ok ? 0 : 1;
  } finally {
    if (!interrupted) {
      await teardown();
      log.info('lab removed: namespaces, router and peers are gone');
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function summary(
  topo: Topology,
  peers: [string, string, string][],
  results: [string, PingResult][],
  pairs: [string, boolean][],
  m: Map<string, number>,
): string {
  const g = (k: string) => m.get(k) ?? 0;
  // With the fast path, what its programs forwarded in the kernel is said apart.
  const both = (direction: string) => {
    const slow = g(`sixbed4_router_packets_total{direction="${direction}",path="slow"}`);
    const fast = g(`sixbed4_router_packets_total{direction="${direction}",path="fast"}`);
    return labFastPath() ? `${slow + fast} (${fast} by the fast path)` : String(slow);
  };
  const lines = [
    '',
    `sixbed4 lab: router ${TOPO.routerV4}:25790 serves ${TOPO.prefix} (namespace ${topo.router.name})`,
    '',
    'peer  IPv4 inside  seen by the router as        6bed4 address',
    ...peers.map(([id, inside, addr]) => `${id.padEnd(4)}  ${inside.padEnd(11)}  ${mapping(addr).padEnd(27)}  ${addr}`),
    '',
    'check               received   avg rtt',
    ...results.map(
      ([n, r]) =>
        `${n.padEnd(18)}  ${`${r.received}/${r.sent}`.padEnd(9)}  ${r.avgMs === null ? '-' : `${r.avgMs.toFixed(3)} ms`}${r.received === r.sent ? '' : '   FAILED'}`,
    ),
    '',
    'peer to peer',
    ...pairs.map(
      ([pair, direct]) =>
        `  ${pair}            ${
          direct
            ? "direct (each answered the other's probe; from then on the router relays none of it)"
            : 'through the router (their probes got no answer)'
        }`,
    ),
    '',
    'router counters',
    `  peers -> kernel    ${both('udp_to_tun')} packets`,
    `  kernel -> peers    ${both('tun_to_udp')} packets`,
    `  peer -> peer       ${both('relay')} packets (relayed over UDP, the kernel's routing untouched)`,
    `  RS in / RA out     ${g('sixbed4_router_nd_messages_total{type="rs"}')} / ${g('sixbed4_router_nd_messages_total{type="ra"}')}`,
    `  dropped            ${[...m].filter(([k]) => k.startsWith('sixbed4_router_dropped_packets_total')).reduce((s, [, v]) => s + v, 0)}${dropDetail(m)}`,
    '',
    results.every(([, r]) => r.received === r.sent) ? 'RESULT: all checks passed' : 'RESULT: some checks FAILED',
    '',
  ];
  return lines.join('\n');
}

/** The public IPv4:port embedded in a 6bed4 address, as text. */
function mapping(addr: string): string {
  const w = addr.split(':');
  if (w.length !== 8) return '?';
  const h = (s: string) => parseInt(s, 16);
  const b8 = h(w[4]!) >> 8,
    b9 = h(w[4]!) & 255,
    b10 = h(w[5]!) >> 8,
    b11 = h(w[5]!) & 255,
    b14 = h(w[7]!) >> 8;
  return `${(b8 & 0xfc) | (b14 >> 6)}.${b9}.${b10}.${b11}:${h(w[6]!)}`;
}

function dropDetail(m: Map<string, number>): string {
  const parts = [...m]
    .filter(([k, v]) => k.startsWith('sixbed4_router_dropped_packets_total') && v > 0)
    .map(([k, v]) => `${/reason="([^"]+)"/.exec(k)?.[1]} ${v}`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}
