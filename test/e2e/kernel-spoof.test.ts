// Spoofing through the kernel: Linux forwards IPv6 without a reverse-path
// check, so a host on the Internet can send packets whose source is another
// peer's 6bed4 address. A peer that trusts its /64 (the originator check
// promises that a source in it is who it says) must never receive them.
import test from 'ava';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { diff, drops, forwarded, skipReason, title } from '../helpers/fixtures.js';

const METRICS = '127.0.0.1:9464';

(skipReason ? test.skip : test)(
  title("a packet from the Internet with another peer's address as source never reaches a peer"),
  async (t) => {
    const topo = await buildTopology({ tag: 'kspoof' });
    t.teardown(() => topo.destroy());
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]);
    const [A, B] = await Promise.all([
      startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']),
      startPeerIn(topo.peers.B, ['--router', TOPO.routerV4, '--default-route']),
    ]);
    // The ISP side claims B's address and pings A with it.
    await topo.isp.ip(['-6', 'addr', 'add', `${B.address}/128`, 'dev', 'lo', 'nodad']);
    const before = await drops(topo.router, METRICS);
    const m0 = await scrape(topo.router, METRICS);
    await ping6(topo.isp, `${A.address}`, { count: 3, timeoutS: 1 }).then(() => undefined);
    const spoof = await topo.isp.exec(
      ['ping', '-6', '-n', '-c', '3', '-i', '0.2', '-W', '1', '-I', B.address, A.address],
      { timeoutMs: 20_000 },
    );
    const m1 = await scrape(topo.router, METRICS);
    t.is(
      forwarded(m1, 'tun_to_udp') - forwarded(m0, 'tun_to_udp'),
      3,
      `only the honest pings went to A: ${spoof.stdout}`,
    );
    t.is(diff(await drops(topo.router, METRICS), before).spoofed_from_kernel, 3);
  },
);
