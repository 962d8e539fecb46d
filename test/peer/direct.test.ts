// Direct peer-to-peer, the decisions alone: two peer engines (no sockets) exchange what they queue, as two peers
// behind endpoint-independent NATs would. A probes B, B answers and probes back, both go direct; a datagram whose
// source address does not embed the IPv4:port it came from is dropped; a quiet direct path falls back to the router;
// the table stays bounded. A path cut both ways under a stream of pings is back through the router within 1.5 s: the
// near side's probes time out, the far side takes its data coming through the router as the break, and no peer
// takes the other's data through the router as one while it is still on its way to going direct (no flapping).
// Time is passed in, so nothing here waits.
import test from 'ava';
import { PeerEngine } from '../../agent/peer/engine.js';
import {
  DirectPaths,
  FAST_PROBES,
  PROBE_MS,
  QUIET_MS,
  EXPIRE_MS,
  REFRESH_MS,
  STRAGGLER_MS,
} from '../../agent/peer/direct.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { parseIPv4, parsePrefix64 } from '../../lib/ip.js';
import { ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, IPV6_HEADER } from '../../agent/protocol/constants.js';
import { udp6 } from '../helpers/packets.js';

const ROUTER_V4 = parseIPv4('198.51.100.1'),
  ROUTER_PORT = 25790;
const prefix = parsePrefix64('2001:db8:9:10::/64');
const A = { v4: parseIPv4('198.51.100.20'), port: 50000 };
const B = { v4: parseIPv4('203.0.113.20'), port: 52000 };
const addrOf = (p: { v4: number; port: number }) => makeAddress(prefix.bytes, p.v4, p.port, 1);

function peer(self: { v4: number; port: number }, changes: string[] = []) {
  const direct = new DirectPaths((v4, port, on, why) =>
    changes.push(`${v4}:${port} ${on ? 'direct' : `router (${why})`}`),
  );
  const e = new PeerEngine(ROUTER_V4, ROUTER_PORT, () => undefined, 8, direct);
  e.setOwn(addrOf(self));
  selves.set(e, self);
  return { e, direct, changes };
}

/** The kernel hands e one packet; returns where it went and the control datagrams queued with it. */
function send(e: PeerEngine, pkt: Uint8Array, now: number) {
  e.tunRx.off[0] = 0;
  e.tunRx.data.set(pkt, 0);
  e.tunRx.len[0] = pkt.length;
  e.fromKernel(1, now);
  return { to: e.nToUdp ? [e.toUdp.addr[0]!, e.toUdp.port[0]!] : null, control: controls(e) };
}

/** The control datagrams queued: first probes (hop-limited, `first`) as well. */
function controls(e: PeerEngine) {
  const out: { bytes: Uint8Array; v4: number; port: number; first: boolean }[] = [];
  for (const [b, n, first] of [
    [e.control, e.nControl, false],
    [e.firstProbes, e.nFirstProbes, true],
  ] as const) {
    for (let i = 0; i < n; i++) {
      const o = b.off[i]!;
      out.push({ bytes: Uint8Array.from(b.data.subarray(o, o + b.len[i]!)), v4: b.addr[i]!, port: b.port[i]!, first });
    }
  }
  return out;
}

/** e receives one datagram from v4:port; returns whether it went to the kernel and the control datagrams queued. */
function receive(e: PeerEngine, bytes: Uint8Array, from: { v4: number; port: number }, now: number) {
  e.udpRx.off[0] = 0;
  e.udpRx.data.set(bytes, 0);
  e.udpRx.len[0] = bytes.length;
  e.udpRx.addr[0] = from.v4;
  e.udpRx.port[0] = from.port;
  e.fromRouter(1, now);
  return { toTun: e.nToTun, control: controls(e) };
}

const data = (from: Uint8Array, to: Uint8Array) => udp6(from, to, 1000, 2000, Buffer.from('hello'));
const ping = (from: Uint8Array, to: Uint8Array, seq: number, sport: number, dport: number) => {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(seq);
  return udp6(from, to, sport, dport, p);
};
const ROUTER = { v4: ROUTER_V4, port: ROUTER_PORT };

