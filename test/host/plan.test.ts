// The planner on state models (no root needed): the order of the steps, that
// applying its plan and planning again gives nothing, that the host keeps
// every local address through every step, and every refusal's message.
import test from 'ava';
import { hostConfig, type HostConfig } from '../../agent/host/config.js';
import { planApply, SEED_ERRATA } from '../../agent/host/plan.js';
import { parseAddrJson, parseRouteJson } from '../../agent/host/state.js';
import { commandLine, renderPlan } from '../../agent/host/steps.js';
import { addrJson, clone, formsOf, routeJson, seedSpec, simulate, stateOf, type Spec } from './model.js';

const PREFIX = '2001:db8:9:10::/64';
const L11 = '2001:db8:9:10::11';
const L30 = '2001:db8:9:10::30';
const cfg = (extra: Record<string, unknown> = {}): HostConfig =>
  hostConfig({ prefix: PREFIX, localAddresses: [L11, L30], ...extra });
const commands = (s: Spec, c: HostConfig) => planApply(c, stateOf(s)).steps.map((x) => commandLine(x.action));

/** Captured with iproute2 6.1 from a namespace set up as the seed's VM. */
const CAPTURED_ADDR = [
  {
    ifindex: 1,
    ifname: 'lo',
    flags: ['LOOPBACK', 'UP', 'LOWER_UP'],
    link_type: 'loopback',
    address: '00:00:00:00:00:00',
    addr_info: [
      {
        family: 'inet',
        local: '127.0.0.1',
        prefixlen: 8,
        scope: 'host',
        label: 'lo',
        valid_life_time: 4294967295,
        preferred_life_time: 4294967295,
      },
      {
        family: 'inet6',
        local: '::1',
        prefixlen: 128,
        scope: 'host',
        valid_life_time: 4294967295,
        preferred_life_time: 4294967295,
      },
    ],
  },
  {
    ifindex: 2,
    link_index: 2,
    ifname: 'eth0',
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    mtu: 1500,
    link_type: 'ether',
    address: '36:ab:e2:06:c1:23',
    linkinfo: { info_kind: 'veth' },
    addr_info: [
      {
        family: 'inet6',
        local: '2001:db8:9:10::30',
        prefixlen: 64,
        scope: 'global',
        valid_life_time: 4294967295,
        preferred_life_time: 4294967295,
      },
      {
        family: 'inet6',
        local: '2001:db8:9:10::11',
        prefixlen: 64,
        scope: 'global',
        valid_life_time: 4294967295,
        preferred_life_time: 4294967295,
      },
      {
        family: 'inet6',
        local: 'fe80::2',
        prefixlen: 64,
        scope: 'link',
        nodad: true,
        valid_life_time: 4294967295,
        preferred_life_time: 4294967295,
      },
      {
        family: 'inet6',
        local: 'fe80::34ab:e2ff:fe06:c123',
        prefixlen: 64,
        scope: 'link',
        valid_life_time: 4294967295,
        preferred_life_time: 4294967295,
      },
    ],
  },
];
const CAPTURED_ROUTE = [
  { dst: '2001:db8:9:10::/64', dev: 'eth0', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
  { dst: 'fe80::/64', dev: 'eth0', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
  { dst: 'default', gateway: 'fe80::1', dev: 'eth0', metric: 1024, flags: [], pref: 'medium' },
];

test('captured ip -j output becomes the model the test specs make', (t) => {
  const captured = parseAddrJson(CAPTURED_ADDR);
  const spec = parseAddrJson(addrJson(seedSpec()));
  const strip = (m: typeof captured) => m.addresses.map(({ bytes: _b, ...rest }) => rest);
  t.deepEqual(strip(captured), strip(spec));
  t.deepEqual(captured.links.find((l) => l.name === 'eth0')?.mac, '36:ab:e2:06:c1:23');
  t.deepEqual(captured.addresses.find((a) => a.address === 'fe80::2')?.flags, ['nodad']);
  const routes = parseRouteJson(CAPTURED_ROUTE);
  t.deepEqual(routes, parseRouteJson(routeJson(seedSpec())));
  t.is(routes.find((r) => r.prefix === undefined)?.protocol, 'boot', 'iproute2 omits proto boot');
  t.deepEqual(routes[0]?.prefix?.text, PREFIX);
});

test('seed, uplink128: forwarding first, then per address lo bridge, delete /64, add /128, drop the bridge', (t) => {
  t.deepEqual(commands(seedSpec(), cfg()), [
    'sysctl -w net.ipv6.conf.all.forwarding=1',
    'sysctl -w net.ipv6.conf.eth0.forwarding=1',
    `ip -6 addr add ${L11}/128 dev lo`,
    `ip -6 addr del ${L11}/64 dev eth0`,
    `ip -6 addr add ${L11}/128 dev eth0`,
    `ip -6 addr del ${L11}/128 dev lo`,
    `ip -6 addr add ${L30}/128 dev lo`,
    `ip -6 addr del ${L30}/64 dev eth0`,
    `ip -6 addr add ${L30}/128 dev eth0`,
    `ip -6 addr del ${L30}/128 dev lo`,
  ]);
  const plan = planApply(cfg(), stateOf(seedSpec()));
  t.is(plan.uplink, 'eth0', "the uplink is the default route's interface");
  t.true(plan.notes.includes(SEED_ERRATA));
  t.regex(SEED_ERRATA, /ip_forwarding=1` names a key that does not exist/);
  t.regex(SEED_ERRATA, /mc_forwarding is read-only/);
  t.true(
    plan.notes.some((n) =>
      /tunnel 6bed4 does not exist yet: the router routes 2001:db8:9:10::\/64 to it when it starts/.test(n),
    ),
  );
  t.deepEqual(
    plan.steps.find((s) => s.action.kind === 'ip' && s.action.args.includes('eth0') && s.action.args[2] === 'add')
      ?.settle,
    { dev: 'eth0', address: L11 },
    'waits for DAD on the uplink, never on lo',
  );
  const text = renderPlan(plan, 'header');
  t.regex(text, /^# header\n# IPv6 forwarding for the host/);
  t.regex(text, /# note: the seed's/);
});

test('with the tunnel up, the /64 route to it comes before any address moves', (t) => {
  const s = seedSpec();
  s.links['6bed4'] = { kind: 'tun', addrs: ['fe80::/128', '2001:db8:9:10:c433:6401:64be:8000/128'] };
  const cmds = commands(s, cfg());
  t.is(cmds[2], `ip -6 route add ${PREFIX} via fe80::1 dev 6bed4 metric 1024`);
  t.is(cmds.length, 11);
});

test('dummy112: create the dummy, add each /112 there, then drop the /64 — no lo bridge needed', (t) => {
  const s = seedSpec();
  s.dummy = { supported: true };
  t.deepEqual(commands(s, cfg({ localAddressMode: 'dummy112' })).slice(2), [
    'ip link add dumbo0 type dummy',
    'ip link set dumbo0 up',
    `ip -6 addr add ${L11}/112 dev dumbo0`,
    `ip -6 addr del ${L11}/64 dev eth0`,
    `ip -6 addr add ${L30}/112 dev dumbo0`,
    `ip -6 addr del ${L30}/64 dev eth0`,
  ]);
});

test('an address not yet on the host is simply added; one already on lo needs no bridge', (t) => {
  const s = seedSpec();
  s.links.lo!.addrs.push(`${L30}/128`);
  const cmds = commands(s, cfg({ localAddresses: [L30, '2001:db8:9:10::44', L11] }));
  t.deepEqual(cmds.slice(2, 4), [`ip -6 addr del ${L30}/64 dev eth0`, `ip -6 addr add ${L30}/128 dev eth0`]);
  t.is(cmds[4], 'ip -6 addr add 2001:db8:9:10::44/128 dev eth0');
});

for (const [name, extra, prepare] of [
  ['uplink128', {}, (_s: Spec) => {}],
  [
    'uplink128 with the tunnel up',
    {},
    (s: Spec) => {
      s.links['6bed4'] = { kind: 'tun', addrs: ['fe80::/128'] };
    },
  ],
  [
    'dummy112',
    { localAddressMode: 'dummy112' },
    (s: Spec) => {
      s.dummy = { supported: true };
    },
  ],
  [
    'uplink128 after dummy112',
    {},
    (s: Spec) => {
      s.links.dumbo0 = { kind: 'dummy', addrs: [`${L11}/112`, `${L30}/112`] };
      s.links.eth0!.addrs = s.links.eth0!.addrs.filter((a) => !a.startsWith('2001'));
      s.routes = s.routes
        .filter((r) => !r.startsWith(PREFIX))
        .concat(['2001:db8:9:10::/112 dev dumbo0 proto kernel metric 256']);
    },
  ],
] as const) {
  test(`${name}: every local address stays on the host through every step, and a second plan is empty`, (t) => {
    const s = seedSpec();
    prepare(s);
    const c = cfg(extra);
    const plan = planApply(c, stateOf(s));
    t.true(plan.steps.length > 0);
    for (const step of plan.steps) {
      simulate(s, step);
      for (const a of [L11, L30]) t.true(formsOf(s, a).length > 0, `${a} missing after '${commandLine(step.action)}'`);
    }
    t.deepEqual(planApply(c, stateOf(s)).steps, [], 'idempotent');
    t.false(
      s.routes.some((r) => r.startsWith(`${PREFIX} dev eth0`)),
      'no /64 route to the uplink is left',
    );
  });
}

test('a default route learnt from Router Advertisements: accept_ra=2, or forwarding would make the host drop it', (t) => {
  const s = seedSpec();
  s.routes = s.routes.map((r) => (r.startsWith('default') ? 'default via fe80::1 dev eth0 proto ra metric 1024' : r));
  const plan = planApply(cfg(), stateOf(s));
  t.is(commandLine(plan.steps[2]!.action), 'sysctl -w net.ipv6.conf.eth0.accept_ra=2');
  t.regex(plan.steps[2]!.reason, /would lose its default route/);
});

test('a /64 the upstream routes to the link-local address leaves no trace: without local addresses the plan goes ahead and says so', (t) => {
  const s = clone(seedSpec());
  s.links.eth0!.addrs = s.links.eth0!.addrs.filter((a) => a.startsWith('fe80'));
  s.routes = s.routes.filter((r) => !r.startsWith(PREFIX));
  const plan = planApply(cfg({ localAddresses: [] }), stateOf(s));
  t.deepEqual(
    plan.steps.map((x) => commandLine(x.action)),
    ['sysctl -w net.ipv6.conf.all.forwarding=1', 'sysctl -w net.ipv6.conf.eth0.forwarding=1'],
  );
  t.true(
    plan.notes.some((n) =>
      /^2001:db8:9:10::\/64 is neither on eth0 nor routed here by a local route: taken as routed to this host by the upstream/.test(
        n,
      ),
    ),
  );
});

test('a share the operator split off a larger prefix is new to the node: its local addresses are added, not refused', (t) => {
  const s = clone(seedSpec());
  s.links.eth0!.addrs = s.links.eth0!.addrs.filter((a) => a.startsWith('fe80'));
  s.routes = s.routes.filter((r) => !r.startsWith(PREFIX));
  const local = { localAddresses: ['2001:db8:9:10::11'] };
  t.throws(
    () => planApply(cfg(local), stateOf(s)),
    { message: /refusing to move local addresses/ },
    'a single host keeps the guard against a mistyped prefix',
  );
  const plan = planApply({ ...cfg(local), allocated: true }, stateOf(s));
  t.true(
    plan.steps.some((x) => commandLine(x.action) === 'ip -6 addr add 2001:db8:9:10::11/128 dev eth0'),
    plan.steps.map((x) => commandLine(x.action)).join('\n'),
  );
  t.true(
    plan.notes.some((n) =>
      /share of a larger prefix, routed here by the upstream: its local addresses \(2001:db8:9:10::11\) are added/.test(
        n,
      ),
    ),
  );
});

test('an uplink whose name has a dot gets the slash form of the sysctl key', (t) => {
  const s = seedSpec();
  s.links['eth0.100'] = s.links.eth0!;
  delete s.links.eth0;
  s.conf['eth0.100'] = s.conf.eth0!;
  delete s.conf.eth0;
  s.routes = s.routes.map((r) => r.replace('dev eth0', 'dev eth0.100'));
  t.is(commands(s, cfg())[1], 'sysctl -w net/ipv6/conf/eth0.100/forwarding=1');
});

// Every refusal, with the words a user needs.
const refusals: [string, (s: Spec) => void, Record<string, unknown>, RegExp][] = [
  [
    'no IPv6 default route',
    (s) => {
      s.routes = s.routes.filter((r) => !r.startsWith('default'));
    },
    {},
    /^this host has no IPv6 default route: refusing to change its IPv6 addresses.*ip -6 route add default via ROUTER dev UPLINK/,
  ],
  ['the uplink is not there', () => {}, { uplink: 'eth9' }, /^uplink 'eth9' not found \(interfaces here: lo, eth0\)$/],
  [
    'a multipath default route',
    (s) => {
      s.links.eth1 = { addrs: [] };
      s.routes = s.routes.map((r) =>
        r.startsWith('default') ? 'default nexthop via fe80::1 dev eth0 nexthop via fe80::1 dev eth1' : r,
      );
    },
    {},
    /the IPv6 default route uses several interfaces \(eth0, eth1\): say which one is the uplink with --uplink/,
  ],
  [
    'local addresses of a prefix neither on the uplink nor routed to it',
    () => {},
    { prefix: '2001:db8:77::/64', localAddresses: ['2001:db8:77::11'] },
    /^prefix 2001:db8:77::\/64 is neither on eth0 \(no address in it\) nor routed to it \(no route for it via eth0\): refusing/,
  ],
  [
    'a /64 announced on-link by RAs',
    (s) => {
      s.routes.push(`${PREFIX} dev eth0 proto ra metric 256`);
    },
    {},
    /announces 2001:db8:9:10::\/64 as on-link in Router Advertisements.*accept_ra_pinfo=0/,
  ],
  [
    'a static /64 route on the uplink',
    (s) => {
      s.routes.push(`${PREFIX} dev eth0 proto static metric 1024`);
    },
    {},
    /route '2001:db8:9:10::\/64 dev eth0 proto static metric 1024' sends the prefix back to eth0.*ip -6 route del 2001:db8:9:10::\/64 dev eth0/,
  ],
  [
    'a /64 address of the prefix not listed',
    () => {},
    { localAddresses: [L11] },
    /2001:db8:9:10::30\/64 on eth0 is inside 2001:db8:9:10::\/64 but not in localAddresses: it would keep the kernel's on-link route.*--local 2001:db8:9:10::30/,
  ],
  [
    'a SLAAC address listed',
    (s) => {
      s.links.eth0!.addrs[0] += ' dynamic';
    },
    {},
    /local address 2001:db8:9:10::30 on eth0 is managed by SLAAC or DHCPv6/,
  ],
  [
    'dummy112 without the dummy link type',
    (s) => {
      s.dummy = { supported: false, error: 'Unknown device type' };
    },
    { localAddressMode: 'dummy112' },
    /^localAddressMode DummyInterface needs the kernel's dummy link type, which this kernel lacks \(ip link add dumbo0 type dummy says: Unknown device type\); use localAddressMode Uplink \(--mode Uplink\)/,
  ],
  [
    'a dummyInterface name taken by another kind of link',
    (s) => {
      s.links.dumbo0 = { kind: 'veth', addrs: [] };
    },
    { localAddressMode: 'dummy112' },
    /dummyInterface 'dumbo0' exists but is a veth interface, not a dummy/,
  ],
];
for (const [name, prepare, extra, message] of refusals) {
  test(`refuses: ${name}`, (t) => {
    const s = clone(seedSpec());
    prepare(s);
    t.throws(() => planApply(cfg(extra), stateOf(s)), { name: 'InputError', message });
  });
}
