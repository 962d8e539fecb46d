// The stock 6bed4 C peer (test/stock/6bed4, built by test/helpers/stock6bed4.ts with the group's floating address as
// its compiled-in router) served by a failover group (group.ts: two members as agents against a real kube-apiserver +
// etcd, upstream RoutedNextHop), where failover.test.ts has our peer: in the segment's peer namespace, behind its NAT.
// Pings every 20 ms both ways (the stock peer -> the provider's IPv6 address, the provider -> the stock peer) across:
// crashes of the active member (kill -9: its router dies with it), a planned stop (SIGTERM) and a rollout on the
// active node (the new agent beside the old, the old one stopped). Each time: the stock peer keeps its one address
// (it is never told another, and never asks: it solicits only until it has one), and pings go both ways again
// through the new member (the old one's router is gone with its process, so every answer after it is the new one's).
// The lost pings and the longest silence are printed, not asserted (the machine is shared).
//
// The stock peer across a restart of a single router (no group) is test/interop/stock.test.ts's scenario h.
import test, { type ExecutionContext } from 'ava';
import { controlPlaneSkipReason } from '../k8s/controlplane.js';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { ping6 } from '../../lab/sixbed4.js';
import { findSystemTool, systemTool } from '../../agent/host/tools.js';
import { addressIPv4, addressPort, makeAddress } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { skipReason } from '../helpers/fixtures.js';
import { safely } from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import {
  buildStock,
  startStockPeer,
  stockAddresses,
  stockAssigned,
  stockOutput,
  stockSkipReason,
  waitStockAddress,
} from '../helpers/stock6bed4.js';
import { SEG } from './segment.js';
import { pingGap } from './stream.js';
import { Group, NODES } from './group.js';

const why = skipReason ?? stockSkipReason ?? controlPlaneSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
/** Crash trials (each kills the active agent and brings it back as a standby); the default 2 crashes each member once. */
const CRASHES = Number(process.env.FAILOVER_CRASHES ?? 2);
/** The stock peer's LAN address behind the segment's NAT (segment.ts). */
const PEER_LAN = '100.64.1.2';

let g: Group;
const s = {} as { proc: Proc; port: number; address: string };
/** What each failover cost, for the summary at the end. */
const figures: string[] = [];

/** The stock peer's output and the tail of each agent's, for a failure message. */
function output(): string {
  return stockOutput({
    'stock 6bed4peer': s.proc,
    ...Object.fromEntries(NODES.map((n, i) => [`agent ${n}`, g.agents[i]])),
  });
}

/** Pings every 20 ms from ns to target until stopped (timestamps for pingGap; -O reports each missing answer). */
function pinger(ns: Netns, target: string): Proc {
  return ns.spawn(['ping', '-6', '-n', '-D', '-O', '-i', '0.02', '-W', '1', target]);
}

/**
 * A stopped `ping -D -O` run's figures: echo requests sent (its summary), answered (distinct sequence numbers), lost
 * (requests before the last answered one that got no answer; those still in flight when it stopped are not counted),
 * and the longest silence between two answers.
 */
function pingFigures(out: string): { sent: number; answered: number; lost: number; gapMs: number } {
  const seqs = new Set(
    [...out.matchAll(/^\[\d+\.\d+\] \d+ bytes from .*icmp_seq=(\d+) ttl=/gm)].map((m) => Number(m[1])),
  );
  const last = Math.max(0, ...seqs);
  let lost = 0;
  for (let i = 1; i <= last; i++) if (!seqs.has(i)) lost++;
  const sent = Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? NaN);
  return { sent, answered: seqs.size, lost, gapMs: pingGap(out).gapMs };
}

/** Resolves once ping p has had ten answers in a row since now (with what everyone printed if it does not). */
async function answeredAgain(p: Proc, what: string): Promise<void> {
  const mark = p.output().length;
  try {
    await eventually(
      `${what}: ten answers after the takeover`,
      async () => (p.output().slice(mark).match(/ttl=/g) ?? []).length >= 10,
      30_000,
      50,
    );
  } catch (err) {
    const tail = p.output().split('\n').slice(-20).join('\n');
    throw new Error(`${(err as Error).message}\n--- ping\n${tail}\n${output()}`, { cause: err });
  }
}

/** The stock peer still has exactly its first address, and has been given no other. */
async function sameAddress(t: ExecutionContext, when: string): Promise<void> {
  t.true(s.proc.running, `${when}: the stock peer runs\n${output()}`);
  t.deepEqual(await stockAddresses(g.seg.peer), [s.address], `${when}: the stock peer's tunnel has its one address`);
  t.deepEqual(stockAssigned(s.proc), [s.address], `${when}: the stock peer was given no other address`);
}

/**
 * Runs a failover away from the member holding the Lease with pings every 20 ms both ways across it; checks that
 * another member took the Lease, that pings are answered again both ways and that the stock peer's address stayed.
 */