/** x probes y and y answers; y, sending back, probes and x answers: both direct (the first test, step by step). */
function goDirect(x: ReturnType<typeof peer>, y: ReturnType<typeof peer>, now: number, fresh = true) {
  const [xs, ys] = [selfOf(x), selfOf(y)];
  if (fresh) {
    // Each side's hop-limited first probe (it dies before the other NAT); the full ones follow.
    send(x.e, data(addrOf(xs), addrOf(ys)), now - 2 * PROBE_MS);
    send(y.e, data(addrOf(ys), addrOf(xs)), now - 2 * PROBE_MS);
  }
  // Every control datagram crosses, and what it makes the other side queue crosses back, until none is left.
  const cross = (
    from: ReturnType<typeof peer>,
    to: ReturnType<typeof peer>,
    cs: { bytes: Uint8Array; first: boolean }[],
  ): void => {
    for (const c of cs) if (!c.first) cross(to, from, receive(to.e, c.bytes, selfOf(from), now).control);
  };
  cross(x, y, send(x.e, data(addrOf(xs), addrOf(ys)), now).control);
  cross(y, x, send(y.e, data(addrOf(ys), addrOf(xs)), now).control);
}
const selves = new WeakMap<PeerEngine, { v4: number; port: number }>();
const selfOf = (p: ReturnType<typeof peer>) => selves.get(p.e)!;

test('A probes B and B answers: A goes direct; B, sending back, probes too and goes direct; until then the router', (t) => {
  const a = peer(A),
    b = peer(B);
  const opening = send(a.e, data(addrOf(A), addrOf(B)), -PROBE_MS);
  t.deepEqual(opening.to, [ROUTER_V4, ROUTER_PORT], 'the first packet goes through the router');
  t.deepEqual(
    opening.control.map((c) => [c.v4, c.port, c.first]),
    [[B.v4, B.port, true]],
    "with a hop-limited probe: it opens A's NAT, and dies before B's",
  );
  const first = send(a.e, data(addrOf(A), addrOf(B)), 0);
  t.deepEqual(first.to, [ROUTER_V4, ROUTER_PORT], 'until an answer, through the router');
  t.is(first.control.length, 1);
  const probe = first.control[0]!;
  t.false(probe.first, 'a second later, a full probe');
  t.deepEqual(
    [probe.v4, probe.port, probe.bytes[IPV6_HEADER]],
    [B.v4, B.port, ND_NEIGHBOR_SOLICIT],
    "an NS straight to B's IPv4:port",
  );

  const atB = receive(b.e, probe.bytes, A, 10);
  t.is(atB.toTun, 0, 'ND is not for the kernel');
  t.deepEqual(
    atB.control.map((c) => [c.bytes[IPV6_HEADER], c.v4, c.port]),
    [[ND_NEIGHBOR_ADVERT, A.v4, A.port]],
    'B answers, and no more: B has sent A nothing, and the NS may come from a spoofed IPv4 source',
  );
  t.false(b.direct.isDirect(A.v4, A.port), 'A reaching B proves nothing about B reaching A');
  t.is(receive(b.e, probe.bytes, A, 20).control.length, 0, 'asked again at once: not answered again');

  receive(a.e, atB.control[0]!.bytes, B, 20);
  t.true(a.direct.isDirect(B.v4, B.port), "A has B's answer: direct");
  t.deepEqual(a.changes, [`${B.v4}:${B.port} direct`]);

  // B's reply goes through the router, with B's own probe; A answers it, and B goes direct too.
  const reply = send(b.e, data(addrOf(B), addrOf(A)), 30);
  t.deepEqual(reply.to, [ROUTER_V4, ROUTER_PORT]);
  const atA = receive(a.e, reply.control[0]!.bytes, B, 31);
  t.deepEqual(
    atA.control.map((c) => c.bytes[IPV6_HEADER]),
    [ND_NEIGHBOR_ADVERT],
    'A, direct already, only answers',
  );
  receive(b.e, atA.control[0]!.bytes, A, 32);
  t.true(b.direct.isDirect(A.v4, A.port));

  t.deepEqual(send(a.e, data(addrOf(A), addrOf(B)), 40).to, [B.v4, B.port], 'now straight to B');
  t.deepEqual(send(b.e, data(addrOf(B), addrOf(A)), 40).to, [A.v4, A.port], 'and straight to A');
  const got = receive(b.e, data(addrOf(A), addrOf(B)), A, 50);
  t.is(got.toTun, 1, 'B takes data straight from A');
  t.is(b.e.counters.directRxPackets, 1);
  t.is(a.e.counters.directTxPackets, 1);
});

