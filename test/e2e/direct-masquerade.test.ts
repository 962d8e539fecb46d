// Direct peer-to-peer between two plain Linux masquerades (no input firewall), in the lab: a probe that reaches the
// other NAT before its peer has sent anything there is taken by that NAT for itself, and the conntrack entry it leaves
// makes the NAT move the peer's own probe to another port, which the first NAT drops. The first probe to a peer is
// therefore hop-limited: it opens our own NAT's mapping and dies before the other NAT; the full probes after it cross.
// Asserted, for two plain masquerades and for a home router with a plain masquerade: both peers go direct, and then
// the router relays none of their pings.
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { addSecondNat, NAT_D, type SecondNat } from '../../lab/second-nat.js';
import { systemTool } from '../../agent/host/tools.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { rootSerial, title } from '../helpers/fixtures.js';

const METRICS = '127.0.0.1:9464';

interface Lab {
  topo: Topology;
  d: SecondNat;
  a: { proc: Proc; address: string };
  pd: { proc: Proc; address: string };
}

/** The lab with peers A and D, each NAT a plain masquerade unless it keeps its input firewall (a home router). */
async function lab(tag: string, firewall: { a: boolean; d: boolean }): Promise<Lab> {
  const topo = await buildTopology({ tag });
  let d: SecondNat | undefined;
  try {
    d = await addSecondNat(topo);
    // Plain masquerade: what comes in unsolicited is the NAT's own (and answered with port unreachable).
    if (!firewall.a) await topo.nat.run([systemTool('nft'), 'delete', 'table', 'ip', 'sixbed4_nat_firewall']);
    if (!firewall.d) await d.nat.run([systemTool('nft'), 'delete', 'table', 'ip', 'sixbed4_nat_firewall']);
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]);
    const [a, pd] = await Promise.all([
      startPeerIn(topo.peers.A, ['--router', TOPO.routerV4]),
      startPeerIn(d.peer, ['--router', TOPO.routerV4]),
    ]);
    return { topo, d, a, pd };
  } catch (err) {
    await d?.destroy();
    await topo.destroy();
    throw err;
  }
}

async function relayed(l: Lab): Promise<number> {
  const samples = [...(await scrape(l.topo.router, METRICS))].filter(
    ([k]) => k.startsWith('sixbed4_router_packets_total{') && k.includes('direction="relay"'),
  );
  if (!samples.length) throw new Error("the router's metrics have no relay counter");
  return samples.reduce((sum, [, v]) => sum + v, 0);
}

const cases = [
  { name: 'two plain masquerades (no input firewall)', tag: 'dmasq', firewall: { a: false, d: false } },
  { name: 'a home router (input firewall) and a plain masquerade', tag: 'dmix', firewall: { a: true, d: false } },
];

for (const c of cases) {
  rootSerial(title(`peers behind ${c.name} go direct: the router relays none of their pings`), async (t) => {
    const l = await lab(c.tag, c.firewall);
    t.teardown(async () => {
      await l.d.destroy();
      await l.topo.destroy();
    });
    const r = await ping6(l.topo.peers.A, l.pd.address, { count: 40, interval: 0.1, timeoutS: 1 });
    t.true(r.received >= 38, r.output);
    t.regex(l.a.proc.output(), new RegExp(`direct path to ${NAT_D.natV4}:\\d+: it answered`), 'A went direct');
    t.regex(l.pd.proc.output(), new RegExp(`direct path to ${TOPO.natV4}:\\d+: it answered`), 'D went direct');
    const before = await relayed(l);
    const there = await ping6(l.topo.peers.A, l.pd.address, { count: 20, interval: 0.05 });
    const back = await ping6(l.d.peer, l.a.address, { count: 20, interval: 0.05 });
    t.is(there.received + back.received, 40, there.output + back.output);
    t.is(await relayed(l), before, 'the router relays none of the 80 packets');
    t.log(
      `${40 - r.received}/40 pings lost while going direct; ${before} packets relayed until then, none over 40 echo pairs`,
    );
  });
}
