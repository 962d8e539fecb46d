// Direct peer-to-peer between two plain Linux masquerades (no input firewall), in the lab: a probe that reaches the
// other NAT before its peer has sent anything there is taken by that NAT for itself, and the conntrack entry it leaves
// makes the NAT move the peer's own probe to another port, which the first NAT drops. The first probe to a peer is
// therefore hop-limited: it opens our own NAT's mapping and dies before the other NAT; the full probes after it cross.
// Asserted: both peers go direct, and then the router relays none of their pings.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { addSecondNat, NAT_D, type SecondNat } from '../../lab/second-nat.js';
import { systemTool } from '../../agent/host/tools.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { rootSerial, skipReason, title } from '../helpers/fixtures.js';

const METRICS = '127.0.0.1:9464';
const s = {} as { topo: Topology; d: SecondNat; a: { proc: Proc; address: string }; pd: { proc: Proc; address: string } };

test.before(async () => {
  if (skipReason) return;
  s.topo = await buildTopology({ tag: 'dmasq' });
  s.d = await addSecondNat(s.topo);
  // Plain masquerade: what comes in unsolicited is the NAT's own (and answered with port unreachable).
  await Promise.all([s.topo.nat, s.d.nat].map((ns) => ns.run([systemTool('nft'), 'delete', 'table', 'ip', 'sixbed4_nat_firewall'])));
  await startRouterIn(s.topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]);
  [s.a, s.pd] = await Promise.all([
    startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4]),
    startPeerIn(s.d.peer, ['--router', TOPO.routerV4]),
  ]);
});

test.after.always(async () => {
  await s.d?.destroy();
  await s.topo?.destroy();
});

async function relayed(): Promise<number> {
  const samples = [...(await scrape(s.topo.router, METRICS))]
    .filter(([k]) => k.startsWith('sixbed4_router_packets_total{') && k.includes('direction="relay"'));
  if (!samples.length) throw new Error('the router\'s metrics have no relay counter');
  return samples.reduce((sum, [, v]) => sum + v, 0);
}

rootSerial(title('peers behind two plain masquerades (no input firewall) go direct: the router relays none of their pings'), async (t) => {
  const r = await ping6(s.topo.peers.A, s.pd.address, { count: 40, interval: 0.1, timeoutS: 1 });
  t.true(r.received >= 38, r.output);
  t.regex(s.a.proc.output(), new RegExp(`direct path to ${NAT_D.natV4}:\\d+: it answered`), 'A went direct');
  t.regex(s.pd.proc.output(), new RegExp(`direct path to ${TOPO.natV4}:\\d+: it answered`), 'D went direct');
  const before = await relayed();
  const there = await ping6(s.topo.peers.A, s.pd.address, { count: 20, interval: 0.05 });
  const back = await ping6(s.d.peer, s.a.address, { count: 20, interval: 0.05 });
  t.is(there.received + back.received, 40, there.output + back.output);
  t.is(await relayed(), before, 'the router relays none of the 80 packets');
  t.log(`${40 - r.received}/40 pings lost while going direct; relay counter flat at ${before} over 40 echo pairs`);
});
