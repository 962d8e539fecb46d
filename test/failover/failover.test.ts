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
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { agentConfigMapName, AGENT_REPORTS_ANNOTATION, API_VERSION, LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, type AgentCommonConfig, type AgentNodeConfig, type AgentReport } from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import type { Proc } from '../../agent/lab/proc.js';
import { CLI, scrape, startPeerIn } from '../../agent/lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';
import { bridgeApiInto, type ApiBridge } from '../helpers/api-bridge.js';
import { ECHO_SERVER } from '../helpers/tcp-echo.js';
import { eventually, installChart, NS, safely } from '../operator/helpers.js';
import { buildSegment, SEG, type Segment } from './segment.js';
import { pingGap, STREAM_CLIENT } from './stream.js';

const why = skipReason ?? controlPlaneSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const PREFIX = 'fo';
const LEASE = 'sixbed4-failover-fo';
const NODES = ['n1', 'n2'];
const TIMING = { leaseDurationMs: 2000, renewIntervalMs: 500, fenceAfterMs: 1500 };
const METRICS = '127.0.0.1:9475';

interface State {
  cp: ControlPlane; admin: Kube; seg: Segment; dir: string; apiPort: number;
  agents: (Proc | undefined)[]; bridges: (ApiBridge | undefined)[];
  peer: { proc: Proc; address: string }; stream: Proc;
}
const s = { agents: [], bridges: [] } as unknown as State;

const share = (): Record<string, string> => {
  const common: AgentCommonConfig = { apiVersion: API_VERSION, kind: 'AgentConfig', name: PREFIX, prefix: SEG.prefix, nodes: NODES, metricsPort: 9475 };
  const node: AgentNodeConfig = {
    prefix: SEG.prefix, listen: { address: SEG.floating, port: 25790 }, uplink: 'eth0', localAddresses: [], localAddressMode: 'uplink128',
    routes: [], ndpProxy: 'off', tunnel: '6b4fo',
    failover: { address: SEG.floating, leaseName: LEASE, members: NODES, upstream: 'RoutedNextHop', nextHop: SEG.nextHop, virtualRouterId: SEG.virtualRouterId, ...TIMING },
  };
  return { 'prefix.json': JSON.stringify(common), ...Object.fromEntries(NODES.map((n) => [`node.${n}.json`, JSON.stringify(node)])) };
};

async function startAgent(i: number): Promise<Proc> {
  s.bridges[i] ??= await bridgeApiInto(s.seg.nodes[i]!, s.apiPort, join(s.dir, `api-${i}.sock`));
  const p = s.seg.nodes[i]!.spawn([process.execPath, CLI, 'agent', '--namespace', NS, '--node', NODES[i]!, '--prefix', PREFIX,
    '--kubeconfig', s.cp.kubeconfigPath, '--state-dir', join(s.dir, NODES[i]!), '--metrics', METRICS,
    '--heartbeat-ms', '1000', '--poll-ms', '1000', '--handover-wait-ms', '0', '--log-format', 'text']);
  s.agents[i] = p;
  await p.waitFor(/router ready/, 30_000);
  return p;
}

/** The node whose member holds the Lease ('' none). */
async function holder(): Promise<string> {
  const l = await s.admin.get<{ spec?: { holderIdentity?: string } }>(paths.lease(NS, LEASE));
  return (l?.spec?.holderIdentity ?? '').split('_')[0]!;
}

async function report(i: number): Promise<AgentReport | undefined> {
  const l = await s.admin.get<{ metadata: { annotations?: Record<string, string> } }>(paths.lease(NS, `sixbed4-agent-${NODES[i]}`));
  const text = l?.metadata.annotations?.[AGENT_REPORTS_ANNOTATION];
  return text ? (JSON.parse(text) as Record<string, AgentReport>)[PREFIX] : undefined;
}

