// What restarts a node's router: the agent compares its share of the prefix's agent ConfigMap (config.ts) with the
// one it serves. The shares here are the operator's own (plan + render of a failover spec), so the test follows what
// the operator really writes when a standby joins the group.
import test from 'ava';
import { shareFromData } from '../../agent/cluster/config.js';
import { checkSpec } from '../../kube/prefix-spec.js';
import { plan, type NodeInfo } from '../../operator/prefix/plan.js';
import { renderConfigMap } from '../../operator/prefix/render.js';
import type { SixBed4Prefix } from '../../kube/api.js';

const node = (name: string, i: number): NodeInfo => ({
  name,
  labels: { role: 'edge' },
  address: `198.51.100.${21 + i}`,
});

/** The ConfigMap data the operator renders for a failover /64 on these nodes. */
function rendered(spec: Record<string, unknown>, nodes: NodeInfo[]): Record<string, string> {
  const full = {
    prefix: '2001:db8:9:10::/64',
    nodeSelector: { role: 'edge' },
    listen: { address: '198.51.100.10' },
    ...spec,
  };
  const checked = checkSpec(full);
  if (!checked.spec || checked.problems.length) throw new Error(checked.problems.map((p) => p.message).join('; '));
  const p = {
    apiVersion: 'sixbed4.io/v1alpha1',
    kind: 'SixBed4Prefix',
    metadata: { name: 'p', uid: 'u1' },
    spec: full,
  } as unknown as SixBed4Prefix;
  const planned = plan('p', undefined, checked.spec, nodes, {}, [], { members: ['a', 'b'] });
  noProblems(planned);
  const cm = renderConfigMap(p, checked.spec.prefix.text, checked.spec.metricsPort, planned.nodes, {
    namespace: 'sixbed4-system',
  });
  return cm.data as Record<string, string>;
}
function noProblems(planned: { problems?: { message: string }[] }): void {
  if (planned.problems?.length) throw new Error(planned.problems.map((p) => p.message).join('; '));
}

const failover = (standbys: number, extra: Record<string, unknown> = {}) => ({
  failover: { standbys, upstream: 'RoutedNextHop', nextHop: '2001:db8:ffff::64', virtualRouterId: 7, ...extra },
});

test('a standby joining the group changes every share (the member list) but restarts no member that serves', (t) => {
  const nodes = ['a', 'b', 'c'].map(node);
  const two = rendered(failover(1), nodes);
  const three = rendered(failover(2), nodes);
  for (const n of ['a', 'b']) {
    t.notDeepEqual(
      JSON.parse(two[`node.${n}.json`]!).failover.members,
      JSON.parse(three[`node.${n}.json`]!).failover.members,
      `the operator lists the new member in ${n}'s share`,
    );
    t.is(shareFromData(two, n).text, shareFromData(three, n).text, `${n}: nothing it acts on changed`);
  }
  t.is(shareFromData(two, 'c').node, null, 'c had no share');
  t.truthy(shareFromData(three, 'c').node, 'c has one now');
});

test('every other change to a failover share restarts: timings, the virtual router, the next hop', (t) => {
  const nodes = ['a', 'b'].map(node);
  const base = shareFromData(rendered(failover(1), nodes), 'a').text;
  for (const extra of [
    { virtualRouterId: 8 },
    { nextHop: '2001:db8:ffff::65' },
    { leaseDurationMs: 3000, renewIntervalMs: 500, fenceAfterMs: 2000 },
  ])
    t.not(shareFromData(rendered(failover(1, extra), nodes), 'a').text, base, JSON.stringify(extra));
});

test('a share without failover restarts on any change of its text; no share is the empty text', (t) => {
  const data = { 'prefix.json': '{}', 'node.a.json': '{"prefix":"2001:db8:9:10::/64"}' };
  t.is(shareFromData(data, 'a').text, data['node.a.json']);
  t.is(shareFromData(data, 'b').text, '');
});
