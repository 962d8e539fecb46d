// The TUN's offload on a direct path between two peers: peer A behind the lab's NAT, peer D behind a second one
// (second-nat.ts), both with the offload (the default), go direct; then a TCP stream from A to an echo server on D
// and back, both ways straight between the NATs. Captured leaving A from before its first probe: the first probe to D
// goes hop-limited (FIRST_PROBE_TTL, direct.ts: the offload leaves that trick alone), every datagram to D is a whole,
// valid one (DF, TTL 64, its UDP checksum right, no longer than the tunnel MTU, the inner TCP checksum right), the
// segments to D and to the router together carry every byte of the stream, and A's counters (logged at stop) show
// super-packets read and datagrams to D sent with UDP_SEGMENT.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { addSecondNat, NAT_D, type SecondNat } from '../../lab/second-nat.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { parseIPv4 } from '../../lib/ip.js';
import { FIRST_PROBE_TTL } from '../../agent/peer/direct.js';
import { ND_NEIGHBOR_SOLICIT, NH_ICMPV6, TUNNEL_MTU } from '../../agent/protocol/constants.js';
import { skipReason as labSkip } from '../helpers/fixtures.js';
import { BULK_CLIENT, ECHO_SERVER } from '../helpers/tcp-echo.js';
import { ETH, frame } from '../helpers/frames.js';
import { capturePeer, peerCounters, StreamCover, upperSum } from '../helpers/peer-capture.js';

const skipReason = labSkip ?? ['ethtool', 'tcpdump'].find((x) => !findSystemTool(x)) ?? null;
const title = (name: string) =>
  skipReason ? `${name} (skipped: ${skipReason === labSkip ? skipReason : `needs ${skipReason}`})` : name;
const serial = skipReason ? test.serial.skip : test.serial;

const ROUTER_V4 = parseIPv4(TOPO.routerV4),
  D_V4 = parseIPv4(NAT_D.natV4),
  A_V4 = parseIPv4(TOPO.peerAV4);
const STREAM = 4_000_000;
const ECHO_PORT = 7000;

const s = {} as { topo: Topology; d: SecondNat; dir: string };

test.before(async () => {
  if (skipReason) return;
  s.dir = mkdtempSync(join(tmpdir(), 'sixbed4-peer-tso-direct-'));
  s.topo = await buildTopology({ tag: 'ptsod' });
  s.d = await addSecondNat(s.topo);
  // Full UDP checksums leaving peer A (as a NIC completes them), so that the capture shows the outer checksums.
  await s.topo.peers.A.run([systemTool('ethtool'), '-K', TOPO.peerIf, 'tx', 'off']);
  await startRouterIn(s.topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4]);
});

test.after.always(async () => {
  await s.d?.destroy();
  await s.topo?.destroy();
  if (s.dir) rmSync(s.dir, { recursive: true, force: true });
});

const dstOf = (f: Uint8Array) => new DataView(f.buffer, f.byteOffset).getUint32(ETH + 16);
/** Datagrams to dst carrying something (not a keepalive). */
const to = (frames: Uint8Array[], dst: number) => frames.filter((f) => dstOf(f) === dst && f.length > ETH + 28);