async function macvlanAddresses(i: number): Promise<string[]> {
  const a = await s.seg.nodes[i]!.json<{ operstate: string; addr_info: { local: string }[] }[]>(['addr', 'show', 'dev', `6b4vr${SEG.virtualRouterId}`]);
  return a[0]!.addr_info.map((x) => x.local).filter((x) => !x.startsWith('fe80'));
}

/** Pings the peer from the provider's side every 20 ms until stopped. */
function pinger(): Proc {
  return s.seg.prv.spawn(['ping', '-6', '-n', '-D', '-O', '-i', '0.02', '-W', '1', s.peer.address]);
}

async function pingsAgain(p: Proc): Promise<void> {
  const start = p.output().length;
  await eventually('pings answered again', async () => /icmp_seq=\d+ ttl=/.test(p.output().slice(start)), 30_000, 50);
  const mark = p.output().length;
  await eventually('ten answers in a row', async () => (p.output().slice(mark).match(/ttl=/g) ?? []).length >= 10, 30_000, 50);
}

/** ARP and NS from the provider for the moving addresses now: which node's port answered. */
async function whoAnswers(): Promise<{ arp: number[]; na: number[] }> {
  await s.seg.resetAnswers();
  await s.seg.prv.ip(['neigh', 'flush', 'dev', 'br0']);
  await s.seg.prv.ip(['-6', 'neigh', 'flush', 'dev', 'br0']);
  await s.seg.prv.exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', SEG.floating]);
  await s.seg.prv.exec(['ping', '-6', '-c', '3', '-i', '0.2', '-W', '1', SEG.nextHop]);
  return s.seg.answers();
}

function takeoverLines(p: Proc): string[] {
  return p.output().split('\n').filter((l) => /took over|first packet forwarded|withdrew|withdrawing/.test(l));
}

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-failover-'));
  s.cp = await startControlPlane();
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  await installChart(s.cp);
  s.apiPort = Number(new URL(s.cp.server).port);
  s.seg = await buildSegment('fo');
  await s.admin.create(paths.configMaps(NS), {
    apiVersion: 'v1', kind: 'ConfigMap',
    metadata: { name: agentConfigMapName(PREFIX), namespace: NS, labels: { [LABEL_PREFIX]: PREFIX, [LABEL_MANAGED_BY]: MANAGED_BY } },
    data: share(),
  });
});

test.after.always(async () => {
  await safely(() => s.stream?.stop('SIGTERM', 2000));
  for (const a of s.agents) await safely(() => a?.stop('SIGTERM', 10_000));
  for (const b of s.bridges) await safely(() => b?.close());
  await safely(() => s.seg?.destroy());
  await safely(() => s.cp?.stop());
  if (s.dir) await safely(() => rm(s.dir, { recursive: true, force: true }));
});

serial(title('one member is active, the other a ready standby bound to the floating address; a peer behind NAT is served'), async (t) => {
  await startAgent(0);
  await eventually('n1 active', async () => (await holder()) === 'n1', 20_000, 100);
  await startAgent(1);
  const r2 = await eventually('n2 a ready standby', async () => { const r = await report(1); return r?.failover === 'Standby' ? r : undefined; }, 20_000, 200);
  t.true(r2.ready, r2.message);
  t.regex(r2.message ?? '', /ready standby for 198\.51\.100\.10/);
  t.is((await eventually('n1 reports Active', async () => { const r = await report(0); return r?.failover === 'Active' ? r : undefined; }, 20_000, 200)).failover, 'Active');
  t.deepEqual((await macvlanAddresses(0)).sort(), [SEG.floating, SEG.nextHop].sort(), 'the active member holds both moving addresses');
  t.deepEqual(await macvlanAddresses(1), [], 'the standby holds none');
  // The standby's router is bound to the floating address already (IP_FREEBIND).
  const sockets = await s.seg.nodes[1]!.run(['ss', '-Hnul', 'sport', '= :25790']);
  t.regex(sockets, /198\.51\.100\.10:25790/);

  s.peer = await startPeerIn(s.seg.peer, ['--router', SEG.floating, '--default-route']);
  t.regex(s.peer.address, /^2001:db8:9:10:/);
  await s.seg.peer.spawn([process.execPath, '-e', ECHO_SERVER]).waitFor(/listening/, 10_000);
  s.stream = s.seg.prv.spawn([process.execPath, '-e', STREAM_CLIENT, s.peer.address]);
  await s.stream.waitFor(/connected/, 15_000);
  await s.stream.waitFor(/checked [1-9]/, 15_000);
  const who = await whoAnswers();
  t.true(who.arp[0]! > 0 && who.arp[1] === 0, `only n1 answers ARP: ${JSON.stringify(who)}`);
  t.true(who.na[0]! > 0 && who.na[1] === 0, `only n1 answers NS: ${JSON.stringify(who)}`);
});

