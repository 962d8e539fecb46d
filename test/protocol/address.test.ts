import test from 'ava';
import fc from 'fast-check';
import { addressIPv4, addressLanip, addressPort, linkLayer, makeAddress } from '../../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';

const prefix = parsePrefix64('2001:db8:9:10::/64').bytes;

test('worked example of the wire notes: peer 198.51.100.10:63718 lanip 1', (t) => {
  const a = makeAddress(prefix, parseIPv4('198.51.100.10'), 63718, 1);
  t.is(formatIPv6(a), '2001:db8:9:10:c433:640a:f8e6:8001');
});

test('router address 198.51.100.1:25790 lanip 0', (t) => {
  t.is(formatIPv6(makeAddress(prefix, parseIPv4('198.51.100.1'), 25790, 0)), '2001:db8:9:10:c433:6401:64be:8000');
});

test('decoding gives back IPv4 (with its moved bits), port and lanip', (t) => {
  const a = parseIPv6('2001:db8:9:10:c433:640a:f8e6:8001');
  t.is(addressIPv4(a, 0), parseIPv4('198.51.100.10'));
  t.is(addressPort(a, 0), 63718);
  t.is(addressLanip(a, 0), 1);
});

test('link-layer form: port little-endian, then IPv4 (router 25790 on 145.136.0.1)', (t) => {
  t.deepEqual(Array.from(linkLayer(parseIPv4('145.136.0.1'), 25790)), [0xbe, 0x64, 0x91, 0x88, 0x00, 0x01]);
});

test('property: encode/decode round trip for every IPv4, port and lanip, at any offset', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0x3fff }),
      fc.uint8Array({ minLength: 8, maxLength: 8 }),
      fc.integer({ min: 0, max: 40 }),
      (v4, port, lanip, pfx, off) => {
        const buf = new Uint8Array(off + 16);
        const a = makeAddress(pfx, v4, port, lanip);
        buf.set(a, off);
        return (
          addressIPv4(buf, off) === v4 &&
          addressPort(buf, off) === port &&
          addressLanip(buf, off) === lanip &&
          (a[8]! & 0x03) === 0 &&
          a.subarray(0, 8).every((b, i) => b === pfx[i])
        );
      },
    ),
  );
  t.pass();
});

test('property: distinct (IPv4, port) pairs never share a /114', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 1, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 1, max: 0xffff }),
      (v4a, pa, v4b, pb) => {
        fc.pre(v4a !== v4b || pa !== pb);
        const a = makeAddress(prefix, v4a, pa, 0),
          b = makeAddress(prefix, v4b, pb, 0);
        return a.some((x, i) => x !== b[i]);
      },
    ),
  );
  t.pass();
});
