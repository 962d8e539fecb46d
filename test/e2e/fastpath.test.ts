// The in-kernel fast path (--fast-path on) end to end in the reference
// topology: peers' packets to the native side, the kernel's to peers and
// relays between peers on the uplink are forwarded by the BPF programs (their
// counters move, the router process's do not), everything else still takes the
// TypeScript router, and when the router stops or is killed nothing is left
// attached that would keep handling packets.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { CLI, ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { formatIPv6, parseIPv4, parsePrefix64 } from '../../lib/ip.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { skipReason as labSkip } from '../helpers/fixtures.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { BULK_CLIENT, ECHO_SERVER } from '../helpers/tcp-echo.js';
import { attachedPrograms } from '../../lab/fast-path.js';

interface Lab {
  topo: Topology;
  router: Proc;
  peers: Record<'A' | 'B' | 'C', { proc: Proc; address: string }>;
}
const lab = {} as Lab;
const skipReason =
  labSkip ?? (findSystemTool('ethtool') ? null : "needs ethtool (the NAT's wire must carry full UDP checksums)");
const title = (name: string) => (skipReason ? `${name} (skipped: ${skipReason})` : name);
const serial = skipReason ? test.serial.skip : test.serial;
const METRICS = '127.0.0.1:9464';
const ROUTER_ARGS = ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS];
const FAST = 'sixbed4_router_packets_total{direction="udp_to_tun",path="fast"}';
const SLOW = 'sixbed4_router_packets_total{direction="udp_to_tun",path="slow"}';
const TUN_TO_UDP = 'sixbed4_router_packets_total{direction="tun_to_udp",path="slow"}';
const TUN_TO_UDP_FAST = 'sixbed4_router_packets_total{direction="tun_to_udp",path="fast"}';
const RELAY = 'sixbed4_router_packets_total{direction="relay",path="slow"}';
const RELAY_FAST = 'sixbed4_router_packets_total{direction="relay",path="fast"}';
const MERGED = 'sixbed4_router_fast_path_merged_segments_total{checksum="right"}';
const MERGED_UNEVEN = 'sixbed4_router_fast_path_merged_segments_total{checksum="none"}';

test.before(async () => {
  if (skipReason) return;
  lab.topo = await buildTopology({ tag: 'fastpath', peerC: true });
  // Datagrams from a namespace on this host carry only a partial UDP checksum (the stack vouches for the rest), and
  // the program cannot see that vouching, so it leaves them to the router. A real wire carries full checksums: the
  // NAT computes them itself when its uplink does not offer to.
  await lab.topo.nat.run([systemTool('ethtool'), '-K', TOPO.natWanIf, 'tx', 'off']);
  // The same holds for what the router sends: its veth would hand a local sender's unfinished checksum on as it is
  // (a NIC finishes it), so the fast path sends kernel -> peers only when the uplink finishes checksums itself.
  await txChecksum('off');
  // The kernel's route lookup for BPF answers only where IPv4 forwarding is on (Kubernetes nodes have it).
  await forwarding('1');
  lab.router = await startWithCaps(FAST_PATH_CAPS);
  const [A, B, C] = await Promise.all([
    startPeerIn(lab.topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--no-direct']),
    startPeerIn(lab.topo.peers.B, ['--router', TOPO.routerV4, '--default-route', '--no-direct']),
    startPeerIn(lab.topo.peers.C, ['--router', TOPO.routerV4, '--default-route']),
  ]);
  lab.peers = { A, B, C };
});

test.after.always(async () => {
  await lab.topo?.destroy();
});

/** Turns tx checksum offload of the router's uplink on or off. */
async function txChecksum(state: 'on' | 'off'): Promise<void> {
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'tx', state]);
}

/** Turns IPv4 forwarding on the router's uplink on or off. */
async function forwarding(value: '0' | '1'): Promise<void> {
  await lab.topo.router.run(['sysctl', '-qw', `net.ipv4.conf.${TOPO.routerWanIf}.forwarding=${value}`]);
}