/** Runs a failover: pings every 20 ms across it; returns the gap. */
async function across(t: { log: (...a: unknown[]) => void }, what: string, from: number, act: () => Promise<void>): Promise<number> {
  const to = 1 - from;
  const ping = pinger();
  await ping.waitFor(/ttl=/, 10_000);
  const checkedBefore = Number(/checked (\d+)\n?$/.exec(s.stream.output().trim())?.[1] ?? 0);
  await act();
  await eventually(`${NODES[to]} to hold the Lease`, async () => (await holder()) === NODES[to], 30_000, 100);
  await pingsAgain(ping);
  await ping.stop('SIGINT');
  const gap = pingGap(ping.output());
  t.log(`${what}: longest silence between ping answers (every 20 ms) ${gap.gapMs} ms`);
  for (const l of takeoverLines(s.agents[to]!)) t.log(`  ${NODES[to]}: ${l.trim()}`);
  if (!s.stream.running) throw new Error(`the TCP stream ended: ${s.stream.output().slice(-500)}`);
  await eventually('the stream to move on', async () => Number(/checked (\d+)\n?$/.exec(s.stream.output().trim())?.[1] ?? 0) > checkedBefore + 4096, 60_000, 200);
  return gap.gapMs;
}

serial(title('crash of the active member (kill -9): the standby takes over, the peer keeps its address, the stream goes on'), async (t) => {
  await across(t, 'crash', 0, async () => { await s.agents[0]!.stop('SIGKILL'); });
  const m = await scrape(s.seg.nodes[1]!, METRICS);
  t.is(m.get(`sixbed4_failovers_total{prefix="${PREFIX}",reason="LeaseExpired"}`), 1);
  t.is(m.get(`sixbed4_failover_active{prefix="${PREFIX}"}`), 1);
  t.true((m.get(`sixbed4_failover_takeover_seconds_count{prefix="${PREFIX}"}`) ?? 0) >= 1, 'the takeover was timed to its first packet');
  // n1's macvlan still carries the addresses (nothing ran to take them off), but its fence closed at its deadline.
  t.deepEqual((await macvlanAddresses(0)).sort(), [SEG.floating, SEG.nextHop].sort());
  const who = await whoAnswers();
  t.true(who.arp[0] === 0 && who.arp[1]! > 0, `after n1's deadline only n2 answers ARP: ${JSON.stringify(who)}`);
  t.true(who.na[0] === 0 && who.na[1]! > 0, `after n1's deadline only n2 answers NS: ${JSON.stringify(who)}`);
  // The peer kept its address: pings to it came back through n2.
  // n1's agent comes back: it clears what its predecessor left and stands by.
  await startAgent(0);
  await eventually('n1 a ready standby again', async () => (await report(0))?.failover === 'Standby', 20_000, 200);
  t.deepEqual(await macvlanAddresses(0), []);
});

