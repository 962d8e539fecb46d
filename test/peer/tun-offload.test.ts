// The TUN's offload on the peer (--tun-offload's default): apps on the peer's host write TCP into the tunnel, the
// kernel hands the peer whole super-packets, the addon cuts them into the packets the kernel would have handed over
// one by one (agent/native/gso.c), the peer's engine decides on each, and the datagrams for one super-packet leave
// in one send with UDP_SEGMENT. On the lab's topology (peer A behind the NAT, our router), a TCP stream from peer A
// to the ISP, echoed back (so the peer's writes into its TUN, with their virtio_net_hdr, carry the echo): captured
// where it leaves peer A's namespace, from the peer's start to its stop, each datagram must be the one the peer's
// engine makes for that segment, byte for byte with its outer IPv4 header (DF, TTL 64) and UDP checksum (but for
// the IPv4 ID, which the kernel picks), none longer than the tunnel MTU, each inner TCP segment with its own right
// checksum, and together they must carry the stream's every byte; as many as the peer's counters say it sent; and
// the counters (logged at stop, --log-level debug) must show super-packets read and UDP_SEGMENT sends. The same with
// --tun-offload off is the control: no super-packet, no UDP_SEGMENT, the same checks.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { CLI, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { parseIPv4 } from '../../lib/ip.js';
import { PeerEngine } from '../../agent/peer/engine.js';
import {
  ND_NEIGHBOR_SOLICIT,
  ND_ROUTER_SOLICIT,
  NH_ICMPV6,
  ROUTER_PORT,
  TUNNEL_MTU,
} from '../../agent/protocol/constants.js';
import { skipReason as labSkip } from '../helpers/fixtures.js';
import { BULK_CLIENT, ECHO_SERVER } from '../helpers/tcp-echo.js';
import { ETH, frame } from '../helpers/frames.js';
import { capturePeer, peerCounters, StreamCover, upperSum } from '../helpers/peer-capture.js';

const skipReason = labSkip ?? ['ethtool', 'tcpdump'].find((x) => !findSystemTool(x)) ?? null;
const title = (name: string) =>
  skipReason ? `${name} (skipped: ${skipReason === labSkip ? skipReason : `needs ${skipReason}`})` : name;
const serial = skipReason ? test.serial.skip : test.serial;

const ROUTER_V4 = parseIPv4(TOPO.routerV4),
  PEER_V4 = parseIPv4(TOPO.peerAV4);
const STREAM = 4_000_000;
const ECHO_PORT = 7000;
/** A path MTU below the tunnel's full datagrams (1280 + 28). */
const PATH_MTU = 1300;

const lab = {} as { topo: Topology; dir: string };

test.before(async () => {
  if (skipReason) return;
  lab.dir = mkdtempSync(join(tmpdir(), 'sixbed4-peer-tso-'));
  lab.topo = await buildTopology({ tag: 'ptso' });
  // Full UDP checksums leaving peer A (as a NIC completes them), so that the capture shows the outer checksums.
  await lab.topo.peers.A.run([systemTool('ethtool'), '-K', TOPO.peerIf, 'tx', 'off']);
  await startRouterIn(lab.topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4]);
});

test.after.always(async () => {
  await lab.topo?.destroy();
  if (lab.dir) rmSync(lab.dir, { recursive: true, force: true });
});

/** What the peer's engine sends for the IPv6 packet p from its TUN: the datagram and where to, or null. */
function engineSends(engine: PeerEngine, p: Uint8Array): { bytes: Uint8Array; v4: number; port: number } | null {
  const rx = engine.tunRx;
  rx.off[0] = 0;
  rx.len[0] = p.length;
  rx.data.set(p, 0);
  engine.fromKernel(1, 1000);
  if (!engine.nToUdp) return null;
  const o = engine.toUdp;
  return {
    bytes: Uint8Array.from(o.data.subarray(o.off[0]!, o.off[0]! + o.len[0]!)),
    v4: o.addr[0]!,
    port: o.port[0]!,
  };
}

/** The peer's own words to its router (router-link.ts, not from its TUN): RS, and the NS that says it is there. */
const ownWords = (inner: Uint8Array) =>
  inner[6] === NH_ICMPV6 && (inner[40] === ND_ROUTER_SOLICIT || inner[40] === ND_NEIGHBOR_SOLICIT);

/** A datagram as it left: whole in one frame, or in IPv4 fragments (reassembled here: its UDP header and payload). */
interface Datagram {
  /** its first frame (its Ethernet and IPv4 header: addresses, ID, TTL) */
  first: Uint8Array;
  udp: Uint8Array;
  fragments: Uint8Array[];
}