/** What the router with the fast path needs, measured: CAP_BPF and CAP_NET_ADMIN for the program, CAP_NET_RAW as ever. */
const FAST_PATH_CAPS = ['net_admin', 'net_raw', 'bpf'];

/** Starts `sixbed4 router --fast-path on` as root with only caps in its bounding, inheritable and ambient sets. */
async function startWithCaps(caps: string[]): Promise<Proc> {
  const c = `-all,${caps.map((x) => `+${x}`).join(',')}`;
  const p = lab.topo.router.spawn([
    'setpriv',
    `--inh-caps=${c}`,
    `--ambient-caps=${c}`,
    `--bounding-set=${c}`,
    process.execPath,
    CLI,
    'router',
    ...ROUTER_ARGS,
    '--fast-path',
    'on',
    // The XDP stage too (an opt-in): the upload test below goes through it.
    '--fast-path-xdp',
    'auto',
    '--log-format',
    'text',
  ]);
  try {
    await p.waitFor(/router ready/, 10_000);
  } catch (err) {
    await p.stop('SIGKILL');
    throw new Error(`${(err as Error).message}: ${p.output()}`);
  }
  return p;
}

/** Counter changes across fn, read from the router's metrics. */
async function delta(fn: () => Promise<void>, keys: string[]): Promise<Record<string, number>> {
  const before = await scrape(lab.topo.router, METRICS);
  await fn();
  const after = await scrape(lab.topo.router, METRICS);
  return Object.fromEntries(keys.map((k) => [k, (after.get(k) ?? 0) - (before.get(k) ?? 0)]));
}

serial(
  title(
    'the router (CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF only) says the fast path is on, both ways, on the uplink holding its address',
  ),
  (t) => {
    t.regex(lab.router.output(), /fast path on: peers <-> kernel and relays.*wan0/);
    t.regex(lab.router.output(), /router ready.*fast.?[Pp]ath.*on \(wan0 ingress\)/);
  },
);

serial(
  title(
    "peer -> ISP and back: requests and replies are forwarded in the kernel (the fast counters have them, the router's do not)",
  ),
  async (t) => {
    const d = await delta(async () => {
      const r = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 5 });
      t.is(r.received, 5, r.output);
    }, [FAST, SLOW, TUN_TO_UDP, TUN_TO_UDP_FAST]);
    t.deepEqual(
      d,
      { [FAST]: 5, [SLOW]: 0, [TUN_TO_UDP_FAST]: 5, [TUN_TO_UDP]: 0 },
      'five requests in, five replies out, all in the kernel',
    );
  },
);

serial(title('ISP -> peer: the same, the other way round'), async (t) => {
  const d = await delta(async () => {
    const r = await ping6(lab.topo.isp, lab.peers.A.address, { count: 3 });
    t.is(r.received, 3, r.output);
  }, [FAST, SLOW, TUN_TO_UDP, TUN_TO_UDP_FAST]);
  t.deepEqual(d, { [FAST]: 3, [SLOW]: 0, [TUN_TO_UDP_FAST]: 3, [TUN_TO_UDP]: 0 });
});

const GENERATIONS = 'sixbed4_router_fast_path_route_generations_total';
const LOOKUPS_TUN = 'sixbed4_router_fast_path_route_lookups_total{side="tun"}';
const LOOKUPS_UDP = 'sixbed4_router_fast_path_route_lookups_total{side="udp"}';

/** Makes a change to the router's namespace, then waits until the router has heard of it (a new route generation). */
async function routesChange(argv: string[]): Promise<void> {
  const before = (await scrape(lab.topo.router, METRICS)).get(GENERATIONS) ?? 0;
  await lab.topo.router.run(argv);
  for (let i = 0; i < 100; i++) {
    if (((await scrape(lab.topo.router, METRICS)).get(GENERATIONS) ?? 0) > before) return;
    await sleep(50);
  }
  throw new Error(`the router did not hear of: ${argv.join(' ')}`);
}