serial(title('planned stop (SIGTERM) of the active member: it withdraws, releases the Lease, the standby takes over at once'), async (t) => {
  const gap = await across(t, 'planned stop', 1, async () => { await s.agents[1]!.stop('SIGTERM', 30_000); });
  t.regex(s.agents[1]!.output(), /released the Lease/);
  const m = await scrape(s.seg.nodes[0]!, METRICS);
  t.is(m.get(`sixbed4_failovers_total{prefix="${PREFIX}",reason="Released"}`), 1);
  t.log(`planned stop gap ${gap} ms (goal: under 1 s; not asserted: the machine is shared)`);
  await startAgent(1);
  await eventually('n2 a ready standby again', async () => (await report(1))?.failover === 'Standby', 20_000, 200);
});

serial(title('the active member\'s uplink down, its API connection up: it gives up, the standby takes over, one answers'), async (t) => {
  await across(t, 'uplink down', 0, async () => { await s.seg.nodes[0]!.ip(['link', 'set', 'eth0', 'down']); });
  t.regex(s.agents[0]!.output(), /data path down \(the uplink eth0 is down\): withdrawing/);
  const m = await scrape(s.seg.nodes[1]!, METRICS);
  t.is(m.get(`sixbed4_failovers_total{prefix="${PREFIX}",reason="DataPathDown"}`), 1);
  const r1 = await eventually('n1 NotReady', async () => { const r = await report(0); return r?.failover === 'NotReady' ? r : undefined; }, 10_000, 200);
  t.regex(r1.message ?? '', /uplink eth0 is down/);
  // The link comes back: n1 stands by; still only n2 answers.
  await s.seg.nodes[0]!.ip(['link', 'set', 'eth0', 'up']);
  await eventually('n1 a ready standby again', async () => (await report(0))?.failover === 'Standby', 20_000, 200);
  const who = await whoAnswers();
  t.true(who.arp[0] === 0 && who.arp[1]! > 0, `only n2 answers ARP: ${JSON.stringify(who)}`);
  t.true(who.na[0] === 0 && who.na[1]! > 0, `only n2 answers NS: ${JSON.stringify(who)}`);
});

serial(title('the API server unreachable for every member: the active one withdraws at its deadline; service resumes with the API'), async (t) => {
  const ping = pinger();
  await ping.waitFor(/ttl=/, 10_000);
  for (const [i, b] of s.bridges.entries()) { await b?.close(); s.bridges[i] = undefined; }
  await s.agents[1]!.waitFor(/withdrawing at the deadline/, 15_000);
  await eventually('no member holds the addresses', async () => (await macvlanAddresses(0)).length === 0 && (await macvlanAddresses(1)).length === 0, 10_000, 100);
  const who = await whoAnswers();
  t.deepEqual(who.arp, [0, 0], 'nobody answers for the floating address while nobody can hold the Lease');
  await sleep(3000);
  for (const i of [0, 1]) s.bridges[i] = await bridgeApiInto(s.seg.nodes[i]!, s.apiPort, join(s.dir, `api-${i}.sock`));
  await eventually('a member holds the Lease again', async () => (await holder()) !== '', 30_000, 100);
  await pingsAgain(ping);
  await ping.stop('SIGINT');
  t.log(`API outage: ping gap ${pingGap(ping.output()).gapMs} ms (the outage lasted the deadline, 3 s, and the way back)`);
  t.true(s.stream.running, 'the TCP stream outlived the outage');
});

serial(title('the TCP stream: never reset, every byte checked'), async (t) => {
  await s.stream.waitFor(/checked/, 5000);
  await s.stream.stop('SIGTERM');
  const final = /final (\d+) bytes checked of (\d+) sent, longest silence (\d+) ms/.exec(s.stream.output());
  t.truthy(final, s.stream.output().slice(-500));
  t.log(final![0]);
  t.true(Number(final![1]) > 0);
  t.notRegex(s.stream.output(), /connection closed|wrong byte|error:/);
});
