// Bad input to `sixbed4 router` and `sixbed4 peer`: one line saying what is
// wrong and what to do, a non-zero exit, and nothing left behind.
import test from 'ava';
import { Netns, uniqueName } from '../../lab/netns.js';
import { CLI, startRouterIn } from '../../lab/sixbed4.js';
import { skipReason, title, rootSerial } from '../helpers/fixtures.js';

const ns = { host: undefined as Netns | undefined };
const PREFIX = '2001:db8:9:10::/64';

test.before(async () => {
  if (skipReason) return;
  const h = await Netns.create(uniqueName('cli'));
  ns.host = h;
  await h.ip(['addr', 'add', '198.51.100.1/32', 'dev', 'lo']);
});
test.after.always(async () => {
  await ns.host?.destroy();
});

async function sixbed4(args: string[], wrap: string[] = []) {
  const r = await ns.host!.exec([...wrap, process.execPath, CLI, ...args]);
  return { code: r.code, err: r.stderr.trim() };
}

/** Nothing half-configured: no tunnel interface, no route, the UDP port free. */
async function assertClean(t: import('ava').ExecutionContext) {
  const links = await ns.host!.json<{ ifname: string }[]>(['link', 'show']);
  t.deepEqual(
    links.map((l) => l.ifname),
    ['lo'],
  );
  const routes = await ns.host!.json<{ dst: string }[]>(['-6', 'route', 'show']);
  t.false(routes.some((r) => r.dst === PREFIX));
  const ss = await ns.host!.run(['ss', '-uanH']);
  t.notRegex(ss, /:25790\b/);
}

const cases: [string, string[], RegExp][] = [
  [
    'a prefix that is not a /64',
    ['--prefix', '2001:db8:9::/56'],
    /prefix '2001:db8:9::\/56' is a \/56; a 6bed4 router serves exactly one \/64/,
  ],
  [
    'a prefix with host bits',
    ['--prefix', '2001:db8:9:10::1/64'],
    /host bits set after \/64; did you mean 2001:db8:9:10::\/64\?/,
  ],
  ['port 0', ['--prefix', PREFIX, '--port', '0'], /--port 0 is not a UDP port: use 1..65535/],
  [
    'an IPv4 address not on this host',
    ['--prefix', PREFIX, '--listen', '203.0.113.99'],
    /203\.0\.113\.99 is not an address of this host/,
  ],
  ['a malformed IPv4 address', ['--prefix', PREFIX, '--listen', '198.51.100'], /'198\.51\.100' is not an IPv4 address/],
  ['an unknown flag', ['--prefix', PREFIX, '--bogus'], /Unknown option '--bogus'/],
  [
    'a bad extra route',
    ['--prefix', PREFIX, '--route', '2001:db8:77::1/48'],
    /--route '2001:db8:77::1\/48' has host bits set/,
  ],
  [
    'more routes than fit in an RA',
    [
      '--prefix',
      PREFIX,
      ...Array.from({ length: 38 }, (_, i) => ['--route', `2001:db8:${(i + 1).toString(16)}::/48`]).flat(),
    ],
    /38 --route prefixes: at most 37 fit in a Router Advertisement/,
  ],
  ['an unknown fast path mode', ['--prefix', PREFIX, '--fast-path', 'fast'], /--fast-path fast: use auto, on or off/],
  [
    '--fast-path on where the program cannot go (the address is on lo)',
    ['--prefix', PREFIX, '--fast-path', 'on'],
    /--fast-path on: 198\.51\.100\.1 is on lo, a loopback interface: the fast path handles Ethernet uplinks only/,
  ],
];

for (const [name, args, re] of cases) {
  rootSerial(title(`router refuses ${name}`), async (t) => {
    const full = args.includes('--listen') ? args : [...args, '--listen', '198.51.100.1'];
    const r = await sixbed4(['router', ...full]);
    t.is(r.code, 2);
    t.regex(r.err, re);
    t.is(r.err.split('\n').length, 1, 'one line');
    t.regex(r.err, /^sixbed4: /);
    await assertClean(t);
  });
}

rootSerial(title('router refuses a UDP port in use, and leaves the port to its owner'), async (t) => {
  const holder = ns.host!.spawn([
    process.execPath,
    '-e',
    "const s=require('dgram').createSocket('udp4');s.bind(25790,'198.51.100.1',()=>console.log('bound'))",
  ]);
  await holder.waitFor(/bound/, 5000);
  try {
    const r = await sixbed4(['router', '--prefix', PREFIX, '--listen', '198.51.100.1']);
    t.is(r.code, 2);
    t.regex(r.err, /UDP port 25790 on 198\.51\.100\.1 is in use: is another 6bed4 router running\?/);
    const links = await ns.host!.json<{ ifname: string }[]>(['link', 'show']);
    t.deepEqual(
      links.map((l) => l.ifname),
      ['lo'],
    );
  } finally {
    await holder.stop();
  }
});

