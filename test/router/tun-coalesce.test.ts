// TCP coalescing into the TUN's writes on the router's own path (--fast-path off, the TUN offload on): a peer's
// upload to the ISP goes through the router, which merges consecutive segments of the flow into super-packets for
// the kernel (agent/native/coalesce.c), which forwards them and cuts them again on the uplink; and UDP_GRO on the
// router's sockets (where the fast path does not run): the kernel hands the router the peer's datagrams merged,
// which the addon cuts again (agent/native/udp.c udpRecvGro). On the lab's topology, what the peer's datagrams carry
// to the router (captured where the NAT sends them, before the router's GRO) and what the router sends to the ISP
// (captured where it leaves, with the uplink's offloads off so the kernel cuts before the capture) must be the same
// TCP segments, one for one, in order and byte for byte but for the hop limit; the stream must arrive whole; the
// router's counters must show super-packets written, the segments merged, and datagrams received merged.
// The control, with --tun-offload off (no header on the TUN, no UDP_GRO): the same, with nothing merged. And with the
// fast path, the sockets must not merge: the fast path takes single datagrams only, the upload stays in the kernel.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { skipReason as labSkip } from '../helpers/fixtures.js';
import { readPcap, startTcpdump } from '../helpers/pcap.js';
import { readUdpSnmp } from '../../bench/topology.js';
import { ETH } from '../helpers/frames.js';
import { SINK_SERVER, UPLOAD_CLIENT } from '../helpers/tcp-sink.js';
import { tcpSum } from '../helpers/tcp6.js';

const skipReason = labSkip ?? ['ethtool', 'tcpdump'].find((x) => !findSystemTool(x)) ?? null;
const title = (name: string) =>
  skipReason ? `${name} (skipped: ${skipReason === labSkip ? skipReason : `needs ${skipReason}`})` : name;
const serial = skipReason ? test.serial.skip : test.serial;

const METRICS = '127.0.0.1:9464';
const PORT = 25790;
const SIZE = 4_000_000;
const off = (type: string) => `sixbed4_router_offload_total{type="${type}"}`;
const TO_TUN = 'sixbed4_router_packets_total{direction="udp_to_tun",path="slow"}';
const FROM_PEERS_FAST = 'sixbed4_router_packets_total{direction="udp_to_tun",path="fast"}';
const RELAY = 'sixbed4_router_packets_total{direction="relay",path="slow"}';
const KEYS = [
  TO_TUN,
  RELAY,
  off('udp_gso_sends'),
  off('udp_gso_datagrams'),
  FROM_PEERS_FAST,
  off('tun_coalesce_packets'),
  off('tun_coalesce_segments'),
  off('tun_coalesce_refused'),
  off('udp_gro_buffers'),
  off('udp_gro_datagrams'),
];

interface Lab {
  topo: Topology;
  router?: Proc;
  dir: string;
  /** peer C's 6bed4 address */
  c: string;
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
    ...(extra.includes('--fast-path') ? [] : ['--fast-path', 'off']),
    ...extra,
  ]);
}

test.before(async () => {
  if (skipReason) return;
  lab.dir = mkdtempSync(join(tmpdir(), 'sixbed4-coalesce-'));
  lab.topo = await buildTopology({ tag: 'coal', peerC: true });
  // The uplink cuts and checksums nothing itself (as a NIC without TSO): the kernel cuts a super-packet it
  // forwards there, and completes each segment's checksum, before the capture sees it.
  await lab.topo.router.run([
    systemTool('ethtool'),
    '-K',
    TOPO.routerUplinkIf,
    'tx',
    'off',
    'tso',
    'off',
    'gso',
    'off',
  ]);
  // GRO where the peers' datagrams come in, as on a NIC; the NAT's wire carries them one by one, checksums complete.
  // (Off first: a veth runs its receive through NAPI, where GRO happens, only once GRO was asked for.)
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'off']);
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanIf, 'gro', 'on']);
  await lab.topo.nat.run([systemTool('ethtool'), '-K', TOPO.natWanIf, 'tx', 'off']);
  await startRouter([]);
  await startPeerIn(lab.topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--no-direct']);
  // Peer C, on the router's second wire, for relays; full checksums there, and UDP_SEGMENT sends cut before the
  // capture.
  await lab.topo.router.run([systemTool('ethtool'), '-K', TOPO.routerWanCIf, 'tx', 'off']);
  lab.c = (await startPeerIn(lab.topo.peers.C, ['--router', TOPO.routerV4, '--default-route', '--no-direct'])).address;
});

