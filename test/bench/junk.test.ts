// The flood's junk catalogue, fed to the engine: every kind is dropped or
// answered (rate limited), none is forwarded to the kernel or relayed, and
// nothing throws.
import test from 'ava';
import { Engine } from '../../agent/router/engine.js';
import { JUNK, junkSet, prng } from '../../bench/junk.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';

const prefix = parsePrefix64('2001:db8:9:10::/64');
const target = {
  prefix,
  own: { ipv4: parseIPv4('203.0.113.2'), port: 41000 },
  routerV4: parseIPv4('198.51.100.1'),
  routerPort: 25790,
  native: parseIPv6('2001:db8:ffff::1'),
};

test('no kind of junk is forwarded to the kernel or relayed, except the valid packet with trailing bytes', (t) => {
  const e = new Engine({ prefix, listenIPv4: target.routerV4, port: 25790, routes: [] }, 1);
  const r = prng(7);
  for (const [name, make] of Object.entries(JUNK)) {
    for (let k = 0; k < 20; k++) {
      const d = make(r, target);
      e.udpRx.off[0] = 0;
      e.udpRx.data.set(d.subarray(0, e.udpRx.slot), 0);
      e.udpRx.len[0] = d.length;
      e.udpRx.addr[0] = target.own.ipv4;
      e.udpRx.port[0] = target.own.port;
      e.fromPeers(1, 1000 + k);
      const through = e.nToTun + e.nRelay;
      t.is(through, name === 'lyingShorter' ? 1 : 0, name);
    }
  }
  t.is(junkSet(target, 100).length, 100);
});
