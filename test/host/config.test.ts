// The host configuration: defaults, every validation message, and reading
// YAML, JSON and whole SixBed4Prefix objects.
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostConfig, readHostConfigFile } from '../../agent/host/config.js';

const PREFIX = '2001:db8:9:10::/64';

test('defaults: Uplink (uplink128 inside), dumbo0, 6bed4, ndpProxy Disabled (off inside), uplink from the default route', (t) => {
  const c = hostConfig({ prefix: PREFIX, localAddresses: ['2001:db8:9:10::11', '2001:DB8:9:10:0:0:0:30'] });
  t.is(c.prefix.text, PREFIX);
  t.is(c.uplink, undefined);
  t.deepEqual(
    c.localAddresses.map((a) => a.text),
    ['2001:db8:9:10::11', '2001:db8:9:10::30'],
  );
  t.is(c.localAddressMode, 'uplink128');
  t.is(c.dummyInterface, 'dumbo0');
  t.is(c.tunnel, '6bed4');
  t.is(c.ndpProxy, 'off');
});

const bad: [string, Record<string, unknown>, RegExp][] = [
  ['no prefix', {}, /^prefix is required: the \/64 your provider routes to this host/],
  ['a /56', { prefix: '2001:db8:9::/56' }, /is a \/56; a 6bed4 router serves exactly one \/64/],
  [
    'an address outside the prefix',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:11::1'] },
    /^local address 2001:db8:9:11::1 is outside the prefix 2001:db8:9:10::\/64$/,
  ],
  [
    'a port word that is not 0',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:10:0:0:1:11'] },
    /^local address 2001:db8:9:10::1:11 has port word 0x0001 \(bytes 12\.\.13\) instead of 0: it would collide with 6bed4 peers, whose addresses carry their UDP port there; use a port-0 address such as 2001:db8:9:10::11$/,
  ],
  [
    'a 6bed4 peer address',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:10:c433:640a:f8e6:8001'] },
    /port word 0xf8e6 .* collide with 6bed4 peers/,
  ],
  [
    'the subnet-router anycast address',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:10::'] },
    /subnet-router anycast address/,
  ],
  [
    'an address twice',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:10::11', '2001:db8:9:10:0::11'] },
    /2001:db8:9:10::11 is listed twice/,
  ],
  [
    'an address with a length',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:10::11/64'] },
    /without a prefix length; sixbed4 chooses it from localAddressMode/,
  ],
  [
    'not an address',
    { prefix: PREFIX, localAddresses: ['2001:db8:9:10::zz'] },
    /'2001:db8:9:10::zz' is not an IPv6 address/,
  ],
  [
    'an unknown mode',
    { prefix: PREFIX, localAddressMode: 'dummy64' },
    /^localAddressMode 'dummy64': use Uplink or DummyInterface$/,
  ],
  [
    'an unknown ndpProxy',
    { prefix: PREFIX, ndpProxy: 'yes' },
    /^ndpProxy 'yes': use Disabled or Always or WhenOnLink$/,
  ],
  [
    'a YAML 1.1 boolean for ndpProxy',
    { prefix: PREFIX, ndpProxy: true },
    /^ndpProxy true: use Disabled or Always or WhenOnLink \(on, off, yes and no are booleans in YAML\)$/,
  ],
  [
    'a mode in the wrong case',
    { prefix: PREFIX, localAddressMode: 'uplink' },
    /^localAddressMode 'uplink': use Uplink or DummyInterface$/,
  ],
  [
    'a misspelt field',
    { prefix: PREFIX, localAdresses: [] },
    /^unknown config field 'localAdresses' \(known: prefix, uplink, localAddresses/,
  ],
  ['a bad interface name', { prefix: PREFIX, uplink: 'eth0/x' }, /uplink 'eth0\/x' is not a usable interface name/],
  ['lo as uplink', { prefix: PREFIX, uplink: 'lo' }, /uplink 'lo' is the loopback interface/],
  ['uplink = tunnel', { prefix: PREFIX, uplink: '6bed4' }, /uplink '6bed4' cannot also be the tunnel/],
  [
    'a list that is not a list',
    { prefix: PREFIX, localAddresses: '2001:db8:9:10::11' },
    /localAddresses must be a list/,
  ],
];
for (const [name, raw, message] of bad) {
  test(`refuses ${name}`, (t) => {
    t.throws(() => hostConfig(raw), { name: 'InputError', message });
  });
}

test('the CamelCase modes and their old spellings mean the same', (t) => {
  const same: [Record<string, string>, Record<string, string>][] = [
    [{ localAddressMode: 'Uplink' }, { localAddressMode: 'uplink128' }],
    [{ localAddressMode: 'DummyInterface' }, { localAddressMode: 'dummy112' }],
    [{ ndpProxy: 'Disabled' }, { ndpProxy: 'off' }],
    [{ ndpProxy: 'Always' }, { ndpProxy: 'on' }],
    [{ ndpProxy: 'WhenOnLink' }, { ndpProxy: 'auto' }],
  ];
  for (const [now, old] of same)
    t.deepEqual(hostConfig({ prefix: PREFIX, ...now }), hostConfig({ prefix: PREFIX, ...old }), JSON.stringify(now));
  t.is(hostConfig({ prefix: PREFIX, localAddressMode: 'DummyInterface' }).localAddressMode, 'dummy112');
  t.is(hostConfig({ prefix: PREFIX, ndpProxy: 'WhenOnLink' }).ndpProxy, 'auto');
});

test('reads YAML, JSON, and the spec of a SixBed4Prefix object; ignores spec fields for the router and cluster', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const yaml = join(dir, 'host.yaml');
  await writeFile(
    yaml,
    `prefix: ${PREFIX}\nuplink: eth0\nlocalAddresses:\n  - 2001:db8:9:10::11\n  - 2001:db8:9:10::30\nlocalAddressMode: DummyInterface\nndpProxy: WhenOnLink\n`,
  );
  const json = join(dir, 'host.json');
  await writeFile(json, JSON.stringify({ prefix: PREFIX, localAddresses: ['2001:db8:9:10::11'], tunnel: 'tun6' }));
  const crd = join(dir, 'prefix.yaml');
  await writeFile(
    crd,
    `apiVersion: sixbed4.io/v1alpha1\nkind: SixBed4Prefix\nmetadata: {name: p}\nspec:\n  prefix: ${PREFIX}\n  listen: 198.51.100.1\n  routes: []\n  localAddresses: [2001:db8:9:10::30]\n`,
  );
  const y = hostConfig(await readHostConfigFile(yaml));
  t.is(y.uplink, 'eth0');
  t.is(y.localAddressMode, 'dummy112');
  t.is(y.ndpProxy, 'auto');
  t.is(y.localAddresses.length, 2);
  t.is(hostConfig(await readHostConfigFile(json)).tunnel, 'tun6');
  t.deepEqual(
    hostConfig(await readHostConfigFile(crd)).localAddresses.map((a) => a.text),
    ['2001:db8:9:10::30'],
  );
  await t.throwsAsync(readHostConfigFile(join(dir, 'nope.yaml')), {
    message: /cannot read config file .*nope\.yaml: no such file/,
  });
  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, 'prefix: [unclosed\n');
  await t.throwsAsync(readHostConfigFile(broken), { message: /is neither YAML nor JSON/ });
});
