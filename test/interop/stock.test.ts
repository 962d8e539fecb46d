// Interoperability with the stock 6bed4 C implementation (test/stock/6bed4, built by test/helpers/stock6bed4.ts) in
// the lab's reference topology: the stock peer behind a NAT against our router (also with the in-kernel fast path),
// the stock peer and ours (each behind its own NAT) reaching each other through our router, and our peer against
// the stock router; then each peer through a change of its NAT mapping (the stock peer against our router, with
// and without the fast path; ours against the stock router), and the stock peer across our router's restart and
// handover. Each scenario builds its own namespaces; everything goes with them, also on failure, and a
// failing assertion carries what the stock programs printed.
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { addSecondNat, NAT_D } from '../../lab/second-nat.js';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { addressIPv4, addressPort, makeAddress } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import {
  buildStock,
  startStockPeer,
  startStockRouter,
  STOCK_TUN,
  stockOutput,
  stockSkipReason,
} from '../helpers/stock6bed4.js';
import { OUR_PEER_MOVED, remapNat, REMAP_PORTS, stockPeerMoved } from '../helpers/nat-remap.js';
import { fileURLToPath } from 'node:url';
import { BULK_CLIENT, ECHO_SERVER } from '../helpers/tcp-echo.js';

/**
 * Three pings through a stock program (its router or peer), each answer waited for up to 10 s: on a busy machine the
 * stock programs are sometimes off the CPU long enough that ping's own wait (two round trips once one answer came)
 * counts a late answer as lost (seen: 2 of 3 answered, the third relayed by the stock router after the wait).
 */
const PATIENT = { count: 3, deadlineS: 10 };
const HANDOVER_ROUTER = fileURLToPath(new URL('../helpers/handover-router.js', import.meta.url));

const METRICS = '127.0.0.1:9464';
const ROUTER_ARGS = ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS];
const FAST = 'sixbed4_router_packets_total{direction="udp_to_tun",path="fast"}';
const TUN_TO_UDP_FAST = 'sixbed4_router_packets_total{direction="tun_to_udp",path="fast"}';
const prefix = parsePrefix64(TOPO.prefix);
/** Our router's own 6bed4 address (lanip 0 of its listen IPv4:port): the source of its Time Exceeded. */
const ROUTER_6BED4 = formatIPv6(makeAddress(prefix.bytes, parseIPv4(TOPO.routerV4), 25790, 0));

const fastSkip = findSystemTool('ethtool')
  ? null
  : "needs ethtool (the NAT's wire must carry full UDP checksums for the fast path)";
const conntrackSkip = findSystemTool('conntrack')
  ? null
  : 'needs the conntrack tool (Debian package conntrack) to make the NAT forget its mapping';
const titled = (reason: string | null) => (name: string) => (reason ? `${name} (skipped: ${reason})` : name);
const serial = stockSkipReason ? test.serial.skip : test.serial;
const title = titled(stockSkipReason);
const serialFast = (stockSkipReason ?? fastSkip) ? test.serial.skip : test.serial;
const titleFast = titled(stockSkipReason ?? fastSkip);

/** A fresh reference topology for one test, destroyed (namespaces and every process in them) when it ends. */
async function labFor(t: ExecutionContext, tag: string): Promise<Topology> {
  const topo = await buildTopology({ tag });
  t.teardown(() => topo.destroy());
  return topo;
}

/**
 * The one global address on ns's dev, once there is one; gives up when proc exits. The error carries `why()` (the
 * stock programs' output).
 */
async function globalAddress(
  ns: Netns,
  dev: string,
  proc: Proc,
  why: () => string,
  timeoutMs = 20_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const links = await ns
      .json<{ addr_info?: { local: string; scope: string }[] }[]>(['-6', 'addr', 'show', 'dev', dev])
      .catch(() => []);
    const global = links
      .flatMap((l) => l.addr_info ?? [])
      .filter((a) => a.scope === 'global')
      .map((a) => a.local);
    if (global.length > 0) return global[0]!;
    if (Date.now() > deadline || !proc.running)
      throw new Error(
        `${ns.name}: no global address on ${dev} (${proc.running ? `after ${timeoutMs} ms` : 'it exited'})\n${why()}`,
      );
    await sleep(100);
  }
}

