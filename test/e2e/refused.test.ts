// The router as an open relay into its own host: it sends with the host's own
// source address, so a peer (or any IPv6 host, through the kernel) naming
// another local IPv4 of the router host in a 6bed4 destination would reach
// services listening there. The reference topology's router has exactly such
// a second leg (wan1, 203.0.113.1); a UDP listener on the router host shows
// whether anything arrives.
import test from 'ava';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parsePrefix64 } from '../../lib/ip.js';
import { diff, drops, skipReason, title } from '../helpers/fixtures.js';

const METRICS = '127.0.0.1:9464';
const PORT = 7777;
const prefix = parsePrefix64(TOPO.prefix);
const at = (v4: string) => formatIPv6(makeAddress(prefix.bytes, parseIPv4(v4), PORT, 1));
const LISTENER = `const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => console.log('got', r.address + ':' + r.port, m.length));
s.bind(${PORT}, () => console.log('listening'));`;

(skipReason ? test.skip : test)(
  title('no relay or kernel send reaches another address of the router host, also one added while it runs'),
  async (t) => {
    const topo = await buildTopology({ tag: 'refuse', peerC: true });
    t.teardown(() => topo.destroy());
    const listener = topo.router.spawn([process.execPath, '-e', LISTENER]);
    await listener.waitFor(/listening/, 5000);
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]);
    const peer = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    const before = await drops(topo.router, METRICS);
    // A peer relays to the router host's second NIC; the Internet sends there through the kernel.
    await ping6(topo.peers.A, at(TOPO.routerV4C), { count: 2, interval: 0.2, timeoutS: 1 });
    await ping6(topo.isp, at(TOPO.routerV4C), { count: 2, interval: 0.2, timeoutS: 1 });
    // An address the host gains later (the router reads its local table again every few seconds).
    await topo.router.ip(['addr', 'add', '192.0.2.1/32', 'dev', 'lo']);
    await sleep(6500);
    await ping6(topo.peers.A, at('192.0.2.1'), { count: 2, interval: 0.2, timeoutS: 1 });
    await sleep(300);
    t.notRegex(listener.output(), /got/, 'nothing reached the listener on the router host');
    const d = diff(await drops(topo.router, METRICS), before);
    t.true((d.bad_destination ?? 0) >= 6, `each attempt is counted: ${JSON.stringify(d)}`);
    const ok = await ping6(topo.isp, peer.address, { count: 2 });
    t.is(ok.received, 2, 'ordinary peers are reached as before');
  },
);
