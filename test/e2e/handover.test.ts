// A router handing over to its successor, as the node agent's routers do in a
// rolling update (handover: the successor adopts the tunnel and joins the UDP
// port; the old one leaves both when it sees the tunnel claimed). Peers keep
// their addresses and traffic goes on; with the fast path (the suite's second
// run), the old router's programs go with it, the new one's take over, and not
// a ping is lost.
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn } from '../../lab/sixbed4.js';
import { attachedPrograms, labFastPath } from '../../lab/fast-path.js';
import { forwarded, skipReason, title } from '../helpers/fixtures.js';
import { repliesOf } from '../host/hostlab.js';

const ROUTER = fileURLToPath(new URL('../helpers/handover-router.js', import.meta.url));
const fastPath = labFastPath() ? 'on' : 'off';

async function startRouter(topo: Topology, metrics: string): Promise<Proc> {
  const p = topo.router.spawn([
    process.execPath,
    ROUTER,
    JSON.stringify({ prefix: TOPO.prefix, listen: TOPO.routerV4, metrics, fastPath, fastPathXdp: true }),
  ]);
  try {
    await p.waitFor(/router ready/, 10_000);
  } catch (err) {
    await p.stop('SIGKILL');
    throw err;
  }
  return p;
}

(skipReason ? test.skip : test)(
  title(`a router hands over to its successor: the peer keeps its address and the pings go on (fast path ${fastPath})`),
  async (t) => {
    const topo = await buildTopology({ tag: 'handover' });
    t.teardown(() => topo.destroy());
    const old = await startRouter(topo, '127.0.0.1:9464');
    t.teardown(() => old.stop('SIGKILL'));
    const peer = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    t.is((await ping6(topo.peers.A, TOPO.ispV6, { count: 2 })).received, 2);
    const attached = async () => ({
      uplink: (await attachedPrograms(topo.router, TOPO.routerWanIf)).ingress,
      tun: (await attachedPrograms(topo.router, '6bed4')).egress,
    });
    const one = fastPath === 'on' ? 1 : 0;
    t.deepEqual(await attached(), { uplink: one, tun: one });

    // Pings every 50 ms across the handover, numbered. The TypeScript router loses what waits unread in its sockets
    // and TUN queue when it closes them (here 0 or 1 of them); the fast path queues nothing, and loses nothing.
    const pings = topo.peers.A.spawn(['ping', '-6', '-n', '-i', '0.05', '-W', '2', TOPO.ispV6]);
    await pings.waitFor(/icmp_seq=5 /, 10_000);
    const next = await startRouter(topo, '127.0.0.1:9465');
    t.teardown(() => next.stop('SIGKILL'));
    t.is(await old.stop('SIGTERM', 15_000), 0);
    t.regex(old.output(), /handed over to the next router/);
    const handedAt = repliesOf(pings).last;
    await pings.waitFor(new RegExp(`icmp_seq=${handedAt + 20} `), 10_000);
    await pings.stop('SIGINT');
    const r = repliesOf(pings);
    t.log(`pings lost at the handover (at ${handedAt}): ${r.missing.length ? r.missing.join(', ') : 'none'}`);
    t.deepEqual(
      fastPath === 'on' ? r.missing : r.missing.filter((s) => s > handedAt + 5),
      [],
      `replies up to ${r.last}, the handover at ${handedAt}: none missing ${fastPath === 'on' ? '' : 'once the old router has gone'}`,
    );
    t.true(r.last >= handedAt + 20);

    // The successor forwards (with the fast path: its programs, and only they, are attached).
    // Every reply after the handover went through the successor (the old router had stopped): 20 less those lost
    // in flight at the switch (a ping in the old router's queue).
    const after = [...r.seqs].filter((q) => q > handedAt).length;
    const m = await scrape(topo.router, '127.0.0.1:9465');
    t.true(
      forwarded(m, 'udp_to_tun') >= after && forwarded(m, 'tun_to_udp') >= after,
      `the successor carried the ${after} pings answered after the handover: ${forwarded(m, 'udp_to_tun')} in, ${forwarded(m, 'tun_to_udp')} out`,
    );
    if (fastPath === 'on') {
      t.true((m.get('sixbed4_router_packets_total{direction="udp_to_tun",path="fast"}') ?? 0) >= after);
    }
    t.deepEqual(await attached(), { uplink: one, tun: one }, "the old router's programs went with it");
    if (fastPath === 'on') {
      // The old router held the uplink's XDP hook until it exited; the successor takes it then.
      await next.waitFor(/decapsulated at wan0's XDP hook/, 10_000);
      t.is((await attachedPrograms(topo.router, TOPO.routerWanIf)).xdp, 1, "the successor's XDP stage");
    }
    t.is((await ping6(topo.isp, peer.address, { count: 2 })).received, 2, 'the peer kept its address');
    t.is(await next.stop('SIGINT'), 0);
    const left = await attachedPrograms(topo.router, TOPO.routerWanIf);
    t.deepEqual([left.ingress, left.xdp], [0, 0], 'nothing left on the uplink');
  },
);