/** The NAT's public mapping (IPv4:port) of inside[:port] towards the router's 6bed4 port, from its connection tracking table. */
async function natMapping(nat: Netns, inside: string, port?: number): Promise<{ v4: string; port: number }> {
  const out = await nat.run([
    systemTool('conntrack'),
    '-L',
    '-p',
    'udp',
    '-s',
    inside,
    ...(port ? ['--sport', String(port)] : []),
    '-d',
    TOPO.routerV4,
    '--dport',
    '25790',
  ]);
  // Original tuple, then the reply tuple: src=<router> dst=<public v4> sport=25790 dport=<public port>.
  const m = /src=\S+ dst=\S+ sport=\d+ dport=\d+ .*?src=\S+ dst=(\S+) sport=\d+ dport=(\d+)/.exec(out);
  if (!m) throw new Error(`no NAT mapping of ${inside}:${port} towards ${TOPO.routerV4}: ${out}`);
  return { v4: m[1]!, port: Number(m[2]) };
}

/** Stock peer A behind the lab's NAT, against whatever router runs at TOPO.routerV4; resolves with its address. */
async function stockPeerA(
  topo: Topology,
  procs: Record<string, Proc | undefined>,
): Promise<{ proc: Proc; port: number; address: string }> {
  const bin = await buildStock(TOPO.routerV4);
  const { proc, port } = await startStockPeer(topo.peers.A, bin, TOPO.routerV4);
  procs['stock 6bed4peer'] = proc;
  return { proc, port, address: await globalAddress(topo.peers.A, STOCK_TUN, proc, () => stockOutput(procs)) };
}

/** Scenario a (also with the fast path): address = public NAT mapping; pings both ways; hop limit expiry. */
async function stockPeerAgainstOurRouter(
  t: ExecutionContext,
  topo: Topology,
  router: Proc,
): Promise<{ address: string; why: () => string }> {
  const procs: Record<string, Proc | undefined> = { 'our router': router };
  const why = () => stockOutput(procs);
  const peer = await stockPeerA(topo, procs);
  const mapping = await natMapping(topo.nat, TOPO.peerAV4, peer.port);
  t.is(mapping.v4, TOPO.natV4, 'the NAT maps the stock peer to its public IPv4');
  const expected = formatIPv6(makeAddress(prefix.bytes, parseIPv4(mapping.v4), mapping.port, 1));
  t.is(
    peer.address,
    expected,
    `the stock peer's address is its public mapping ${mapping.v4}:${mapping.port} (lanip 1)\n${why()}`,
  );
  const a = parseIPv6(peer.address);
  t.is(formatIPv4(addressIPv4(a, 0)), TOPO.natV4);
  t.is(addressPort(a, 0), mapping.port);
  for (const [from, to] of [
    [topo.peers.A, TOPO.ispV6],
    [topo.isp, peer.address],
  ] as const) {
    const r = await ping6(from, to, PATIENT);
    t.is(r.received, 3, `${from.name} -> ${to}\n${r.output}\n${why()}`);
  }
  // The stock peer takes one off the hop limit itself (and drops what it would send with 1): 2 reaches our router as 1.
  const hop = await ping6(topo.peers.A, TOPO.ispV6, { count: 1, hops: 2 });
  t.regex(hop.output, new RegExp(`From ${ROUTER_6BED4}.*Time exceeded`), `${hop.output}\n${why()}`);
  return { address: peer.address, why };
}

serial(
  title(
    'a. stock peer behind a NAT -> our router: its address is its public NAT mapping; pings to and from the ISP; Time Exceeded from our router',
  ),
  async (t) => {
    const topo = await labFor(t, 'stk-a');
    const router = await startRouterIn(topo.router, ROUTER_ARGS);
    await stockPeerAgainstOurRouter(t, topo, router);
  },
);