serial(
  title(
    "ISP -> peer: the next hop's answer is kept (one FIB lookup per route generation, not per packet) and dropped when the uplink's neighbour changes",
  ),
  async (t) => {
    const d = await delta(async () => {
      const r = await ping6(lab.topo.isp, lab.peers.A.address, { count: 20, interval: 0.01 });
      t.is(r.received, 20, r.output);
    }, [TUN_TO_UDP_FAST, LOOKUPS_TUN, GENERATIONS]);
    t.is(d[TUN_TO_UDP_FAST], 20);
    // The NAT's neighbour entry may age (a generation) while the pings run: each generation costs one lookup more.
    t.true(
      d[LOOKUPS_TUN]! <= 1 + d[GENERATIONS]!,
      `lookups ${d[LOOKUPS_TUN]} for 20 packets, ${d[GENERATIONS]} generations`,
    );
    // The router's neighbour for the NAT replaced by a wrong MAC: the kept answer (the right MAC) must go with it,
    // or replies would still reach the NAT.
    const ip = systemTool('ip');
    const neigh = [ip, 'neigh', 'replace', TOPO.natV4, 'dev', TOPO.routerWanIf];
    await routesChange([...neigh, 'lladdr', '02:00:5e:00:53:99', 'nud', 'permanent']);
    try {
      const wrong = await ping6(lab.topo.isp, lab.peers.A.address, { count: 3, interval: 0.05, timeoutS: 1 });
      t.is(wrong.received, 0, `sent towards the old MAC: ${wrong.output}`);
    } finally {
      await routesChange([ip, 'neigh', 'del', TOPO.natV4, 'dev', TOPO.routerWanIf]);
    }
    // Resolved again by the slow path's first packet, then the kernel's answer is kept once more.
    const back = await ping6(lab.topo.isp, lab.peers.A.address, { count: 3, deadlineS: 10 });
    t.is(back.received, 3, back.output);
  },
);

serial(title('peer <-> peer on the uplink: relayed in the kernel both ways, the router relays none'), async (t) => {
  const d = await delta(async () => {
    const r = await ping6(lab.topo.peers.A, lab.peers.B.address, { count: 4 });
    t.is(r.received, 4, r.output);
  }, [RELAY, RELAY_FAST]);
  t.deepEqual(d, { [RELAY_FAST]: 8, [RELAY]: 0 }, 'four requests A -> B and four replies B -> A');
});

serial(
  title(
    'a peer whose packets all went through the fast path is live for the router (the live-peers gauge, the neighbour proxy)',
  ),
  async (t) => {
    // B has sent the router nothing but its Router Solicitation (not tracked) and what the test above relayed in the
    // kernel; A and C talk to the router too.
    let live = 0;
    for (let i = 0; i < 50 && live < 3; i++) {
      live = (await scrape(lab.topo.router, METRICS)).get('sixbed4_router_live_peers') ?? 0;
      if (live < 3) await sleep(200);
    }
    t.is(live, 3, 'A, B and C');
  },
);

serial(
  title(
    "a TCP transfer both ways through the fast path arrives whole (the ISP's segments carry checksums its stack left to the hardware)",
  ),
  async (t) => {
    const server = lab.topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
    try {
      await server.waitFor(/listening/, 10_000);
      const d = await delta(async () => {
        const r = await lab.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, String(300_000)], {
          timeoutMs: 60_000,
        });
        t.is(r.code, 0, `${r.stdout}${r.stderr}`);
      }, [FAST, TUN_TO_UDP_FAST]);
      t.true(d[FAST]! > 100 && d[TUN_TO_UDP_FAST]! > 10, `segments both ways in the kernel: ${JSON.stringify(d)}`);
    } finally {
      await server.stop();
    }
  },
);

