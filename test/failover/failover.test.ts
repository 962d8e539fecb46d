// A /64 served by a failover group of two nodes, each a network namespace on one layer-2 segment with the
// provider's router, each with a node agent as a process against a real kube-apiserver + etcd. The agents' share
// is the operator's (written here as the operator renders it, so this test does not wait for the operator's half):
// the same /64, the floating listen address, upstream RoutedNextHop. A 6bed4 peer behind a NAT, a TCP stream from
// the provider's side to the peer that checks every byte, and pings every 20 ms go through the floating address
// across: a crash of the active agent (kill -9: its router dies with it), a planned stop (SIGTERM), the active
// node's uplink down while its API connection stays, and the API server gone for both. Each time the standby takes
// over, the peer keeps its address, the stream is never reset, and after the old member's deadline only the new
// one answers ARP and NS for the moving addresses (counted per bridge port at the provider). The gaps are printed.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { controlPlaneSkipReason } from '../k8s/controlplane.js';
import type { Proc } from '../../lab/proc.js';
import { scrape, startPeerIn } from '../../lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';
import { ECHO_SERVER } from '../helpers/tcp-echo.js';
import { NS, safely } from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import { SEG } from './segment.js';
import { pingGap, STREAM_CLIENT } from './stream.js';
import { Group, METRICS, NODES, PREFIX } from './group.js';
import { agentConfigMapName, type AgentNodeConfig } from '../../kube/api.js';
import { paths } from '../../kube/client.js';

const why = skipReason ?? controlPlaneSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
/** Crash trials (each kills the active agent and brings it back as a standby); FAILOVER_CRASHES=10 for the figures. */
const CRASHES = Number(process.env.FAILOVER_CRASHES ?? 2);

let g: Group;
const s = {} as { peer: { proc: Proc; address: string }; stream: Proc };

/** Pings the peer from the provider's side every 20 ms until stopped. */
function pinger(): Proc {
  return g.seg.prv.spawn(['ping', '-6', '-n', '-D', '-O', '-i', '0.02', '-W', '1', s.peer.address]);
}

async function pingsAgain(p: Proc): Promise<void> {
  const start = p.output().length;
  try {
    await eventually('pings answered again', async () => /icmp_seq=\d+ ttl=/.test(p.output().slice(start)), 30_000, 50);
  } catch (err) {
    // What each side saw, for the log of a failure.
    const tail = (x: string) =>
      x
        .split('\n')
        .filter((l) => !/watch of|no answer yet/.test(l))
        .slice(-25)
        .join('\n');
    const state = await Promise.all(g.seg.nodes.map((n) => n.ip(['addr', 'show']).catch((e: Error) => e.message)));
    throw new Error(
      `${(err as Error).message}\n${g.agents.map((a, i) => `--- ${NODES[i]}\n${tail(a?.output() ?? '')}\n${state[i]}`).join('\n')}\n--- prv\n${await g.seg.prv.ip(['-6', 'neigh']).catch(() => '')}\n--- ping\n${tail(p.output())}`,
    );
  }
  const mark = p.output().length;
  await eventually(
    'ten answers in a row',
    async () => (p.output().slice(mark).match(/ttl=/g) ?? []).length >= 10,
    30_000,
    50,
  );
}

/** ARP and NS from the provider for the moving addresses now: which node's port answered. */
async function whoAnswers(): Promise<{ arp: number[]; na: number[] }> {
  await g.seg.resetAnswers();
  await g.seg.prv.ip(['neigh', 'flush', 'dev', 'br0']);
  await g.seg.prv.ip(['-6', 'neigh', 'flush', 'dev', 'br0']);
  await g.seg.prv.exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', SEG.floating]);
  await g.seg.prv.exec(['ping', '-6', '-c', '3', '-i', '0.2', '-W', '1', SEG.nextHop]);
  return g.seg.answers();
}

test.before(async () => {
  if (why) return;
  g = await Group.start('fo', 'RoutedNextHop');
});

test.after.always(async () => {
  await safely(() => s.stream?.stop('SIGTERM', 2000));
  await safely(() => g?.stop());
});