serial(
  title('b. stock peer and our peer, each behind its own NAT: pings both ways (through our router)'),
  async (t) => {
    const topo = await labFor(t, 'stk-b');
    const d = await addSecondNat(topo);
    t.teardown(() => d.destroy());
    const router = await startRouterIn(topo.router, ROUTER_ARGS);
    const procs: Record<string, Proc | undefined> = { 'our router': router };
    const why = () => stockOutput(procs);
    const [stock, ours] = await Promise.all([
      stockPeerA(topo, procs),
      startPeerIn(d.peer, ['--router', TOPO.routerV4]),
    ]);
    procs['our peer'] = ours.proc;
    t.is(formatIPv4(addressIPv4(parseIPv6(ours.address), 0)), NAT_D.natV4, 'our peer sits behind the second NAT');
    for (const [from, to] of [
      [topo.peers.A, ours.address],
      [d.peer, stock.address],
    ] as const) {
      const r = await ping6(from, to, PATIENT);
      t.is(r.received, 3, `${from.name} -> ${to}\n${r.output}\n${why()}`);
    }
    // The stock peer never goes direct: everything it tunnels goes to its compiled-in router.
    const sent = [...stock.proc.output().matchAll(/Sending IPv6-UDP-IPv4 to (\S+),/g)].map((m) => m[1]);
    t.true(sent.length >= 6, why());
    t.deepEqual([...new Set(sent)], [`${TOPO.routerV4}:25790`], why());
  },
);

serial(
  title(
    'c. our peer -> the stock router (its /64 routed into its tunnel by hand): the address of its NAT mapping, pings to and from the ISP and to another of our peers',
  ),
  async (t) => {
    const topo = await labFor(t, 'stk-c');
    const bin = await buildStock(TOPO.routerV4);
    const router = await startStockRouter(topo.router, bin, TOPO.routerV4, TOPO.prefix);
    const procs: Record<string, Proc | undefined> = { 'stock 6bed4router': router };
    const why = () => stockOutput(procs);
    const [ours, other] = await Promise.all(
      [topo.peers.A, topo.peers.B].map((ns) =>
        startPeerIn(ns, ['--router', TOPO.routerV4, '--default-route']).catch((err: Error) => {
          throw new Error(`${err.message}\n${why()}`);
        }),
      ),
    );
    procs['our peer A'] = ours!.proc;
    procs['our peer B'] = other!.proc;
    const mapping = await natMapping(topo.nat, TOPO.peerAV4);
    t.is(mapping.v4, TOPO.natV4);
    t.is(
      ours!.address,
      formatIPv6(makeAddress(prefix.bytes, parseIPv4(mapping.v4), mapping.port, 1)),
      `our peer's address is its public mapping ${mapping.v4}:${mapping.port} (lanip 1)\n${why()}`,
    );
    // A and B share a NAT that does not hairpin: between them everything goes through the stock router.
    for (const [from, to] of [
      [topo.peers.A, TOPO.ispV6],
      [topo.isp, ours!.address],
      [topo.peers.A, other!.address],
      [topo.peers.B, ours!.address],
    ] as const) {
      const r = await ping6(from, to, PATIENT);
      t.is(r.received, 3, `${from.name} -> ${to}\n${r.output}\n${why()}`);
    }
  },
);

serialFast(
  titleFast(
    "d. as a., with our router's fast path on: the same answers, and the stock peer's pings and their replies go through the fast path both ways; its TCP through the GRO pair, whole",
  ),
  async (t) => {
    const topo = await labFor(t, 'stk-d');
    // Both wires must carry full UDP checksums, as from a real NIC, and the kernel's route lookup for BPF needs IPv4
    // forwarding on the uplink (see test/e2e/fastpath.test.ts).
    await topo.nat.run([systemTool('ethtool'), '-K', TOPO.natWanIf, 'tx', 'off']);
    await topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'tx', 'off']);
    await topo.router.run(['sysctl', '-qw', `net.ipv4.conf.${TOPO.routerWanIf}.forwarding=1`]);
    const router = await startRouterIn(topo.router, [...ROUTER_ARGS, '--fast-path', 'on']);
    t.regex(router.output(), /fast path on: peers <-> kernel and relays/);
    const { why } = await stockPeerAgainstOurRouter(t, topo, router);
    const read = async () => {
      const m = await scrape(topo.router, METRICS);
      return [m.get(FAST) ?? 0, m.get(TUN_TO_UDP_FAST) ?? 0];
    };
    const before = await read();
    const r = await ping6(topo.peers.A, TOPO.ispV6, { count: 5 });
    t.is(r.received, 5, `${r.output}\n${why()}`);
    const after = await read();
    t.log(
      `fast path counters (peers -> kernel, kernel -> peers) before/after the stock peer's 5 pings: ${before} / ${after}`,
    );
    t.deepEqual(
      [after[0]! - before[0]!, after[1]! - before[1]!],
      [5, 5],
      `the fast path took the 5 echo requests and their 5 replies\n${why()}`,
    );
    // The stock peer's TCP (2 MB up, echoed back), GRO on the uplink: every segment from it through the GRO pair.
    const SENT = 'sixbed4_router_fast_path_gro_packets_total{stage="sent"}';
    await topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'on']);
    const server = topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
    try {
      await server.waitFor(/listening/, 10_000);
      const m0 = await scrape(topo.router, METRICS);
      const r2 = await topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, '2000000'], {
        timeoutMs: 60_000,
      });
      t.is(r2.code, 0, `the stream arrives whole: ${r2.stdout}${r2.stderr}\n${why()}`);
      const m1 = await scrape(topo.router, METRICS);
      const fast = (m1.get(FAST) ?? 0) - (m0.get(FAST) ?? 0),
        sent = (m1.get(SENT) ?? 0) - (m0.get(SENT) ?? 0);
      t.log(`the stock peer's upload: ${fast} segments on the fast path, ${sent} of them through the GRO pair`);
      t.true(fast > 1000 && sent >= fast * 0.99, `${fast} fast, ${sent} through the pair\n${why()}`);
    } finally {
      await server.stop();
    }
  },
);