serial(
  title(
    "a download the router's ISP side merged (GRO, as a NIC does) goes through the fast path: over 99% of its segments, most as merged packets",
  ),
  async (t) => {
    await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerUplinkIf, 'gro', 'on']);
    const server = lab.topo.peers.A.spawn([process.execPath, '-e', ECHO_SERVER]);
    try {
      await server.waitFor(/listening/, 10_000);
      const d = await delta(async () => {
        // The ISP sends 4 MB to peer A, which echoes them back: both directions carry bulk TCP.
        const r = await lab.topo.isp.exec(
          [process.execPath, '-e', BULK_CLIENT, lab.peers.A.address, String(4_000_000)],
          { timeoutMs: 60_000 },
        );
        t.is(r.code, 0, `${r.stdout}${r.stderr}`);
      }, [TUN_TO_UDP_FAST, TUN_TO_UDP, MERGED, MERGED_UNEVEN, FAST, SLOW]);
      const down = d[TUN_TO_UDP_FAST]! + d[TUN_TO_UDP]!;
      t.true(down > 3000, `the download's segments: ${JSON.stringify(d)}`);
      t.true(d[TUN_TO_UDP]! <= down / 100, `at most 1% of the download through the router: ${JSON.stringify(d)}`);
      t.true(d[MERGED]! + d[MERGED_UNEVEN]! > down / 2, `most of it as merged packets: ${JSON.stringify(d)}`);
      t.true(d[SLOW]! <= (d[FAST]! + d[SLOW]!) / 100, `and the upload in the kernel too: ${JSON.stringify(d)}`);
    } finally {
      await server.stop();
      await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerUplinkIf, 'gro', 'off']);
    }
  },
);

/**
 * Uploads 4 MB from peer A to the ISP (echoed back) with GRO on the router's uplink and checks what every way the
 * fast path takes must give: the stream whole, in the kernel (at most 1% through the router), and a host firewall's
 * forward hook seeing all of it from the tunnel, none from the uplink. Returns the counter changes of keys.
 */
async function upload(
  t: {
    is: (a: unknown, b: unknown, m?: string) => void;
    true: (a: boolean, m?: string) => void;
    log: (m: string) => void;
  },
  keys: string[],
): Promise<Record<string, number>> {
  const bytes = 4_000_000;
  const nft = systemTool('nft');
  await lab.topo.router.run([nft, '-f', '-'], {
    input: `table inet s4fwd {
      chain seen {
        type filter hook forward priority 0; policy accept;
        iifname "6bed4" ip6 daddr ${TOPO.ispV6} counter
        iifname "${TOPO.routerWanIf}" ip6 daddr ${TOPO.ispV6} counter
      }
    }`,
  });
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'on']);
  const server = lab.topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
  try {
    await server.waitFor(/listening/, 10_000);
    const d = await delta(async () => {
      const r = await lab.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, String(bytes)], {
        timeoutMs: 60_000,
      });
      t.is(r.code, 0, `${r.stdout}${r.stderr}`);
    }, [FAST, SLOW, ...keys]);
    t.log(JSON.stringify(d));
    const up = d[FAST]! + d[SLOW]!;
    t.true(up > 3000, `the upload's segments: ${JSON.stringify(d)}`);
    t.true(d[SLOW]! <= up / 100, `at most 1% of the upload through the router: ${JSON.stringify(d)}`);
    const rules = JSON.parse(await lab.topo.router.run([nft, '-j', 'list', 'chain', 'inet', 's4fwd', 'seen'])) as {
      nftables: { rule?: { expr: { match?: { right: unknown }; counter?: { bytes: number } }[] } }[];
    };
    const counted = rules.nftables
      .filter((x) => x.rule)
      .map((x) => ({
        iif: x.rule!.expr.find((e) => e.match)?.match?.right,
        bytes: x.rule!.expr.find((e) => e.counter)?.counter?.bytes ?? -1,
      }));
    t.is(JSON.stringify(counted.map((c) => c.iif)), JSON.stringify(['6bed4', TOPO.routerWanIf]));
    t.true(counted[0]!.bytes >= bytes, `from the tunnel, all of it: ${counted[0]!.bytes}`);
    t.is(counted[1]!.bytes, 0, 'nothing as from the uplink');
    return d;
  } finally {
    await server.stop();
    await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'off']);
    await lab.topo.router.run([nft, 'delete', 'table', 'inet', 's4fwd']);
  }
}