test.after.always(async () => {
  await lab.topo?.destroy();
  if (lab.dir) rmSync(lab.dir, { recursive: true, force: true });
});

/** tcpdump on ns's iface, one direction, into dir/name.pcap; resolves once it listens. */
async function tcpdump(ns: Netns, iface: string, q: 'in' | 'out', filter: string, name: string) {
  const file = join(lab.dir, `${name}.pcap`);
  const proc = await startTcpdump(ns, iface, q, filter, file);
  return { proc, file };
}

const isUpload = (p: Uint8Array) =>
  p.length >= 60 && p[0]! >> 4 === 6 && p[6] === 6 && ((p[42]! << 8) | p[43]!) === 7000;

/** The peer's IPv6 packets to the ISP's port 7000 in its datagrams to the router (UDP to PORT). */
function uploadIn(frames: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const f of frames) {
    if (f.length < ETH + 28 || f[12] !== 0x08 || f[13] !== 0x00) continue;
    const ihl = (f[ETH]! & 15) * 4;
    const inner = f.subarray(ETH + ihl + 8);
    if (isUpload(inner)) out.push(inner);
  }
  return out;
}

/** The IPv6 packets to the ISP's port 7000 that left the router's uplink. */
function uploadOut(frames: Uint8Array[]): Uint8Array[] {
  return frames
    .filter((f) => f[12] === 0x86 && f[13] === 0xdd)
    .map((f) => f.subarray(ETH))
    .filter(isUpload);
}

