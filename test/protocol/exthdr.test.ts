import test from 'ava';
import { noErrorReply } from '../../agent/protocol/exthdr.js';

/** An IPv6 header with next header nh, then the given extension/upper bytes. */
function pkt(nh: number, rest: number[]): Uint8Array {
  const b = new Uint8Array(40 + rest.length);
  b[0] = 0x60;
  b[4] = rest.length >> 8;
  b[5] = rest.length & 0xff;
  b[6] = nh;
  b[7] = 1;
  b.set(rest, 40);
  return b;
}
const ext = (next: number, extra8 = 0) => [next, extra8, ...new Array(6 + extra8 * 8).fill(0)];

test('ICMPv6 errors are recognised directly and behind any walkable chain', (t) => {
  t.true(noErrorReply(pkt(58, [1, 0, 0, 0]), 0, 44));
  t.false(noErrorReply(pkt(58, [128, 0, 0, 0]), 0, 44));
  const chain = [...ext(43), ...ext(60, 1), ...[58, 0, 0, 0, 0, 0, 0, 0], 3, 0, 0, 0];
  t.true(noErrorReply(pkt(0, [...ext(43, 0).slice(0, 0), ...chain]), 0, 40 + chain.length));
  t.false(noErrorReply(pkt(0, [...ext(17)]), 0, 48), 'UDP behind hop-by-hop');
  t.false(noErrorReply(pkt(17, []), 0, 40));
});

test('chains that cannot be walked are not answered: truncated, too long, later fragments', (t) => {
  t.true(noErrorReply(pkt(0, [58, 4, 0, 0, 0, 0, 0, 0]), 0, 48), 'header length beyond the packet');
  const long = Array.from({ length: 9 }, () => ext(60)).flat();
  t.true(noErrorReply(pkt(60, long), 0, 40 + long.length));
  t.true(noErrorReply(pkt(44, [58, 0, 0x00, 0x08, 0, 0, 0, 1]), 0, 48), 'fragment offset 1');
  t.false(noErrorReply(pkt(44, [17, 0, 0, 0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), 0, 56), 'first fragment of UDP');
});