const XDP = 'sixbed4_router_fast_path_xdp_packets_total{stage="xdp"}';
const XDP_HANDED = 'sixbed4_router_fast_path_xdp_packets_total{stage="tc"}';
const GRO_SENT = 'sixbed4_router_fast_path_gro_packets_total{stage="sent"}';
const GRO_HANDED = 'sixbed4_router_fast_path_gro_packets_total{stage="handed"}';

serial(
  title(
    "an upload through the XDP stage: decapsulated before GRO, merged, and seen by the host's forward hook as from the tunnel",
  ),
  async (t) => {
    t.regex(lab.router.output(), /decapsulated at wan0's XDP hook, before GRO/);
    const d = await upload(t, [XDP, XDP_HANDED, GRO_SENT]);
    t.true(d[XDP]! >= d[FAST]! * 0.99, `the fast path's share decapsulated before GRO: ${JSON.stringify(d)}`);
    t.true(d[XDP_HANDED]! < d[XDP]! / 2, `merged by GRO: fewer packets handed on than came: ${JSON.stringify(d)}`);
    t.is(d[GRO_SENT], 0, 'none of it through the GRO pair');
  },
);

serial(
  title('what the fast path leaves alone still works: a peer on another interface (and relays to it), hop limit 1'),
  async (t) => {
    const d = await delta(async () => {
      const relay = await ping6(lab.topo.peers.A, lab.peers.C.address, { count: 2 });
      t.is(relay.received, 2, relay.output);
      // Peer C reaches the router's address through wan1, whose ingress has no program and where to-peers does not
      // send: the router forwards its packets, and relays A's to it.
      const c = await ping6(lab.topo.peers.C, TOPO.ispV6, { count: 2 });
      t.is(c.received, 2, c.output);
    }, [FAST, SLOW, RELAY, TUN_TO_UDP]);
    t.is(d[RELAY], 4, 'A <-> C: both ways relayed by the router');
    t.is(d[SLOW], 2, "C's two requests, through the router");
    t.is(d[TUN_TO_UDP], 2, 'the replies to C, through the router');
    const routerAddr = formatIPv6(makeAddress(parsePrefix64(TOPO.prefix).bytes, parseIPv4(TOPO.routerV4), 25790, 0));
    const hop = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 1, hops: 1 });
    t.regex(hop.output, new RegExp(`From ${routerAddr}.*Time exceeded`), hop.output);
    const m = await scrape(lab.topo.router, METRICS);
    t.true(
      (m.get('sixbed4_router_fast_path_passed_total{side="udp",reason="hop_limit"}') ?? 0) >= 1,
      'left to the router, and counted why',
    );
    t.true(
      (m.get('sixbed4_router_fast_path_passed_total{side="tun",reason="no_route"}') ?? 0) >= 2,
      'replies to C: not by the uplink',
    );
  },
);

/** Nothing attached to wan0 (tcx), no clsact/ingress qdisc and no tc filter: nothing of the fast path stays. */
async function noTcObjects(t: {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
}): Promise<void> {
  t.deepEqual(
    await attachedPrograms(lab.topo.router, TOPO.routerWanIf),
    { ingress: 0, egress: 0, xdp: 0 },
    'no program attached',
  );
  const qdiscs = await lab.topo.router.run(['tc', 'qdisc', 'show', 'dev', TOPO.routerWanIf]);
  t.is(/clsact|ingress/.test(qdiscs), false, qdiscs);
  const filters = await lab.topo.router.run(['tc', 'filter', 'show', 'dev', TOPO.routerWanIf, 'ingress']);
  t.is(filters.trim(), '', filters);
}

