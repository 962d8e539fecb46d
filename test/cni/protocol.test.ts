// The CNI protocol and the plugin's install, pure: what the agent makes of a forwarded request, the results it
// writes per CNI version, and how it chains itself into a node's config list (and out again).
import test from 'ava';
import {
  addResult,
  asks,
  CNI,
  CniError,
  parseCniArgs,
  parseRequest,
  passResult,
  podIdentity,
  podInterface,
  type Delivered,
} from '../../agent/cni/protocol.js';
import { patchConflist, pluginEntry } from '../../agent/cni/install.js';
import { aliasFor, parseAlias, sameContainer } from '../../agent/slices/slice.js';

const config = (extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.1.0',
  name: 'pods',
  type: 'sixbed4-cni',
  ...extra,
});
const request = (extra: Record<string, unknown> = {}, cfg: Record<string, unknown> = {}) =>
  JSON.stringify({
    version: 1,
    command: 'ADD',
    containerId: 'c0ffee00112233445566778899',
    netns: '/run/netns/x',
    ifname: 'eth0',
    args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=1234',
    path: '/opt/cni/bin',
    config: config(cfg),
    ...extra,
  });
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof CniError ? e.code : -1;
  }
  return 0;
};
const delivered: Delivered = {
  hostIf: 's4abcdef0123456',
  podIf: 'eth6',
  address: '2001:db8:9:10:5:1:0:1/112',
  gateway: 'fe80::1',
  defaultRoute: true,
};

test('CNI_ARGS: key=value pairs, values kept as sent; pairs without a key are skipped', (t) => {
  t.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a=b;;=x;K8S_POD_UID='), {
    IgnoreUnknown: '1',
    K8S_POD_NAME: 'a=b',
    K8S_POD_UID: '',
  });
});

test("a request is checked with the spec's codes", (t) => {
  t.is(
    code(() => parseRequest('not json')),
    CNI.decode,
  );
  t.is(
    code(() => parseRequest(JSON.stringify({ version: 2 }))),
    CNI.decode,
  );
  t.is(
    code(() => parseRequest(request({ command: 'FROB' }))),
    CNI.invalidEnv,
  );
  t.is(
    code(() => parseRequest(request({ config: [] }))),
    CNI.decode,
  );
  t.is(
    code(() => parseRequest(request({}, { name: '' }))),
    CNI.invalidConfig,
  );
  t.is(
    code(() => parseRequest(request({}, { cniVersion: '0.3.1' }))),
    CNI.incompatibleVersion,
  );
  t.is(
    code(() => parseRequest(request({ containerId: '' }))),
    CNI.invalidEnv,
  );
  t.is(
    code(() => parseRequest(request({ netns: '' }))),
    CNI.invalidEnv,
  );
  t.is(
    code(() => parseRequest(request({ command: 'DEL', netns: '' }))),
    0,
    'DEL needs no netns (it may be gone)',
  );
  t.is(
    code(() => parseRequest(request({}, { interface: 'eth6; rm -rf', prevResult: {} }))),
    CNI.invalidConfig,
  );
  const r = parseRequest(request());
  t.deepEqual(podIdentity(r), { namespace: 'shop', name: 'web-0', uid: '1234' });
});

test('who asks: standalone always; chained by the annotation the runtime passed, unknown without', (t) => {
  const ann = (a: Record<string, string> | undefined) =>
    parseRequest(
      request({}, { prevResult: {}, ...(a ? { runtimeConfig: { 'io.kubernetes.cri.pod-annotations': a } } : {}) }),
    );
  t.is(asks(parseRequest(request()), 'sixbed4.io/slice'), 'yes');
  t.is(asks(ann({ 'sixbed4.io/slice': 'true' }), 'sixbed4.io/slice'), 'yes');
  t.is(asks(ann({ 'sixbed4.io/slice': 'false' }), 'sixbed4.io/slice'), 'no');
  t.is(asks(ann({}), 'sixbed4.io/slice'), 'no');
  t.is(asks(ann(undefined), 'sixbed4.io/slice'), 'unknown');
  t.is(podInterface(ann({})), 'eth6', "chained: our own interface, not the primary's eth0");
  t.is(podInterface(parseRequest(request({ ifname: 'net1' }))), 'net1', "standalone: the runtime's name");
});

