// The operator's own spec check and the per-node plan: what each node serves
// and which problems (Degraded reasons) a spec has.
import test from 'ava';
import { checkSpec } from '../../kube/prefix-spec.js';
import { nodeInfo, plan, type NodeInfo } from '../../operator/prefix/plan.js';

const nodes: NodeInfo[] = [
  { name: 'a', labels: { role: 'edge' }, address: '198.51.100.1' },
  { name: 'b', labels: { role: 'edge' }, address: '198.51.100.2' },
  { name: 'c', labels: { role: 'edge' }, address: '203.0.113.3' },
  { name: 'x', labels: { role: 'core' }, address: '192.0.2.9' },
  { name: 'y', labels: { role: 'bare' } },
];

function checked(spec: Record<string, unknown>) {
  const r = checkSpec(spec);
  if (!r.spec) throw new Error(`spec refused: ${r.problems.map((p) => p.message).join('; ')}`);
  return r;
}

test('a valid spec gets defaults; every field is parsed', (t) => {
  const { spec, problems } = checked({
    prefix: '2001:DB8:9::/48',
    localAddresses: ['::11', '2001:db8:9:10::30'],
    routes: ['2001:db8:ffff::/48'],
  });
  t.deepEqual(problems, []);
  t.is(spec!.prefix.text, '2001:db8:9::/48');
  t.is(spec!.port, 25790);
  t.is(spec!.metricsPort, 9475);
  t.is(spec!.ndpProxy, 'off');
  t.is(spec!.localAddressMode, 'uplink128');
  t.deepEqual(
    spec!.localAddresses.map((a) => [a.text, a.perNode]),
    [
      ['::11', true],
      ['2001:db8:9:10::30', false],
    ],
  );
  t.deepEqual(spec!.routes, ['2001:db8:ffff::/48']);
});

test('what CEL checks, the operator checks again, with the same kind of message', (t) => {
  const reasons = (spec: unknown) => checkSpec(spec).problems.map((p) => `${p.reason}: ${p.message}`);
  t.is(checkSpec({ prefix: '2001:db8::/40' }).spec, undefined);
  t.regex(reasons({ prefix: '2001:db8::/40' })[0]!, /^InvalidPrefix: .*\/40: use a \/48 to \/64/);
  t.regex(reasons({ prefix: '2001:db8:9:10::1/64' })[0]!, /host bits set after \/64; did you mean 2001:db8:9:10::\/64/);
  t.regex(reasons({ prefix: 'fe80::/64' })[0]!, /not a global unicast/);
  t.regex(reasons({ prefix: '198.51.100.0/24' })[0]!, /^InvalidPrefix/);
  const many = reasons({
    prefix: '2001:db8:9:10::/64',
    localAddresses: ['2001:db8:9:11::11', '2001:db8:9:10::1:11', '2001:db8:9:10::'],
    listen: { address: '2001:db8::1', port: 70000 },
    routes: ['2001:db8:ffff::1/48'],
    ndpProxy: false,
    uplink: 'lo',
  });
  t.true(
    many.some((m) => /^InvalidLocalAddress: local address 2001:db8:9:11::11 is outside the prefix/.test(m)),
    many.join('\n'),
  );
  t.true(many.some((m) => /^InvalidLocalAddress: local address 2001:db8:9:10::1:11 has a non-zero port word/.test(m)));
  t.true(many.some((m) => /interface identifier 0/.test(m)));
  t.true(many.some((m) => /^InvalidListen: spec.listen.address '2001:db8::1' is not an IPv4 address/.test(m)));
  t.true(many.some((m) => /^InvalidListen: spec.listen.port 70000/.test(m)));
  t.true(many.some((m) => /^InvalidRoute: route '2001:db8:ffff::1\/48' has host bits/.test(m)));
  t.true(
    many.some((m) => m === 'InvalidField: spec.ndpProxy false is not Disabled, Always or WhenOnLink'),
    many.join('\n'),
  );
  t.deepEqual(reasons({ prefix: '2001:db8:9:10::/64', localAddressMode: 'uplink' }), [
    'InvalidField: spec.localAddressMode "uplink" is not Uplink or DummyInterface',
  ]);
  t.true(many.some((m) => /^InvalidUplink/.test(m)));
});