serial(
  title('one member is active, the other a ready standby bound to the floating address; a peer behind NAT is served'),
  async (t) => {
    await g.startAgent(0);
    await eventually('n1 active', async () => (await g.holder()) === 'n1', 20_000, 100);
    await g.startAgent(1);
    const r2 = await g.role(1, 'Standby');
    t.true(r2.ready, r2.message);
    t.regex(r2.message ?? '', /ready standby for 198\.51\.100\.100/);
    t.is((await g.role(0, 'Active')).failover, 'Active');
    const m1 = await scrape(g.seg.nodes[0]!, METRICS),
      m2 = await scrape(g.seg.nodes[1]!, METRICS);
    t.is(m1.get(`sixbed4_failover_active{prefix="${PREFIX}"}`), 1);
    t.is(m1.get(`sixbed4_failover_standby_ready{prefix="${PREFIX}"}`), 0);
    t.is(m2.get(`sixbed4_failover_active{prefix="${PREFIX}"}`), 0);
    t.is(m2.get(`sixbed4_failover_standby_ready{prefix="${PREFIX}"}`), 1);
    t.deepEqual(
      (await g.macvlanAddresses(0)).sort(),
      [SEG.floating, SEG.nextHop].sort(),
      'the active member holds both moving addresses',
    );
    t.deepEqual(await g.macvlanAddresses(1), [], 'the standby holds none');
    // The standby's router is bound to the floating address already (IP_FREEBIND).
    const sockets = await g.seg.nodes[1]!.run(['ss', '-Hnul', 'sport', '= :25790']);
    t.regex(sockets, /198\.51\.100\.100:25790/);

    s.peer = await startPeerIn(g.seg.peer, ['--router', SEG.floating, '--default-route']);
    t.regex(s.peer.address, /^2001:db8:9:10:/);
    await g.seg.peer.spawn([process.execPath, '-e', ECHO_SERVER]).waitFor(/listening/, 10_000);
    s.stream = g.seg.prv.spawn([process.execPath, '-e', STREAM_CLIENT, s.peer.address]);
    await s.stream.waitFor(/connected/, 15_000);
    await s.stream.waitFor(/checked [1-9]/, 15_000);
    // What the group costs the API server: Lease requests in 10 s (both members, both agents' node Leases aside).
    const before = await leaseRequests();
    await sleep(10_000);
    const after = await leaseRequests();
    const per = Object.fromEntries(Object.entries(after).map(([verb, n]) => [verb, (n - (before[verb] ?? 0)) / 10]));
    t.log(`Lease requests per second, one group of two members and their node heartbeats: ${JSON.stringify(per)}`);
    const who = await whoAnswers();
    t.true(who.arp[0]! > 0 && who.arp[1] === 0, `only n1 answers ARP: ${JSON.stringify(who)}`);
    t.true(who.na[0]! > 0 && who.na[1] === 0, `only n1 answers NS: ${JSON.stringify(who)}`);
    // Unicast probes too (arping broadcasts until the first answer, then asks the virtual MAC directly): the kernel
    // answers for the addresses on the macvlan.
    const arp = await g.seg.prv.exec(['arping', '-c', '4', '-w', '5', '-I', 'br0', SEG.floating]);
    t.regex(arp.stdout, /Received 4 response/, arp.stdout);
    t.regex(arp.stdout, /\[00:00:5E:00:01:2A\]/i);
  },
);

/** The API server's count of requests on Leases, by verb (its own metrics). */
async function leaseRequests(): Promise<Record<string, number>> {
  const text = await g.admin.request<string>('GET', '/metrics');
  const out: Record<string, number> = {};
  for (const m of String(text).matchAll(/^apiserver_request_total\{([^}]*)\} (\d+)/gm)) {
    if (!/resource="leases"/.test(m[1]!)) continue;
    const verb = /verb="([A-Z]+)"/.exec(m[1]!)?.[1] ?? '?';
    out[verb] = (out[verb] ?? 0) + Number(m[2]);
  }
  return out;
}

/** Runs a failover away from the member holding the Lease: pings every 20 ms across it; returns the gap. */
async function across(t: { log: (...a: unknown[]) => void }, what: string, act: () => Promise<void>): Promise<number> {
  const was = await g.holderIdentity();
  const ping = pinger();
  await ping.waitFor(/ttl=/, 10_000);
  const checkedBefore = Number(/checked (\d+)\n?$/.exec(s.stream.output().trim())?.[1] ?? 0);
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
  await pingsAgain(ping);
  await ping.stop('SIGINT');
  const gap = pingGap(ping.output());
  t.log(`${what}: longest silence between ping answers (every 20 ms) ${gap.gapMs} ms`);
  const taker = g.agents.find((a) => a?.output().includes(`took over 198.51.100.100 from ${was}`));
  for (const l of (taker?.output() ?? '').split('\n').filter((x) => x.includes(`from=${was}`)))
    t.log(`  ${now.split('_')[0]}: ${l.trim()}`);
  if (!s.stream.running) throw new Error(`the TCP stream ended: ${s.stream.output().slice(-500)}`);
  await eventually(
    'the stream to move on',
    async () => Number(/checked (\d+)\n?$/.exec(s.stream.output().trim())?.[1] ?? 0) > checkedBefore + 4096,
    60_000,
    200,
  );
  return gap.gapMs;
}