/** The IPv4 datagrams in frames, in the order their last part left; fragments joined by their ID. */
function datagrams(frames: Uint8Array[]): Datagram[] {
  const out: Datagram[] = [],
    parts = new Map<number, Uint8Array[]>();
  for (const f of frames) {
    const v = new DataView(f.buffer, f.byteOffset);
    if (v.getUint16(12) !== 0x0800) continue;
    const frag = v.getUint16(ETH + 6),
      id = v.getUint16(ETH + 4);
    if ((frag & 0x3fff) === 0) {
      out.push({ first: f, udp: f.subarray(ETH + 20), fragments: [f] });
      continue;
    }
    const got = parts.get(id) ?? [];
    got.push(f);
    parts.set(id, got);
    if (frag & 0x2000) continue; // more to come
    parts.delete(id);
    got.sort(
      (a, b) =>
        (new DataView(a.buffer).getUint16(ETH + 6) & 0x1fff) - (new DataView(b.buffer).getUint16(ETH + 6) & 0x1fff),
    );
    const udp = Buffer.concat(got.map((g) => g.subarray(ETH + 20)));
    out.push({ first: got[0]!, udp, fragments: got });
  }
  return out;
}

/** The datagrams to the router carrying a packet from the peer's TUN (not a keepalive, not its own RS or NS). */
const fromTun = (frames: Uint8Array[]) =>
  datagrams(frames).filter((d) => {
    const inner = d.udp.subarray(8);
    return new DataView(d.first.buffer).getUint32(ETH + 16) === ROUTER_V4 && inner.length > 0 && !ownWords(inner);
  });

type Asserts = {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
  true: (a: boolean, m?: string) => void;
};

/**
 * Checks every datagram from the peer's TUN against the peer's engine (no direct path: --no-direct): a whole one
 * byte for byte with its frame (DF set); a fragmented one (the path's MTU below it) from its UDP header on, each
 * fragment without DF, as the kernel fragments a datagram its socket sends without the offload.
 */
function checkDatagrams(t: Asserts, all: Datagram[]) {
  const engine = new PeerEngine(ROUTER_V4, ROUTER_PORT, () => undefined, 1);
  const stream = new StreamCover();
  let biggest = 0,
    biggestFrame = 0,
    badSums = 0,
    fragmented = 0,
    sport: number | undefined;
  for (const d of all) {
    const v = new DataView(d.first.buffer, d.first.byteOffset);
    const inner = d.udp.subarray(8);
    sport ??= v.getUint16(ETH + 20);
    t.is(v.getUint16(ETH + 20), sport, 'one socket');
    const e = engineSends(engine, inner);
    t.true(e !== null, "the peer's engine sends this packet");
    if (!e) continue;
    biggest = Math.max(biggest, inner.length);
    for (const f of d.fragments) biggestFrame = Math.max(biggestFrame, f.length - ETH);
    if ((inner[6] === 6 || inner[6] === 17) && upperSum(inner) !== 0xffff) badSums++;
    // The IPv4 ID is the kernel's to choose (DF is set: it means nothing, RFC 6864), with or without UDP_SEGMENT.
    const want = frame(PEER_V4, sport, e.v4, e.port, e.bytes, {
      id: v.getUint16(ETH + 4),
      ttl: 64,
      dmac: d.first.subarray(0, 6),
      smac: d.first.subarray(6, 12),
    });
    if (d.fragments.length === 1)
      t.deepEqual(Buffer.from(d.first), Buffer.from(want), "the datagram the peer's engine makes for this segment");
    else {
      fragmented++;
      t.deepEqual(Buffer.from(d.udp), Buffer.from(want.subarray(ETH + 20)), "the engine's datagram, in fragments");
      for (const f of d.fragments) t.is(f[ETH + 6]! & 0x40, 0, 'a fragment goes without DF');
    }
    stream.add(inner, ECHO_PORT);
  }
  return { biggest, biggestFrame, badSums, fragmented, covered: stream.covered() };
}

/** Runs a peer on peer A (extra flags), a TCP stream through it to the ISP and back, captured; its counters at stop. */
async function transfer(
  t: Asserts,
  name: string,
  extra: string[],
): Promise<{ k: Record<string, number>; c: ReturnType<typeof checkDatagrams> }> {
  const cap = await capturePeer(
    lab.topo.peers.A,
    lab.dir,
    name,
    // Fragments after the first carry no UDP header: taken by their offset.
    `dst host ${TOPO.routerV4} and (udp dst port ${ROUTER_PORT} or ip[6:2] & 0x1fff != 0)`,
  );
  const server = lab.topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
  let peer: Proc | undefined;
  try {
    await server.waitFor(/listening/, 10_000);
    // Captured from its start on: every datagram it sends is in the file.
    peer = (
      await startPeerIn(lab.topo.peers.A, [
        '--router',
        TOPO.routerV4,
        '--default-route',
        '--no-direct',
        '--log-level',
        'debug',
        ...extra,
      ])
    ).proc;
    const r = await lab.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, String(STREAM)], {
      timeoutMs: 60_000,
    });
    t.is(r.code, 0, `the stream arrives whole, and its echo: ${r.stdout}${r.stderr}`);
    await peer.stop();
    const k = peerCounters(peer.output());
    peer = undefined;
    const { frames, dropped } = await cap.stop((f) => fromTun(f).length >= k.toRouterPackets!);
    const data = fromTun(frames);
    const c = checkDatagrams(t, data);
    t.is(data.length, k.toRouterPackets, `every datagram the peer counted was captured (tcpdump: ${dropped} dropped)`);
    t.true(datagrams(frames).length > data.length, 'its solicitation is there too');
    t.is(c.badSums, 0, 'every inner segment carries its right checksum');
    t.is(c.biggest, TUNNEL_MTU, 'full segments fill the tunnel MTU, none longer');
    t.is(c.covered, STREAM, 'the segments carry the stream, every byte of it from the first');
    t.is(k.tunGsoBad, 0);
    return { k, c };
  } finally {
    await peer?.stop('SIGKILL');
    await server.stop();
    await cap.stop();
  }
}

