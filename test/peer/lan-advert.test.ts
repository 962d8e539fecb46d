// The LAN-side Router Advertisement (agent/peer/lan-advert.ts), byte by byte: what Linux hosts act on.
import test from 'ava';
import {
  writeLanAdvert,
  LAN_PREFIX_PREFERRED_S,
  LAN_PREFIX_VALID_S,
  LAN_ROUTER_LIFETIME_S,
} from '../../agent/peer/lan-advert.js';
import { formatIPv6, parseIPv6 } from '../../lib/ip.js';

const NOW = parseIPv6('2001:db8:9:10:c433:640a:f8e6:8001'); // a peer address: lanip 1
const OLD = parseIPv6('2001:db8:9:10:c433:640a:eeee:8000');

function options(b: Uint8Array): { type: number; at: number }[] {
  const out = [];
  for (let o = 16; o < b.length; o += b[o + 1]! * 8) out.push({ type: b[o]!, at: o });
  return out;
}

test('an RA with the MTU, the current /114 on-link but not autonomous, and earlier ones at lifetime 0', (t) => {
  const b = writeLanAdvert({ current: NOW, withdrawn: [OLD], routing: true });
  const v = new DataView(b.buffer);
  t.is(b[0], 134);
  t.is(v.getUint16(6), LAN_ROUTER_LIFETIME_S, 'a default router');
  const opts = options(b);
  t.deepEqual(
    opts.map((o) => o.type),
    [5, 3, 3],
  );
  t.is(v.getUint32(opts[0]!.at + 4), 1280);
  const cur = opts[1]!.at;
  t.is(b[cur + 2], 114);
  t.is(b[cur + 3], 0x80, 'L=1 A=0: no SLAAC from a /114');
  t.is(v.getUint32(cur + 4), LAN_PREFIX_VALID_S);
  t.is(v.getUint32(cur + 8), LAN_PREFIX_PREFERRED_S);
  t.is(formatIPv6(b.subarray(cur + 16, cur + 32)), '2001:db8:9:10:c433:640a:f8e6:8000', 'the /114, lanip bits zero');
  const old = opts[2]!.at;
  t.is(v.getUint32(old + 4), 0);
  t.is(v.getUint32(old + 8), 0);
  t.is(formatIPv6(b.subarray(old + 16, old + 32)), '2001:db8:9:10:c433:640a:eeee:8000');
});

test('at stop: router lifetime 0 and every prefix at lifetime 0', (t) => {
  const b = writeLanAdvert({ current: NOW, withdrawn: [OLD], routing: false });
  const v = new DataView(b.buffer);
  t.is(v.getUint16(6), 0);
  for (const o of options(b).filter((x) => x.type === 3)) {
    t.is(v.getUint32(o.at + 4), 0);
    t.is(v.getUint32(o.at + 8), 0);
  }
});