/**
 * A peer's packets reach the router process again: without the fast path (--fast-path off), pings from A to the
 * ISP are counted by the router. A program left attached would take them (into a TUN that is gone).
 */
async function slowPathOnly(t: {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
}): Promise<void> {
  lab.router = await startRouterIn(lab.topo.router, [...ROUTER_ARGS, '--fast-path', 'off']);
  const d = await delta(async () => {
    const r = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 3 });
    t.is(r.received, 3, r.output);
    const b = await ping6(lab.topo.peers.A, lab.peers.B.address, { count: 1 });
    t.is(b.received, 1, b.output);
  }, [SLOW, TUN_TO_UDP, RELAY]);
  t.deepEqual(d, { [SLOW]: 3, [TUN_TO_UDP]: 3, [RELAY]: 2 }, 'every packet through the router process');
  t.is(await lab.router.stop(), 0);
}

/** The GRO pairs' receiving ends in the router's namespace, with how many programs each has on its ingress. */
async function groPairs(): Promise<Record<string, number>> {
  const links = JSON.parse(await lab.topo.router.run([systemTool('ip'), '-j', 'link', 'show'])) as { ifname: string }[];
  const out: Record<string, number> = {};
  for (const l of links.filter((x) => /^6bgro[0-9a-f]{6}r$/.test(x.ifname)))
    out[l.ifname] = (await attachedPrograms(lab.topo.router, l.ifname)).ingress;
  return out;
}

serial(
  title(
    'stop detaches: nothing stays on the uplink, the GRO pair goes, and a router without the fast path sees every packet',
  ),
  async (t) => {
    t.deepEqual(Object.values(await groPairs()), [1], "the router's GRO pair, its program on");
    t.is(await lab.router.stop(), 0);
    t.regex(lab.router.output(), /router stopped.*udpToTunFast.*tunToUdpFast.*relayedFast/);
    await noTcObjects(t);
    t.deepEqual(await groPairs(), {}, 'the pair went with the router');
    await slowPathOnly(t);
  },
);

serial(
  title(
    "an upload through the GRO pair (the default, without the XDP stage): merged before the kernel forwards it, seen by the host's forward hook as from the tunnel",
  ),
  async (t) => {
    lab.router = await startRouterIn(lab.topo.router, [...ROUTER_ARGS, '--fast-path', 'on']);
    try {
      t.regex(lab.router.output(), /peers' TCP is merged \(GRO\) through 6bgro[0-9a-f]{6}t\/6bgro[0-9a-f]{6}r/);
      const d = await upload(t, [XDP, GRO_SENT, GRO_HANDED]);
      t.is(d[XDP], 0, 'no XDP stage unless asked for');
      t.true(d[GRO_SENT]! >= d[FAST]! * 0.99, `the fast path's share sent through the pair: ${JSON.stringify(d)}`);
      t.true(d[GRO_HANDED]! < d[GRO_SENT]! / 2, `merged: fewer packets handed on than sent: ${JSON.stringify(d)}`);
    } finally {
      t.is(await lab.router.stop(), 0);
    }
  },
);

serial(
  title('without IPv4 forwarding on the uplink, relays and kernel -> peers stay with the router (and it says why)'),
  async (t) => {
    await forwarding('0');
    try {
      lab.router = await startRouterIn(lab.topo.router, [...ROUTER_ARGS, '--fast-path', 'on']);
      t.regex(
        lab.router.output(),
        /relays and packets from the kernel to peers stay with the router: IPv4 forwarding is off on wan0.*net\.ipv4\.conf\.wan0\.forwarding=1/,
      );
      t.is(
        (await scrape(lab.topo.router, METRICS)).get('sixbed4_router_fast_path_fallbacks_total{what="send_off"}'),
        1,
        'and counted',
      );
      const d = await delta(async () => {
        t.is((await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 2 })).received, 2);
        t.is((await ping6(lab.topo.peers.A, lab.peers.B.address, { count: 1 })).received, 1);
      }, [FAST, TUN_TO_UDP, TUN_TO_UDP_FAST, RELAY, RELAY_FAST]);
      t.deepEqual(d, { [FAST]: 2, [TUN_TO_UDP]: 2, [TUN_TO_UDP_FAST]: 0, [RELAY]: 2, [RELAY_FAST]: 0 });
      t.is(await lab.router.stop(), 0);
    } finally {
      await forwarding('1');
    }
  },
);