test("the CamelCase modes and v1alpha1's first spellings give the same plan: the agent ConfigMap keeps its spelling", (t) => {
  const same: [Record<string, string>, Record<string, string>][] = [
    [
      { localAddressMode: 'Uplink', ndpProxy: 'Disabled' },
      { localAddressMode: 'uplink128', ndpProxy: 'off' },
    ],
    [
      { localAddressMode: 'DummyInterface', ndpProxy: 'Always' },
      { localAddressMode: 'dummy112', ndpProxy: 'on' },
    ],
    [{ ndpProxy: 'WhenOnLink' }, { ndpProxy: 'auto' }],
  ];
  const base = { prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' }, localAddresses: ['::11'] };
  for (const [now, old] of same) {
    const a = checked({ ...base, ...now }),
      b = checked({ ...base, ...old });
    t.deepEqual(a, b, JSON.stringify(now));
    t.deepEqual(plan('edge', undefined, a.spec!, nodes, {}), plan('edge', undefined, b.spec!, nodes, {}));
  }
  const n = plan(
    'edge',
    undefined,
    checked({ ...base, localAddressMode: 'DummyInterface', ndpProxy: 'WhenOnLink' }).spec!,
    nodes,
    {},
  ).nodes.get('a')!;
  t.like(n, { localAddressMode: 'dummy112', ndpProxy: 'auto' });
});

test("spec.fastPath: Auto by default, Disabled and Required as --fast-path's off and on; anything else refused with what to write", (t) => {
  const base = { prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' } };
  const mode = (fastPath?: unknown) =>
    checked({ ...base, ...(fastPath === undefined ? {} : { fastPath }) }).spec!.fastPath;
  t.is(mode(), 'auto');
  t.is(mode('Disabled'), 'off');
  t.is(mode('Auto'), 'auto');
  t.is(mode('Required'), 'on');
  const reasons = (spec: Record<string, unknown>) =>
    checkSpec({ ...base, ...spec }).problems.map((p) => `${p.reason}: ${p.message}`);
  t.deepEqual(reasons({ fastPath: 'On' }), ['InvalidField: spec.fastPath "On" is not Disabled, Auto or Required']);
  // the router's words are not the API's: CamelCase, as every mode of the spec
  t.deepEqual(reasons({ fastPath: 'auto' }), ['InvalidField: spec.fastPath "auto" is not Disabled, Auto or Required']);
  // what kubectl sends for an unquoted `fastPath: on`
  t.deepEqual(reasons({ fastPath: true }), [
    'InvalidField: spec.fastPath true is not Disabled, Auto or Required (unquoted on, off, yes and no are booleans in YAML 1.1)',
  ]);
  // beside the neighbour proxy too: the router hands it the peers the fast path forwarded for
  t.deepEqual(reasons({ fastPath: 'Required', ndpProxy: 'WhenOnLink' }), []);
  t.is(checkSpec({ ...base, fastPath: 'Required', ndpProxy: 'Always' }).spec!.fastPath, 'on');
  // a refused fastPath is left out of the parsed spec: the prefix is served without the fast path (and Degraded says why)
  t.is(checkSpec({ ...base, fastPath: 'required' }).spec!.fastPath, 'off');
});

test('the node shares carry fastPath only when it is not Disabled: an operator upgrade leaves other shares as they were', (t) => {
  const base = { prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' } };
  const share = (spec: Record<string, unknown>) =>
    plan('edge', undefined, checked({ ...base, ...spec }).spec!, nodes, {}).nodes.get('a')!;
  // Prefixes stored before Auto became the CRD's default hold Disabled (the API server wrote the default in): their
  // shares stay without the field, as before.
  t.false('fastPath' in share({ fastPath: 'Disabled' }));
  t.deepEqual(share({ fastPath: 'Auto' }), share({}));
  t.is(share({ fastPath: 'Auto' }).fastPath, 'auto');
  t.is(share({ fastPath: 'Required' }).fastPath, 'on');
});

test('spec.fastPathXdp: false by default; the node shares (failover members too) carry it only when true', (t) => {
  const base = { prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' } };
  const group = {
    prefix: '2001:db8:9:10::/64',
    nodeSelector: { role: 'edge' },
    listen: { address: '198.51.100.10' },
    failover: { upstream: 'RoutedNextHop', nextHop: '2001:db8:ffff::64', virtualRouterId: 7 },
  };
  const shares = (spec: Record<string, unknown>) => {
    const p = plan('edge', undefined, checked(spec).spec!, nodes, {});
    t.deepEqual(p.problems, [], JSON.stringify(spec));
    t.true(p.nodes.size >= 2, JSON.stringify(spec));
    return [...p.nodes.values()];
  };
  t.is(checked(base).spec!.fastPathXdp, false);
  t.is(checked({ ...base, fastPathXdp: false }).spec!.fastPathXdp, false);
  t.is(checked({ ...base, fastPathXdp: true }).spec!.fastPathXdp, true);
  for (const s of [base, group]) {
    for (const n of shares({ ...s, fastPathXdp: true })) t.is(n.fastPathXdp, true);
    // false (the CRD's default, which the API server writes in) leaves the shares as they were before the field
    t.deepEqual(shares({ ...s, fastPathXdp: false }), shares(s));
    for (const n of shares(s)) t.false('fastPathXdp' in n);
  }
  // not refused with Disabled: the XDP stage is the fast path's, and changes nothing without it
  t.deepEqual(checkSpec({ ...base, fastPath: 'Disabled', fastPathXdp: true }).problems, []);
  const refused = checkSpec({ ...base, fastPathXdp: 'off' });
  t.deepEqual(
    refused.problems.map((p) => `${p.reason}: ${p.message}`),
    ['InvalidField: spec.fastPathXdp "off" is not true or false'],
  );
  t.is(refused.spec!.fastPathXdp, false, 'a refused value leaves the default');
});

test('a /48 is split among the selected nodes; ::x local addresses land in every /64, full ones in theirs', (t) => {
  const { spec } = checked({
    prefix: '2001:db8:9::/48',
    nodeSelector: { role: 'edge' },
    localAddresses: ['::11'],
    routes: ['2001:db8:ffff::/48'],
  });
  const pl = plan('edge', undefined, spec!, nodes, {});
  t.deepEqual(pl.problems, []);
  t.deepEqual([...pl.nodes.keys()].sort(), ['a', 'b', 'c']);
  const a = pl.nodes.get('a')!;
  t.deepEqual(a.listen, { address: '198.51.100.1', port: 25790 });
  t.is(a.localAddresses.length, 1);
  t.is(a.localAddresses[0], a.prefix.replace('/64', '11'));
  t.deepEqual(a.routes, ['2001:db8:ffff::/48']);
  // full-form addresses: only the node whose /64 holds it, else a problem
  const pinned = checked({
    prefix: '2001:db8:9::/48',
    nodeSelector: { role: 'edge' },
    localAddresses: ['2001:db8:9:10::11'],
  }).spec!;
  const p2 = plan('edge', undefined, pinned, nodes, { a: '2001:db8:9:10::/64' });
  t.deepEqual(p2.nodes.get('a')!.localAddresses, ['2001:db8:9:10::11']);
  t.deepEqual(p2.nodes.get('b')!.localAddresses, []);
  t.deepEqual(p2.problems, []);
  const p3 = plan('edge', undefined, pinned, nodes, {});
  t.is(p3.problems[0]?.reason, 'LocalAddressNotServed');
});

test('Degraded reasons: no node, several nodes for a /64, no address, shared listen address, overlap', (t) => {
  const none = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'nothing' } }).spec!,
    nodes,
    {},
  );
  t.is(none.problems[0]?.reason, 'NoNodesSelected');
  t.regex(none.problems[0]!.message, /spec.nodeSelector \{"role":"nothing"\} matches no node/);

  const two = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'edge' } }).spec!,
    nodes,
    {},
  );
  t.is(two.problems[0]?.reason, 'MultipleNodesSelected');
  t.regex(
    two.problems[0]!.message,
    /is a \/64, which exactly one node serves, but .* matches 3 nodes \(a, b, c\); none serves it/,
  );
  t.is(two.nodes.size, 0);

  const bare = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'bare' } }).spec!,
    nodes,
    {},
  );
  t.is(bare.problems[0]?.reason, 'NoNodeAddress');
  const bareWithListen = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'bare' }, listen: { address: '203.0.113.7' } }).spec!,
    nodes,
    {},
  );
  t.deepEqual(bareWithListen.problems, []);
  t.deepEqual(bareWithListen.nodes.get('y')!.listen, { address: '203.0.113.7', port: 25790 });

  const shared = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' }, listen: { address: '203.0.113.7' } }).spec!,
    nodes,
    {},
  );
  t.is(shared.problems[0]?.reason, 'ListenAddressShared');
  t.is(shared.nodes.get('b')!.listen.address, '198.51.100.2');

  const spec = checked({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'core' } }).spec!;
  const others = [{ name: 'old', prefix: '2001:db8:9::/48', creationTimestamp: '2026-01-01T00:00:00Z' }];
  const newer = plan('new', '2026-02-01T00:00:00Z', spec, nodes, {}, others);
  t.is(newer.problems[0]?.reason, 'PrefixOverlap');
  t.is(newer.nodes.size, 0);
  const older = plan('new', '2025-12-01T00:00:00Z', spec, nodes, {}, others);
  t.deepEqual(older.problems, []);
});