serial(
  title('a TCP upload: the peer reads super-packets, sends each segment as its engine makes it, all of the stream'),
  async (t) => {
    const { k, c } = await transfer(t, 'tcp', []);
    t.log(k);
    t.is(c.fragmented, 0, 'none fragmented');
    t.is(c.biggestFrame, TUNNEL_MTU + 28, 'none longer than the tunnel MTU and its headers');
    t.is(k.udpGsoRefused, 0);
    t.true(k.tunGsoPackets! > 0, `the peer read super-packets: ${JSON.stringify(k)}`);
    t.true(k.tunGsoSegments! >= 2 * k.tunGsoPackets!, `each cut into segments: ${JSON.stringify(k)}`);
    t.true(k.tunGsoSegments! > k.toRouterPackets! / 2, `most datagrams came from super-packets: ${JSON.stringify(k)}`);
    t.true(k.udpGsoSends! > 0, `sends with UDP_SEGMENT: ${JSON.stringify(k)}`);
    t.true(k.udpGsoDatagrams! >= 2 * k.udpGsoSends!, `each of several: ${JSON.stringify(k)}`);
    // The echo coming back: segments of it that arrived in one batch went into the TUN merged (how many depends on
    // how the datagrams queued up, so only the accounting is held to: each super-packet of two segments or more).
    t.is(k.tunCoalesceRefused, 0);
    t.true(k.tunCoalesceSegments! >= 2 * k.tunCoalescePackets!, `merged writes: ${JSON.stringify(k)}`);
  },
);

serial(title('the control, --tun-offload off: no super-packet, no UDP_SEGMENT, the same datagrams'), async (t) => {
  const { k, c } = await transfer(t, 'tcp-off', ['--tun-offload', 'off']);
  t.log(k);
  t.is(c.fragmented, 0, 'none fragmented');
  t.is(k.tunGsoPackets, 0, JSON.stringify(k));
  t.is(k.tunGsoSegments, 0, JSON.stringify(k));
  t.is(k.udpGsoSends, 0, JSON.stringify(k));
  t.is(k.tunCoalescePackets, 0, JSON.stringify(k));
});

for (const mode of ['auto', 'off'] as const) {
  serial(
    title(
      `a path MTU below the datagrams (--tun-offload ${mode}): fragmented as without the offload, the stream whole`,
    ),
    async (t) => {
      // The route to the router takes 1300 bytes: full segments (1280 + 28) leave in two fragments, without DF, as
      // the peer's socket (IP_PMTUDISC_WANT) always sent them; the offload must not make them refused or DF-marked.
      const route = [TOPO.routerV4, 'via', TOPO.natLanAV4, 'dev', TOPO.peerIf, 'mtu', String(PATH_MTU)];
      await lab.topo.peers.A.run(['ip', 'route', 'replace', ...route]);
      try {
        const { k, c } = await transfer(t, `pmtu-${mode}`, ['--tun-offload', mode]);
        t.log(k);
        t.true(c.fragmented > STREAM / TUNNEL_MTU, `the full segments went fragmented: ${c.fragmented}`);
        t.is(c.biggestFrame, PATH_MTU, 'no frame longer than the path MTU');
        if (mode === 'auto') t.true(k.tunGsoPackets! > 0, `super-packets read: ${JSON.stringify(k)}`);
      } finally {
        await lab.topo.peers.A.run(['ip', 'route', 'del', TOPO.routerV4]);
      }
    },
  );
}

serial(title('--tun-offload takes auto or off, and nothing else, before the peer starts'), async (t) => {
  const r = await lab.topo.peers.A.exec([
    process.execPath,
    CLI,
    'peer',
    '--router',
    TOPO.routerV4,
    '--tun-offload',
    'on',
  ]);
  t.is(r.code, 2);
  t.is(r.stderr, 'sixbed4: --tun-offload on: use auto or off\n');
});
