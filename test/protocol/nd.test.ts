import test from 'ava';
import fc from 'fast-check';
import { makeAddress } from '../../agent/protocol/address.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix, parsePrefix64 } from '../../lib/ip.js';
import {
  isRouterSolicit,
  ndType,
  neighborSolicitTarget,
  parseRouterAdvert,
  writeNeighborAdvert,
  writeNeighborSolicit,
  writeRouterAdvert,
  writeRouterSolicit,
  ALL_NODES,
  ROUTER_LINK_LOCAL,
} from '../../agent/protocol/nd.js';
import { writeIcmpError } from '../../agent/protocol/icmperror.js';

const prefix = parsePrefix64('2001:db8:9:10::/64');
const peer114 = makeAddress(prefix.bytes, parseIPv4('198.51.100.10'), 63718, 0);

test('RA carries the fields of the wire notes, byte for byte', (t) => {
  const b = new Uint8Array(200);
  const len = writeRouterAdvert(b, 0, ALL_NODES, peer114, [parsePrefix('2001:db8:77::/48')]);
  t.is(len, 40 + 16 + 32 + 32);
  t.is(b[0]! >> 4, 6);
  t.is(b[6], 58);
  t.is(b[7], 255);
  t.is(formatIPv6(b, 8), 'fe80::');
  t.is(formatIPv6(b, 24), 'ff02::1');
  const i = 40;
  t.deepEqual(Array.from(b.subarray(i, i + 16)), [
    134,
    0,
    b[i + 2],
    b[i + 3],
    0,
    0x18,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
  ]);
  const o = i + 16;
  t.deepEqual(
    Array.from(b.subarray(o, o + 16)),
    [3, 4, 114, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
  );
  t.is(formatIPv6(b, o + 16), '2001:db8:9:10:c433:640a:f8e6:8000');
  const r = o + 32;
  t.deepEqual(Array.from(b.subarray(r, r + 4)), [3, 4, 48, 0x00]);
  t.is(formatIPv6(b, r + 16), '2001:db8:77::');
  t.is(upperChecksum(b, 0, 58, 40, len - 40), 0, 'checksum verifies');
  t.is(ndType(b, 0, len), 134);
});

test('a peer reads back its /114 and the routes from an RA', (t) => {
  const b = new Uint8Array(200);
  const len = writeRouterAdvert(b, 0, ALL_NODES, peer114, [parsePrefix('2001:db8:77::/48')]);
  const ra = parseRouterAdvert(b, 0, len);
  t.truthy(ra);
  t.is(formatIPv6(ra!.prefix114), '2001:db8:9:10:c433:640a:f8e6:8000');
  t.is(ra!.validLifetime, 0xffffffff);
  t.deepEqual(
    ra!.routes.map((x) => `${formatIPv6(x.bytes)}/${x.length}`),
    ['2001:db8:77::/48'],
  );
  const w = writeRouterAdvert(b, 0, ALL_NODES, peer114, [], true);
  t.is(parseRouterAdvert(b, 0, w)!.validLifetime, 0);
});

test('RS as stock peers send it is recognised, with and without the link-layer option', (t) => {
  const b = new Uint8Array(100);
  let len = writeRouterSolicit(b, 0);
  t.is(len, 48);
  t.true(isRouterSolicit(b, 0, len));
  len = writeRouterSolicit(b, 0, undefined, Uint8Array.of(1, 2, 3, 4, 5, 6));
  t.is(len, 56);
  t.true(isRouterSolicit(b, 0, len));
});

test('ND validation rejects forwarded (hop limit < 255), bad checksum, bad code and truncation', (t) => {
  const b = new Uint8Array(100);
  const len = writeRouterSolicit(b, 0);
  const bad = (mutate: (x: Uint8Array) => void) => {
    const x = Uint8Array.from(b);
    mutate(x);
    return isRouterSolicit(x, 0, len);
  };
  t.false(
    bad((x) => {
      x[7] = 254;
    }),
  );
  t.false(
    bad((x) => {
      x[42] ^= 1;
    }),
  );
  t.false(
    bad((x) => {
      x[41] = 1;
    }),
  );
  t.false(isRouterSolicit(b, 0, len - 1));
});

test('NS/NA: target found, NA carries R+S and the target link-layer option', (t) => {
  const b = new Uint8Array(100);
  const src = makeAddress(prefix.bytes, parseIPv4('198.51.100.10'), 63718, 1);
  const len = writeNeighborSolicit(b, 0, src, ROUTER_LINK_LOCAL, ROUTER_LINK_LOCAL);
  t.is(neighborSolicitTarget(b, 0, len), 40 + 8);
  const router = makeAddress(prefix.bytes, parseIPv4('198.51.100.1'), 25790, 0);
  const na = new Uint8Array(100);
  const nlen = writeNeighborAdvert(na, 0, ROUTER_LINK_LOCAL, src, router, Uint8Array.of(0xbe, 0x64, 198, 51, 100, 1));
  t.is(nlen, 72);
  t.is(ndType(na, 0, nlen), 136);
  t.is(na[44], 0xc0);
  t.is(formatIPv6(na, 48), '2001:db8:9:10:c433:6401:64be:8000');
  t.deepEqual(Array.from(na.subarray(64, 72)), [2, 1, 0xbe, 0x64, 198, 51, 100, 1]);
});

test('Time Exceeded quotes the packet, goes back to its source, fits the MTU', (t) => {
  const inv = new Uint8Array(1280);
  const src = parseIPv6('2001:db8:9:10:c433:640a:f8e6:8001');
  const len0 = writeRouterSolicit(inv, 0, src); // any IPv6 packet will do as the invoking one
  inv[4] = 1240 >> 8;
  inv[5] = 1240 & 0xff; // pretend it is a full-size packet
  const out = new Uint8Array(1400);
  const router = parseIPv6('2001:db8:9:10:c433:6401:64be:8000');
  const len = writeIcmpError(out, 0, 3, 0, 0, router, inv, 0, 1280);
  t.true(len0 > 0);
  t.is(len, 1280);
  t.is(out[40], 3);
  t.is(formatIPv6(out, 8), '2001:db8:9:10:c433:6401:64be:8000');
  t.is(formatIPv6(out, 24), formatIPv6(src));
  t.is(upperChecksum(out, 0, 58, 40, len - 40), 0);
  t.deepEqual(Array.from(out.subarray(48, 88)), Array.from(inv.subarray(0, 40)));
});

test('property: every built ND packet verifies; parsers never throw on arbitrary bytes', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      (a, c) => {
        const b = new Uint8Array(200);
        const n1 = writeNeighborAdvert(b, 0, a, c, a, c.subarray(0, 6));
        if (upperChecksum(b, 0, 58, 40, n1 - 40) !== 0) return false;
        const n2 = writeRouterAdvert(b, 0, c, a, []);
        return upperChecksum(b, 0, 58, 40, n2 - 40) === 0;
      },
    ),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(300), (bytes, n) => {
      const len = Math.min(n, bytes.length);
      ndType(bytes, 0, len);
      parseRouterAdvert(bytes, 0, len);
      isRouterSolicit(bytes, 0, len);
      neighborSolicitTarget(bytes, 0, len);
      return true;
    }),
  );
  t.pass();
});