serial(
  title('crash of the active member (kill -9): the standby takes over, the peer keeps its address, the stream goes on'),
  async (t) => {
    const gaps: number[] = [];
    for (let trial = 1; trial <= CRASHES; trial++) {
      const from = NODES.indexOf(await g.holder());
      const to = 1 - from;
      gaps.push(
        await across(t, `crash ${trial}`, async () => {
          await g.agents[from]!.stop('SIGKILL');
        }),
      );
      const m = await scrape(g.seg.nodes[to]!, METRICS);
      t.true((m.get(`sixbed4_failovers_total{prefix="${PREFIX}",reason="LeaseExpired"}`) ?? 0) >= 1);
      t.is(m.get(`sixbed4_failover_active{prefix="${PREFIX}"}`), 1);
      t.true(
        (m.get(`sixbed4_failover_takeover_seconds_count{prefix="${PREFIX}"}`) ?? 0) >= 1,
        'the takeover was timed to its first packet',
      );
      // The crashed member's macvlan still carries the addresses (nothing ran to take them off), but its fence
      // closed at its deadline: only the new member answers.
      t.deepEqual((await g.macvlanAddresses(from)).sort(), [SEG.floating, SEG.nextHop].sort());
      const who = await whoAnswers();
      t.true(
        who.arp[from] === 0 && who.arp[to]! > 0,
        `after the crashed member's deadline only ${NODES[to]} answers ARP: ${JSON.stringify(who)}`,
      );
      t.true(
        who.na[from] === 0 && who.na[to]! > 0,
        `after the crashed member's deadline only ${NODES[to]} answers NS: ${JSON.stringify(who)}`,
      );
      // Its agent comes back: it clears what its predecessor left and stands by.
      await g.startAgent(from);
      await g.role(from, 'Standby');
      t.deepEqual(await g.macvlanAddresses(from), []);
    }
    t.log(`crash gaps (ms): ${gaps.join(', ')}`);
  },
);

serial(
  title(
    'planned stop (SIGTERM) of the active member: it withdraws, releases the Lease, the standby takes over at once',
  ),
  async (t) => {
    const from = NODES.indexOf(await g.holder());
    const to = 1 - from;
    const gap = await across(t, 'planned stop', async () => {
      await g.agents[from]!.stop('SIGTERM', 30_000);
    });
    t.regex(
      g.agents[from]!.output(),
      /withdrew from 198\.51\.100\.100: stopping[^]*released the Lease/,
      'withdrew first, then released',
    );
    const m = await scrape(g.seg.nodes[to]!, METRICS);
    t.is(m.get(`sixbed4_failovers_total{prefix="${PREFIX}",reason="Released"}`), 1);
    t.log(`planned stop gap ${gap} ms (goal: under 1 s; not asserted: the machine is shared)`);
    await g.startAgent(from);
    await g.role(from, 'Standby');
  },
);

serial(
  title('a rollout on the active node: the new agent adopts the macvlan beside the old one, which then hands over'),
  async (t) => {
    const from = NODES.indexOf(await g.holder());
    const old = g.agents[from]!;
    // As the DaemonSet's surge: the new agent starts while the old one still serves (same node, state, tunnel).
    const fresh = await g.startAgent(from);
    t.regex(fresh.output(), /adopted 6b4vr42 from the agent this one replaces, which is active: left as it is/);
    t.deepEqual(
      (await g.macvlanAddresses(from)).sort(),
      [SEG.floating, SEG.nextHop].sort(),
      'the old agent still holds the addresses',
    );
    const gap = await across(t, 'rollout', async () => {
      await old.stop('SIGTERM', 30_000);
    });
    t.log(`rollout gap ${gap} ms`);
    // Whoever took over (the new agent of this node or the other node), the new agent of this node is a member.
    await eventually(
      'the new agent active or a ready standby',
      async () => ['Active', 'Standby'].includes((await g.report(from))?.failover ?? ''),
      20_000,
      200,
    );
  },
);

