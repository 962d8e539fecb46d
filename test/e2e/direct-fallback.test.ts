// A direct path cut both ways mid-stream, in the lab: peers A and D behind two home-router NATs (lab/second-nat.ts)
// go direct, a stream of pings every 50 ms runs from A to D, and a second in both NATs start dropping what comes from
// the other one. Both peers must give the direct path up and the stream must go on through the router: each peer says
// its path to the other is gone, and the last pings of the stream and a burst after it are answered while the router's
// relay counter moves by every one of their packets. The loss and when each side switched are printed (what
// bench-like figures the issue asks for); no timing is asserted, the machine being shared.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { addSecondNat, NAT_D, type SecondNat } from '../../lab/second-nat.js';
import { systemTool } from '../../agent/host/tools.js';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { rootSerial, skipReason, title } from '../helpers/fixtures.js';

const METRICS = '127.0.0.1:9464';
const s = {} as {
  topo: Topology;
  d: SecondNat;
  a: { proc: Proc; address: string };
  pd: { proc: Proc; address: string };
};

test.before(async () => {
  if (skipReason) return;
  s.topo = await buildTopology({ tag: 'dfall' });
  s.d = await addSecondNat(s.topo);
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

/** The router's relay counter over every path label; throws when missing, so a flat counter is never 0 = 0. */
async function relayed(): Promise<number> {
  const samples = [...(await scrape(s.topo.router, METRICS))].filter(
    ([k]) => k.startsWith('sixbed4_router_packets_total{') && k.includes('direction="relay"'),
  );
  if (!samples.length) throw new Error("the router's metrics have no relay counter");
  return samples.reduce((sum, [, v]) => sum + v, 0);
}

/** Pings A -> D until both peers say the other answered their probe. */
async function untilDirect(): Promise<void> {
  const both = Promise.all([
    s.a.proc.waitFor(new RegExp(`direct path to ${NAT_D.natV4}:\\d+: it answered`), 15_000),
    s.pd.proc.waitFor(new RegExp(`direct path to ${TOPO.natV4}:\\d+: it answered`), 15_000),
  ]);
  let done = false;
  void both
    .finally(() => {
      done = true;
    })
    .catch(() => undefined);
  while (!done) await ping6(s.topo.peers.A, s.pd.address, { count: 1, timeoutS: 1 });
  await both;
}

/** On `nat`, drops every UDP datagram forwarded from `from` (the other NAT's public address). */
const cut = (nat: Netns, from: string) =>
  nat.run([systemTool('nft'), '-f', '-'], {
    input: `table ip cut {\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ip saddr ${from} meta l4proto udp drop\n  }\n}\n`,
  });

/** The first line of p's log after line `from` saying its direct path to `to` is gone, and that line's time. */
function gone(p: Proc, from: number, to: string): { text: string; at: number } | undefined {
  const line = p
    .lines()
    .slice(from)
    .find((l) => new RegExp(`direct path to ${to}:\\d+ gone`).test(l.text));
  return line && { text: line.text, at: Date.parse(/^(\S+)/.exec(line.text)![1]!) };
}

rootSerial(
  title('a direct path cut both ways mid-stream: both peers go back to the router and the stream goes on through it'),
  async (t) => {
    await untilDirect();
    const direct0 = await relayed();
    const warm = await ping6(s.topo.peers.A, s.pd.address, { count: 10, interval: 0.05 });
    t.is(warm.received, 10, warm.output);
    t.is(
      await relayed(),
      direct0,
      `before the cut the pings go direct: the router relays none of them\n${s.a.proc.output().slice(-1500)}\n${s.pd.proc.output().slice(-1500)}`,
    );

    const [fromA, fromD] = [s.a.proc.lines().length, s.pd.proc.lines().length];
    const stream = ping6(s.topo.peers.A, s.pd.address, { count: 100, interval: 0.05, timeoutS: 1 });
    await new Promise((r) => setTimeout(r, 1000));
    const cutAt = Date.now();
    await Promise.all([cut(s.d.nat, TOPO.natV4), cut(s.topo.nat, NAT_D.natV4)]);
    t.teardown(() =>
      Promise.all(
        [s.d.nat, s.topo.nat].map((ns) =>
          ns.run([systemTool('nft'), 'delete', 'table', 'ip', 'cut']).catch(() => undefined),
        ),
      ),
    );
    const r = await stream;

    const goneA = gone(s.a.proc, fromA, NAT_D.natV4),
      goneD = gone(s.pd.proc, fromD, TOPO.natV4);
    t.truthy(goneA, `A gave its direct path to D up: ${s.a.proc.output().slice(-2000)}`);
    t.truthy(goneD, `D gave its direct path to A up: ${s.pd.proc.output().slice(-2000)}`);
    const seqs = new Set([...r.output.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
    t.true(
      [91, 92, 93, 94, 95, 96, 97, 98, 99, 100].every((q) => seqs.has(q)),
      `the last pings of the stream came back: ${r.output.slice(-600)}`,
    );

    // Now through the router both ways: every request and reply of a burst is relayed by it.
    const before = await relayed();
    const after1 = await ping6(s.topo.peers.A, s.pd.address, { count: 10, interval: 0.05 });
    t.is(after1.received, 10, after1.output);
    const after = await relayed();
    t.true(after - before >= 20, `the router relayed the burst's 10 requests and 10 replies (${before} -> ${after})`);

    t.log(
      `cut both ways: ${r.sent - r.received}/${r.sent} pings lost (every 50 ms, ~${(r.sent - r.received) * 50} ms); ` +
        `A gave up ${goneA!.at - cutAt} ms after the cut (${/gone \(([^)]*)\)/.exec(goneA!.text)?.[1]}), ` +
        `D ${goneD!.at - cutAt} ms (${/gone \(([^)]*)\)/.exec(goneD!.text)?.[1]})`,
    );
  },
);