async function upload(
  t: {
    is: (a: unknown, b: unknown, m?: string) => void;
    true: (a: boolean, m?: string) => void;
    deepEqual: (a: unknown, b: unknown, m?: string) => void;
    log: (...a: unknown[]) => void;
  },
  name: string,
  relay = false,
): Promise<Record<string, number>> {
  // To the ISP (through the TUN, out on the uplink: the hop on the 6bed4 link and the kernel's forward take one
  // each from the hop limit), or to peer C (relayed from datagram to datagram, out on its wire: one hop).
  const to = relay
    ? {
        ns: lab.topo.peers.C,
        addr: lab.c,
        capture: [lab.topo.router, TOPO.routerWanCIf, `udp src port ${PORT}`] as const,
        parse: uploadIn,
        hops: 1,
      }
    : {
        ns: lab.topo.isp,
        addr: TOPO.ispV6,
        capture: [lab.topo.router, TOPO.routerUplinkIf, 'ip6 and tcp dst port 7000'] as const,
        parse: uploadOut,
        hops: 2,
      };
  const server = to.ns.spawn([process.execPath, '-e', SINK_SERVER]);
  try {
    await server.waitFor(/listening/, 10_000);
    // Before the router's GRO: where the NAT sends the peer's datagrams.
    const capIn = await tcpdump(lab.topo.nat, TOPO.natWanIf, 'out', `udp dst port ${PORT}`, `${name}-in`);
    const capOut = await tcpdump(to.capture[0], to.capture[1], 'out', to.capture[2], `${name}-out`);
    const before = await scrape(lab.topo.router, METRICS);
    const snmpBefore = await readUdpSnmp(lab.topo.router);
    const r = await lab.topo.peers.A.exec([process.execPath, '-e', UPLOAD_CLIENT, to.addr, String(SIZE)], {
      timeoutMs: 60_000,
    });
    t.is(r.code, 0, `the stream arrives whole: ${r.stdout}${r.stderr}`);
    const after = await scrape(lab.topo.router, METRICS);
    const snmpAfter = await readUdpSnmp(lab.topo.router);
    const d = Object.fromEntries(KEYS.map((k) => [k, (after.get(k) ?? 0) - (before.get(k) ?? 0)]));
    // What the router and its namespace's UDP counted as lost meanwhile: a loaded machine may fill a socket buffer,
    // and TCP sends the segment again (the capture then has it twice on the way in, once on the way out).
    let lost = 0;
    for (const [k, v] of after)
      if (k.startsWith('sixbed4_router_dropped_packets_total')) lost += v - (before.get(k) ?? 0);
    for (const k of ['RcvbufErrors', 'SndbufErrors']) lost += (snmpAfter[k] ?? 0) - (snmpBefore[k] ?? 0);
    // tcpdump writes what it has read (-U), later than the router forwards on a busy machine: wait for both ends.
    const read = (file: string, f: (x: Uint8Array[]) => Uint8Array[]) => {
      try {
        return f(readPcap(file));
      } catch {
        return [];
      }
    };
    // (Relayed packets count both ways, the peer's ACKs too: there, until both captures hold what they held 200 ms
    // before.)
    let last = '';
    for (let i = 0; i < 100; i++) {
      const a = read(capIn.file, uploadIn).length,
        b = read(capOut.file, to.parse).length;
      const now = `${a}/${b}`;
      if (a > 0 && a - b <= lost && (relay ? now === last : a >= d[TO_TUN]! + d[FROM_PEERS_FAST]! - 20)) break;
      last = now;
      await sleep(200);
    }
    await capIn.proc.stop('SIGINT');
    await capOut.proc.stop('SIGINT');
    const ins = read(capIn.file, uploadIn),
      outs = read(capOut.file, to.parse);
    t.log(name, `${ins.length} segments in, ${outs.length} out`, d);
    t.true(ins.length > SIZE / 1300, `the capture holds the transfer: ${ins.length} segments`);
    t.true(
      outs.length <= ins.length && ins.length - outs.length <= lost,
      `as many segments left as came from the peer, but for those counted lost: ${ins.length} in, ${outs.length} out, ${lost} lost`,
    );
    // One for one, in order (skipping only what was lost): the same bytes but for the hop limit, each checksum right.
    let same = 0,
      badSums = 0,
      firstDiff = -1;
    for (let i = 0, j = 0; i < outs.length; i++) {
      const out = Buffer.from(outs[i]!);
      const wanted = (k: number) => {
        const want = Buffer.from(ins[k]!);
        want[7] = want[7]! - to.hops;
        return Buffer.compare(want, out) === 0;
      };
      let k = j;
      while (k < ins.length && k - j <= lost && !wanted(k)) k++;
      if (k < ins.length && wanted(k)) {
        same++;
        j = k + 1;
      } else if (firstDiff < 0) firstDiff = i;
      if (tcpSum(outs[i]!) !== 0) badSums++;
    }
    if (firstDiff >= 0) t.log(`first difference: out ${Buffer.from(outs[firstDiff]!).subarray(0, 80).toString('hex')}`);
    t.is(same, outs.length, `each segment left as it came, in order (first difference at ${firstDiff})`);
    t.is(badSums, 0, 'every segment that left carries its right checksum');
    return d;
  } finally {
    await server.stop();
  }
}

