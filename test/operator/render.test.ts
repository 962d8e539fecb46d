// Rendering of the agent ConfigMap, drift detection, and the operator's part of
// the status. (The agents' DaemonSet is the chart's: test/operator/chart.test.ts.)
import test from 'ava';
import type { AgentNodeConfig, SixBed4Prefix } from '../../kube/api.js';
import { covers, firstDrift } from '../../operator/prefix/drift.js';
import { renderConfigMap, type RenderOptions } from '../../operator/prefix/render.js';
import { agentProblems, computeStatus, type StatusInput } from '../../operator/prefix/status.js';

const prefix: SixBed4Prefix = {
  apiVersion: 'sixbed4.io/v1alpha1',
  kind: 'SixBed4Prefix',
  metadata: { name: 'edge', uid: '5f1e2d3c-0000-4000-8000-000000000001', generation: 2 },
  spec: { prefix: '2001:db8:9::/48' },
};
const opts: RenderOptions = { namespace: 'sixbed4-system' };
const share = (sub: string, addr: string): AgentNodeConfig => ({
  prefix: sub,
  listen: { address: addr, port: 25790 },
  localAddresses: [sub.replace('/64', '11')],
  localAddressMode: 'uplink128',
  routes: [],
  ndpProxy: 'off',
});

type Any = any;

test('ConfigMap: one key per node plus the common part; the order of nodes does not matter', (t) => {
  const nodes = new Map([
    ['b', share('2001:db8:9:2::/64', '198.51.100.2')],
    ['a', share('2001:db8:9:1::/64', '198.51.100.1')],
  ]);
  const cm = renderConfigMap(prefix, '2001:db8:9::/48', 9475, nodes, opts) as Any;
  t.deepEqual(Object.keys(cm.data).sort(), ['node.a.json', 'node.b.json', 'prefix.json']);
  t.deepEqual(JSON.parse(cm.data['node.a.json']), share('2001:db8:9:1::/64', '198.51.100.1'));
  t.deepEqual(JSON.parse(cm.data['prefix.json']), {
    apiVersion: 'sixbed4.io/v1alpha1',
    kind: 'AgentConfig',
    name: 'edge',
    prefix: '2001:db8:9::/48',
    nodes: ['a', 'b'],
    metricsPort: 9475,
  });
  t.deepEqual(
    renderConfigMap(prefix, '2001:db8:9::/48', 9475, new Map([...nodes].reverse()), opts),
    cm,
    'order of nodes does not matter',
  );
});

test('drift: server defaults and additions are not drift; changed or removed fields we set are', (t) => {
  // A pod template as an operator might render one: drift is generic over objects.
  const desired = {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'x', labels: { a: 'b' } },
    spec: {
      template: {
        metadata: { labels: { a: 'b' } },
        spec: {
          containers: [
            {
              name: 'agent',
              image: 'sixbed4:1.2.3',
              env: [{ name: 'NODE_NAME', value: 'n' }],
              securityContext: { privileged: false, capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] } },
            },
          ],
          volumes: [
            { name: 'dev-net-tun', hostPath: { path: '/dev/net/tun', type: 'CharDevice' } },
            { name: 'tmp', emptyDir: {} },
          ],
        },
      },
    },
  } as Any;
  const actual = JSON.parse(JSON.stringify(desired)) as Any;
  actual.metadata.resourceVersion = '42';
  actual.metadata.labels.extra = 'x';
  actual.spec.template.metadata.annotations = { 'kubectl.kubernetes.io/restartedAt': 'now' };
  actual.spec.template.spec.containers[0].terminationMessagePath = '/dev/termination-log';
  actual.spec.template.spec.containers[0].env.push({ name: 'EXTRA', value: '1' });
  actual.spec.revisionHistoryLimit = 10;
  actual.status = { numberReady: 0 };
  t.true(covers(actual, desired));
  const img = JSON.parse(JSON.stringify(actual)) as Any;
  img.spec.template.spec.containers[0].image = 'evil:latest';
  t.is(firstDrift(img, desired), '.spec.template.spec.containers[agent].image');
  const caps = JSON.parse(JSON.stringify(actual)) as Any;
  caps.spec.template.spec.containers[0].securityContext.capabilities.add.push('SYS_ADMIN');
  t.is(firstDrift(caps, desired), '.spec.template.spec.containers[agent].securityContext.capabilities.add');
  const gone = JSON.parse(JSON.stringify(actual)) as Any;
  gone.spec.template.spec.volumes = gone.spec.template.spec.volumes.filter((v: Any) => v.name !== 'dev-net-tun');
  t.is(firstDrift(gone, desired), '.spec.template.spec.volumes[dev-net-tun]');
  const priv = JSON.parse(JSON.stringify(actual)) as Any;
  priv.spec.template.spec.containers[0].securityContext.privileged = true;
  t.false(covers(priv, desired));
});

