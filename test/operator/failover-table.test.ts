// spec.failover in the prefix reconcile (operator/prefix/failover.ts, reconcile.ts), one row per situation, on the
// in-memory API server: the group and its shares, the Lease the operator creates, what the operator refuses, and the
// status, conditions and Events as the members' Lease and reports change. The CRD's CEL rules and the printer
// column need a real API server: cluster.test.ts.
import test from 'ava';
import { FAILOVER_DEFAULTS, type AgentNodeConfig, type KubeObject } from '../../kube/api.js';
import { paths } from '../../kube/client.js';
import { logOnFailure } from '../helpers/logring.js';
import { NS, World } from './memworld.js';

const FLOAT = '198.51.100.10';
const spec = (failover: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
  prefix: '2001:db8:9:10::/64',
  nodeSelector: { role: 'edge' },
  listen: { address: FLOAT },
  failover: { upstream: 'RoutedNextHop', nextHop: '2001:db8:ffff::64', virtualRouterId: 7, ...failover },
  ...extra,
});
const share = (w: World, node: string): AgentNodeConfig | undefined => {
  const text = w.configMap('p')?.data?.[`node.${node}.json`];
  return text ? (JSON.parse(text) as AgentNodeConfig) : undefined;
};
const leasePath = paths.lease(NS, 'sixbed4-failover-p');
/** A member's agent reporting, as the agent does: ready, and its part in the group. */
const ready = (w: World, node: string, role: 'Active' | 'Standby', fields: Record<string, unknown> = {}) =>
  w.report('p', node, { ready: true, livePeers: 0, message: 'forwarding', failover: role, ...fields });

async function group(w: World, nodes = ['a', 'b', 'c'], failover: Record<string, unknown> = {}): Promise<void> {
  for (const [i, n] of nodes.entries()) await w.node(n, { role: 'edge' }, `198.51.100.${21 + i}`);
  await w.prefix('p', spec(failover));
  await w.settle('p'); // the operator creates the Lease the members then take
}

/** The usual start: the group of three, a active and holding the Lease, b standing by. */
async function aActiveBStandby(w: World): Promise<void> {
  await group(w);
  await ready(w, 'a', 'Active');
  await ready(w, 'b', 'Standby');
  await w.failoverLease('p', 'a');
}

interface Row {
  title: string;
  given: (w: World) => Promise<void>;
  when?: (w: World) => Promise<void>;
  then: (t: import('ava').ExecutionContext, w: World) => void | Promise<void>;
}

