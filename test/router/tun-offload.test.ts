// The TUN's offload on the router's own path (--fast-path off, --tun-offload's default): the kernel hands the
// router whole TCP (and UDP_SEGMENT) super-packets, the addon cuts them into the packets the kernel would have
// handed over one by one (agent/native/gso.c), the engine decides on each, and the datagrams for one super-packet
// leave in one send with UDP_SEGMENT. On the lab's topology, a TCP transfer and UDP_SEGMENT bursts from the ISP to
// a peer, captured where they leave the router's uplink: each datagram must be the one the engine makes for that
// segment (one hop earlier), byte for byte with its outer UDP checksum, but for the outer IPv4 ID, which the kernel
// picks, with or without UDP_SEGMENT (with DF the ID means nothing, RFC 6864). Each inner TCP segment must carry its own right checksum, and the stream must
// arrive whole; the router's counters must show it read super-packets and sent with UDP_SEGMENT. The same run with
// --tun-offload off is the control: no super-packet, the same datagrams.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { parseIPv4 } from '../../lib/ip.js';
import { skipReason as labSkip } from '../helpers/fixtures.js';
import { BULK_CLIENT, ECHO_SERVER } from '../helpers/tcp-echo.js';
import { ETH, frame } from '../helpers/frames.js';
import { captureUplink, engineSends as engineOut, UDP_GSO } from '../helpers/uplink-capture.js';
import { newEngine, PORT, ROUTER } from '../bpf/setup.js';

const skipReason = labSkip ?? ['ethtool', 'tcpdump', 'python3'].find((x) => !findSystemTool(x)) ?? null;
const title = (name: string) =>
  skipReason ? `${name} (skipped: ${skipReason === labSkip ? skipReason : `needs ${skipReason}`})` : name;
const serial = skipReason ? test.serial.skip : test.serial;

const METRICS = '127.0.0.1:9464';
const SLOW = 'sixbed4_router_packets_total{direction="tun_to_udp",path="slow"}';
const FAST = 'sixbed4_router_packets_total{direction="tun_to_udp",path="fast"}';
const off = (type: string) => `sixbed4_router_offload_total{type="${type}"}`;
const KEYS = [
  SLOW,
  FAST,
  off('tun_gso_packets'),
  off('tun_gso_segments'),
  off('tun_gso_bad'),
  off('udp_gso_sends'),
  off('udp_gso_datagrams'),
  off('udp_gso_refused'),
];

interface Lab {
  topo: Topology;
  router?: Proc;
  peer: string;
  dir: string;
}
const lab = {} as Lab;

async function startRouter(extra: string[]): Promise<void> {
  await lab.router?.stop();
  lab.router = await startRouterIn(lab.topo.router, [
    '--prefix',
    TOPO.prefix,
    '--listen',
    TOPO.routerV4,
    '--metrics',
    METRICS,
    '--fast-path',
    'off',
    ...extra,
  ]);
}

test.before(async () => {
  if (skipReason) return;
  lab.dir = mkdtempSync(join(tmpdir(), 'sixbed4-tso-'));
  lab.topo = await buildTopology({ tag: 'tso' });
  // Full UDP checksums on the NAT's wire and the router's uplink (as a NIC completes them), so the capture shows
  // the outer checksums the kernel made; GRO where the ISP's TCP comes in, as on a NIC.
  await lab.topo.nat.run([systemTool('ethtool'), '-K', TOPO.natWanIf, 'tx', 'off']);
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'tx', 'off']);
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerUplinkIf, 'gro', 'on']);
  await startRouter([]);
  lab.peer = (
    await startPeerIn(lab.topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--no-direct'])
  ).address;
});

test.after.always(async () => {
  await lab.topo?.destroy();
  if (lab.dir) rmSync(lab.dir, { recursive: true, force: true });
});

/** Runs fn while the router's datagrams leaving the uplink are captured (helpers/uplink-capture.ts). */
const captured = (name: string, fn: () => Promise<void>) =>
  captureUplink({ topo: lab.topo, dir: lab.dir, metrics: METRICS, port: PORT, keys: KEYS, sent: SLOW }, name, fn);

const engine = newEngine();

const engineSends = (p: Uint8Array) => engineOut(engine, p);

