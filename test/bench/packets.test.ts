// The benchmark's generated traffic must be what the router forwards: valid
// IPv6/UDP with correct checksums and, for 6→4, the 6bed4 destinations of
// the intended peers, however the per-packet rewrite patched them.
import test from 'ava';
import fc from 'fast-check';
import { addressIPv4, addressPort } from '../../agent/protocol/address.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';
import { NH_UDP } from '../../agent/protocol/constants.js';
import { OFF_DST, packetLength } from '../../agent/protocol/ipv6.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { newBatch } from '../../agent/io/batch.js';
import { makeAddress } from '../../agent/protocol/address.js';
import {
  fillBatch,
  fillBatch4,
  IPV4_UDP,
  PeerCycler,
  PeerSourceCycler,
  peerOf,
  peerPlan,
  planIPv4s,
  writeUdp6,
} from '../../bench/packets.js';
import { fold, sumWords } from '../../agent/protocol/checksum.js';
import { OFF_SRC } from '../../agent/protocol/ipv6.js';

const prefix = parsePrefix64('2001:db8:9:10::/64').bytes;
const src = parseIPv6('2001:db8:ffff:ff::1');
const first = parseIPv4('192.0.2.1');

/** 0 when the UDP checksum of the packet at off is right. */
function checksumError(d: Uint8Array, off: number, len: number): number {
  return upperChecksum(d, off, NH_UDP, off + 40, len - 40);
}

test('writeUdp6: the sizes the benchmark uses are whole, checksummed IPv6/UDP packets', (t) => {
  for (const size of [48, 49, 1280]) {
    const b = new Uint8Array(size + 3);
    writeUdp6(b, 3, size, src, parseIPv6('2001:db8:ffff::1'));
    t.is(packetLength(b, 3, size), size);
    t.is(b[3 + 6], NH_UDP);
    t.is(checksumError(b, 3, size), 0, `size ${size}`);
  }
  t.throws(() => writeUdp6(new Uint8Array(64), 0, 47, src, src), { instanceOf: RangeError });
});

test('peerPlan: 1, 1,000 and 100,000 peers use 1, 1 and 2 IPv4 addresses, ports from 1024', (t) => {
  t.deepEqual(
    [1, 1000, 100_000].map((n) => planIPv4s(peerPlan(first, n))),
    [1, 1, 2],
  );
  const p = peerPlan(first, 100_000);
  t.deepEqual(peerOf(p, 0), { ipv4: first, port: 1024 });
  t.deepEqual(peerOf(p, 99_999), { ipv4: first + 1, port: 1024 + 49_999 });
});

test("property: PeerCycler gives every packet the next peer's 6bed4 address and a valid checksum", (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 120_000 }),
      fc.constantFrom(48, 97, 1280),
      fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 5 }),
      (count, size, batches) => {
        const b = newBatch(4, size);
        fillBatch(b, size, src, makeAddress(prefix, first, 1024, 1));
        const plan = peerPlan(first, count);
        const cycler = new PeerCycler(b, prefix, plan);
        let k = 0;
        for (const n of batches) {
          cycler.next(n);
          for (let i = 0; i < n; i++, k = (k + 1) % count) {
            const off = b.off[i]!;
            const want = peerOf(plan, k);
            if (addressIPv4(b.data, off + OFF_DST) !== want.ipv4 || addressPort(b.data, off + OFF_DST) !== want.port)
              return false;
            if (checksumError(b.data, off, size) !== 0) return false;
          }
        }
        return true;
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

test('property: PeerSourceCycler sends as each peer would: IPv4 source and port, matching 6bed4 source, valid checksums', (t) => {
  const router = parseIPv4('203.0.113.1');
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 120_000 }),
      fc.constantFrom(48, 97, 1280),
      fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 5 }),
      (count, size, batches) => {
        const b = newBatch(4, IPV4_UDP + size);
        fillBatch4(b, size, router, 25790, parseIPv6('2001:db8:ffff::1'), prefix);
        const plan = peerPlan(first, count);
        const cycler = new PeerSourceCycler(b, prefix, plan);
        let k = 0;
        for (const n of batches) {
          cycler.next(n);
          for (let i = 0; i < n; i++, k = (k + 1) % count) {
            const d = b.data,
              off = b.off[i]!,
              inner = off + IPV4_UDP;
            const want = peerOf(plan, k);
            if (b.len[i] !== IPV4_UDP + size || d.readUInt16BE(off + 2) !== IPV4_UDP + size) return false;
            if (fold(sumWords(d, off, 20)) !== 0xffff) return false; // IPv4 header checksum
            if (d.readUInt32BE(off + 12) !== want.ipv4 || d.readUInt32BE(off + 16) !== router) return false;
            if (d.readUInt16BE(off + 20) !== want.port || d.readUInt16BE(off + 22) !== 25790) return false;
            if (addressIPv4(d, inner + OFF_SRC) !== want.ipv4 || addressPort(d, inner + OFF_SRC) !== want.port)
              return false;
            if (packetLength(d, inner, size) !== size || checksumError(d, inner, size) !== 0) return false;
          }
        }
        return true;
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});
