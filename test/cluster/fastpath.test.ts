// spec.fastPath from the SixBed4Prefix to the router a node agent starts: the
// operator's check and plan, the ConfigMap it renders, the agent's reading of
// its share and the router options it builds from it (the same function the
// agent runs), down to the router's own config; and how the agent words the
// router's refusal of Required for the node's entry in the prefix status.
import test from 'ava';
import { checkSpec } from '../../kube/prefix-spec.js';
import { plan, type NodeInfo } from '../../operator/prefix/plan.js';
import { renderConfigMap } from '../../operator/prefix/render.js';
import { shareFromData } from '../../agent/cluster/config.js';
import { fastPathRefusal, shareRouterOptions } from '../../agent/cluster/prefix.js';
import { hostConfig } from '../../agent/host/config.js';
import { hasBpf } from '../../agent/host/privilege.js';
import { prepareFastPath } from '../../agent/bpf/fastpath.js';
import { routerConfig } from '../../agent/router/router.js';
import { InputError } from '../../lib/errors.js';
import { parseIPv4, parsePrefix } from '../../lib/ip.js';
import { createLogger } from '../../lib/log.js';
import type { SixBed4Prefix } from '../../kube/api.js';

const NODES: NodeInfo[] = [{ name: 'edge-1', labels: { role: 'edge' }, address: '198.51.100.11' }];

/** The router options the agent on edge-1 builds from what the operator renders for this spec. */
function agentRouterOptions(spec: Record<string, unknown>) {
  const checked = checkSpec({ prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' }, ...spec });
  if (!checked.spec || checked.problems.length) throw new Error(checked.problems.map((p) => p.message).join('; '));
  const p = {
    apiVersion: 'sixbed4.io/v1alpha1',
    kind: 'SixBed4Prefix',
    metadata: { name: 'home', uid: 'u1' },
    spec,
  } as unknown as SixBed4Prefix;
  const { nodes } = plan('home', undefined, checked.spec, NODES, {});
  const cm = renderConfigMap(p, checked.spec.prefix.text, checked.spec.metricsPort, nodes, {
    namespace: 'sixbed4-system',
  });
  const n = shareFromData(cm.data as Record<string, string>, 'edge-1').node!;
  const host = hostConfig({
    prefix: n.prefix,
    localAddresses: n.localAddresses,
    localAddressMode: n.localAddressMode,
    ndpProxy: n.ndpProxy,
    tunnel: n.tunnel!,
  });
  return { share: n, options: shareRouterOptions(n, { tun: n.tunnel!, uplink: 'eth0', host }) };
}

test("the agent hands the prefix's fastPath to the router it runs: Disabled off (and not in the share), Auto (the default) auto, Required on", (t) => {
  const off = agentRouterOptions({ fastPath: 'Disabled' });
  t.false('fastPath' in off.share, 'no fastPath in the share of a Disabled prefix (as before the field existed)');
  t.is(routerConfig(off.options).fastPath, 'off', 'said out loud to the router, whose own default is auto');
  t.is(routerConfig(agentRouterOptions({}).options).fastPath, 'auto');
  t.is(routerConfig(agentRouterOptions({ fastPath: 'Auto' }).options).fastPath, 'auto');
  const on = agentRouterOptions({ fastPath: 'Required' });
  t.is(on.share.fastPath, 'on');
  t.is(routerConfig(on.options).fastPath, 'on');
  t.true(on.options.handover, 'the rest as before');
});

test('fastPathDirect reaches the router as --fast-path-direct, through the share only when true (other shares stay as they were)', (t) => {
  const direct = agentRouterOptions({ fastPath: 'Auto', fastPathDirect: true });
  t.is(direct.share.fastPathDirect, true);
  t.like(routerConfig(direct.options), { fastPath: 'auto', fastPathDirect: true });
  for (const spec of [{}, { fastPathDirect: false }]) {
    const plain = agentRouterOptions(spec);
    t.false('fastPathDirect' in plain.share, JSON.stringify(spec));
    t.is(routerConfig(plain.options).fastPathDirect, false);
  }
  t.throws(() => agentRouterOptions({ fastPath: 'Disabled', fastPathDirect: true }), {
    message: 'spec.fastPathDirect needs the fast path: spec.fastPath Auto or Required, not Disabled',
  });
  t.throws(() => agentRouterOptions({ fastPathDirect: 'yes' }), {
    message: 'spec.fastPathDirect "yes" is not true or false',
  });
});

test('fastPathXdp true reaches the router as --fast-path-xdp auto, through the share only when true (other shares stay as they were)', (t) => {
  for (const spec of [{ fastPathXdp: true }, { fastPath: 'Required', fastPathXdp: true }]) {
    const on = agentRouterOptions(spec);
    t.is(on.share.fastPathXdp, true, JSON.stringify(spec));
    t.is(on.options.fastPathXdp, true, JSON.stringify(spec));
    t.is(routerConfig(on.options).fastPathXdp, true, JSON.stringify(spec));
  }
  // harmless with Disabled (nothing runs it): passed on as written, not refused
  t.like(routerConfig(agentRouterOptions({ fastPath: 'Disabled', fastPathXdp: true }).options), {
    fastPath: 'off',
    fastPathXdp: true,
  });
  const before = agentRouterOptions({});
  for (const spec of [{ fastPathXdp: false }, {}]) {
    const plain = agentRouterOptions(spec);
    t.false('fastPathXdp' in plain.share, JSON.stringify(spec));
    t.false('fastPathXdp' in plain.options, 'the router gets the arguments it got before the field existed');
    t.deepEqual(plain.share, before.share);
    t.is(routerConfig(plain.options).fastPathXdp, false);
  }
  t.throws(() => agentRouterOptions({ fastPathXdp: 'no' }), {
    message: 'spec.fastPathXdp "no" is not true or false',
  });
});

test("Required refused by the router: the agent reports it in the spec's words; other failures are not the fast path's", async (t) => {
  // The real refusal: 127.0.0.1 is on lo, which the program cannot go on (nothing is loaded or attached).
  const log = createLogger({ level: 'error', format: 'text', component: 'test' });
  const lo = parseIPv4('127.0.0.1');
  const err = await prepareFastPath(
    'on',
    {
      bindIPv4: lo,
      bindPort: 25790,
      ownIPv4: lo,
      ownPort: 25790,
      prefix: parsePrefix('2001:db8:9:10::/64').bytes,
      refused: [],
    },
    log,
  ).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.true(err instanceof InputError, String(err));
  const said = fastPathRefusal(err)!;
  t.regex(
    said,
    /^spec\.fastPath Required: 127\.0\.0\.1 is on lo, a loopback interface: the fast path handles Ethernet uplinks only/,
  );
  // what an agent without CAP_BPF adds: where the chart gives it
  t.is(said.includes('unless agent.fastPath=false'), !hasBpf());
  t.is(fastPathRefusal(new InputError('--port 0: use 1..65535')), undefined);
  t.is(fastPathRefusal(new InputError('--fast-path on: a message alone is not the refusal')), undefined);
});
