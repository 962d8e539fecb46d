// The single host's config file: SixBed4Prefix.spec's fields checked by the
// operator's own checkSpec (the same rules and messages as in a cluster), the
// few host-only fields, the refusals, and which changes need a restart.
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkSpec } from '../../kube/prefix-spec.js';
import { loadServiceConfig, restartNeeded, serviceConfig } from '../../agent/service/config.js';
import { routerConfig } from '../../agent/router/router.js';

const F = '/etc/sixbed4/router.yaml';
const BASE = { prefix: '2001:db8:9:10::/64', listen: { address: '198.51.100.1' } };
const problems = (raw: Record<string, unknown>) => {
  try {
    serviceConfig(raw, F);
    return '';
  } catch (err) {
    return (err as Error).message;
  }
};

test("a file with the spec's fields: defaults as in a cluster, ::x means this host's /64, old mode spellings too", (t) => {
  const c = serviceConfig(
    {
      ...BASE,
      localAddresses: ['2001:db8:9:10::11', '::30'],
      routes: ['2001:db8:ffff::/48'],
      localAddressMode: 'uplink128',
      ndpProxy: 'WhenOnLink',
    },
    F,
  );
  t.deepEqual(
    c.host.localAddresses.map((a) => a.text),
    ['2001:db8:9:10::11', '2001:db8:9:10::30'],
  );
  t.is(c.host.localAddressMode, 'uplink128');
  t.is(c.host.ndpProxy, 'auto');
  t.is(c.metrics, '127.0.0.1:9475', "metricsPort's default, on the loopback unless metricsAddress says");
  const r = routerConfig(c.router);
  t.is(r.port, 25790);
  t.deepEqual(
    r.routes.map((p) => p.text),
    ['2001:db8:ffff::/48'],
  );
  t.is(serviceConfig({ ...BASE, localAddressMode: 'Uplink', ndpProxy: 'Always' }, F).host.ndpProxy, 'on');
});

test('host-only fields reach the router: tunnel, workers, rate limits, metricsAddress, bind, stateFile', (t) => {
  const c = serviceConfig(
    {
      ...BASE,
      tunnel: 'tun6',
      workers: 2,
      sockets: 4,
      metricsAddress: '::1',
      metricsPort: 9500,
      bind: '192.0.2.7',
      replyRateLimit: { perSourceRate: 2, totalBurst: 100 },
      refusePrivate: true,
      stateFile: '/var/lib/sixbed4/x.json',
    },
    F,
  );
  const r = routerConfig(c.router);
  t.is(r.tun, 'tun6');
  t.is(c.host.tunnel, 'tun6');
  t.is(r.workers, 2);
  t.is(r.sockets, 4);
  t.true(r.refusePrivate);
  t.deepEqual(r.rateLimit, { perSourceRate: 2, perSourceBurst: 8, totalRate: 2000, totalBurst: 100 });
  t.is(c.metrics, '[::1]:9500');
  t.is(c.stateFile, '/var/lib/sixbed4/x.json');
});

test('listen.advertise: the router binds listen.address and builds its addresses from the advertised one; a change needs a restart', (t) => {
  const c = serviceConfig({ ...BASE, listen: { address: '198.51.100.1', advertise: '203.0.113.7:4000' } }, F);
  const r = routerConfig(c.router);
  t.is(r.port, 4000, "the advertised port is the router's identity");
  t.is(r.bindPort, 25790, 'the sockets bind listen.port');
  t.not(r.listenIPv4, r.bindIPv4);
  t.deepEqual(restartNeeded(serviceConfig(BASE, F), c), ['listen.advertise (default) -> 203.0.113.7:4000']);
  t.regex(
    problems({ ...BASE, listen: { address: '198.51.100.1', advertise: '127.0.0.1' } }),
    /advertise 127\.0\.0\.1 is not an address peers can reach/,
  );
});

test("the spec's problems come with the operator's own messages (one check in both places), all at once", (t) => {
  const spec = {
    prefix: '2001:db8::/40',
    routes: ['2001:db8::1/48'],
    metricsPort: 80,
    ndpProxy: 'maybe',
    localAddressMode: 'dummy',
  };
  const expected = checkSpec(spec).problems.map((p) => p.message.replace(/\bspec\./g, ''));
  t.true(expected.length >= 4);
  const msg = problems({ ...spec, listen: { address: '198.51.100.1' } });
  t.true(msg.startsWith(`${F} has ${expected.length} problems:`), msg);
  for (const m of expected) t.true(msg.includes(m), `${m}\n in\n${msg}`);
  t.regex(msg, /ndpProxy "maybe" is not Disabled, Always or WhenOnLink/);
});