function input(over: Partial<StatusInput> = {}): StatusInput {
  return {
    generation: 2,
    now: new Date('2026-11-26T10:00:00Z'),
    deleting: false,
    waitingRevert: [],
    problems: [],
    serving: new Map([
      ['a', share('2001:db8:9:1::/64', '198.51.100.1')],
      ['b', share('2001:db8:9:2::/64', '198.51.100.2')],
    ]),
    actual: undefined,
    daemonSet: undefined,
    staleAfterMs: 120_000,
    nodeExists: () => true,
    ...over,
  };
}

test('status: conditions and node entries; applying the result again changes nothing', (t) => {
  const first = computeStatus(input());
  t.true(first.changed);
  t.is(first.status.nodesReady, '0/2');
  t.deepEqual(first.status.nodes, [
    { name: 'a', prefix: '2001:db8:9:1::/64', listen: '198.51.100.1:25790' },
    { name: 'b', prefix: '2001:db8:9:2::/64', listen: '198.51.100.2:25790' },
  ]);
  const cond = (s: typeof first, type: string) => s.status.conditions.find((c) => c.type === type)!;
  t.is(cond(first, 'Ready').reason, 'AgentsNotReady');
  t.is(cond(first, 'Degraded').status, 'False');
  t.is(cond(first, 'Progressing').reason, 'RollingOut');
  // the server now holds it: no change, same transition times even later
  const later = computeStatus(input({ actual: first.status, now: new Date('2026-11-26T10:05:00Z') }));
  t.false(later.changed);
  t.deepEqual(later.transitions, []);
  t.deepEqual(later.status, first.status);
});

test('status: agents report ready -> Ready; a stale report stops counting; leftover entries are removed', (t) => {
  const now = new Date('2026-11-26T10:00:00Z');
  const base = computeStatus(input()).status;
  const nodes = [
    { ...base.nodes[0]!, ready: true, lastReport: '2026-11-26T09:59:30Z' },
    { ...base.nodes[1]!, ready: true, lastReport: '2026-11-26T09:59:50Z' },
    { name: 'gone', ready: true, lastReport: '2026-11-26T09:59:50Z' },
    { name: 'departed', ready: true, lastReport: '2026-11-26T09:50:00Z' },
  ];
  const r = computeStatus(input({ now, actual: { ...base, nodes }, nodeExists: (n) => n !== 'gone' }));
  t.is(r.status.nodesReady, '2/2');
  const ready = r.status.conditions.find((c) => c.type === 'Ready')!;
  t.is(ready.status, 'True');
  t.is(ready.reason, 'AgentsReady');
  t.deepEqual(
    r.transitions.map((x) => `${x.type}=${x.status}/${x.reason}`),
    ['Ready=True/AgentsReady'],
  );
  t.deepEqual(r.staleEntries.sort(), ['departed', 'gone']);
  t.is(r.requeueAfterMs, 90_000 + 100, 'looks again when the oldest ready report goes stale');
  const stale = computeStatus(input({ now: new Date('2026-11-26T10:01:45Z'), actual: { ...r.status, nodes } }));
  t.is(stale.status.nodesReady, '1/2');
  t.regex(
    stale.status.conditions.find((c) => c.type === 'Ready')!.message,
    /waiting for a \(no report for over 120s\)/,
  );
});