/**
 * The stock peer's NAT mapping changes (helpers/nat-remap.ts): its next packets reach our router from a new port and
 * fail the originator check; the router's RA must move it to its new /114 (the RA's form: protocol/nd.ts). It adds
 * the new address beside the old one (the stock peer removes none): the ISP must reach it at the new one, and its
 * pings the ISP.
 */
async function stockPeerThroughNatChange(t: ExecutionContext, topo: Topology, router: Proc): Promise<void> {
  const procs: Record<string, Proc | undefined> = { 'our router': router };
  const why = () => stockOutput(procs);
  const peer = await stockPeerA(topo, procs);
  t.is((await ping6(topo.peers.A, TOPO.ispV6, { ...PATIENT, count: 2 })).received, 2, why());
  const moved = await remapNat(topo, peer.proc, stockPeerMoved(peer.address), 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${why()}`);
  });
  t.not(moved, peer.address);
  const port = addressPort(parseIPv6(moved), 0);
  t.true(
    port >= REMAP_PORTS.first && port <= REMAP_PORTS.last,
    `the new address carries the new public port (${port})`,
  );
  // Reached at the new address once its own traffic has made the router tell it (a remap round can move it twice).
  let back = { received: 0, output: 'not pinged' },
    now = moved;
  for (const until = Date.now() + 30_000; Date.now() < until;) {
    now = [...peer.proc.output().matchAll(/Assigning address (\S+) to tunnel/g)].at(-1)?.[1] ?? moved;
    back = await ping6(topo.isp, now, { count: 3 });
    if (back.received === 3) break;
    await ping6(topo.peers.A, TOPO.ispV6, { count: 1, timeoutS: 1 });
  }
  t.not(now, peer.address, `the stock peer stays on its new address\n${why()}`);
  t.is(back.received, 3, `the ISP reaches the stock peer at ${now}\n${back.output}\n${why()}`);
  const out = await ping6(topo.peers.A, TOPO.ispV6, PATIENT);
  t.is(out.received, 3, `${out.output}\n${why()}`);
}

const serialNat = (stockSkipReason ?? conntrackSkip) ? test.serial.skip : test.serial;
const titleNat = titled(stockSkipReason ?? conntrackSkip);
const serialNatFast = (stockSkipReason ?? conntrackSkip ?? fastSkip) ? test.serial.skip : test.serial;
const titleNatFast = titled(stockSkipReason ?? conntrackSkip ?? fastSkip);

serialNat(
  titleNat(
    'e. stock peer behind a NAT whose mapping changes -> our router: it moves to its new address and is reached there',
  ),
  async (t) => {
    const topo = await labFor(t, 'stk-e');
    const router = await startRouterIn(topo.router, ROUTER_ARGS);
    await stockPeerThroughNatChange(t, topo, router);
  },
);

serialNatFast(titleNatFast("f. as e., with our router's fast path on"), async (t) => {
  const topo = await labFor(t, 'stk-f');
  await topo.nat.run([systemTool('ethtool'), '-K', TOPO.natWanIf, 'tx', 'off']);
  await topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'tx', 'off']);
  await topo.router.run(['sysctl', '-qw', `net.ipv4.conf.${TOPO.routerWanIf}.forwarding=1`]);
  const router = await startRouterIn(topo.router, [...ROUTER_ARGS, '--fast-path', 'on']);
  t.regex(router.output(), /fast path on/);
  await stockPeerThroughNatChange(t, topo, router);
});

serialNat(
  titleNat(
    'g. our peer behind a NAT whose mapping changes -> the stock router: it moves to its new address and is reached there',
  ),
  async (t) => {
    const topo = await labFor(t, 'stk-g');
    const bin = await buildStock(TOPO.routerV4);
    const router = await startStockRouter(topo.router, bin, TOPO.routerV4, TOPO.prefix);
    const procs: Record<string, Proc | undefined> = { 'stock 6bed4router': router };
    const why = () => stockOutput(procs);
    const ours = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']).catch((err: Error) => {
      throw new Error(`${err.message}\n${why()}`);
    });
    procs['our peer'] = ours.proc;
    const moved = await remapNat(topo, ours.proc, OUR_PEER_MOVED, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${why()}`);
    });
    t.not(moved, ours.address);
    let back = { received: 0, output: 'not pinged' },
      now = moved;
    for (const until = Date.now() + 30_000; Date.now() < until;) {
      now = [...ours.proc.output().matchAll(/address moved.*to=(\S+)/g)].at(-1)?.[1] ?? moved;
      back = await ping6(topo.isp, now, { count: 3 });
      if (back.received === 3) break;
      await ping6(topo.peers.A, TOPO.ispV6, { count: 1, timeoutS: 1 });
    }
    t.is(back.received, 3, `the ISP reaches our peer at ${now}\n${back.output}\n${why()}`);
    t.is((await ping6(topo.peers.A, TOPO.ispV6, PATIENT)).received, 3, why());
  },
);