for (const [name, raw, message] of [
  [
    'a prefix shorter than /64',
    { ...BASE, prefix: '2001:db8:9::/48' },
    /prefix 2001:db8:9::\/48 is a \/48: a single host serves one \/64/,
  ],
  ['no listen address', { prefix: BASE.prefix }, /listen\.address is required on a single host/],
  [
    "a loopback listen address (the CRD's rule)",
    { ...BASE, listen: { address: '127.0.0.1' } },
    /listen\.address 127\.0\.0\.1 is not an address peers can reach/,
  ],
  [
    'a local address outside the /64',
    { ...BASE, localAddresses: ['2001:db8:9:11::11'] },
    /local address 2001:db8:9:11::11 is outside the prefix/,
  ],
  ['a local address with a port word', { ...BASE, localAddresses: ['2001:db8:9:10::1:11'] }, /non-zero port word/],
  ['an unknown field', { ...BASE, prefixes: [] }, /unknown field 'prefixes' \(known: prefix, listen, /],
  ['nodeSelector', { ...BASE, nodeSelector: { a: 'b' } }, /nodeSelector only applies in a Kubernetes cluster/],
  ['slices', { ...BASE, slices: { enabled: true } }, /slices only applies in a Kubernetes cluster/],
  ["workers out of range (the router's own check)", { ...BASE, workers: 65 }, /workers 65: use 1\.\.64/],
  [
    'a rate of 0',
    { ...BASE, replyRateLimit: { totalRate: 0 } },
    /replyRateLimit\.totalRate 0 must be a number above 0/,
  ],
  [
    'a metricsAddress that is not an address',
    { ...BASE, metricsAddress: 'localhost' },
    /metricsAddress 'localhost' is not an IP address/,
  ],
  ['a relative stateFile', { ...BASE, stateFile: 'state.json' }, /stateFile 'state\.json' must be an absolute path/],
  ['the uplink as the tunnel', { ...BASE, uplink: 'eth0', tunnel: 'eth0' }, /uplink 'eth0' cannot also be the tunnel/],
] as const) {
  test(`refuses ${name}`, (t) => {
    t.regex(problems(raw as Record<string, unknown>), message);
  });
}

test('YAML or JSON, and a whole SixBed4Prefix object (its spec is used)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-svccfg-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(
    join(dir, 'a.yaml'),
    'prefix: 2001:db8:9:10::/64\nlisten: {address: 198.51.100.1, port: 25791}\nndpProxy: Disabled\n',
  );
  await writeFile(join(dir, 'b.json'), JSON.stringify({ ...BASE, routes: ['2001:db8:ffff::/48'] }));
  await writeFile(
    join(dir, 'c.yaml'),
    `apiVersion: sixbed4.io/v1alpha1\nkind: SixBed4Prefix\nmetadata: {name: x}\nspec:\n  prefix: 2001:db8:9:10::/64\n  listen: {address: 198.51.100.1}\n`,
  );
  await writeFile(join(dir, 'd.yaml'), 'prefix: [unclosed\n');
  t.is((await loadServiceConfig(join(dir, 'a.yaml'))).router.port, 25791);
  t.deepEqual((await loadServiceConfig(join(dir, 'b.json'))).spec.routes, ['2001:db8:ffff::/48']);
  t.is((await loadServiceConfig(join(dir, 'c.yaml'))).spec.prefix.text, '2001:db8:9:10::/64');
  await t.throwsAsync(loadServiceConfig(join(dir, 'd.yaml')), {
    name: 'InputError',
    message: /is neither YAML nor JSON/,
  });
  await t.throwsAsync(loadServiceConfig(join(dir, 'none.yaml')), {
    name: 'InputError',
    message: /cannot read config file .*none\.yaml: no such file/,
  });
});