rootSerial(title('router refuses a tunnel name another router holds; the running one is untouched'), async (t) => {
  const first = await startRouterIn(ns.host!, ['--prefix', PREFIX, '--listen', '198.51.100.1']);
  try {
    const r = await sixbed4(['router', '--prefix', PREFIX, '--listen', '198.51.100.1', '--port', '25791']);
    t.is(r.code, 2);
    t.regex(r.err, /interface 6bed4 is in use: is another router running\?/);
    const ss = await ns.host!.run(['ss', '-uanH']);
    t.notRegex(ss, /:25791\b/, 'the failed router released its socket');
    const links = await ns.host!.json<{ ifname: string }[]>(['link', 'show']);
    t.true(
      links.some((l) => l.ifname === '6bed4'),
      'the first router keeps its tunnel',
    );
  } finally {
    t.is(await first.stop(), 0);
  }
  await assertClean(t);
});

rootSerial(
  title('router without --fast-path (auto, the default) where it cannot run: says why once, then forwards without it'),
  async (t) => {
    // Straight from the CLI: the lab's helpers would add --fast-path (lab/fast-path.ts).
    const r = ns.host!.spawn([
      process.execPath,
      CLI,
      'router',
      '--prefix',
      PREFIX,
      '--listen',
      '198.51.100.1',
      '--log-format',
      'text',
    ]);
    try {
      await r.waitFor(/router ready/, 10_000);
      const why = r
        .output()
        .split('\n')
        .filter((l) => /fast path unavailable/.test(l));
      t.is(why.length, 1, r.output());
      t.regex(why[0]!, /every packet takes the TypeScript path: 198\.51\.100\.1 is on lo, a loopback interface/);
      t.regex(r.output(), /router ready.*fastPath=off/);
    } finally {
      t.is(await r.stop(), 0, r.output());
    }
    await assertClean(t);
  },
);

rootSerial(title('router as an ordinary user: says it needs root'), async (t) => {
  const r = await sixbed4(
    ['router', '--prefix', PREFIX, '--listen', '198.51.100.1'],
    ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
  );
  t.is(r.code, 2);
  t.regex(r.err, /needs root \(or CAP_NET_ADMIN\)/);
  await assertClean(t);
});

rootSerial(title('router with CAP_NET_ADMIN but no access to /dev/net/tun: says so'), async (t) => {
  const r = await sixbed4(
    ['router', '--prefix', PREFIX, '--listen', '198.51.100.1'],
    [
      'setpriv',
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      '--inh-caps=+net_admin',
      '--ambient-caps=+net_admin',
    ],
  );
  t.is(r.code, 2);
  t.regex(r.err, /no permission to create a TUN device: run as root or with CAP_NET_ADMIN/);
  await assertClean(t);
});

rootSerial(title('peer refuses bad input'), async (t) => {
  for (const [args, re] of [
    [[], /--router is required/],
    [['--router', '198.51.100.1:0'], /port 0 is not a UDP port/],
    [['--router', '198.51.100.1', '--lanip', '0'], /--lanip 0: use 1\.\.16383/],
    [['--router', '198.51.100.1', '--lanip', '16384'], /--lanip 16384: use 1\.\.16383/],
    [['--router', '198.51.100.1', '--keepalive', '0'], /--keepalive 0/],
    [['--router', '198.51.100.1', '--port', '0'], /--port 0 is not a UDP port: use 1\.\.65535/],
    [['--router', '198.51.100.1', '--port', '70000'], /--port 70000 is not a UDP port/],
  ] as [string[], RegExp][]) {
    const r = await sixbed4(['peer', ...args]);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.err, re);
  }
  await assertClean(t);
});

test('unknown command and --help', async (t) => {
  const { execFile } = await import('node:child_process');
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string; err: string }>((resolve) =>
      execFile(process.execPath, [CLI, ...args], (e, out, err) =>
        resolve({ code: e ? (e.code as number) : 0, out, err }),
      ),
    );
  const bad = await run(['frobnicate']);
  t.is(bad.code, 2);
  t.regex(bad.err, /unknown command 'frobnicate'/);
  const help = await run(['--help']);
  t.is(help.code, 0);
  t.regex(help.out, /router .*\n[\s\S]*peer .*\n[\s\S]*lab /);
});