const rows: Row[] = [
  {
    title:
      'a failover /64 on three selected nodes: 1 + 1 standby get the same /64 on the floating address, the Lease exists before the shares',
    given: (w) => group(w),
    then: (t, w) => {
      const cm = w.configMap('p')!;
      t.deepEqual(
        Object.keys(cm.data!).sort(),
        ['node.a.json', 'node.b.json', 'prefix.json'],
        'the first two by name: c is selected but not a member',
      );
      for (const n of ['a', 'b']) {
        t.deepEqual(share(w, n), {
          prefix: '2001:db8:9:10::/64',
          listen: { address: FLOAT, port: 25790 },
          localAddresses: [],
          localAddressMode: 'uplink128',
          routes: [],
          ndpProxy: 'off',
          fastPath: 'auto',
          tunnel: share(w, n)!.tunnel,
          failover: {
            address: FLOAT,
            leaseName: 'sixbed4-failover-p',
            members: ['a', 'b'],
            upstream: 'RoutedNextHop',
            nextHop: '2001:db8:ffff::64',
            virtualRouterId: 7,
            leaseDurationMs: 2000,
            renewIntervalMs: 500,
            fenceAfterMs: 1500,
          },
        });
      }
      const lease = w.kube.peek<KubeObject>(leasePath)!;
      t.like(lease.metadata.labels, { 'app.kubernetes.io/component': 'failover-lease', 'sixbed4.io/prefix': 'p' });
      t.like(
        lease.metadata.ownerReferences![0],
        { kind: 'SixBed4Prefix', name: 'p', controller: true },
        'deleted with the prefix',
      );
      const creates = w.kube.writes.filter((x) => x.verb === 'POST' || x.verb === 'PATCH').map((x) => x.path);
      t.true(
        creates.indexOf(paths.leases(NS)) < creates.indexOf(paths.configMap(NS, 'sixbed4-agent-p')),
        'Lease first',
      );
      const p = w.get('p')!;
      t.deepEqual(p.status!.nodes, [
        { name: 'a', prefix: '2001:db8:9:10::/64', listen: `${FLOAT}:25790` },
        { name: 'b', prefix: '2001:db8:9:10::/64', listen: `${FLOAT}:25790` },
      ]);
      t.deepEqual(p.status!.failover, { standbysReady: '0/2' });
      t.like(w.cond('p', 'Ready'), { status: 'False', reason: 'NoActiveNode' });
      t.like(w.cond('p', 'Degraded'), { status: 'False', reason: 'AsExpected' });
      t.deepEqual(FAILOVER_DEFAULTS, { standbys: 1, leaseDurationMs: 2000, renewIntervalMs: 500, fenceAfterMs: 1500 });
    },
  },
  {
    title: 'a member takes the Lease and both report ready: Active shown, Ready True, one Normal ActiveElected',
    given: (w) => group(w),
    when: async (w) => {
      await ready(w, 'a', 'Active', { livePeers: 3 });
      await ready(w, 'b', 'Standby', { livePeers: 2 });
      await w.failoverLease('p', 'a');
    },
    then: (t, w) => {
      const p = w.get('p')!;
      t.like(p.status!.failover, {
        active: 'a',
        standbysReady: '1/1',
        transitions: 1,
        lastFailover: { to: 'a', reason: 'Elected' },
      });
      t.deepEqual(
        p.status!.nodes!.map((e) => `${e.name}=${e.failover}`),
        ['a=Active', 'b=Standby'],
        'what the agents report',
      );
      t.like(w.cond('p', 'Ready'), {
        status: 'True',
        reason: 'ActiveReady',
        message: 'a is active and forwards; 1/1 standbys ready',
      });
      t.is(p.status!.livePeers, 3, "the active node's peers only (the standby still counts what it saw while active)");
      t.like(w.cond('p', 'Degraded'), { status: 'False', reason: 'AsExpected' });
      t.deepEqual(
        w.events.filter((e) => /Active|Failed/.test(e.reason)).map((e) => `${e.type} ${e.reason}`),
        ['Normal ActiveElected'],
      );
    },
  },
  {
    title: 'no standby ready: Degraded NoStandbyReady with why, a Warning; the standby ready again: Recovered',
    given: async (w) => {
      await group(w);
      await ready(w, 'a', 'Active');
      await w.failoverLease('p', 'a');
    },
    when: async (w) => {
      await w.settle('p');
      const degraded = w.cond('p', 'Degraded')!;
      mid.set(w, `${degraded.reason}: ${degraded.message}`);
      await w.report('p', 'b', { ready: true, failover: 'NotReady', message: 'uplink eth0 is down' });
      await w.settle('p');
      mid2.set(w, w.cond('p', 'Degraded')!.message);
      await ready(w, 'b', 'Standby');
    },
    then: (t, w) => {
      t.is(mid.get(w), 'NoStandbyReady: a serves the /64 and no standby is ready to take over: b (no report yet)');
      t.is(mid2.get(w), 'a serves the /64 and no standby is ready to take over: b (NotReady: uplink eth0 is down)');
      t.true(w.reasons('p').includes('Warning NoStandbyReady'));
      t.like(w.cond('p', 'Degraded'), { status: 'False', reason: 'AsExpected' });
      t.like(w.cond('p', 'Ready'), { status: 'True' }, 'the active node serves all along');
      t.true(w.reasons('p').includes('Normal Recovered'));
    },
  },
  {
    title:
      'the active node crashes (its heartbeat stops) and the standby takes the Lease: Warning FailedOver, reason ActiveLost',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      w.tick(301_000);
      await ready(w, 'b', 'Active');
      await w.failoverLease('p', 'b');
    },
    then: (t, w) => {
      const f = w.get('p')!.status!.failover!;
      t.like(f, { active: 'b', transitions: 2, lastFailover: { from: 'a', to: 'b', reason: 'ActiveLost' } });
      t.regex(f.lastFailover!.message, /b took over from a: a's agent stopped renewing/);
      const ev = w.events.find((e) => e.reason === 'FailedOver')!;
      t.is(ev.type, 'Warning');
      t.regex(ev.message, /^ActiveLost: b took over from a/);
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'NoStandbyReady' }, 'a is down: no standby left');
    },
  },
  {
    title: 'the active node gives up on its data path (its report says why) and the standby takes over: DataPathDown',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      await w.report('p', 'a', { ready: false, reason: 'UplinkDown', message: 'uplink eth0 is down' });
      await w.failoverLease('p', 'b');
    },
    then: (t, w) => {
      t.like(w.get('p')!.status!.failover!.lastFailover, {
        from: 'a',
        to: 'b',
        reason: 'DataPathDown',
        message: 'b took over from a: a gave up (UplinkDown: uplink eth0 is down)',
      });
      t.true(w.reasons('p').includes('Warning FailedOver'));
    },
  },
  {
    title:
      'a planned handover (the active agent releases the Lease; the standby takes it): Normal FailedOver, reason Handover',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      await w.failoverLease('p', undefined);
      await w.settle('p'); // the operator sees the Lease held by nobody for a moment
      mid.set(w, String(w.get('p')!.status!.failover!.active));
      await w.failoverLease('p', 'b');
    },
    then: (t, w) => {
      t.is(mid.get(w), 'undefined', 'no active node while the Lease is free');
      t.like(w.get('p')!.status!.failover!.lastFailover, { from: 'a', to: 'b', reason: 'Handover' });
      t.deepEqual(
        w.events.filter((e) => e.reason === 'FailedOver').map((e) => e.type),
        ['Normal'],
      );
    },
  },
  {
    title:
      'the active node releases the Lease saying its data path failed (sixbed4.io/release-reason): DataPathDown, a Warning',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      await w.failoverLease('p', undefined, w.now, 'DataPathDown');
      await w.failoverLease('p', 'b');
    },
    then: (t, w) => {
      t.like(w.get('p')!.status!.failover!.lastFailover, { from: 'a', to: 'b', reason: 'DataPathDown' });
      t.deepEqual(
        w.events.filter((e) => e.reason === 'FailedOver').map((e) => e.type),
        ['Warning'],
      );
    },
  },
  {
    title:
      'the active member restarted (its agent reports itself a standby again) and the other took over, the operator not having seen the release: Handover',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      await w.report('p', 'a', {
        ready: false,
        reason: 'StandbyNotReady',
        failover: 'NotReady',
        message: 'standby, not ready: starting',
      });
      await w.failoverLease('p', 'b');
    },
    then: (t, w) =>
      t.like(w.get('p')!.status!.failover!.lastFailover, {
        from: 'a',
        to: 'b',
        reason: 'Handover',
        message: 'b took over from a: a stepped down (its agent restarted its member and stands by)',
      }),
  },
  {
    title: 'kubectl drain of the active node (cordoned) before it hands over: Handover',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      await w.kube.mergePatch(paths.node('a'), { spec: { unschedulable: true } }, 'kubectl');
      await w.failoverLease('p', 'b');
    },
    then: (t, w) =>
      t.like(w.get('p')!.status!.failover!.lastFailover, {
        from: 'a',
        to: 'b',
        reason: 'Handover',
        message: 'b took over from a: a is cordoned (kubectl drain) and handed the Lease over',
      }),
  },
  {
    title: 'a drained node still active crashes (cordoned, its heartbeat stops, no release): ActiveLost, not Handover',
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      await w.kube.mergePatch(paths.node('a'), { spec: { unschedulable: true } }, 'kubectl');
      await w.settle('p');
      w.tick(301_000);
      await ready(w, 'b', 'Active');
      await w.failoverLease('p', 'b');
    },
    then: (t, w) => t.like(w.get('p')!.status!.failover!.lastFailover, { from: 'a', to: 'b', reason: 'ActiveLost' }),
  },
  {
    title: "the active node's Lease expires and nobody takes it: no active node, Ready False",
    given: aActiveBStandby,
    when: async (w) => {
      await w.settle('p');
      w.tick(10_000);
      await ready(w, 'b', 'Standby');
    },
    then: (t, w) => {
      t.is(w.get('p')!.status!.failover!.active, undefined);
      t.like(w.cond('p', 'Ready'), { status: 'False', reason: 'NoActiveNode' });
    },
  },
  {
    title: 'the group stays put: a new node that sorts first does not displace a member, and the holder stays a member',
    given: async (w) => {
      await group(w, ['m', 'n']);
      await w.failoverLease('p', 'n');
    },
    when: async (w) => {
      await w.node('a', { role: 'edge' }, '198.51.100.30');
    },
    then: (t, w) => t.deepEqual(share(w, 'n')!.failover!.members, ['m', 'n'], 'as before'),
  },
  {
    title: 'a failover leaves every share as it was (no router restarts); fewer standbys keep the holder in the group',
    given: async (w) => {
      await group(w, ['a', 'b', 'c'], { standbys: 2 });
      await w.failoverLease('p', 'c');
    },
    when: async (w) => {
      await w.settle('p');
      const before = JSON.stringify(w.configMap('p')!.data);
      await w.failoverLease('p', undefined);
      await w.failoverLease('p', 'b');
      await w.settle('p');
      mid.set(w, String(JSON.stringify(w.configMap('p')!.data) === before));
      await w.prefix('p', spec({ standbys: 1 }));
    },
    then: (t, w) => {
      t.is(mid.get(w), 'true', 'the shares unchanged by the failover');
      t.deepEqual(share(w, 'b')!.failover!.members, ['a', 'b'], 'the holder b stays; c, not active, goes');
      t.falsy(share(w, 'c'));
    },
  },
  {
    title:
      'kubectl drain of a member with a third node selected: the drained node leaves the group (its agent hands over as it stops), the third joins',
    given: async (w) => {
      await group(w, ['a', 'b', 'c']);
      await ready(w, 'a', 'Active');
      await ready(w, 'b', 'Standby');
      await w.failoverLease('p', 'a');
    },
    when: async (w) => {
      await w.settle('p');
      await w.kube.mergePatch(paths.node('a'), { spec: { unschedulable: true } }, 'kubectl');
    },
    then: (t, w) => {
      t.falsy(share(w, 'a'), 'a has no share any more');
      t.deepEqual(share(w, 'b')!.failover!.members, ['b', 'c']);
    },
  },
  {
    title:
      "a drained member that no other node can replace stays in the group, its share marked cordoned (its agent hands over); b's share unchanged",
    given: async (w) => {
      await group(w, ['a', 'b']);
      await ready(w, 'a', 'Active');
      await ready(w, 'b', 'Standby');
      await w.failoverLease('p', 'a');
    },
    when: async (w) => {
      await w.settle('p');
      mid.set(w, w.configMap('p')!.data!['node.b.json']!);
      await w.kube.mergePatch(paths.node('a'), { spec: { unschedulable: true } }, 'kubectl');
    },
    then: (t, w) => {
      t.deepEqual(share(w, 'b')!.failover!.members, ['a', 'b']);
      t.is(share(w, 'a')!.failover!.cordoned, true);
      t.is(
        w.configMap('p')!.data!['node.b.json'],
        mid.get(w) ?? '',
        "the standby's share is as it was: its router is not restarted",
      );
    },
  },
  {
    title:
      'a drained holder whose standby is not ready (its agent starting) is marked only once the standby reports ready: the /64 is never left without a node',
    given: async (w) => {
      await group(w, ['a', 'b']);
      await ready(w, 'a', 'Active');
      await w.failoverLease('p', 'a');
    },
    when: async (w) => {
      await w.settle('p');
      await w.kube.mergePatch(paths.node('a'), { spec: { unschedulable: true } }, 'kubectl');
      await w.settle('p');
      unmarked.set(w, !('cordoned' in share(w, 'a')!.failover!));
      await ready(w, 'b', 'Standby');
      await w.settle('p');
    },
    then: (t, w) => {
      t.true(unmarked.get(w), 'not marked while b was not a ready standby');
      t.is(share(w, 'a')!.failover!.cordoned, true, 'marked once b stands by');
    },
  },
  {
    title: 'a lone member cordoned is not marked (nobody could take over: a drain never stops the service)',
    given: async (w) => {
      await group(w, ['a']);
      await w.failoverLease('p', 'a');
    },
    when: async (w) => {
      await w.kube.mergePatch(paths.node('a'), { spec: { unschedulable: true } }, 'kubectl');
    },
    then: (t, w) => t.false('cordoned' in share(w, 'a')!.failover!),
  },
  {
    title: 'one node where a standby is asked for: it serves alone, Degraded TooFewNodes',
    given: (w) => group(w, ['a']),
    then: (t, w) => {
      t.deepEqual(share(w, 'a')!.failover!.members, ['a']);
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'TooFewNodes' });
      t.regex(
        w.cond('p', 'Degraded')!.message,
        /standbys 1 needs 2 nodes, but spec.nodeSelector \{"role":"edge"\} matches 1 \(a\); a serves alone/,
      );
    },
  },
  {
    title: "upstream OnLink: the members' shares proxy neighbour discovery; own timings and standbys are carried",
    given: async (w) => {
      for (const n of ['a', 'b', 'c']) await w.node(n, { role: 'edge' }, undefined);
      await w.prefix(
        'p',
        spec(
          {
            upstream: 'OnLink',
            nextHop: undefined,
            standbys: 2,
            leaseDurationMs: 3000,
            renewIntervalMs: 250,
            fenceAfterMs: 2000,
          },
          { localAddresses: ['::11'] },
        ),
      );
    },
    then: (t, w) => {
      const s = share(w, 'c')!;
      t.is(s.ndpProxy, 'on');
      t.deepEqual(s.localAddresses, ['2001:db8:9:10::11']);
      t.like(s.failover, {
        upstream: 'OnLink',
        members: ['a', 'b', 'c'],
        leaseDurationMs: 3000,
        renewIntervalMs: 250,
        fenceAfterMs: 2000,
      });
      t.false('nextHop' in s.failover!);
      t.like(
        w.cond('p', 'Degraded'),
        { status: 'False' },
        'nodes without an address of their own are fine: they listen on the floating one',
      );
    },
  },
  {
    title: 'refused, nothing served: nodes behind a 1:1 NAT (a cloud without a shared layer 2)',
    given: async (w) => {
      for (const n of ['a', 'b']) {
        await w.kube.create(paths.nodes, {
          apiVersion: 'v1',
          kind: 'Node',
          metadata: { name: n, labels: { role: 'edge' } },
          status: {
            addresses: [
              { type: 'InternalIP', address: `100.64.0.${n === 'a' ? 1 : 2}` },
              { type: 'ExternalIP', address: `203.0.113.${n === 'a' ? 1 : 2}` },
            ],
          },
        });
      }
      await w.prefix('p', spec());
    },
    then: (t, w) => {
      t.deepEqual(Object.keys(w.configMap('p')!.data!), ['prefix.json'], 'no share');
      t.falsy(w.kube.peek(leasePath), 'no Lease');
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'FailoverNeedsLayer2' });
      t.regex(
        w.cond('p', 'Degraded')!.message,
        /node a \(ExternalIP 203\.0\.113\.1 in front of InternalIP 100\.64\.0\.1\), b .* sits behind a 1:1 NAT/,
      );
      t.deepEqual(w.get('p')!.status!.nodes, []);
    },
  },
  {
    title: "refused: the next hop is a node's own address (the /64 routed to one machine), or the floating address is",
    given: async (w) => {
      await w.kube.create(paths.nodes, {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: 'a', labels: { role: 'edge' } },
        status: {
          addresses: [
            { type: 'InternalIP', address: '198.51.100.21' },
            { type: 'InternalIP', address: '2001:db8:ffff:0::64' },
          ],
        },
      });
      await w.node('b', { role: 'edge' }, '198.51.100.22');
      await w.node('x', { role: 'other' }, FLOAT);
      await w.prefix('p', spec());
      await w.prefix('q', {
        ...spec({ nextHop: '2001:db8:ffff::65' }),
        prefix: '2001:db8:9:11::/64',
        nodeSelector: { role: 'other' },
      });
      await w.settle('q');
    },
    then: (t, w) => {
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'NextHopNotMovable' });
      t.regex(w.cond('p', 'Degraded')!.message, /nextHop 2001:db8:ffff::64 is node a's own address/);
      t.deepEqual(Object.keys(w.configMap('p')!.data!), ['prefix.json']);
      t.like(w.cond('q', 'Degraded'), { status: 'True', reason: 'FloatingAddressIsNodeAddress' });
    },
  },
  {
    title: "a failover spec the operator cannot serve (written before the CRD's rules) serves nothing: InvalidFailover",
    given: async (w) => {
      await group(w, ['a', 'b']);
      await w.prefix('q', { ...spec(), prefix: '2001:db8:8::/63' });
      await w.prefix('r', { ...spec({ renewIntervalMs: 2000 }), prefix: '2001:db8:7::/64' });
      await w.settle('q');
      await w.settle('r');
    },
    then: (t, w) => {
      t.like(w.cond('q', 'Degraded'), { status: 'True', reason: 'InvalidFailover' });
      t.regex(w.cond('q', 'Degraded')!.message, /failover needs a \/64 prefix; 2001:db8:8::\/63 is split among nodes/);
      t.regex(
        w.cond('r', 'Degraded')!.message,
        /timings 2000 \/ 1500 \/ 2000 ms must be .*renewIntervalMs < fenceAfterMs < leaseDurationMs/,
      );
      t.falsy(w.kube.peek(paths.configMap(NS, 'sixbed4-agent-q')));
    },
  },
];

const mid = new WeakMap<World, string>();
const mid2 = new WeakMap<World, string>();
const unmarked = new WeakMap<World, boolean>();

for (const row of rows) {
  test(row.title, async (t) => {
    const w = new World();
    logOnFailure(t, () => ({
      operator: w.log.tail(),
      writes: w.kube.writes.map((x) => `${x.verb} ${x.path} ${x.status}`),
    }));
    await row.given(w);
    await w.settle('p');
    if (row.when) {
      await row.when(w);
      await w.settle('p');
    }
    await row.then(t, w);
  });
}
