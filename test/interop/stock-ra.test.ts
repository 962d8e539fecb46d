// Every Router Advertisement our router sends, read the way the stock 6bed4peer reads it (stock-ra.ts, a port of its
// parser) and the way our peer does (protocol/nd.ts): solicited (from :: and from a link-local address, with no,
// one and the most extra routes), after a NAT move (the originator check fails on a source of the /64 with a port
// word: the old /114 withdrawn), after an originator-check failure without a port word. Each reader must end up on
// the peer's current /114, and the lifetime-honouring one must see the withdrawal.
import test from 'ava';
import { Engine } from '../../agent/router/engine.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix, parsePrefix64, type Prefix } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { fillChecksum } from '../../agent/protocol/checksum.js';
import { parseRouterAdvert, writeRouterSolicit, ROUTER_LINK_LOCAL } from '../../agent/protocol/nd.js';
import { stockPeerReadsRA } from './stock-ra.js';

const prefix = parsePrefix64('2001:db8:9:10::/64');
const ROUTER_V4 = parseIPv4('198.51.100.1');
const PEER_V4 = parseIPv4('198.51.100.20');
const OLD_PORT = 40000,
  NEW_PORT = 40002;
const isp = parseIPv6('2001:db8:ffff::1');
const ROUTES = {
  '0': [],
  '1': [parsePrefix('2001:db8:77::/48')],
  '37': Array.from({ length: 37 }, (_, i) => parsePrefix(`2001:db8:${(0x100 + i).toString(16)}::/48`)),
};
const at = (port: number, lanip: number) => formatIPv6(makeAddress(prefix.bytes, PEER_V4, port, lanip));

/** The one RA the engine answers the datagram (from PEER_V4:port) with, as the bytes of its IPv6 packet. */
function answer(routes: Prefix[], bytes: Uint8Array, port: number): Uint8Array {
  const e = new Engine({ prefix, listenIPv4: ROUTER_V4, port: 25790, routes }, 16);
  e.udpRx.off[0] = 0;
  e.udpRx.data.set(bytes, 0);
  e.udpRx.len[0] = bytes.length;
  e.udpRx.addr[0] = PEER_V4;
  e.udpRx.port[0] = port;
  e.fromPeers(1, 1000);
  if (e.nUdpReplies !== 1) throw new Error(`${e.nUdpReplies} replies`);
  const r = e.udpReplies;
  return Uint8Array.from(r.data.subarray(r.off[0]!, r.off[0]! + r.len[0]!));
}

function rs(src?: Uint8Array): Uint8Array {
  const b = new Uint8Array(64);
  return b.subarray(0, writeRouterSolicit(b, 0, src));
}
function packetFrom(src: Uint8Array): Uint8Array {
  const b = new Uint8Array(48);
  writeHeader(b, 0, 8, 17, 64, src, isp);
  return b;
}

for (const [name, routes] of Object.entries(ROUTES)) {
  for (const [from, src] of [
    ['::', undefined],
    ['fe80::1', parseIPv6('fe80::1')],
  ] as const) {
    test(`solicited RA (RS from ${from}, ${name} extra routes): the stock peer and ours take the peer's /114 and the routes`, (t) => {
      const ra = answer(routes, rs(src), NEW_PORT);
      t.true(ra.length <= 1280);
      const stock = stockPeerReadsRA(ra);
      if (!stock.taken) return t.fail(stock.why);
      t.is(formatIPv6(stock.address), at(NEW_PORT, 1));
      // The stock peer keeps the first 10 routable prefixes (MAX_ROUTABLE_PREFIXES): docs/interop.md.
      t.deepEqual(
        stock.routes.map((r) => `${formatIPv6(r.prefix)}/${r.length}`),
        routes.slice(0, 10).map((r) => r.text),
      );
      const ours = parseRouterAdvert(ra, 0, ra.length)!;
      t.is(formatIPv6(ours.prefix114), at(NEW_PORT, 0));
      t.deepEqual(ours.withdrawn, []);
      t.is(ours.routes.length, routes.length);
    });
  }
}