async function across(t: ExecutionContext, what: string, act: () => Promise<void>): Promise<void> {
  const was = await g.holderIdentity();
  const down = pinger(g.seg.prv, s.address);
  const up = pinger(g.seg.peer, SEG.providerV6);
  try {
    await Promise.all([down.waitFor(/ttl=/, 10_000), up.waitFor(/ttl=/, 10_000)]);
    await act();
    const now = await eventually(
      'another member to hold the Lease',
      async () => {
        const h = await g.holderIdentity();
        return h !== '' && h !== was ? h : undefined;
      },
      30_000,
      100,
    );
    await answeredAgain(down, `provider -> stock peer (${what})`);
    await answeredAgain(up, `stock peer -> provider (${what})`);
    await down.stop('SIGINT');
    await up.stop('SIGINT');
    const d = pingFigures(down.output()),
      u = pingFigures(up.output());
    const line =
      `${what} (${was.split('_')[0]} -> ${now.split('_')[0]}): ` +
      `provider -> stock peer ${d.lost} lost of ${d.sent} (longest silence ${d.gapMs} ms), ` +
      `stock peer -> provider ${u.lost} lost of ${u.sent} (longest silence ${u.gapMs} ms)`;
    t.log(line);
    figures.push(line);
    t.true(d.answered > 10 && u.answered > 10, line);
    await sameAddress(t, what);
  } finally {
    await safely(() => down.stop('SIGINT'));
    await safely(() => up.stop('SIGINT'));
  }
}

test.before(async () => {
  if (why) return;
  g = await Group.start('fostk', 'RoutedNextHop');
});

test.after.always(async () => {
  await safely(() => s.proc?.stop('SIGTERM'));
  await safely(() => g?.stop());
});

serial(
  title(
    'a stock peer behind the NAT served by the active member: its address is its public NAT mapping; pings both ways',
  ),
  async (t) => {
    await g.startAgent(0);
    await eventually('n1 active', async () => (await g.holder()) === 'n1', 20_000, 100);
    await g.startAgent(1);
    t.true((await g.role(1, 'Standby')).ready);
    const bin = await buildStock(SEG.floating);
    Object.assign(s, await startStockPeer(g.seg.peer, bin, SEG.floating));
    s.address = await waitStockAddress(g.seg.peer, s.proc, output);
    // Its /114 is the one of its public mapping: the NAT's address and the port the NAT gave its socket.
    const a = parseIPv6(s.address);
    const prefix = parsePrefix64(SEG.prefix);
    t.is(formatIPv4(addressIPv4(a, 0)), SEG.natWan, `the stock peer sits behind the NAT: ${s.address}`);
    if (findSystemTool('conntrack')) {
      const ct = await g.seg.nat.run([
        systemTool('conntrack'),
        '-L',
        '-p',
        'udp',
        '-s',
        PEER_LAN,
        '--sport',
        String(s.port),
        '-d',
        SEG.floating,
        '--dport',
        '25790',
      ]);
      const m = /src=\S+ dst=\S+ sport=\d+ dport=\d+ .*?src=\S+ dst=(\S+) sport=\d+ dport=(\d+)/.exec(ct);
      t.truthy(m, ct);
      t.is(s.address, formatIPv6(makeAddress(prefix.bytes, parseIPv4(m![1]!), Number(m![2]), 1)), output());
    } else {
      t.log(`no conntrack tool: the public port ${addressPort(a, 0)} not compared with the NAT's mapping`);
    }
    for (const [from, to] of [
      [g.seg.peer, SEG.providerV6],
      [g.seg.prv, s.address],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, `${from.name} -> ${to}\n${r.output}\n${output()}`);
    }
    await sameAddress(t, 'served by n1');
  },
);

serial(
  title('crash of the active member (kill -9): the stock peer keeps its address, pings both ways resume'),
  async (t) => {
    for (let trial = 1; trial <= CRASHES; trial++) {
      const from = NODES.indexOf(await g.holder());
      await across(t, `crash ${trial}`, async () => {
        await g.agents[from]!.stop('SIGKILL');
      });
      // Its agent comes back and stands by (the next trial crashes the other member).
      await g.startAgent(from);
      await g.role(from, 'Standby');
    }
  },
);

serial(
  title('planned stop (SIGTERM) of the active member: the stock peer keeps its address, pings both ways resume'),
  async (t) => {
    const from = NODES.indexOf(await g.holder());
    await across(t, 'planned stop', async () => {
      await g.agents[from]!.stop('SIGTERM', 30_000);
    });
    t.regex(g.agents[from]!.output(), /withdrew from 198\.51\.100\.100: stopping[^]*released the Lease/);
    await g.startAgent(from);
    await g.role(from, 'Standby');
  },
);

serial(
  title(
    'a rollout on the active node (new agent beside the old, the old stopped): the stock peer keeps its address, pings resume',
  ),
  async (t) => {
    const from = NODES.indexOf(await g.holder());
    const old = g.agents[from]!;
    const fresh = await g.startAgent(from);
    t.regex(fresh.output(), /adopted 6b4vr42 from the agent this one replaces, which is active: left as it is/);
    await across(t, 'rollout', async () => {
      await old.stop('SIGTERM', 30_000);
    });
    await eventually(
      'the new agent active or a ready standby',
      async () => ['Active', 'Standby'].includes((await g.report(from))?.failover ?? ''),
      20_000,
      200,
    );
    t.log(`figures of this run:\n${figures.join('\n')}`);
  },
);