serial(
  title('an upload: merged into super-packets for the kernel, the same segments leave, all of the stream'),
  async (t) => {
    const d = await upload(t, 'on');
    const packets = d[off('tun_coalesce_packets')]!,
      segments = d[off('tun_coalesce_segments')]!;
    t.true(packets > 0, `super-packets written to the TUN: ${JSON.stringify(d)}`);
    t.true(segments >= 2 * packets, `each of several segments: ${JSON.stringify(d)}`);
    t.true(segments <= d[TO_TUN]!, `no more than went to the TUN: ${JSON.stringify(d)}`);
    t.is(d[off('tun_coalesce_refused')], 0);
    // The sockets are steered (the default, 8 of them): no UDP_GRO (running.ts says why).
    t.notRegex(lab.router!.output(), /UDP_GRO on/);
    t.is(d[off('udp_gro_buffers')], 0, JSON.stringify(d));
  },
);

serial(
  title('one socket, not steered: UDP_GRO on it, datagrams merged and cut again, the same segments leave'),
  async (t) => {
    await startRouter(['--sockets', '1']);
    await sleep(1000);
    const d = await upload(t, 'gro');
    t.regex(lab.router!.output(), /UDP_GRO on 1 of 1 sockets/);
    // The peer sends its datagrams for one super-packet with UDP_SEGMENT (the NAT's wire cuts them): the router's
    // GRO merges them again, or not, as they come in; what it merged was cut back into the same datagrams, as
    // checked segment by segment.
    const buffers = d[off('udp_gro_buffers')]!,
      datagrams = d[off('udp_gro_datagrams')]!;
    t.log(`${buffers} buffers merged, ${datagrams} datagrams from them, of ${d[TO_TUN]}`);
    t.true(buffers === 0 ? datagrams === 0 : datagrams >= 2 * buffers, `each of several: ${JSON.stringify(d)}`);
    t.true(datagrams <= d[TO_TUN]!, `no more than went to the TUN: ${JSON.stringify(d)}`);
    t.true(d[off('tun_coalesce_packets')]! > 0, JSON.stringify(d));
    await startRouter([]);
    await sleep(1000);
  },
);

serial(
  title('a relay from peer to peer: datagrams to one peer grouped into UDP_SEGMENT sends, the same'),
  async (t) => {
    const d = await upload(t, 'relay', true);
    t.true(d[RELAY]! > SIZE / 1300, `relayed: ${JSON.stringify(d)}`);
    const sends = d[off('udp_gso_sends')]!,
      datagrams = d[off('udp_gso_datagrams')]!;
    t.true(sends > 0, `relays went grouped with UDP_SEGMENT: ${JSON.stringify(d)}`);
    t.true(datagrams >= 2 * sends, `each of several: ${JSON.stringify(d)}`);
  },
);

serial(
  title('the control, --tun-offload off: nothing merged, the same segments leave, all of the stream'),
  async (t) => {
    await startRouter(['--tun-offload', 'off']);
    // The peer's registration goes on; wait until its keepalives have it live again before the transfer.
    await sleep(1000);
    const d = await upload(t, 'off');
    t.is(d[off('tun_coalesce_packets')], 0, JSON.stringify(d));
    t.is(d[off('tun_coalesce_segments')], 0, JSON.stringify(d));
    t.is(d[off('udp_gro_buffers')], 0, JSON.stringify(d));
    t.notRegex(lab.router!.output(), /UDP_GRO on/);
  },
);

serial(title('the relay control, --tun-offload off: one datagram a send, the same'), async (t) => {
  const d = await upload(t, 'relay-off', true);
  t.true(d[RELAY]! > SIZE / 1300, `relayed: ${JSON.stringify(d)}`);
  t.is(d[off('udp_gso_sends')], 0, JSON.stringify(d));
});

serial(title('with the fast path: no UDP_GRO on the sockets, the upload stays in the kernel'), async (t) => {
  await startRouter(['--fast-path', 'on']);
  await sleep(1000);
  const d = await upload(t, 'fast');
  t.is(d[off('udp_gro_buffers')], 0, JSON.stringify(d));
  t.notRegex(lab.router!.output(), /UDP_GRO on/, 'the sockets do not merge');
  t.true(d[FROM_PEERS_FAST]! > SIZE / 1300, `the fast path carried the upload: ${JSON.stringify(d)}`);
});
