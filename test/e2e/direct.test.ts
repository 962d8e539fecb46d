// Direct peer-to-peer in the lab. Peer A sits behind the lab's NAT, peer D behind a second one (second-nat.ts); both
// NATs map endpoint-independently and filter by endpoint, so a direct path needs both to probe. Once A and D have
// answered each other's probes their traffic goes straight between the NATs: the router's relay counter stays flat.
// A and B share a NAT that does not hairpin: their probes never get an answer and they keep going through the router.
// When the direct path breaks mid-stream (D's NAT starts dropping what comes from A's), the peers go back through
// the router and the stream goes on. A peer with --no-direct (as the stock peer, which never goes direct) still
// reaches a direct-capable one, through the router. Behind an address-and-port-dependent NAT (a new random port for
// every destination) the probes cannot be answered and a peer stays on the router.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { addSecondNat, NAT_D, type SecondNat } from '../../lab/second-nat.js';
import { systemTool } from '../../agent/host/tools.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { skipReason, title } from '../helpers/fixtures.js';
import { ECHO_SERVER, LINES_CLIENT } from '../helpers/tcp-echo.js';

const METRICS = '127.0.0.1:9464';
const RELAY = 'sixbed4_router_packets_total{';
const serial = skipReason ? test.serial.skip : test.serial;
const s = {} as {
  topo: Topology;
  d: SecondNat;
  a: { proc: Proc; address: string };
  b: { proc: Proc; address: string };
  pd: { proc: Proc; address: string };
};

test.before(async () => {
  if (skipReason) return;
  s.topo = await buildTopology({ tag: 'direct' });
  s.d = await addSecondNat(s.topo);
  await startRouterIn(s.topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]);
  [s.a, s.b, s.pd] = await Promise.all([
    startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4]),
    startPeerIn(s.topo.peers.B, ['--router', TOPO.routerV4]),
    startPeerIn(s.d.peer, ['--router', TOPO.routerV4]),
  ]);
});

test.after.always(async () => {
  await s.d?.destroy();
  await s.topo?.destroy();
});

/** The router's relay counter (every path label of it); throws when it is missing, so "flat" is never 0 = 0 by accident. */
const relayed = async () => {
  const samples = [...(await scrape(s.topo.router, METRICS))].filter(
    ([k]) => k.startsWith(RELAY) && k.includes('direction="relay"'),
  );
  if (!samples.length) throw new Error("the router's metrics have no relay counter");
  return samples.reduce((sum, [, v]) => sum + v, 0);
};

/** Pings from `from` to `to` until both peers say they went direct (each needs the other's probe answered). */
async function untilDirect(
  from: Proc,
  fromNs: import('../../lab/netns.js').Netns,
  to: Proc,
  target: string,
  fromPublic: string,
  toPublic: string,
) {
  const both = Promise.all([
    from.waitFor(new RegExp(`direct path to ${toPublic}:\\d+: it answered`), 15_000),
    to.waitFor(new RegExp(`direct path to ${fromPublic}:\\d+: it answered`), 15_000),
  ]);
  let done = false;
  void both
    .finally(() => {
      done = true;
    })
    .catch(() => undefined);
  while (!done) await ping6(fromNs, target, { count: 1, timeoutS: 1 });
  await both;
}

serial(
  title('peers behind two endpoint-independent NATs go direct: pings both ways, the router relays none of them'),
  async (t) => {
    await untilDirect(s.a.proc, s.topo.peers.A, s.pd.proc, s.pd.address, TOPO.natV4, NAT_D.natV4);
    const before = await relayed();
    const there = await ping6(s.topo.peers.A, s.pd.address, { count: 20, interval: 0.05 });
    const back = await ping6(s.d.peer, s.a.address, { count: 20, interval: 0.05 });
    t.is(there.received, 20, there.output);
    t.is(back.received, 20, back.output);
    const after = await relayed();
    t.is(after, before, `the router's relay counter stays flat (${before} -> ${after}) for 80 packets between A and D`);
    t.log(`relay counter before/after 40 direct echo pairs: ${before} / ${after}`);
  },
);

serial(
  title('peers behind one NAT that does not hairpin: no answer to their probes, so everything goes through the router'),
  async (t) => {
    const before = await relayed();
    const r = await ping6(s.topo.peers.A, s.b.address, { count: 10, interval: 0.05 });
    t.is(r.received, 10, r.output);
    const after = await relayed();
    t.true(after - before >= 20, `the router relayed the requests and the replies (${before} -> ${after})`);
    t.notRegex(s.a.proc.output(), new RegExp(`direct path to ${TOPO.natV4}:`), 'A never went direct to B');
    t.log(`relay counter before/after 10 echo pairs through the router: ${before} / ${after}`);
  },
);