serial(
  title("the active member's uplink down, its API connection up: it gives up, the standby takes over, one answers"),
  async (t) => {
    const from = NODES.indexOf(await g.holder());
    const to = 1 - from;
    await across(t, 'uplink down', async () => {
      await g.seg.nodes[from]!.ip(['link', 'set', 'eth0', 'down']);
    });
    t.regex(g.agents[from]!.output(), /data path down \(the uplink eth0 is down\): withdrawing/);
    const m = await scrape(g.seg.nodes[to]!, METRICS);
    t.is(m.get(`sixbed4_failovers_total{prefix="${PREFIX}",reason="DataPathDown"}`), 1);
    const r = await g.role(from, 'NotReady', 10_000);
    t.regex(r.message ?? '', /uplink eth0 is down/);
    t.false(r.ready);
    // The link comes back, without the routes that went with it: still not a candidate.
    await g.seg.nodes[from]!.ip(['link', 'set', 'eth0', 'up']);
    const back = await eventually(
      'the report to say why',
      async () => {
        const x = await g.report(from);
        return /default route/.test(x?.message ?? '') ? x : undefined;
      },
      10_000,
      200,
    );
    t.is(back.failover, 'NotReady', back.message);
    // The node's network configuration puts them back: the old member stands by; still only the new one answers.
    await g.seg.restoreNode(from);
    await g.role(from, 'Standby');
    const who = await whoAnswers();
    t.true(who.arp[from] === 0 && who.arp[to]! > 0, `only ${NODES[to]} answers ARP: ${JSON.stringify(who)}`);
    t.true(who.na[from] === 0 && who.na[to]! > 0, `only ${NODES[to]} answers NS: ${JSON.stringify(who)}`);
  },
);

serial(
  title(
    'the API server unreachable for every member: the active one withdraws at its deadline; service resumes with the API',
  ),
  async (t) => {
    const active = NODES.indexOf(await g.holder());
    const ping = pinger();
    await ping.waitFor(/ttl=/, 10_000);
    await g.disconnect(0);
    await g.disconnect(1);
    await g.agents[active]!.waitFor(/withdrawing at the deadline/, 15_000);
    await eventually(
      'no member holds the addresses',
      async () => (await g.macvlanAddresses(0)).length === 0 && (await g.macvlanAddresses(1)).length === 0,
      10_000,
      100,
    );
    const who = await whoAnswers();
    t.deepEqual(who.arp, [0, 0], 'nobody answers for the floating address while nobody can hold the Lease');
    t.deepEqual(who.na, [0, 0], 'nor for the next hop');
    await sleep(3000);
    await g.connect(0);
    await g.connect(1);
    await eventually('a member holds the Lease again', async () => (await g.holder()) !== '', 30_000, 100);
    await pingsAgain(ping);
    await ping.stop('SIGINT');
    t.log(
      `API outage: longest silence between ping answers ${pingGap(ping.output()).gapMs} ms (the deadline, 3 s without the API, the way back)`,
    );
    t.true(s.stream.running, 'the TCP stream outlived the outage');
  },
);

serial(title('the TCP stream: never reset, every byte checked'), async (t) => {
  await s.stream.waitFor(/checked/, 5000);
  await s.stream.stop('SIGTERM');
  const final = /final (\d+) bytes checked of (\d+) sent, longest silence (\d+) ms/.exec(s.stream.output());
  t.truthy(final, s.stream.output().slice(-500));
  t.log(final![0]);
  t.true(Number(final![1]) > 0);
  t.notRegex(s.stream.output(), /connection closed|wrong byte|error:/);
});

serial(
  title(
    'a share that cannot fail over (the /64 routed to a link-local next hop) is refused with the reason, nothing left',
  ),
  async (t) => {
    const cm = (await g.admin.get<{ data: Record<string, string> }>(paths.configMap(NS, agentConfigMapName(PREFIX))))!;
    const data = Object.fromEntries(
      Object.entries(cm.data).map(([k, v]) => {
        if (!k.startsWith('node.')) return [k, v];
        const n = JSON.parse(v) as AgentNodeConfig;
        return [k, JSON.stringify({ ...n, failover: { ...n.failover!, nextHop: 'fe80::1' } })];
      }),
    );
    await g.admin.mergePatch(paths.configMap(NS, agentConfigMapName(PREFIX)), { data });
    for (const i of [0, 1]) {
      const r = await eventually(
        `${NODES[i]} refused`,
        async () => {
          const x = await g.report(i);
          return x?.reason === 'FailoverUnsupported' ? x : undefined;
        },
        30_000,
        200,
      );
      t.false(r.ready);
      t.regex(r.message ?? '', /link-local: a \/64 routed to one machine's own link-local address cannot move/);
      const links = await g.seg.nodes[i]!.json<{ ifname: string }[]>(['link', 'show']);
      t.false(
        links.some((l) => l.ifname === `6b4vr${SEG.virtualRouterId}`),
        'the macvlan is gone',
      );
      t.false(
        links.some((l) => l.ifname === '6b4fo'),
        'no router runs',
      );
      t.notRegex(await g.seg.nodes[i]!.run(['nft', 'list', 'tables']), /sixbed4_vr/, 'the fence tables are gone');
    }
    t.is(await g.holder(), '', 'the Lease was released');
  },
);