test('an NA nobody asked for makes nothing direct', (t) => {
  const a = peer(A),
    b = peer(B);
  // B's answer to a probe of A's, shown to a fresh A that never probed B.
  const probe = send(peer(A).e, data(addrOf(A), addrOf(B)), 0).control[0]!;
  const na = receive(b.e, probe.bytes, A, 1).control[0]!;
  receive(a.e, na.bytes, B, 2);
  t.false(a.direct.isDirect(B.v4, B.port));
  t.is(a.direct.size, 0);
});

test("the originator check: a source address that does not embed the datagram's IPv4:port is dropped", (t) => {
  const b = peer(B);
  const other = { v4: parseIPv4('192.0.2.66'), port: 40000 };
  t.is(receive(b.e, data(addrOf(A), addrOf(B)), other, 0).toTun, 0, "A's address from elsewhere");
  t.is(receive(b.e, data(addrOf(A), addrOf(B)), { v4: A.v4, port: A.port + 2 }, 0).toTun, 0, "A's IPv4, another port");
  t.is(receive(b.e, data(addrOf(A), makeAddress(prefix.bytes, B.v4, B.port, 2)), A, 0).toTun, 0, 'not our address');
  t.is(
    receive(b.e, data(makeAddress(parsePrefix64('2001:db8:9:11::/64').bytes, A.v4, A.port, 1), addrOf(B)), A, 0).toTun,
    0,
    'another /64',
  );
  t.is(b.e.counters.dropForeign, 4);
  t.is(b.direct.size, 0, 'nothing of it is remembered');
  t.is(receive(b.e, data(addrOf(A), addrOf(B)), A, 0).toTun, 1, 'the real thing passes');
});

test('with a LAN behind it (--lan), a peer takes direct data for any lanip of its /114, and nothing beyond; probes stay its own', (t) => {
  const b = peer(B);
  b.e.serveLan = true;
  const host = makeAddress(prefix.bytes, B.v4, B.port, 0x123);
  t.is(receive(b.e, data(addrOf(A), host), A, 0).toTun, 1, "a LAN host of B's /114");
  t.is(
    receive(b.e, data(addrOf(A), makeAddress(prefix.bytes, B.v4, B.port + 2, 0x123)), A, 0).toTun,
    0,
    'another /114',
  );
  const probe = send(peer(A).e, data(addrOf(A), host), 0).control[0]!;
  t.is(receive(b.e, probe.bytes, A, 0).control.length, 0, "an NS to a LAN host's address is not ours to answer");
  t.is(b.e.counters.dropForeign, 1);
  t.is(b.e.counters.dropNd, 1);
});

test('without the direct path (--no-direct) only the router is believed and nothing is probed', (t) => {
  const e = new PeerEngine(ROUTER_V4, ROUTER_PORT, () => undefined, 8);
  e.setOwn(addrOf(B));
  t.is(receive(e, data(addrOf(A), addrOf(B)), A, 0).toTun, 0);
  t.is(e.counters.dropForeign, 1);
  const s = send(e, data(addrOf(B), addrOf(A)), 0);
  t.deepEqual(s.to, [ROUTER_V4, ROUTER_PORT]);
  t.is(s.control.length, 0);
});

test("the router's own address and destinations outside the /64 are never probed", (t) => {
  const a = peer(A);
  const routerAddr = makeAddress(prefix.bytes, ROUTER_V4, ROUTER_PORT, 0);
  t.is(send(a.e, data(addrOf(A), routerAddr), 0).control.length, 0);
  t.is(
    send(a.e, data(addrOf(A), makeAddress(prefix.bytes, B.v4, 0, 0x11)), 0).control.length,
    0,
    "port word 0: the router host's own",
  );
  t.is(send(a.e, data(addrOf(A), parsePrefix64('2001:db8:ffff::/64').bytes), 0).control.length, 0);
});