test('fastPathDirect: true reaches the router as --fast-path-direct; only with the fast path; a change needs a restart', (t) => {
  t.is(routerConfig(serviceConfig(BASE, F).router).fastPathDirect, false);
  const direct = serviceConfig({ ...BASE, fastPathDirect: true }, F);
  t.like(routerConfig(direct.router), { fastPath: 'auto', fastPathDirect: true });
  t.deepEqual(restartNeeded(serviceConfig(BASE, F), direct), ['fastPathDirect false -> true']);
  t.is(
    problems({ ...BASE, fastPath: 'Disabled', fastPathDirect: true }),
    `${F}: fastPathDirect needs the fast path: fastPath Auto or Required, not Disabled`,
  );
});

test('fastPathXdp (default false): true reaches the router as --fast-path-xdp auto; not a boolean is refused; a change needs a restart', (t) => {
  const plain = serviceConfig(BASE, F);
  t.false('fastPathXdp' in plain.router, 'no option when the file does not say: the router keeps its default');
  t.is(routerConfig(plain.router).fastPathXdp, false);
  t.is(routerConfig(serviceConfig({ ...BASE, fastPathXdp: false }, F).router).fastPathXdp, false);
  const on = serviceConfig({ ...BASE, fastPathXdp: true }, F);
  t.like(routerConfig(on.router), { fastPath: 'auto', fastPathDirect: false, fastPathXdp: true });
  // harmless without the fast path (nothing runs it), so not refused
  t.like(routerConfig(serviceConfig({ ...BASE, fastPath: 'Disabled', fastPathXdp: true }, F).router), {
    fastPath: 'off',
    fastPathXdp: true,
  });
  t.deepEqual(restartNeeded(plain, on), ['fastPathXdp false -> true']);
  t.deepEqual(restartNeeded(plain, serviceConfig({ ...BASE, fastPathXdp: false }, F)), []);
  t.is(problems({ ...BASE, fastPathXdp: 'off' }), `${F}: fastPathXdp "off" is not true or false`);
  t.is(problems({ ...BASE, fastPathXdp: 0 }), `${F}: fastPathXdp 0 is not true or false`);
});

test('fastPath (Disabled, Auto, Required) reaches the router as --fast-path off, auto, on (Auto by default); a change needs a restart', (t) => {
  t.is(routerConfig(serviceConfig(BASE, F).router).fastPath, 'auto');
  t.is(routerConfig(serviceConfig({ ...BASE, fastPath: 'Disabled' }, F).router).fastPath, 'off');
  t.is(routerConfig(serviceConfig({ ...BASE, fastPath: 'Auto' }, F).router).fastPath, 'auto');
  const on = serviceConfig({ ...BASE, fastPath: 'Required' }, F);
  t.is(routerConfig(on.router).fastPath, 'on');
  // the router loads and attaches the program when it starts: a reload cannot
  t.deepEqual(restartNeeded(serviceConfig(BASE, F), on), ['fastPath Auto -> Required']);
  t.is(problems({ ...BASE, fastPath: 'on' }), `${F}: fastPath "on" is not Disabled, Auto or Required`);
  t.is(
    problems({ ...BASE, fastPath: true }),
    `${F}: fastPath true is not Disabled, Auto or Required (unquoted on, off, yes and no are booleans in YAML 1.1)`,
  );
  t.is(
    routerConfig(serviceConfig({ ...BASE, fastPath: 'Required', ndpProxy: 'Always' }, F).router).fastPath,
    'on',
    'beside the neighbour proxy too',
  );
});

test('which changes a reload applies and which need a restart', (t) => {
  const a = serviceConfig({ ...BASE, routes: ['2001:db8:ffff::/48'], localAddresses: ['::11'] }, F);
  const live = serviceConfig(
    { ...BASE, routes: [], localAddresses: ['::11', '::12'], metricsPort: 9999, replyRateLimit: { totalRate: 10 } },
    F,
  );
  t.deepEqual(restartNeeded(a, live), []);
  const b = serviceConfig(
    { ...BASE, prefix: '2001:db8:9:20::/64', listen: { address: '198.51.100.2', port: 1 }, workers: 2 },
    F,
  );
  t.deepEqual(restartNeeded(a, b), [
    'prefix 2001:db8:9:10::/64 -> 2001:db8:9:20::/64',
    'listen.address 198.51.100.1 -> 198.51.100.2',
    'listen.port 25790 -> 1',
    'workers (default) -> 2',
  ]);
});