test('node addresses: ExternalIP before InternalIP, IPv4 only', (t) => {
  const n = (addresses: { type: string; address: string }[]) =>
    nodeInfo({ metadata: { name: 'n' }, status: { addresses } });
  t.is(
    n([
      { type: 'InternalIP', address: '198.51.100.5' },
      { type: 'ExternalIP', address: '203.0.113.5' },
    ]).address,
    '203.0.113.5',
  );
  t.is(
    n([
      { type: 'ExternalIP', address: '2001:db8::5' },
      { type: 'InternalIP', address: '198.51.100.5' },
    ]).address,
    '198.51.100.5',
  );
  t.is(n([{ type: 'Hostname', address: 'n' }]).address, undefined);
  // cloud-style nodes: an ExternalIP may be a 1:1 NAT in front of the InternalIP
  t.is(
    n([
      { type: 'InternalIP', address: '198.51.100.5' },
      { type: 'ExternalIP', address: '203.0.113.5' },
    ]).internal,
    '198.51.100.5',
  );
  t.is(n([{ type: 'InternalIP', address: '198.51.100.5' }]).internal, undefined, 'no ExternalIP: nothing else to bind');
});

test('cloud-style nodes: the share listens on the ExternalIP and may bind the InternalIP; a listen address of the spec binds as it is', (t) => {
  const node = { name: 'c1', labels: { role: 'edge' }, address: '203.0.113.5', internal: '198.51.100.5' };
  const auto = plan(
    'p',
    undefined,
    checkSpec({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'edge' } }).spec!,
    [node],
    {},
  );
  t.deepEqual(auto.nodes.get('c1')!.listen, { address: '203.0.113.5', port: 25790, bind: '198.51.100.5' });
  const fixed = plan(
    'p',
    undefined,
    checkSpec({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'edge' }, listen: { address: '192.0.2.9' } }).spec!,
    [node],
    {},
  );
  t.deepEqual(fixed.nodes.get('c1')!.listen, { address: '192.0.2.9', port: 25790 });
});