serial(
  title(
    'a direct path broken mid-stream: back through the router within seconds, the stream and a TCP connection go on',
  ),
  async (t) => {
    await untilDirect(s.a.proc, s.topo.peers.A, s.pd.proc, s.pd.address, TOPO.natV4, NAT_D.natV4).catch(
      () => undefined,
    );
    t.regex(s.a.proc.output(), new RegExp(`direct path to ${NAT_D.natV4}:\\d+: it answered`));
    const server = s.d.peer.spawn([process.execPath, '-e', ECHO_SERVER]);
    t.teardown(() => server.stop());
    await server.waitFor(/listening/, 10_000);
    // A stream of pings from A to D, 10 per second for 10 s, and lines over TCP as often for 8 s; a second in, D's NAT
    // starts dropping all that comes from A's.
    const stream = ping6(s.topo.peers.A, s.pd.address, { count: 100, interval: 0.1, timeoutS: 1 });
    const tcp = s.topo.peers.A.exec([process.execPath, '-e', LINES_CLIENT, s.pd.address, '80'], { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 1000));
    const seenBefore = s.a.proc.lines().length;
    const broke = Date.now();
    await s.d.nat.run([systemTool('nft'), '-f', '-'], {
      input: `table ip cut {\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ip saddr ${TOPO.natV4} meta l4proto udp drop\n  }\n}\n`,
    });
    const r = await stream;
    const echo = await tcp;
    t.is(echo.code, 0, `the TCP connection survived: ${echo.stdout}${echo.stderr}`);
    // The line saying A gave the direct path up, after the cut (an idle path is never given up, only checked).
    const gone = s.a.proc
      .lines()
      .slice(seenBefore)
      .find((l) => new RegExp(`direct path to ${NAT_D.natV4}:\\d+ gone`).test(l.text))?.text;
    t.truthy(gone, s.a.proc.output());
    const seqs = [...r.output.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
    t.true(seqs.includes(100) && seqs.includes(95), `the last pings of the stream came back: ${r.output.slice(-400)}`);
    const switchMs = Date.parse(/^(\S+)/.exec(gone!)![1]!) - broke;
    t.log(
      `A gave up the direct path ${switchMs} ms after the cut; ${r.received}/${r.sent} pings of the stream answered`,
    );
  },
);

serial(
  title('a peer that never goes direct (--no-direct, as the stock peer) and one that does still reach each other'),
  async (t) => {
    const plain = await startPeerIn(s.topo.peers.B, ['--router', TOPO.routerV4, '--no-direct', '--tun', 'plain6']);
    t.teardown(() => plain.proc.stop());
    for (const [from, to] of [
      [s.topo.peers.B, s.pd.address],
      [s.d.peer, plain.address],
    ] as const) {
      const r = await ping6(from, to, { count: 5, interval: 0.1 });
      t.is(r.received, 5, r.output);
    }
    t.notRegex(plain.proc.output(), /direct path/);
  },
);

serial(
  title(
    'a peer behind an address-and-port-dependent NAT: its probes leave from other ports, so it stays on the router',
  ),
  async (t) => {
    // D's NAT now picks a random port for every new destination (fully-random masquerade): the port D's address embeds
    // is only the one its router sees. D restarts behind it and gets an address with such a port.
    const nft = systemTool('nft');
    await s.d.nat.run([nft, 'delete', 'table', 'ip', 'cut']).catch(() => undefined);
    await s.d.nat.run([nft, 'flush', 'chain', 'ip', 'sixbed4_nat', 'postrouting']);
    await s.d.nat.run([
      nft,
      'add',
      'rule',
      'ip',
      'sixbed4_nat',
      'postrouting',
      'oifname',
      NAT_D.natWanIf,
      'ip',
      'saddr',
      TOPO.natInside,
      'masquerade',
      'fully-random',
    ]);
    await s.pd.proc.stop();
    await s.d.nat.run([systemTool('conntrack'), '-F']).catch(() => undefined);
    const d2 = await startPeerIn(s.d.peer, ['--router', TOPO.routerV4]);
    t.teardown(() => d2.proc.stop());
    const seenBefore = s.a.proc.lines().length;
    const before = await relayed();
    // Long enough for each side's three fast probes to have gone unanswered.
    const r = await ping6(s.topo.peers.A, d2.address, { count: 30, interval: 0.1 });
    t.is(r.received, 30, r.output);
    const after = await relayed();
    t.true(after - before >= 60, `every request and reply relayed by the router (${before} -> ${after})`);
    t.false(
      s.a.proc
        .lines()
        .slice(seenBefore)
        .some((l) => /direct path to \S+: it answered/.test(l.text)),
      'A never went direct',
    );
    t.notRegex(d2.proc.output(), /direct path to \S+: it answered/, 'nor did D');
    t.log(`relay counter before/after 30 echo pairs to a peer behind a port-dependent NAT: ${before} / ${after}`);
  },
);