test("results: chained keeps the primary's addresses and adds our interfaces; standalone has ours; 0.4.0 marks the version", (t) => {
  const prev = {
    cniVersion: '1.1.0',
    interfaces: [{ name: 'eth0', sandbox: '/run/netns/x' }],
    ips: [{ address: '100.64.77.2/24', interface: 0 }],
    dns: {},
  };
  const chained = addResult(parseRequest(request({}, { prevResult: prev })), delivered);
  t.deepEqual(chained.ips, prev.ips, "no address of ours: the primary's CHECK wants all on its interface");
  t.deepEqual(chained.interfaces, [
    ...prev.interfaces,
    { name: 's4abcdef0123456' },
    { name: 'eth6', sandbox: '/run/netns/x' },
  ]);
  const alone = addResult(parseRequest(request()), delivered);
  t.deepEqual(alone.ips, [{ address: '2001:db8:9:10:5:1:0:1/112', gateway: 'fe80::1', interface: 1 }]);
  t.deepEqual(alone.routes, [{ dst: '::/0', gw: 'fe80::1' }]);
  const old = addResult(parseRequest(request({}, { cniVersion: '0.4.0' })), delivered);
  t.is(old.ips![0]!.version, '6');
  t.is(old.cniVersion, '0.4.0');
  t.deepEqual(passResult(parseRequest(request({}, { prevResult: prev }))), prev);
});

test('the alias records the sandbox for CNI links, and reads back; other aliases are not ours', (t) => {
  const cid = 'cnitool-67a54020329758c58362';
  const a = aliasFor('2001:db8:9:10:5:1::/112', 'uid-1', 'shop/web-0', { podIf: 'net1', containerId: cid });
  t.deepEqual(parseAlias(a), {
    slice: '2001:db8:9:10:5:1::/112',
    podUid: 'uid-1',
    cni: { podIf: 'net1', containerId: cid.slice(0, 24) },
  });
  t.true(sameContainer(parseAlias(a)!.cni!.containerId, cid));
  t.false(sameContainer(parseAlias(a)!.cni!.containerId, 'cnitool-ffa54020329758c58362'));
  t.deepEqual(parseAlias(aliasFor('2001:db8:9:10:5:1::/112', 'uid-1')), {
    slice: '2001:db8:9:10:5:1::/112',
    podUid: 'uid-1',
  });
});

test('install: our entry goes last (added or moved), twice changes nothing, uninstall restores the list; bad lists are refused', (t) => {
  const entry = pluginEntry({
    agentSocket: '/run/sixbed4/cni.sock',
    podAnnotation: 'sixbed4.io/slice',
    interface: 'eth6',
  });
  const list = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s',
    plugins: [{ type: 'calico' }, { type: 'portmap', capabilities: { portMappings: true } }],
  });
  const once = patchConflist(list, entry)!;
  t.deepEqual(
    (JSON.parse(once) as { plugins: { type: string }[] }).plugins.map((p) => p.type),
    ['calico', 'portmap', 'sixbed4-cni'],
  );
  t.is(patchConflist(once, entry), null, 'already in place: no write');
  const moved = JSON.stringify({ ...JSON.parse(list), plugins: [{ type: 'calico' }, entry, { type: 'portmap' }] });
  t.deepEqual(
    (JSON.parse(patchConflist(moved, entry)!) as { plugins: { type: string }[] }).plugins.map((p) => p.type),
    ['calico', 'portmap', 'sixbed4-cni'],
  );
  t.deepEqual(JSON.parse(patchConflist(once, null)!), JSON.parse(list));
  t.is(patchConflist(list, null), null);
  t.throws(() => patchConflist('{', entry), { message: /not JSON/ });
  t.throws(() => patchConflist('{"name":"x"}', entry), { message: /no "plugins" array/ });
  t.deepEqual(entry.capabilities, { 'io.kubernetes.cri.pod-annotations': true });
});