test('two prefixes on one node cannot listen on the same address and port: the older keeps it, the newer is Degraded there', (t) => {
  const nodes = [
    { name: 'n1', labels: { role: 'edge' }, address: '198.51.100.5' },
    { name: 'n2', labels: { role: 'edge' }, address: '198.51.100.6' },
  ];
  const spec = checkSpec({ prefix: '2001:db8:9:10::/63', nodeSelector: { role: 'edge' } }).spec!;
  const older = {
    name: 'first',
    prefix: '2001:db8:7::/48',
    creationTimestamp: '2026-11-01T00:00:00Z',
    listens: new Map([['n1', '198.51.100.5:25790']]),
  };
  const p = plan('second', '2026-11-02T00:00:00Z', spec, nodes, {}, [older]);
  t.deepEqual([...p.nodes.keys()], ['n2'], 'n1 is not served by the newer prefix');
  t.deepEqual(
    p.problems.map((x) => x.reason),
    ['ListenAddressShared'],
  );
  t.regex(
    p.problems[0]!.message,
    /^node n1 listens on 198\.51\.100\.5:25790 for the older SixBed4Prefix first: not served there/,
  );
  // The older one is not affected by the newer, and another port clashes with nothing.
  const newer = {
    name: 'second',
    prefix: '2001:db8:9:10::/63',
    creationTimestamp: '2026-11-02T00:00:00Z',
    listens: new Map([['n1', '198.51.100.5:25790']]),
  };
  t.deepEqual(
    plan(
      'first',
      '2026-11-01T00:00:00Z',
      checkSpec({ prefix: '2001:db8:7::/48', nodeSelector: { role: 'edge' } }).spec!,
      nodes,
      {},
      [newer],
    ).problems,
    [],
  );
  const otherPort = plan(
    'second',
    '2026-11-02T00:00:00Z',
    checkSpec({ prefix: '2001:db8:9:10::/63', nodeSelector: { role: 'edge' }, listen: { port: 25791 } }).spec!,
    nodes,
    {},
    [older],
  );
  t.deepEqual(otherPort.problems, []);
  t.is(otherPort.nodes.size, 2);
});

