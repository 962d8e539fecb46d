// The peer's forwarding decisions on crafted datagrams from its router.
import test from 'ava';
import { PeerEngine } from '../../agent/peer/engine.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { parseIPv4, parsePrefix64 } from '../../lib/ip.js';
import { writeRouterAdvert, type RouterAdvert } from '../../agent/protocol/nd.js';

const ROUTER_V4 = parseIPv4('198.51.100.1');
const prefix = parsePrefix64('2001:db8:9:10::/64');

function deliverRA(e: PeerEngine, peer114: Uint8Array): void {
  const rx = e.udpRx;
  rx.off[0] = 0;
  rx.addr[0] = ROUTER_V4;
  rx.port[0] = 25790;
  rx.len[0] = writeRouterAdvert(
    rx.data,
    0,
    Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
    peer114,
    [],
  );
  e.fromRouter(1);
}

test("an RA whose /114 has port word 0 is refused: that space is the router host's own", (t) => {
  const seen: RouterAdvert[] = [];
  const e = new PeerEngine(ROUTER_V4, 25790, (ra) => seen.push(ra), 4);
  deliverRA(e, makeAddress(prefix.bytes, parseIPv4('198.51.100.20'), 0, 0));
  t.is(seen.length, 0);
  t.is(e.counters.dropNd, 1);
  deliverRA(e, makeAddress(prefix.bytes, parseIPv4('198.51.100.20'), 40000, 0));
  t.is(seen.length, 1, 'a real /114 is taken');
});