/** The ones'-complement check of an IPv6 packet's TCP or UDP (no extension headers): 0xffff when it is right. */
function upperSum(p: Uint8Array): number {
  const v = new DataView(p.buffer, p.byteOffset, p.length);
  const len = v.getUint16(4);
  let s = p[6]! + len;
  for (let i = 8; i < 40; i += 2) s += v.getUint16(i);
  for (let i = 40; i + 1 < 40 + len; i += 2) s += v.getUint16(i);
  if (len % 2) s += p[40 + len - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

type Asserts = {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
  true: (a: boolean, m?: string) => void;
};

/** Checks every captured frame from the router against the engine; how many there were, and the biggest inner packet. */
function checkFrames(t: Asserts, frames: Uint8Array[]): { n: number; biggest: number; badSums: number } {
  let n = 0,
    biggest = 0,
    badSums = 0;
  const router = parseIPv4(TOPO.routerV4);
  for (const f of frames) {
    const v = new DataView(f.buffer, f.byteOffset);
    if (v.getUint16(12) !== 0x0800 || v.getUint32(ETH + 12) !== router) continue;
    const inner = f.subarray(ETH + 28);
    // One hop earlier: what the TUN would have given the router without the offload.
    const before = Uint8Array.from(inner);
    before[7] = before[7]! + 1;
    const e = engineSends(before);
    t.true(e !== null, 'the engine sends this packet to a peer');
    if (!e) continue;
    n++;
    biggest = Math.max(biggest, inner.length);
    if ((inner[6] === 6 || inner[6] === 17) && upperSum(inner) !== 0xffff) badSums++;
    // The outer IPv4 ID is the kernel's to choose (DF is set: it means nothing, RFC 6864), with or without
    // UDP_SEGMENT: taken as captured (the IPv4 header's checksum, which covers it, is checked).
    const id = v.getUint16(ETH + 4);
    const want = frame(ROUTER, PORT, e.v4, e.port, e.bytes, {
      id,
      ttl: 64,
      dmac: f.subarray(0, 6),
      smac: f.subarray(6, 12),
    });
    t.deepEqual(Buffer.from(f), Buffer.from(want), "the datagram the router's engine makes for this segment");
  }
  return { n, biggest, badSums };
}

async function tcpTransfer(
  t: Asserts,
  name: string,
): Promise<{ c: ReturnType<typeof checkFrames>; d: Record<string, number> }> {
  const server = lab.topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
  try {
    await server.waitFor(/listening/, 10_000);
    const { frames, d, captureDropped } = await captured(name, async () => {
      const r = await lab.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, String(4_000_000)], {
        timeoutMs: 60_000,
      });
      t.is(r.code, 0, `the stream arrives whole: ${r.stdout}${r.stderr}`);
    });
    const c = checkFrames(t, frames);
    t.is(
      c.n,
      d[SLOW],
      `every datagram the router counted was captured and checked (tcpdump: ${captureDropped} dropped)`,
    );
    t.is(d[FAST], 0, 'the fast path is off');
    t.is(c.badSums, 0, 'every inner segment carries its right checksum');
    t.is(c.biggest, 1280, 'full segments fill the tunnel MTU');
    return { c, d };
  } finally {
    await server.stop();
  }
}

serial(
  title('a TCP transfer: the router reads super-packets, sends each segment as the engine makes it, all of it'),
  async (t) => {
    const { d } = await tcpTransfer(t, 'tcp');
    t.log(d);
    const gso = d[off('tun_gso_packets')]!,
      segs = d[off('tun_gso_segments')]!;
    t.true(gso > 0, `the router read super-packets: ${JSON.stringify(d)}`);
    t.true(segs >= 2 * gso, `each cut into segments: ${JSON.stringify(d)}`);
    t.true(segs > d[SLOW]! / 2, `most datagrams came from super-packets: ${JSON.stringify(d)}`);
    t.true(d[off('udp_gso_sends')]! > 0, `sends with UDP_SEGMENT: ${JSON.stringify(d)}`);
    t.true(d[off('udp_gso_datagrams')]! >= 2 * d[off('udp_gso_sends')]!, `each of several: ${JSON.stringify(d)}`);
    t.is(d[off('tun_gso_bad')], 0);
    t.is(d[off('udp_gso_refused')], 0);
  },
);

serial(
  title('UDP_SEGMENT bursts from the ISP: equal segments, and a short tail, each as the engine makes it'),
  async (t) => {
    const { frames, d } = await captured('udp', async () => {
      await lab.topo.isp.run(['python3', '-c', UDP_GSO, lab.peer, '4000', '3400']);
    });
    const c = checkFrames(t, frames);
    t.log(d);
    t.is(c.n, 8, 'four segments and four');
    t.is(c.badSums, 0, 'every segment carries its right UDP checksum');
    t.is(d[SLOW], 8);
    // USO on the TUN (Linux 6.2+): then the router cut them; before, the kernel did. Either way the same datagrams.
    t.true(d[off('tun_gso_segments')] === 0 || d[off('tun_gso_segments')] === 8, JSON.stringify(d));
  },
);

serial(title('the control, --tun-offload off: no super-packet, the same datagrams, all of the stream'), async (t) => {
  await startRouter(['--tun-offload', 'off']);
  // The peer's registration goes on; wait until its keepalives have it live again before the transfer.
  await sleep(1000);
  const { d } = await tcpTransfer(t, 'tcp-off');
  t.is(d[off('tun_gso_packets')], 0, JSON.stringify(d));
  t.is(d[off('udp_gso_sends')], 0, JSON.stringify(d));
});

serial(
  title('a batch of 4 entries: each super-packet handed out over many reads, the stream still whole, as the engine'),
  async (t) => {
    // A super-packet of some 50 segments waits in the carry between reads (and across turns of the event loop).
    await startRouter(['--batch', '4']);
    await sleep(1000);
    const { d } = await tcpTransfer(t, 'tcp-batch4');
    t.true(d[off('tun_gso_packets')]! > 0, JSON.stringify(d));
    t.true(d[off('tun_gso_segments')]! > d[SLOW]! / 2, JSON.stringify(d));
    t.is(d[off('tun_gso_bad')], 0);
  },
);