test('after a NAT move (the old address from a new port): both take the new /114; ours sees the old one withdrawn', (t) => {
  const ra = answer(ROUTES['1'], packetFrom(makeAddress(prefix.bytes, PEER_V4, OLD_PORT, 1)), NEW_PORT);
  t.is(formatIPv6(ra, 24), 'ff02::1');
  const stock = stockPeerReadsRA(ra);
  if (!stock.taken) return t.fail(stock.why);
  t.is(formatIPv6(stock.address), at(NEW_PORT, 1), 'the stock peer moves to its new mapping');
  const ours = parseRouterAdvert(ra, 0, ra.length)!;
  t.is(formatIPv6(ours.prefix114), at(NEW_PORT, 0));
  t.is(ours.validLifetime, 0xffffffff);
  t.deepEqual(
    ours.withdrawn.map((w) => formatIPv6(w)),
    [at(OLD_PORT, 0)],
    'the old /114 is withdrawn',
  );
  // Peers before the withdrawal came last took the first on-link /114: still the new one.
  t.is(formatIPv6(ra, 40 + 16 + 16), at(NEW_PORT, 0));
});

test('after an originator-check failure of a source without a port word: the new /114 alone, read the same by both', (t) => {
  const ra = answer(ROUTES['1'], packetFrom(makeAddress(prefix.bytes, PEER_V4, 0, 0x11)), NEW_PORT);
  const stock = stockPeerReadsRA(ra);
  if (!stock.taken) return t.fail(stock.why);
  t.is(formatIPv6(stock.address), at(NEW_PORT, 1));
  const ours = parseRouterAdvert(ra, 0, ra.length)!;
  t.is(formatIPv6(ours.prefix114), at(NEW_PORT, 0));
  t.deepEqual(ours.withdrawn, []);
});

test('the port of the stock parser reads the old form (new /114 first, withdrawn old one last) as the stock peer did: the old one', (t) => {
  // [new, old with zero lifetimes]: what our router sent before, which left stock peers on their old address.
  const b = new Uint8Array(40 + 16 + 64);
  writeHeader(b, 0, 16 + 64, 58, 255, ROUTER_LINK_LOCAL, parseIPv6('ff02::1'));
  b[40] = 134;
  b[45] = 0x18;
  const opt = (o: number, p: string, life: number) => {
    b[o] = 3;
    b[o + 1] = 4;
    b[o + 2] = 114;
    b[o + 3] = 0xc0;
    new DataView(b.buffer).setUint32(o + 4, life);
    new DataView(b.buffer).setUint32(o + 8, life);
    b.set(parseIPv6(p), o + 16);
  };
  opt(56, at(NEW_PORT, 0), 0xffffffff);
  opt(88, at(OLD_PORT, 0), 0);
  fillChecksum(b, 0, 58, 40, 80, 2);
  const stock = stockPeerReadsRA(b);
  if (!stock.taken) return t.fail(stock.why);
  t.is(formatIPv6(stock.address), at(OLD_PORT, 1));
  // Ours honours the lifetimes, whatever the order.
  t.is(formatIPv6(parseRouterAdvert(b, 0, b.length)!.prefix114), at(NEW_PORT, 0));
});

test('the stock parser drops what the C code drops: a zero-length option, a non-/114 autonomous prefix, a foreign source', (t) => {
  const ra = answer(ROUTES['0'], rs(), NEW_PORT);
  const zeroLen = Uint8Array.from(ra);
  zeroLen[56 + 1] = 0;
  fillChecksum(zeroLen, 0, 58, 40, zeroLen.length - 40, 2);
  t.false(stockPeerReadsRA(zeroLen).taken);
  const not114 = Uint8Array.from(ra);
  not114[56 + 2] = 64;
  fillChecksum(not114, 0, 58, 40, not114.length - 40, 2);
  t.false(stockPeerReadsRA(not114).taken);
  const foreign = Uint8Array.from(ra);
  foreign[23] = 1;
  fillChecksum(foreign, 0, 58, 40, foreign.length - 40, 2);
  t.false(stockPeerReadsRA(foreign).taken);
  t.true(stockPeerReadsRA(ra).taken);
});