test('status while deleting; Degraded carries every problem', (t) => {
  const del = computeStatus(input({ deleting: true, waitingRevert: ['b'] }));
  t.is(del.status.conditions.find((c) => c.type === 'Ready')!.reason, 'Deleting');
  t.regex(del.status.conditions.find((c) => c.type === 'Progressing')!.message, /waiting for b to revert/);
  const deg = computeStatus(
    input({
      problems: [
        { reason: 'PrefixExhausted', message: 'm1' },
        { reason: 'NoNodeAddress', message: 'm2' },
      ],
    }),
  );
  const d = deg.status.conditions.find((c) => c.type === 'Degraded')!;
  t.deepEqual([d.status, d.reason, d.message], ['True', 'PrefixExhausted', 'm1; m2']);
});

test('status: agents report in their node Lease, changed reports only; the operator copies them, renewals keep them alive', (t) => {
  const now = new Date('2026-11-26T10:00:00Z');
  const base = computeStatus(input()).status;
  // reported 10 minutes ago (well past staleAfterMs, 2 minutes), not changed since
  const report = { ready: true, livePeers: 2, message: 'forwarding', lastReport: '2026-11-26T09:50:00Z' };
  const stale = computeStatus(input({ now, actual: base, agent: () => ({ report }) }));
  t.is(stale.status.nodesReady, '0/2', 'without renewals an old report does not count');
  t.is(stale.status.livePeers, 0, 'nor does its count of live peers');
  const beats: Record<string, string> = { a: '2026-11-26T09:59:55.000000Z', b: '2026-11-26T09:59:58.000000Z' };
  const alive = computeStatus(input({ now, actual: base, agent: (n) => ({ report, heartbeat: beats[n]! }) }));
  t.is(alive.status.nodesReady, '2/2');
  t.is(alive.status.livePeers, 4, 'live peers summed over the ready nodes');
  t.like(alive.status.nodes[0], {
    name: 'a',
    prefix: '2001:db8:9:1::/64',
    ready: true,
    livePeers: 2,
    message: 'forwarding',
    lastReport: '2026-11-26T09:50:00Z',
  });
  t.true(alive.changed, 'the reports go into the status');
  t.is(alive.requeueAfterMs, 120_000 - 5_000 + 100, 'looks again when the older renewal would go stale');
  t.deepEqual(alive.staleEntries, []);
  // The status holds them now: renewals alone change nothing.
  const renewed: Record<string, string> = { a: '2026-11-26T10:00:05.000000Z', b: '2026-11-26T10:00:08.000000Z' };
  const later = computeStatus(
    input({
      now: new Date('2026-11-26T10:00:09Z'),
      actual: alive.status,
      agent: (n) => ({ report, heartbeat: renewed[n]! }),
    }),
  );
  t.false(later.changed);
});

test('status: an agent that cannot bind its listen address makes the prefix Degraded, naming node and address', (t) => {
  const serving = input().serving;
  const report = {
    ready: false,
    reason: 'ListenAddressUnavailable',
    message: '203.0.113.9 is not an address of this host',
    lastReport: '2026-11-26T09:59:59Z',
  };
  const problems = agentProblems(serving, (n) =>
    n === 'b' ? { report, heartbeat: '2026-11-26T09:59:59.000000Z' } : undefined,
  );
  t.deepEqual(problems, [
    {
      reason: 'ListenAddressUnavailable',
      message: 'node b cannot serve on 198.51.100.2:25790: 203.0.113.9 is not an address of this host',
    },
  ]);
  const st = computeStatus(input({ problems, agent: (n) => (n === 'b' ? { report } : undefined) }));
  t.like(
    st.status.conditions.find((c) => c.type === 'Degraded'),
    { status: 'True', reason: 'ListenAddressUnavailable' },
  );
  t.like(st.status.nodes[1], { name: 'b', ready: false, reason: 'ListenAddressUnavailable' });
  t.deepEqual(
    agentProblems(serving, () => ({ report: { ready: true, message: 'forwarding' } })),
    [],
  );
});
