// `sixbed4 peer --port N`: a server behind a home NAT keeps one 6bed4 address to publish, because the NAT forwards
// a fixed public port to the peer's fixed local port. The lab's NAT gets the port forward a home router would have
// (DNAT in, and the same port out, ahead of its masquerade); the peer is stopped, the NAT forgets every mapping, and
// the restarted peer gets the same address, reachable from the ISP.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { systemTool } from '../../agent/host/tools.js';
import { ping6, spawnSixbed4, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { addressIPv4, addressPort } from '../../agent/protocol/address.js';
import { formatIPv4, parseIPv6 } from '../../lib/ip.js';
import { skipReason, title } from '../helpers/fixtures.js';

const FORWARDED = 40000;
const serial = skipReason ? test.serial.skip : test.serial;
let topo: Topology;

test.before(async () => {
  if (skipReason) return;
  topo = await buildTopology({ tag: 'pport' });
  await topo.nat.run([systemTool('nft'), '-f', '-'], {
    input: `table ip sixbed4_forward {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${TOPO.natWanIf}" udp dport ${FORWARDED} dnat to ${TOPO.peerAV4}:${FORWARDED}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 1; policy accept;
    oifname "${TOPO.natWanIf}" ip saddr ${TOPO.peerAV4} udp sport ${FORWARDED} snat to ${TOPO.natV4}:${FORWARDED}
  }
}
`,
  });
  await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4]);
});

test.after.always(async () => {
  await topo?.destroy();
});

serial(
  title('--port behind a port forward: the same 6bed4 address after a restart, reachable from the ISP'),
  async (t) => {
    const first = await startPeerIn(topo.peers.A, [
      '--router',
      TOPO.routerV4,
      '--port',
      String(FORWARDED),
      '--default-route',
    ]);
    const a = parseIPv6(first.address);
    t.is(formatIPv4(addressIPv4(a, 0)), TOPO.natV4);
    t.is(addressPort(a, 0), FORWARDED, 'the address carries the forwarded port');
    t.is(await first.proc.stop(), 0);
    // Whatever the NAT remembered of the first run is gone: only the forward keeps the port.
    await topo.nat.run([systemTool('conntrack'), '-F']).catch(() => undefined);
    const again = await startPeerIn(topo.peers.A, [
      '--router',
      TOPO.routerV4,
      '--port',
      String(FORWARDED),
      '--default-route',
    ]);
    t.teardown(() => again.proc.stop());
    t.is(again.address, first.address, 'a restart keeps the address');
    for (const [from, to] of [
      [topo.peers.A, TOPO.ispV6],
      [topo.isp, again.address],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, r.output);
    }
  },
);

serial(title('--port already taken: one line saying so, exit 2, no tunnel left'), async (t) => {
  const holder = topo.peers.B.spawn([
    process.execPath,
    '-e',
    `const s=require('dgram').createSocket('udp4');s.bind(${FORWARDED},()=>console.log('bound'))`,
  ]);
  await holder.waitFor(/bound/, 5000);
  try {
    const p = spawnSixbed4(topo.peers.B, ['peer', '--router', TOPO.routerV4, '--port', String(FORWARDED)]);
    t.is((await p.exited).code, 2);
    t.regex(
      p.output(),
      new RegExp(
        `UDP port ${FORWARDED} on 0\\.0\\.0\\.0 is in use: is another peer running\\? Stop it or choose another --port`,
      ),
    );
    const links = await topo.peers.B.json<{ ifname: string }[]>(['link', 'show']);
    t.false(links.some((l) => l.ifname === '6bed4peer'));
  } finally {
    await holder.stop();
  }
});
