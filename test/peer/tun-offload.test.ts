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

/** The datagrams to the router carrying a packet from the peer's TUN (not a keepalive, not its own RS or NS). */
const fromTun = (frames: Uint8Array[]) =>
  frames.filter((f) => {
    const v = new DataView(f.buffer, f.byteOffset);
    const inner = f.subarray(ETH + 28);
    return v.getUint16(12) === 0x0800 && v.getUint32(ETH + 16) === ROUTER_V4 && inner.length > 0 && !ownWords(inner);
  });

type Asserts = {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
  true: (a: boolean, m?: string) => void;
};

/** Checks every captured datagram from the peer's TUN against the peer's engine (no direct path: --no-direct). */
function checkFrames(t: Asserts, frames: Uint8Array[]) {
  const engine = new PeerEngine(ROUTER_V4, ROUTER_PORT, () => undefined, 1);
  const stream = new StreamCover();
  let biggest = 0,
    badSums = 0,
    sport: number | undefined;
  for (const f of frames) {
    const v = new DataView(f.buffer, f.byteOffset);
    const inner = f.subarray(ETH + 28);
    sport ??= v.getUint16(ETH + 20);
    t.is(v.getUint16(ETH + 20), sport, 'one socket');
    const e = engineSends(engine, inner);
    t.true(e !== null, "the peer's engine sends this packet");
    if (!e) continue;
    biggest = Math.max(biggest, inner.length);
    if ((inner[6] === 6 || inner[6] === 17) && upperSum(inner) !== 0xffff) badSums++;
    // The IPv4 ID is the kernel's to choose (DF is set: it means nothing, RFC 6864), with or without UDP_SEGMENT.
    const want = frame(PEER_V4, sport, e.v4, e.port, e.bytes, {
      id: v.getUint16(ETH + 4),
      ttl: 64,
      dmac: f.subarray(0, 6),
      smac: f.subarray(6, 12),
    });
    t.deepEqual(Buffer.from(f), Buffer.from(want), "the datagram the peer's engine makes for this segment");
    stream.add(inner, ECHO_PORT);
  }
  return { biggest, badSums, covered: stream.covered() };
}

/** Runs a peer on peer A (extra flags), a TCP stream through it to the ISP and back, captured; its counters at stop. */
async function transfer(t: Asserts, name: string, extra: string[]): Promise<Record<string, number>> {
  const cap = await capturePeer(
    lab.topo.peers.A,
    lab.dir,
    name,
    `udp and dst host ${TOPO.routerV4} and dst port ${ROUTER_PORT}`,
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
    const c = checkFrames(t, data);
    t.is(data.length, k.toRouterPackets, `every datagram the peer counted was captured (tcpdump: ${dropped} dropped)`);
    t.true(frames.length > data.length, 'its solicitation is there too');
    t.is(c.badSums, 0, 'every inner segment carries its right checksum');
    t.is(c.biggest, TUNNEL_MTU, 'full segments fill the tunnel MTU, none longer');
    t.is(c.covered, STREAM, 'the segments carry the stream, every byte of it from the first');
    t.is(k.tunGsoBad, 0);
    t.is(k.udpGsoRefused, 0);
    return k;
  } finally {
    await peer?.stop('SIGKILL');
    await server.stop();
    await cap.stop();
  }
}

serial(
  title('a TCP upload: the peer reads super-packets, sends each segment as its engine makes it, all of the stream'),
  async (t) => {
    const k = await transfer(t, 'tcp', []);
    t.log(k);
    t.true(k.tunGsoPackets! > 0, `the peer read super-packets: ${JSON.stringify(k)}`);
    t.true(k.tunGsoSegments! >= 2 * k.tunGsoPackets!, `each cut into segments: ${JSON.stringify(k)}`);
    t.true(k.tunGsoSegments! > k.toRouterPackets! / 2, `most datagrams came from super-packets: ${JSON.stringify(k)}`);
    t.true(k.udpGsoSends! > 0, `sends with UDP_SEGMENT: ${JSON.stringify(k)}`);
    t.true(k.udpGsoDatagrams! >= 2 * k.udpGsoSends!, `each of several: ${JSON.stringify(k)}`);
  },
);

serial(title('the control, --tun-offload off: no super-packet, no UDP_SEGMENT, the same datagrams'), async (t) => {
  const k = await transfer(t, 'tcp-off', ['--tun-offload', 'off']);
  t.log(k);
  t.is(k.tunGsoPackets, 0, JSON.stringify(k));
  t.is(k.tunGsoSegments, 0, JSON.stringify(k));
  t.is(k.udpGsoSends, 0, JSON.stringify(k));
});

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
