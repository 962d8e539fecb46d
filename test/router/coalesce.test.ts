// TCP coalescing into the TUN's writes (agent/native/coalesce.c), on hand-built batches: which consecutive segments
// the addon merges into one super-packet (tunCoalescePlan: the same choice tunWrite with coalesce makes), and which
// it writes alone. Only what the kernel's GSO cuts back into exactly the same segments may be merged: one flow, in
// sequence, only ACK (PSH on the last), the same headers but for the sequence number, equal payloads but a shorter
// last, each checksum right, within 64 KiB and 64 segments.
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tunCoalescePlan } from '../../agent/io/native.js';
import { packageRoot } from '../../lib/build-info.js';
import { parseIPv6 } from '../../lib/ip.js';
import { ACK, batchOf, bytes, FIN, PSH, SYN, tcp6, tsOption, type Seg } from '../helpers/tcp6.js';

const built = existsSync(join(packageRoot() ?? '.', 'build', 'Release', 'sixbed4_native.node'));
const t0 = built ? test : test.skip;

const A = parseIPv6('2001:db8:9:10:c633:6401:1:1');
const B = parseIPv6('2001:db8:ffff::1');
const C = parseIPv6('2001:db8:9:10:c633:6402:1:1');

/** Segment k of a flow of size-byte payloads from seq 1000, with changes. */
function seg(k: number, size = 1000, o: Partial<Seg> = {}): Buffer {
  return tcp6({
    src: A,
    dst: B,
    sport: 40000,
    dport: 7000,
    seq: 1000 + k * size,
    options: tsOption(77, 55),
    payload: bytes(size, k),
    ...o,
  });
}

const plan = (pkts: Buffer[]) => tunCoalescePlan(batchOf(pkts), pkts.length);

t0('in order, equal sizes and a shorter last: one super-packet of them all', (t) => {
  const pkts = [0, 1, 2, 3, 4].map((k) => seg(k));
  pkts.push(seg(5, 1000, { payload: bytes(300, 5) }));
  t.deepEqual(plan(pkts), [[6, 1000]]);
});

t0('PSH on the last: merged; PSH in the middle ends the super-packet there', (t) => {
  t.deepEqual(plan([seg(0), seg(1), seg(2, 1000, { flags: ACK | PSH })]), [[3, 1000]]);
  t.deepEqual(plan([seg(0), seg(1, 1000, { flags: ACK | PSH }), seg(2), seg(3)]), [
    [2, 1000],
    [2, 1000],
  ]);
  // A first one with PSH takes nothing after it.
  t.deepEqual(plan([seg(0, 1000, { flags: ACK | PSH }), seg(1)]), [
    [1, 0],
    [1, 0],
  ]);
});

t0('a gap in the sequence, or one sent again, splits', (t) => {
  t.deepEqual(plan([seg(0), seg(1), seg(3), seg(4)]), [
    [2, 1000],
    [2, 1000],
  ]);
  t.deepEqual(plan([seg(0), seg(1), seg(1), seg(2)]), [
    [2, 1000],
    [2, 1000],
  ]);
});

t0('any other flag (FIN, SYN, none) goes alone', (t) => {
  t.deepEqual(plan([seg(0), seg(1), seg(2, 1000, { flags: ACK | FIN }), seg(3)]), [
    [2, 1000],
    [1, 0],
    [1, 0],
  ]);
  t.deepEqual(plan([seg(0, 1000, { flags: SYN | ACK }), seg(1), seg(2)]), [
    [1, 0],
    [2, 1000],
  ]);
  t.deepEqual(plan([seg(0, 1000, { flags: 0 }), seg(1, 1000, { flags: 0 })]), [
    [1, 0],
    [1, 0],
  ]);
});

t0('mixed flows: only consecutive segments of one flow merge', (t) => {
  const other = (k: number) => seg(k, 1000, { src: C, sport: 40001 });
  t.deepEqual(plan([seg(0), seg(1), other(0), other(1), seg(2)]), [
    [2, 1000],
    [2, 1000],
    [1, 0],
  ]);
  // Another port alone is another flow.
  t.deepEqual(plan([seg(0), seg(1, 1000, { sport: 40002 })]), [
    [1, 0],
    [1, 0],
  ]);
});

t0('a shorter one in the middle ends the super-packet; a longer one after the first starts another', (t) => {
  const short = seg(2, 1000, { payload: bytes(500, 2) });
  const after = tcp6({
    src: A,
    dst: B,
    sport: 40000,
    dport: 7000,
    seq: 1000 + 2500,
    options: tsOption(77, 55),
    payload: bytes(1000),
  });
  t.deepEqual(plan([seg(0), seg(1), short, after]), [
    [3, 1000],
    [1, 0],
  ]);
  const first = seg(0, 500);
  const longer = seg(0, 1000, { seq: 1500 });
  t.deepEqual(plan([first, longer, seg(1, 1000, { seq: 2500 })]), [
    [1, 0],
    [2, 1000],
  ]);
});

t0(
  'headers that differ but for the sequence number split: hop limit, traffic class, flow label, ack, window, timestamp',
  (t) => {
    const changes: Partial<Seg>[] = [
      { hops: 63 },
      { tc: 0x02 },
      { flow: 0x12345 },
      { ack: 2 },
      { window: 513 },
      { options: tsOption(78, 55) },
      { options: new Uint8Array(0) },
    ];
    for (const c of changes)
      t.deepEqual(
        plan([seg(0), seg(1), seg(2, 1000, c), seg(3, 1000, c)]),
        [
          [2, 1000],
          [2, 1000],
        ],
        JSON.stringify(c),
      );
  },
);

t0('a wrong checksum goes alone (merged, the kernel would make it right)', (t) => {
  const bad = seg(1);
  bad[bad.length - 1]! ^= 1;
  t.deepEqual(plan([seg(0), bad, seg(2), seg(3)]), [
    [1, 0],
    [1, 0],
    [2, 1000],
  ]);
  const badFirst = seg(0);
  badFirst[60] ^= 0x40;
  t.deepEqual(plan([badFirst, seg(1), seg(2)]), [
    [1, 0],
    [2, 1000],
  ]);
});

t0('no payload, an extension header, a length that does not add up: alone', (t) => {
  const pureAck = tcp6({ src: A, dst: B, sport: 40000, dport: 7000, seq: 1000, payload: new Uint8Array(0) });
  t.deepEqual(plan([pureAck, pureAck]), [
    [1, 0],
    [1, 0],
  ]);
  const hbh = seg(0);
  hbh[6] = 0; // next header: hop-by-hop options
  t.deepEqual(plan([hbh, seg(1), seg(2)]), [
    [1, 0],
    [2, 1000],
  ]);
  const long = seg(0);
  long.writeUInt16BE(long.readUInt16BE(4) - 1, 4);
  t.deepEqual(plan([long, seg(1)]), [
    [1, 0],
    [1, 0],
  ]);
});

t0('bounded: 64 KiB of IPv6 payload, and 64 segments', (t) => {
  // 1208-byte payloads (the tunnel's MSS) with 32 bytes of TCP header: as many as fit 65535 bytes of IPv6 payload.
  const big = Array.from({ length: 60 }, (_, k) => seg(k, 1208));
  const fit = Math.floor((65535 - 32) / 1208);
  t.deepEqual(plan(big), [
    [fit, 1208],
    [60 - fit, 1208],
  ]);
  const small = Array.from({ length: 70 }, (_, k) => seg(k, 100));
  t.deepEqual(plan(small), [
    [64, 100],
    [6, 100],
  ]);
});