serial(
  title("h. stock peer across our router's restart and its handover to a successor: same address, reached both ways"),
  async (t) => {
    const topo = await labFor(t, 'stk-h');
    let router = await startRouterIn(topo.router, ROUTER_ARGS);
    const procs: Record<string, Proc | undefined> = { 'our router': router };
    const why = () => stockOutput(procs);
    const peer = await stockPeerA(topo, procs);
    const both = async (when: string) => {
      for (const [from, to] of [
        [topo.peers.A, TOPO.ispV6],
        [topo.isp, peer.address],
      ] as const) {
        const r = await ping6(from, to, PATIENT);
        t.is(r.received, 3, `${when}: ${from.name} -> ${to}\n${r.output}\n${why()}`);
      }
    };
    await both('before');
    // A restart: the router goes (tunnel and all) and comes back; 6bed4 keeps no state at the router.
    await router.stop('SIGTERM');
    router = await startRouterIn(topo.router, ROUTER_ARGS);
    procs['our router'] = router;
    await both('after a restart');
    // A handover, as the node agent's routers do in a rolling update (test/e2e/handover.test.ts).
    await router.stop('SIGTERM');
    const first = await startHandoverRouter(topo, '127.0.0.1:9464');
    procs['our router'] = first;
    await both('with a handover router');
    const next = await startHandoverRouter(topo, '127.0.0.1:9465');
    procs['the successor'] = next;
    t.is(await first.stop('SIGTERM', 15_000), 0);
    t.regex(first.output(), /handed over to the next router/);
    await both('after the handover');
    t.deepEqual(
      [...new Set([...peer.proc.output().matchAll(/Assigning address (\S+) to tunnel/g)].map((m) => m[1]))],
      [peer.address],
      'the stock peer never changed address',
    );
  },
);

/** A router as the node agent starts one (handover: true; helpers/handover-router.ts). */
async function startHandoverRouter(topo: Topology, metrics: string): Promise<Proc> {
  const p = topo.router.spawn([
    process.execPath,
    HANDOVER_ROUTER,
    JSON.stringify({ prefix: TOPO.prefix, listen: TOPO.routerV4, metrics }),
  ]);
  try {
    await p.waitFor(/router ready/, 10_000);
  } catch (err) {
    await p.stop('SIGKILL');
    throw err;
  }
  return p;
}
