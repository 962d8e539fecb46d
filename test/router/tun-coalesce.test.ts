// TCP coalescing into the TUN's writes on the router's own path (--fast-path off, the TUN offload on): a peer's
// upload to the ISP goes through the router, which merges consecutive segments of the flow into super-packets for
// the kernel (agent/native/coalesce.c), which forwards them and cuts them again on the uplink. On the lab's topology,
// what the router takes in from the peer (the IPv6 packets in its datagrams, captured where they come in) and what
// it sends to the ISP (captured where it leaves, with the uplink's offloads off so the kernel cuts before the capture)
// must be the same TCP segments, one for one, in order and byte for byte but for the hop limit the forward takes;
// the stream must arrive whole; the router's counters must show super-packets written and the segments merged.
// The control, with --tun-offload off (no header on the TUN, so nothing merged): the same, with no super-packet.
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
import { readPcap } from '../helpers/pcap.js';
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
const KEYS = [TO_TUN, off('tun_coalesce_packets'), off('tun_coalesce_segments'), off('tun_coalesce_refused')];

interface Lab {
  topo: Topology;
  router?: Proc;
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
  lab.dir = mkdtempSync(join(tmpdir(), 'sixbed4-coalesce-'));
  lab.topo = await buildTopology({ tag: 'coal' });
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
  await startRouter([]);
  await startPeerIn(lab.topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--no-direct']);
});

test.after.always(async () => {
  await lab.topo?.destroy();
  if (lab.dir) rmSync(lab.dir, { recursive: true, force: true });
});

/** tcpdump on ns's iface, one direction, into dir/name.pcap; resolves once it listens. */
async function tcpdump(ns: Netns, iface: string, q: 'in' | 'out', filter: string, name: string) {
  const file = join(lab.dir, `${name}.pcap`);
  const proc = ns.spawn([
    systemTool('tcpdump'),
    '-i',
    iface,
    '-Q',
    q,
    '-n',
    '-U',
    '-B',
    '65536',
    '-s',
    '0',
    '-w',
    file,
    filter,
  ]);
  await proc.waitFor(/listening on/, 10_000);
  return { proc, file };
}

const isUpload = (p: Uint8Array) =>
  p.length >= 60 && p[0]! >> 4 === 6 && p[6] === 6 && ((p[42]! << 8) | p[43]!) === 7000;

/** The peer's IPv6 packets to the ISP's port 7000 in the router's datagrams that came in (UDP to PORT). */
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
): Promise<Record<string, number>> {
  const server = lab.topo.isp.spawn([process.execPath, '-e', SINK_SERVER]);
  try {
    await server.waitFor(/listening/, 10_000);
    const capIn = await tcpdump(lab.topo.router, TOPO.routerWanIf, 'in', `udp dst port ${PORT}`, `${name}-in`);
    const capOut = await tcpdump(
      lab.topo.router,
      TOPO.routerUplinkIf,
      'out',
      'ip6 and tcp dst port 7000',
      `${name}-out`,
    );
    const before = await scrape(lab.topo.router, METRICS);
    const r = await lab.topo.peers.A.exec([process.execPath, '-e', UPLOAD_CLIENT, TOPO.ispV6, String(SIZE)], {
      timeoutMs: 60_000,
    });
    t.is(r.code, 0, `the stream arrives whole: ${r.stdout}${r.stderr}`);
    const after = await scrape(lab.topo.router, METRICS);
    const d = Object.fromEntries(KEYS.map((k) => [k, (after.get(k) ?? 0) - (before.get(k) ?? 0)]));
    // tcpdump writes what it has read (-U), later than the router forwards on a busy machine: wait for both ends.
    const read = (file: string, f: (x: Uint8Array[]) => Uint8Array[]) => {
      try {
        return f(readPcap(file));
      } catch {
        return [];
      }
    };
    for (let i = 0; i < 100; i++) {
      const a = read(capIn.file, uploadIn).length,
        b = read(capOut.file, uploadOut).length;
      if (a > 0 && a === b && a >= d[TO_TUN]! - 20) break;
      await sleep(200);
    }
    await capIn.proc.stop('SIGINT');
    await capOut.proc.stop('SIGINT');
    const ins = read(capIn.file, uploadIn),
      outs = read(capOut.file, uploadOut);
    t.log(name, `${ins.length} segments in, ${outs.length} out`, d);
    t.true(ins.length > SIZE / 1300, `the capture holds the transfer: ${ins.length} segments`);
    t.is(outs.length, ins.length, 'as many segments left for the ISP as came from the peer');
    // One for one, in order: the same bytes but for the hop limit (the router's hop on the 6bed4 link takes one, the
    // kernel's forward another), each checksum right.
    let same = 0,
      badSums = 0,
      firstDiff = -1;
    for (let i = 0; i < Math.min(ins.length, outs.length); i++) {
      const want = Buffer.from(ins[i]!);
      want[7] = want[7]! - 2;
      if (Buffer.compare(want, Buffer.from(outs[i]!)) === 0) same++;
      else if (firstDiff < 0) firstDiff = i;
      if (tcpSum(outs[i]!) !== 0) badSums++;
    }
    if (firstDiff >= 0)
      t.log(
        `first difference: in ${Buffer.from(ins[firstDiff]!).subarray(0, 80).toString('hex')}`,
        `out ${Buffer.from(outs[firstDiff]!).subarray(0, 80).toString('hex')}`,
      );
    t.is(same, ins.length, `each segment left as it came (first difference at ${firstDiff})`);
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
  },
);