serial(
  title(
    'a TCP stream over a direct path: super-packets in, UDP_SEGMENT sends to the other peer, first probe hop-limited',
  ),
  async (t) => {
    const cap = await capturePeer(
      s.topo.peers.A,
      s.dir,
      'direct',
      `udp and (dst host ${TOPO.routerV4} or dst host ${NAT_D.natV4})`,
    );
    const server = s.d.peer.spawn([process.execPath, '-e', ECHO_SERVER]);
    const procs: Proc[] = [];
    try {
      await server.waitFor(/listening/, 10_000);
      const [a, d] = await Promise.all([
        startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4, '--log-level', 'debug']),
        startPeerIn(s.d.peer, ['--router', TOPO.routerV4]),
      ]);
      procs.push(a.proc, d.proc);
      // Pings from A to D until both said they went direct (each needs the other's probe answered).
      const both = Promise.all([
        a.proc.waitFor(new RegExp(`direct path to ${NAT_D.natV4}:\\d+: it answered`), 20_000),
        d.proc.waitFor(new RegExp(`direct path to ${TOPO.natV4}:\\d+: it answered`), 20_000),
      ]);
      let done = false;
      void both.finally(() => (done = true)).catch(() => undefined);
      while (!done) await ping6(s.topo.peers.A, d.address, { count: 1, timeoutS: 1 });
      await both;
      const r = await s.topo.peers.A.exec([process.execPath, '-e', BULK_CLIENT, d.address, String(STREAM)], {
        timeoutMs: 60_000,
      });
      t.is(r.code, 0, `the stream arrives whole, and its echo: ${r.stdout}${r.stderr}`);
      await Promise.all(procs.splice(0).map((p) => p.stop()));
      const k = peerCounters(a.proc.output());
      t.log(k);
      const toDCounted = k.directTxPackets! + k.probesSent! + k.neighborAdverts!;
      const { frames, dropped } = await cap.stop(
        (f) => to(f, D_V4).length >= toDCounted && to(f, ROUTER_V4).length >= k.toRouterPackets!,
      );

      const stream = new StreamCover();
      const probeTtls: number[] = [];
      let biggest = 0,
        badSums = 0;
      for (const f of to(frames, ROUTER_V4)) stream.add(f.subarray(ETH + 28), ECHO_PORT);
      const toD = to(frames, D_V4);
      for (const f of toD) {
        const v = new DataView(f.buffer, f.byteOffset),
          inner = f.subarray(ETH + 28);
        const probe = inner[6] === NH_ICMPV6 && inner[40] === ND_NEIGHBOR_SOLICIT;
        if (probe) probeTtls.push(f[ETH + 8]!);
        biggest = Math.max(biggest, inner.length);
        if ((inner[6] === 6 || inner[6] === 17) && upperSum(inner) !== 0xffff) badSums++;
        // Rebuilt from its parts: the IPv4 header (DF, the TTL a datagram to a peer goes with) and the UDP checksum.
        const want = frame(A_V4, v.getUint16(ETH + 20), D_V4, v.getUint16(ETH + 22), inner, {
          id: v.getUint16(ETH + 4),
          ttl: probe ? f[ETH + 8]! : 64, // the probes' TTLs: below
          dmac: f.subarray(0, 6),
          smac: f.subarray(6, 12),
        });
        t.deepEqual(Buffer.from(f), Buffer.from(want), 'a whole datagram: DF, its length, its checksums');
        stream.add(inner, ECHO_PORT);
      }
      t.is(probeTtls[0], FIRST_PROBE_TTL, 'the first probe to D leaves hop-limited');
      t.true(
        probeTtls.slice(1).every((ttl) => ttl === 64),
        `later probes with the default TTL: ${probeTtls.join(', ')}`,
      );
      t.is(
        toD.length,
        toDCounted,
        `every datagram A counted to D (data, probes, answers to probes) was captured (tcpdump: ${dropped} dropped)`,
      );
      t.is(stream.covered(), STREAM, 'the segments carry the stream, every byte of it from the first');
      t.is(badSums, 0, 'every inner segment to D carries its right checksum');
      t.is(biggest, TUNNEL_MTU, 'full segments to D fill the tunnel MTU, none longer');
      t.true(k.directTxPackets! > STREAM / TUNNEL_MTU, `A sent the stream straight to D: ${JSON.stringify(k)}`);
      t.true(k.tunGsoPackets! > 0, `A read super-packets: ${JSON.stringify(k)}`);
      t.true(
        k.udpGsoDatagrams! > k.toRouterPackets!,
        `UDP_SEGMENT sends carried datagrams to D (more than all to the router): ${JSON.stringify(k)}`,
      );
      t.is(k.tunGsoBad, 0);
      t.is(k.udpGsoRefused, 0);
    } finally {
      await Promise.all(procs.map((p) => p.stop('SIGKILL')));
      await server.stop();
      await cap.stop();
    }
  },
);