test('listen.advertise: checked, handed to the one node serving the prefix (which still binds as before), refused when shared', (t) => {
  const node = { name: 'c1', labels: { role: 'edge' }, address: '203.0.113.5', internal: '198.51.100.5' };
  const one = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'edge' }, listen: { advertise: '192.0.2.40:4000' } })
      .spec!,
    [node],
    {},
  );
  t.deepEqual(one.problems, []);
  t.deepEqual(one.nodes.get('c1')!.listen, {
    address: '203.0.113.5',
    port: 25790,
    bind: '198.51.100.5',
    advertise: '192.0.2.40:4000',
  });
  const shared = plan(
    'p',
    undefined,
    checked({ prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' }, listen: { advertise: '192.0.2.40' } }).spec!,
    nodes,
    {},
  );
  t.is(shared.problems[0]?.reason, 'ListenAddressShared');
  t.regex(shared.problems[0]!.message, /spec.listen.advertise 192\.0\.2\.40 is set but 3 nodes serve this prefix/);
  t.is(shared.nodes.get('a')!.listen.advertise, undefined, 'no node claims an address that reaches only one');
  const reasons = (advertise: unknown) =>
    checkSpec({ prefix: '2001:db8:9:10::/64', listen: { advertise } }).problems.map((p) => `${p.reason}: ${p.message}`);
  t.regex(reasons('192.0.2.40:0')[0]!, /^InvalidListen: spec.listen.advertise port 0 is not a UDP port/);
  t.regex(
    reasons('host.example:4000')[0]!,
    /^InvalidListen: spec.listen.advertise 'host\.example' is not an IPv4 address/,
  );
  t.regex(
    reasons('127.0.0.1')[0]!,
    /^InvalidListen: spec.listen.advertise 127\.0\.0\.1 is not an address peers can reach/,
  );
  t.regex(reasons(4000)[0]!, /^InvalidListen: spec.listen.advertise must be a string/);
});