serial(
  title(
    'on an uplink that leaves checksums to the next hop, kernel -> peers stays with the router (and it says why); a killed router (SIGKILL) leaves nothing attached',
  ),
  async (t) => {
    await txChecksum('on');
    lab.router = await startRouterIn(lab.topo.router, [...ROUTER_ARGS, '--fast-path', 'on']);
    t.regex(
      lab.router.output(),
      /packets from the kernel to peers stay with the router: wan0 is a virtual interface .*ethtool -K wan0 tx off/,
    );
    t.is(
      (await scrape(lab.topo.router, METRICS)).get('sixbed4_router_fast_path_fallbacks_total{what="to_peers_off"}'),
      1,
      'and counted',
    );
    const d = await delta(async () => {
      t.is((await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 2 })).received, 2);
    }, [FAST, TUN_TO_UDP, TUN_TO_UDP_FAST]);
    t.deepEqual(
      d,
      { [FAST]: 2, [TUN_TO_UDP]: 2, [TUN_TO_UDP_FAST]: 0 },
      'attached before the kill, peers -> kernel only',
    );
    await lab.router.stop('SIGKILL');
    await noTcObjects(t);
    t.deepEqual(Object.values(await groPairs()), [0], "the killed router's GRO pair stays, with nothing on it");
    await slowPathOnly(t);
  },
);

serial(
  title(
    "--fast-path-direct: peers' packets go straight to the egress the kernel's route gives (TCP through the XDP stage too); hop limits the kernel must answer still go through the tunnel",
  ),
  async (t) => {
    lab.router = await startRouterIn(lab.topo.router, [
      ...ROUTER_ARGS,
      '--fast-path',
      'on',
      '--fast-path-direct',
      '--fast-path-xdp',
      'auto',
    ]);
    try {
      t.regex(
        lab.router.output(),
        /removed 6bgro[0-9a-f]{6}t\/6bgro[0-9a-f]{6}r, the GRO pair of a router that is gone/,
      );
      t.deepEqual(Object.values(await groPairs()), [1], "only the new router's pair is left");
      t.regex(
        lab.router.output(),
        /fast path: direct: peers' packets the kernel would forward go straight to its egress/,
      );
      const DIRECT = 'sixbed4_router_fast_path_direct_packets_total';
      const d = await delta(async () => {
        t.is((await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 3 })).received, 3);
        // Three hops: the router's and the forwarding's decrement leave one, and the ISP answers.
        t.is((await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 1, hops: 3 })).received, 1);
      }, [FAST, SLOW, DIRECT]);
      t.deepEqual(d, { [FAST]: 4, [SLOW]: 0, [DIRECT]: 4 }, 'all four sent straight to the ISP side');
      // Two hops: forwarding would leave none, so the packet goes into the tunnel and the kernel says Time Exceeded.
      const d2 = await delta(async () => {
        const hop = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 1, hops: 2 });
        t.regex(hop.output, /Time exceeded/, hop.output);
      }, [FAST, DIRECT]);
      t.deepEqual(d2, { [FAST]: 1, [DIRECT]: 0 });
      // TCP goes through the XDP stage, merged by GRO, then straight to the ISP side.
      await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'on']);
      const server = lab.topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
      try {
        await server.waitFor(/listening/, 10_000);
        const d3 = await delta(async () => {
          const r = await lab.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, '1000000'], {
            timeoutMs: 60_000,
          });
          t.is(r.code, 0, `${r.stdout}${r.stderr}`);
        }, [FAST, SLOW, DIRECT, XDP, XDP_HANDED]);
        t.true(d3[XDP]! > 500, `decapsulated before GRO: ${JSON.stringify(d3)}`);
        t.true(d3[XDP_HANDED]! < d3[XDP]! / 2, `merged: ${JSON.stringify(d3)}`);
        t.true(d3[DIRECT]! >= d3[XDP]! * 0.99, `and sent straight to the egress: ${JSON.stringify(d3)}`);
        t.is(d3[SLOW], 0);
      } finally {
        await server.stop();
        await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'off']);
      }
    } finally {
      t.is(await lab.router.stop(), 0);
    }
  },
);