test('a quiet direct path goes back through the router and is probed again', (t) => {
  const changes: string[] = [];
  const d = new DirectPaths((v4, port, on) => changes.push(`${on ? 'direct' : 'router'}`));
  t.false(d.route(B.v4, B.port, 0));
  t.true(d.probe);
  d.answered(B.v4, B.port, 10);
  t.true(d.route(B.v4, B.port, 20));
  t.false(d.probe, 'just heard: no probe');
  // Idle for a minute: the path is not given up for that, only checked.
  t.true(d.route(B.v4, B.port, 50_000));
  t.true(d.probe, 'checked again before it is trusted for long');
  d.answered(B.v4, B.port, 50_010);
  // Broken: a stream goes on, its probes go unanswered; QUIET_MS after the first of them, through the router.
  let now = 50_010,
    first = -1;
  while (d.route(B.v4, B.port, now)) {
    if (d.probe && first < 0) first = now;
    now += 50;
  }
  t.true(
    first > 0 && now - first > QUIET_MS && now - first <= QUIET_MS + 50,
    `given up ${now - first} ms after the first unanswered probe`,
  );
  t.deepEqual(changes, ['direct', 'router']);
});

test('cut just after an answer, a direct stream is given up within REFRESH_MS + QUIET_MS, after several probes', (t) => {
  const d = new DirectPaths();
  d.route(B.v4, B.port, 0);
  d.answered(B.v4, B.port, 5);
  let now = 5,
    probes = 0;
  while (d.route(B.v4, B.port, now)) {
    if (d.probe) probes++;
    now += 10;
  }
  // Each limit is seen by the first packet past it: one 10 ms step each.
  t.true(now - 5 <= REFRESH_MS + QUIET_MS + 20, `given up ${now - 5} ms after the last answer`);
  t.true(probes >= 4, `${probes} probes went unanswered first: one lost datagram does not end a path`);
});

test("the peer's data through the router after it had come straight: the path is given up at once, the data kept", (t) => {
  const a = peer(A),
    b = peer(B);
  goDirect(a, b, 0);
  t.is(receive(b.e, data(addrOf(A), addrOf(B)), A, 100).toTun, 1, "A's data straight");
  const relayed = receive(b.e, data(addrOf(A), addrOf(B)), ROUTER, 100 + STRAGGLER_MS);
  t.is(relayed.toTun, 1, 'the relayed packet still goes to the kernel');
  t.false(b.direct.isDirect(A.v4, A.port), 'A went back to the router, so B does too');
  t.is(b.e.counters.directViaRouter, 1);
  t.deepEqual(b.changes, [`${A.v4}:${A.port} direct`, `${A.v4}:${A.port} router (via-router)`]);
  t.deepEqual(
    send(b.e, data(addrOf(B), addrOf(A)), 100 + STRAGGLER_MS).to,
    [ROUTER_V4, ROUTER_PORT],
    'B now sends through the router',
  );
});

test("the peer's data through the router is no break while it has not come straight (the other is still going direct)", (t) => {
  const a = peer(A),
    b = peer(B);
  // A has B's answer; B, not yet direct, sends its reply through the router: A stays direct.
  const na = receive(b.e, send(a.e, data(addrOf(A), addrOf(B)), 0).control[0]!.bytes, A, 1).control[0]!;
  receive(a.e, na.bytes, B, 2);
  t.true(a.direct.isDirect(B.v4, B.port));
  for (let now = 10; now < 5000; now += 500) receive(a.e, data(addrOf(B), addrOf(A)), ROUTER, now);
  t.true(a.direct.isDirect(B.v4, B.port), 'still direct');
  t.is(a.e.counters.directViaRouter, 0);
});

test('a straggler the peer sent through the router just before it went direct is no break; after a break, only new straight data arms it again', (t) => {
  const a = peer(A),
    b = peer(B);
  goDirect(a, b, 0);
  receive(b.e, data(addrOf(A), addrOf(B)), A, 100);
  receive(b.e, data(addrOf(A), addrOf(B)), ROUTER, 100 + STRAGGLER_MS - 1);
  t.true(b.direct.isDirect(A.v4, A.port), "overtaken by A's first straight datagram: a straggler");
  receive(b.e, data(addrOf(A), addrOf(B)), ROUTER, 100 + STRAGGLER_MS);
  t.false(b.direct.isDirect(A.v4, A.port), 'later, and nothing straight since: A went back to the router');
  // B probes again and goes direct; A's data, still through the router, does not push it back until A's comes straight.
  goDirect(b, a, 1000, false);
  t.true(b.direct.isDirect(A.v4, A.port));
  for (let now = 1100; now < 3000; now += 100) receive(b.e, data(addrOf(A), addrOf(B)), ROUTER, now);
  t.true(b.direct.isDirect(A.v4, A.port));
  t.is(b.e.counters.directViaRouter, 1);
});

