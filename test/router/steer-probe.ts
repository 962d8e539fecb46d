// Helper of steer.test.ts, run inside its namespace: four SO_REUSEPORT sockets on 127.0.0.1:25790 steered as the
// router steers them, datagrams of each kind from four sources, and what each socket received, as JSON.
import { loadNative, newBatch, udpSteer } from '../../agent/io/native.js';
import { steerProgram } from '../../agent/router/steer.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { writeNeighborSolicit, ROUTER_LINK_LOCAL } from '../../agent/protocol/nd.js';

const io = loadNative();
const prefix = parsePrefix64('2001:db8:9:10::/64');
const LO = parseIPv4('127.0.0.1'),
  ISP = parseIPv6('2001:db8:ffff::1');
const fds = [0, 1, 2, 3].map(() => io.udpOpen('127.0.0.1', 25790, true).fd);
udpSteer(fds[0]!, steerProgram(prefix.bytes, 1, 4)!);
// Fixed ports (even ones, as peers bind), so where each source lands is the same every run.
const senders = [0, 1, 2, 3].map((i) => io.udpOpen('127.0.0.1', 40000 + 2 * i, false));
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
const out: Record<string, number[]> = {};
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
  // Read until the four arrived (the deadline only catches datagrams that never come).
  const got = [0, 0, 0, 0];
  for (const until = Date.now() + 10_000; got.reduce((x, y) => x + y, 0) < 4 && Date.now() < until;) {
    await new Promise((r) => setTimeout(r, 5));
    fds.forEach((fd, i) => {
      got[i]! += io.udpRecv(fd, rx);
    });
  }
  out[name] = got;
}
process.stdout.write(JSON.stringify(out));