serial(
  title(
    '--fast-path-direct: the egress the FIB gave is kept per flow and dropped when the routes change (a route made unreachable stops the direct sends at once)',
  ),
  async (t) => {
    lab.router = await startRouterIn(lab.topo.router, [...ROUTER_ARGS, '--fast-path', 'on', '--fast-path-direct']);
    const DIRECT = 'sixbed4_router_fast_path_direct_packets_total';
    const ip = systemTool('ip');
    const route = `${TOPO.ispV6}/128`;
    try {
      const d = await delta(async () => {
        const r = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 20, interval: 0.01 });
        t.is(r.received, 20, r.output);
      }, [DIRECT, LOOKUPS_UDP, GENERATIONS]);
      t.is(d[DIRECT], 20);
      t.true(
        d[LOOKUPS_UDP]! <= 1 + d[GENERATIONS]!,
        `lookups ${d[LOOKUPS_UDP]} for 20 packets, ${d[GENERATIONS]} generations`,
      );
      // Unreachable now: the kernel must answer (through the tunnel), nothing may go to the ISP on a kept answer.
      await routesChange(['sh', '-c', `${ip} -6 route add unreachable ${route}`]);
      try {
        const d2 = await delta(async () => {
          const r = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 2, interval: 0.05, timeoutS: 1 });
          t.is(r.received, 0, r.output);
          t.regex(r.output, /[Uu]nreachable/, r.output);
        }, [DIRECT]);
        t.is(d2[DIRECT], 0, 'none sent straight out');
      } finally {
        await routesChange([ip, '-6', 'route', 'del', 'unreachable', route]);
      }
      const d3 = await delta(async () => {
        const r = await ping6(lab.topo.peers.A, TOPO.ispV6, { count: 3, deadlineS: 10 });
        t.is(r.received, 3, r.output);
      }, [DIRECT]);
      t.is(d3[DIRECT], 3, 'straight out again');
    } finally {
      t.is(await lab.router.stop(), 0);
    }
  },
);

// Last: a router that got further than it should would replace the /64 route of the one under test.
serial(
  title(
    'without CAP_BPF, --fast-path on refuses to start and says what it needs (with it, and no CAP_SYS_ADMIN, it ran above)',
  ),
  async (t) => {
    const r = await lab.topo.router.exec([
      'setpriv',
      '--inh-caps=-all,+net_admin,+net_raw',
      '--ambient-caps=-all,+net_admin,+net_raw',
      '--bounding-set=-all,+net_admin,+net_raw',
      process.execPath,
      CLI,
      'router',
      ...ROUTER_ARGS,
      '--port',
      '25791',
      '--tun',
      'fp-nocap',
      '--fast-path',
      'on',
    ]);
    t.is(r.code, 2);
    t.regex(
      r.stderr,
      /--fast-path on: the kernel refused the BPF programs \(needs CAP_BPF and CAP_NET_ADMIN\): bpf\(BPF_MAP_CREATE\) EPERM/,
    );
  },
);
