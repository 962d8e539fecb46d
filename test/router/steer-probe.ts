// Helper of steer.test.ts, run inside its namespace: SO_REUSEPORT sockets on 127.0.0.1:25790 steered as the router
// steers them (steer-ebpf.ts), datagrams of each kind from several sources, and what each socket received, as JSON.
// argv[2], JSON (Probe): with a predecessor, its four sockets are bound first (steered as a router of this version
// steers them, or not at all, as an older router's with handover), the router's four join their group, and the
// predecessor's close (or not) before anything is sent: a handover.
import { loadNative, newBatch } from '../../agent/io/native.js';
import { steerGroup, type Steering } from '../../agent/router/steer-ebpf.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { writeNeighborSolicit, ROUTER_LINK_LOCAL } from '../../agent/protocol/nd.js';

export interface Probe {
  handover?: boolean;
  /** A previous router's sockets in the group: steered (this version's way) or not (an older router's). */
  predecessor?: 'steered' | 'unsteered';
  /** Whether the predecessor's sockets are still open when the datagrams come (both routers run). */
  predecessorOpen?: boolean;
  /** The router's eBPF object (a path that does not exist: the kernel as one that refuses the program). */
  object?: string;
  /** Sources (default 4). */
  senders?: number;
}
export interface ProbeResult {
  steering: Steering;
  /** Per kind, what each of the router's sockets received. */
  router: Record<string, number[]>;
  /** Per kind, what each of the predecessor's sockets received (with one open). */
  predecessor: Record<string, number[]>;
}

const probe = JSON.parse(process.argv[2] ?? '{}') as Probe;
const io = loadNative();
const prefix = parsePrefix64('2001:db8:9:10::/64');
const LO = parseIPv4('127.0.0.1'),
  ISP = parseIPv6('2001:db8:ffff::1');
const group = () => [0, 1, 2, 3].map(() => io.udpOpen('127.0.0.1', 25790, true).fd);
const options = (handover: boolean, object?: string) => ({
  prefix: prefix.bytes,
  workers: 1,
  sockets: 4,
  handover,
  ...(object ? { object } : {}),
});
let before: number[] = [];
if (probe.predecessor) {
  before = group();
  if (probe.predecessor === 'steered') {
    const s = steerGroup(before, options(true));
    if (s.program !== 'ebpf') throw new Error(`the predecessor could not steer: ${JSON.stringify(s)}`);
  }
}
const fds = group();
const steering = steerGroup(fds, options(probe.handover === true, probe.object));
if (!probe.predecessorOpen) before.splice(0).forEach((fd) => io.close(fd));
// Fixed ports (even ones, as peers bind), so where each source lands is the same every run.
const senders = Array.from({ length: probe.senders ?? 4 }, (_, i) => io.udpOpen('127.0.0.1', 40000 + 2 * i, false));
const rx = newBatch(64, 2048);

const udp6 = (src: Uint8Array, dst: Uint8Array, hops = 64, payload = 8) => {
  const b = new Uint8Array(40 + payload);
  writeHeader(b, 0, payload, 17, hops, src, dst);
  return b;
};
const kinds: Record<string, (port: number) => Uint8Array> = {
  valid: (p) => udp6(makeAddress(prefix.bytes, LO, p, 1), ISP),
  otherPort: (p) => udp6(makeAddress(prefix.bytes, LO, p + 1, 1), ISP),
  hopLimit1: (p) => udp6(makeAddress(prefix.bytes, LO, p, 1), ISP, 1),
  lengthLie: (p) => udp6(makeAddress(prefix.bytes, LO, p, 1), ISP).subarray(0, 44),
  multicast: (p) => udp6(makeAddress(prefix.bytes, LO, p, 1), parseIPv6('ff0e::1')),
  nd: (p) => {
    const b = new Uint8Array(100);
    return b.subarray(
      0,
      writeNeighborSolicit(b, 0, makeAddress(prefix.bytes, LO, p, 1), ROUTER_LINK_LOCAL, ROUTER_LINK_LOCAL),
    );
  },
  short: () => Uint8Array.of(0x60, 0, 0),
  notIPv6: () => new Uint8Array(60).fill(0x45, 0, 1),
};
const out: ProbeResult = { steering, router: {}, predecessor: {} };
for (const [name, make] of Object.entries(kinds)) {
  for (const s of senders) {
    const d = make(s.port),
      b = newBatch(1, 1500);
    b.off[0] = 0;
    b.data.set(d, 0);
    b.len[0] = d.length;
    b.addr[0] = LO;
    b.port[0] = 25790;
    io.udpSend(s.fd, b, 1);
  }
  // Read until all arrived (the deadline only catches datagrams that never come).
  const got = fds.map(() => 0),
    gotBefore = before.map(() => 0);
  const total = () => [...got, ...gotBefore].reduce((x, y) => x + y, 0);
  for (const until = Date.now() + 10_000; total() < senders.length && Date.now() < until;) {
    await new Promise((r) => setTimeout(r, 5));
    fds.forEach((fd, i) => {
      got[i]! += io.udpRecv(fd, rx);
    });
    before.forEach((fd, i) => {
      gotBefore[i]! += io.udpRecv(fd, rx);
    });
  }
  out.router[name] = got;
  if (before.length) out.predecessor[name] = gotBefore;
}
process.stdout.write(JSON.stringify(out));
