// Merged packets (GSO) through the to-peers program, against the TypeScript
// engine, on a real wire: a BPF test run cannot make a merged packet (its GSO
// type stays 0), so this runs the lab's topology with the router's fast path
// on and GRO on the router's ISP side (as a NIC has it), sends a TCP transfer
// and UDP_SEGMENT bursts from the ISP to a peer, and captures what leaves the
// router's uplink, where the kernel has cut the program's one encapsulated
// packet into segments (software segmentation: the uplink, a veth with tx
// checksumming off as the fast path needs it, offers no tunnel offload).
//
// Each captured segment must be the datagram the router's socket would have
// sent for the packet the TUN would have given it (that segment, one hop
// earlier), byte for byte, with two exceptions the kernel makes: the outer
// IPv4 ID, which it numbers 0, 1, 2 ... through one merged packet's segments
// (the router sends 0; with DF the ID means nothing, RFC 6864), and the outer
// UDP checksum of a merged packet whose last segment is shorter, which goes
// without one (0) because one outer header is copied to every segment
// (agent/bpf/to-peers.bpf.c); the test counts those against the router's metric.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { parseIPv4 } from '../../lib/ip.js';
import { skipReason as labSkip } from '../helpers/fixtures.js';
import { BULK_CLIENT, ECHO_SERVER } from '../helpers/tcp-echo.js';
import { ETH, frame } from '../helpers/frames.js';
import { captureUplink, engineSends as engineOut, UDP_GSO } from '../helpers/uplink-capture.js';
import { newEngine, PORT, ROUTER } from './setup.js';

const skipReason = labSkip ?? ['ethtool', 'tcpdump', 'python3'].find((x) => !findSystemTool(x)) ?? null;
const title = (name: string) =>
  skipReason ? `${name} (skipped: ${skipReason === labSkip ? skipReason : `needs ${skipReason}`})` : name;
const serial = skipReason ? test.serial.skip : test.serial;

const METRICS = '127.0.0.1:9464';
const FAST = 'sixbed4_router_packets_total{direction="tun_to_udp",path="fast"}';
const SLOW = 'sixbed4_router_packets_total{direction="tun_to_udp",path="slow"}';
const MERGED = 'sixbed4_router_fast_path_merged_segments_total{checksum="right"}';
const UNEVEN = 'sixbed4_router_fast_path_merged_segments_total{checksum="none"}';

interface Lab {
  topo: Topology;
  router: Proc;
  peer: string;
  dir: string;
}
const lab = {} as Lab;

test.before(async () => {
  if (skipReason) return;
  lab.dir = mkdtempSync(join(tmpdir(), 'sixbed4-gso-'));
  lab.topo = await buildTopology({ tag: 'gso' });
  // As fastpath.test.ts: full UDP checksums on the NAT's wire, an uplink that completes checksums, IPv4 forwarding
  // on it for the kernel's route lookup; and GRO where the ISP's TCP comes in, as on a NIC.
  await lab.topo.nat.run([systemTool('ethtool'), '-K', TOPO.natWanIf, 'tx', 'off']);
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'tx', 'off']);
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerUplinkIf, 'gro', 'on']);
  await lab.topo.router.run(['sysctl', '-qw', `net.ipv4.conf.${TOPO.routerWanIf}.forwarding=1`]);
  lab.router = await startRouterIn(lab.topo.router, [
    '--prefix',
    TOPO.prefix,
    '--listen',
    TOPO.routerV4,
    '--metrics',
    METRICS,
    '--fast-path',
    'on',
  ]);
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
  captureUplink(
    { topo: lab.topo, dir: lab.dir, metrics: METRICS, port: PORT, keys: [FAST, SLOW, MERGED, UNEVEN], sent: FAST },
    name,
    fn,
  );

const engine = newEngine();

const engineSends = (p: Uint8Array) => engineOut(engine, p);

type Asserts = {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
  true: (a: boolean, m?: string) => void;
};

/**
 * Checks every captured frame from the ISP against the engine; returns how many there were and how many went
 * without an outer checksum.
 */
function checkFrames(t: Asserts, frames: Uint8Array[]): { n: number; noChecksum: number; biggest: number } {
  let n = 0,
    noChecksum = 0,
    biggest = 0;
  const isp = parseIPv4(TOPO.routerV4); // (the outer source; the inner source is the ISP's IPv6)
  for (const f of frames) {
    const v = new DataView(f.buffer, f.byteOffset);
    if (v.getUint16(12) !== 0x0800 || v.getUint32(ETH + 12) !== isp) continue;
    const inner = f.subarray(ETH + 28);
    // One hop earlier: what the TUN would have given the router.
    const before = Uint8Array.from(inner);
    before[7] = before[7]! + 1;
    const e = engineSends(before);
    t.true(e !== null, 'the engine sends this packet to a peer');
    if (!e) continue;
    n++;
    biggest = Math.max(biggest, inner.length);
    const id = v.getUint16(ETH + 4);
    t.true(id < 64, `the outer IPv4 ID is a segment's number in its merged packet (${id})`);
    const want = frame(ROUTER, PORT, e.v4, e.port, e.bytes, {
      id,
      ttl: 64,
      dmac: f.subarray(0, 6),
      smac: f.subarray(6, 12),
    });
    if (v.getUint16(ETH + 26) === 0) {
      noChecksum++;
      want[ETH + 26] = 0;
      want[ETH + 27] = 0;
    }
    t.deepEqual(Buffer.from(f), Buffer.from(want), "the datagram the router's socket would send for this segment");
  }
  return { n, noChecksum, biggest };
}

serial(
  title(
    'a TCP transfer merged by GRO: to-peers sends it as the router would, segment by segment, and carries over 99% of it',
  ),
  async (t) => {
    const server = lab.topo.isp.spawn([process.execPath, '-e', ECHO_SERVER]);
    try {
      await server.waitFor(/listening/, 10_000);
      const { frames, d } = await captured('tcp', async () => {
        const r = await lab.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, TOPO.ispV6, String(4_000_000)], {
          timeoutMs: 60_000,
        });
        t.is(r.code, 0, `${r.stdout}${r.stderr}`);
      });
      const c = checkFrames(t, frames);
      t.is(c.n, d[FAST], 'every segment the fast path counted was captured and checked');
      t.is(c.noChecksum, d[UNEVEN], 'the segments without an outer checksum are those the router counted so');
      t.true(d[MERGED]! + d[UNEVEN]! > d[FAST]! / 2, `most segments came from merged packets: ${JSON.stringify(d)}`);
      t.true(d[SLOW]! <= (d[FAST]! + d[SLOW]!) / 100, `at most 1% through the router: ${JSON.stringify(d)}`);
      t.is(c.biggest, 1280, 'full segments fill the tunnel MTU');
    } finally {
      await server.stop();
    }
  },
);

serial(
  title('UDP_SEGMENT bursts from the ISP: one of equal segments with outer checksums, one with a short tail without'),
  async (t) => {
    const { frames, d } = await captured('udp', async () => {
      await lab.topo.isp.run(['python3', '-c', UDP_GSO, lab.peer, '4000', '3400']);
    });
    const c = checkFrames(t, frames);
    t.is(c.n, 8, 'four segments and four');
    t.deepEqual(
      { fast: d[FAST], slow: d[SLOW], merged: d[MERGED], uneven: d[UNEVEN], noChecksum: c.noChecksum },
      { fast: 8, slow: 0, merged: 4, uneven: 4, noChecksum: 4 },
    );
  },
);
