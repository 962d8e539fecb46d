// Destinations the router never sends to: the fixed ranges, the host's local
// routing table, private ranges on request; and the engine applying them.
import test from 'ava';
import fc from 'fast-check';
import { Engine } from '../../agent/router/engine.js';
import {
  ALWAYS_REFUSED,
  PRIVATE_RANGES,
  RefusedIPv4,
  refusedRanges,
  type IPv4Range,
} from '../../agent/router/refused.js';
import { parseLocalTable } from '../../agent/router/localtable.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { writeRouterSolicit } from '../../agent/protocol/nd.js';

const prefix = parsePrefix64('2001:db8:9:10::/64');
const ROUTER_V4 = parseIPv4('198.51.100.1');
const PEER_V4 = parseIPv4('198.51.100.20');
const peerAddr = makeAddress(prefix.bytes, PEER_V4, 40000, 1);
const isp = parseIPv6('2001:db8:ffff::1');
const one = (text: string): IPv4Range => ({ start: parseIPv4(text), end: parseIPv4(text) });

function packet(src: Uint8Array, dst: Uint8Array): Uint8Array {
  const b = new Uint8Array(48);
  writeHeader(b, 0, 8, 17, 64, src, dst);
  return b;
}

function send(e: Engine, side: 'udp' | 'tun', packets: { bytes: Uint8Array; v4?: number }[]): void {
  const rx = side === 'udp' ? e.udpRx : e.tunRx;
  packets.forEach((p, i) => {
    rx.off[i] = i * rx.slot;
    rx.data.set(p.bytes, i * rx.slot);
    rx.len[i] = p.bytes.length;
    rx.addr[i] = p.v4 ?? PEER_V4;
    rx.port[i] = 40000;
  });
  if (side === 'udp') e.fromPeers(packets.length, 1000);
  else e.fromKernel(packets.length, 1000);
}

test('the local table: local and broadcast entries, host routes and whole ranges', (t) => {
  const ranges = parseLocalTable([
    { type: 'local', dst: '127.0.0.0/8' },
    { type: 'local', dst: '198.51.100.1' },
    { type: 'broadcast', dst: '198.51.100.255' },
    { type: 'local', dst: '203.0.113.1' },
    { type: 'unicast', dst: '192.0.2.0/24' },
    { type: 'local', dst: 'fe80::1' },
  ]);
  t.deepEqual(ranges, [
    { start: parseIPv4('127.0.0.0'), end: parseIPv4('127.255.255.255') },
    one('198.51.100.1'),
    one('198.51.100.255'),
    one('203.0.113.1'),
  ]);
});

test('property: the interval set answers exactly as a linear scan of its ranges', (t) => {
  const range = fc
    .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 1 << 20 }))
    .map(([s, n]) => ({ start: s, end: Math.min(0xffffffff, s + n) }));
  fc.assert(
    fc.property(
      fc.array(range, { maxLength: 20 }),
      fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 50 }),
      (ranges, probes) => {
        const set = new RefusedIPv4(ranges);
        const all = [
          ...probes,
          ...ranges.flatMap((r) => [r.start, r.end, r.start - 1, r.end + 1].filter((x) => x >= 0 && x <= 0xffffffff)),
        ];
        return all.every((v) => set.has(v) === ranges.some((r) => v >= r.start && v <= r.end));
      },
    ),
  );
  t.pass();
});

test('always refused: 0/8, loopback, 169.254/16 (cloud metadata), multicast and broadcast; private only on request', (t) => {
  const fixed = new RefusedIPv4(ALWAYS_REFUSED);
  for (const a of ['0.1.2.3', '127.0.0.1', '169.254.169.254', '224.0.0.1', '255.255.255.255'])
    t.true(fixed.has(parseIPv4(a)), a);
  for (const a of ['198.51.100.20', '203.0.113.2', '100.64.1.2', '192.0.2.1']) t.false(fixed.has(parseIPv4(a)), a);
  const priv = new RefusedIPv4(refusedRanges([], true));
  t.true(priv.has(parseIPv4('100.64.1.2')));
  t.false(priv.has(parseIPv4('198.51.100.20')));
  t.is(PRIVATE_RANGES.length, 6);
});

test('relays and kernel sends to another address of the host, 169.254/16 or (with refusePrivate) a private range are refused', (t) => {
  const refused = refusedRanges([one('198.51.100.1'), one('203.0.113.1'), one('198.51.100.255')], true);
  const e = new Engine({ prefix, listenIPv4: ROUTER_V4, port: 25790, routes: [], refused }, 16);
  const to = (v4: string) => makeAddress(prefix.bytes, parseIPv4(v4), 7777, 1);
  const targets = ['203.0.113.1', '198.51.100.255', '169.254.169.254', '100.64.1.2'];
  send(
    e,
    'udp',
    targets.map((v4) => ({ bytes: packet(peerAddr, to(v4)) })),
  );
  t.is(e.nRelay, 0);
  t.is(e.nToTun, 0);
  t.is(e.counters.drops.bad_destination, 4);
  send(
    e,
    'tun',
    targets.map((v4) => ({ bytes: packet(isp, to(v4)) })),
  );
  t.is(e.nToPeers, 0);
  t.is(e.counters.drops.bad_destination, 8);
  send(e, 'udp', [{ bytes: packet(peerAddr, to('203.0.113.2')) }]);
  t.is(e.nRelay, 1, 'an ordinary peer is still relayed to');
});

test('a datagram claiming a source address of this host gets no reply (it would reflect into the host)', (t) => {
  const e = new Engine(
    { prefix, listenIPv4: ROUTER_V4, port: 25790, routes: [], refused: refusedRanges([one('203.0.113.1')], false) },
    16,
  );
  const rs = new Uint8Array(64);
  const len = writeRouterSolicit(rs, 0);
  send(e, 'udp', [
    { bytes: rs.subarray(0, len), v4: parseIPv4('203.0.113.1') },
    { bytes: rs.subarray(0, len), v4: ROUTER_V4 },
  ]);
  t.is(e.nUdpReplies, 0);
  send(e, 'udp', [{ bytes: rs.subarray(0, len) }]);
  t.is(e.nUdpReplies, 1);
});

test("the refused set can be replaced while running (the host's addresses changed)", (t) => {
  const e = new Engine({ prefix, listenIPv4: ROUTER_V4, port: 25790, routes: [] }, 16);
  const dst = makeAddress(prefix.bytes, parseIPv4('192.0.2.1'), 7777, 1);
  send(e, 'udp', [{ bytes: packet(peerAddr, dst) }]);
  t.is(e.nRelay, 1);
  e.setRefused(refusedRanges([one('192.0.2.1')], false));
  send(e, 'udp', [{ bytes: packet(peerAddr, dst) }]);
  t.is(e.nRelay, 0);
});