test('pings every 50 ms, the direct path cut both ways: no flapping before, back through the router within 1.5 s', (t) => {
  const a = peer(A),
    b = peer(B);
  const CUT = 3000,
    END = 8000;
  let cut = false;
  const answered = new Set<number>();
  const other = (x: typeof a) => (x === a ? b : a);
  const self = (x: typeof a) => (x === a ? A : B);
  const straight = (x: typeof a, bytes: Uint8Array, now: number) => {
    if (!cut) arrive(other(x), bytes, self(x), now);
  };
  const kernelSends = (x: typeof a, bytes: Uint8Array, now: number) => {
    const s = send(x.e, bytes, now);
    // A hop-limited first probe dies before the other NAT.
    for (const c of s.control) if (!c.first) straight(x, c.bytes, now);
    // The router relays, whatever the NATs do between the peers.
    if (s.to![0] === ROUTER_V4) arrive(other(x), bytes, ROUTER, now);
    else straight(x, bytes, now);
  };
  function arrive(x: typeof a, bytes: Uint8Array, from: { v4: number; port: number }, now: number) {
    const r = receive(x.e, bytes, from, now);
    for (const c of r.control) if (!c.first) straight(x, c.bytes, now);
    if (!r.toTun) return;
    const seq = Buffer.from(bytes).readUInt32BE(IPV6_HEADER + 8);
    if (x === b)
      kernelSends(b, ping(addrOf(B), addrOf(A), seq, 2000, 1000), now); // the echo reply
    else answered.add(seq);
  }
  for (let now = 0, seq = 0; now < END; now += 50, seq++) {
    if (now === CUT) cut = true;
    kernelSends(a, ping(addrOf(A), addrOf(B), seq, 1000, 2000), now);
  }
  const lost = [...Array(END / 50).keys()].filter((q) => !answered.has(q));
  t.true(
    lost.every((q) => q < 10 || q >= CUT / 50),
    `only the first pings (while the probes cross) and pings after the cut were lost: ${lost}`,
  );
  const afterCut = lost.filter((q) => q >= CUT / 50);
  t.true(
    afterCut.length * 50 <= 1500,
    `${afterCut.length} pings (${afterCut.length * 50} ms) lost after the cut: ${afterCut}`,
  );
  t.true(answered.has(END / 50 - 1), 'the stream goes on');
  t.deepEqual(
    a.changes,
    [`${B.v4}:${B.port} direct`, `${B.v4}:${B.port} router (quiet)`],
    'A: direct once, then its probes time out',
  );
  t.deepEqual(
    b.changes,
    [`${A.v4}:${A.port} direct`, `${A.v4}:${A.port} router (via-router)`],
    "B: direct once, then A's data through the router ends it",
  );
  t.log(
    `cut both ways: ${afterCut.length} of ${(END - CUT) / 50} pings lost after the cut (${afterCut.length * 50} ms)`,
  );
});

test('a peer that never answers is probed a few times, then rarely; the table is bounded and forgets', (t) => {
  const d = new DirectPaths(() => undefined, 4);
  let probes = 0;
  for (let now = 0; now < 20 * PROBE_MS; now += 100) {
    d.route(B.v4, B.port, now);
    if (d.probe) probes++;
  }
  t.is(probes, 1 + FAST_PROBES, 'the hop-limited first one (never answered, so not counted), then backed off');
  for (let i = 0; i < 10; i++) d.route(parseIPv4('192.0.2.1') + i, 40000, 100_000 + i);
  t.is(d.size, 4, 'never more than its bound');
  d.sweep(100_010 + EXPIRE_MS);
  t.is(d.size, 0);
});
