// `sixbed4 host` refusing what could cut a host off, in a real namespace: one
// line saying why, exit status 2, and the host exactly as before (no state
// file either). And a step that fails half-way — an address that fails
// duplicate address detection — is rolled back without losing a ping.
import test, { type ExecutionContext } from 'ava';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns, uniqueName } from '../../lab/netns.js';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { skipReason, title } from '../helpers/fixtures.js';
import { capture, host, L11, L30, lossOf, pingEvery20ms, PREFIX, HOST_CMD, seedVm } from './hostlab.js';

const lab = {} as { topo: Topology; vm: Netns; before: unknown; dir: string };
const serial = skipReason ? test.serial.skip : test.serial;
const LOCALS = ['--prefix', PREFIX, '--local', L11, '--local', L30];

/** Whether this kernel has the dummy link type (tried in a throwaway namespace). */
async function kernelHasDummy(): Promise<boolean> {
  const ns = await Netns.create(uniqueName('dprobe'));
  try {
    return (await ns.exec(['ip', 'link', 'add', 'd0', 'type', 'dummy'])).code === 0;
  } finally {
    await ns.destroy();
  }
}

// Decided before the tests are declared, so that the path this kernel cannot take is skipped, saying why.
const hasDummy = skipReason ? false : await kernelHasDummy();
const NO_DUMMY = 'this kernel has no dummy link type (ip link add ... type dummy: Unknown device type)';

test.before(async () => {
  if (skipReason) return;
  lab.topo = await buildTopology({ tag: 'hrefuse', nat: false });
  lab.vm = await seedVm(lab.topo);
  lab.before = await capture(lab.vm);
  lab.dir = await mkdtemp(join(tmpdir(), 'sixbed4-refuse-'));
});
test.after.always(async () => {
  await lab.topo?.destroy();
  if (lab.dir) await rm(lab.dir, { recursive: true, force: true });
});

async function refused(t: ExecutionContext, args: string[], message: RegExp, wrap: string[] = []) {
  const state = join(lab.dir, 'state.json');
  const r = await lab.vm.exec([...wrap, process.execPath, ...HOST_CMD, ...args, '--state', state]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr.trim(), /^sixbed4: [^\n]+$/, 'one line');
  t.regex(r.stderr, message);
  t.deepEqual(await capture(lab.vm), lab.before, 'nothing changed');
  await t.throwsAsync(access(state), undefined, 'no state file');
}

serial(title('refuses an uplink that is not there'), (t) =>
  refused(t, ['apply', ...LOCALS, '--uplink', 'eth9'], /uplink 'eth9' not found \(interfaces here: lo, eth0\)/),
);

serial(title('refuses to move local addresses of a prefix that is neither on the uplink nor routed to it'), (t) =>
  refused(
    t,
    ['apply', '--prefix', '2001:db8:77::/64', '--local', '2001:db8:77::11'],
    /prefix 2001:db8:77::\/64 is neither on eth0 \(no address in it\) nor routed to it \(no route for it via eth0\)/,
  ),
);

serial(title('refuses a local address whose port word is not 0'), (t) =>
  refused(
    t,
    ['apply', '--prefix', PREFIX, '--local', '2001:db8:9:10::1:11'],
    /has port word 0x0001 \(bytes 12\.\.13\) instead of 0: it would collide with 6bed4 peers/,
  ),
);

serial(title('refuses to leave a /64 address of the prefix behind'), (t) =>
  refused(
    t,
    ['apply', '--prefix', PREFIX, '--local', L11],
    /2001:db8:9:10::30\/64 on eth0 is inside 2001:db8:9:10::\/64 but not in localAddresses/,
  ),
);

serial(title('refuses a host without an IPv6 default route'), async (t) => {
  await lab.vm.ip(['-6', 'route', 'del', 'default']);
  try {
    const r = await host(lab.vm, ['apply', ...LOCALS, '--state', join(lab.dir, 'state.json')]);
    t.is(r.code, 2);
    t.regex(r.err, /^sixbed4: this host has no IPv6 default route: refusing to change its IPv6 addresses/);
  } finally {
    await lab.vm.ip(['-6', 'route', 'add', 'default', 'via', TOPO.ispLL, 'dev', TOPO.routerUplinkIf]);
  }
  t.deepEqual(await capture(lab.vm), lab.before);
});

serial(title('as an ordinary user: says it needs root'), (t) =>
  refused(
    t,
    ['apply', ...LOCALS],
    /sixbed4 host apply changes addresses and sysctls: run it as root \(or with CAP_NET_ADMIN\)/,
    ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
  ),
);

serial(title('revert without a saved state says so'), (t) =>
  refused(t, ['revert'], /no saved state in .*state\.json: nothing to revert/),
);

// The dummy112 path needs the dummy link type; the refusal needs a kernel without it.
(skipReason || hasDummy ? test.serial.skip : test.serial)(
  hasDummy
    ? 'dummy112 without the dummy link type (skipped: this kernel has it)'
    : title('dummy112 on a kernel without the dummy link type: says so and names Uplink'),
  (t) =>
    refused(
      t,
      ['apply', ...LOCALS, '--mode', 'DummyInterface'],
      /localAddressMode DummyInterface needs the kernel's dummy link type, which this kernel lacks \(ip link add dumbo0 type dummy says: Unknown device type\); use localAddressMode Uplink \(--mode Uplink\)/,
    ),
);

(skipReason || !hasDummy ? test.serial.skip : test.serial)(
  skipReason
    ? title('dummy112 apply and revert')
    : hasDummy
      ? 'dummy112 apply and revert'
      : `dummy112 apply and revert (skipped: ${NO_DUMMY})`,
  async (t) => {
    const state = join(lab.dir, 'dummy.json');
    const r = await host(lab.vm, ['apply', ...LOCALS, '--mode', 'dummy112', '--state', state]);
    t.is(r.code, 0, r.err);
    t.regex(await lab.vm.run(['ip', '-6', 'addr', 'show', 'dev', 'dumbo0']), /2001:db8:9:10::11\/112/);
    const back = await host(lab.vm, ['revert', '--state', state]);
    t.is(back.code, 0, back.err);
    t.deepEqual(await capture(lab.vm), lab.before);
  },
);

(skipReason ? test.skip : test)(
  title('a step that fails (an address failing DAD) is rolled back, and no ping is lost meanwhile'),
  async (t) => {
    const topo = await buildTopology({ tag: 'hroll', nat: false });
    t.teardown(() => topo.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-roll-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const vm = await seedVm(topo);
    // Real DAD on the VM's uplink, made quick; the ISP holds ::44, so adding it on the VM must fail.
    await vm.run([
      'sysctl',
      '-q',
      '-w',
      'net.ipv6.conf.eth0.accept_dad=1',
      'net.ipv6.neigh.eth0.retrans_time_ms=100',
      'net.ipv6.conf.eth0.router_solicitation_delay=0',
    ]);
    await topo.isp.ip(['-6', 'addr', 'add', '2001:db8:9:10::44/128', 'dev', TOPO.ispIf, 'nodad']);
    const before = await capture(vm);
    const config = join(dir, 'host.json');
    const state = join(dir, 'state.json');
    await writeFile(config, JSON.stringify({ prefix: PREFIX, localAddresses: [L11, L30, '2001:db8:9:10::44'] }));

    const pings = [pingEvery20ms(topo.isp, L11, 150), pingEvery20ms(topo.isp, L30, 150)];
    await Promise.all(pings.map((p) => p.waitFor(/bytes from/, 5000)));
    const r = await host(vm, ['apply', '--config', config, '--state', state]);
    t.is(r.code, 1);
    t.regex(
      r.err,
      /sixbed4: 'ip -6 addr add 2001:db8:9:10::44\/128 dev eth0' failed: 2001:db8:9:10::44 on eth0 failed duplicate address detection: another node on the link uses it; rolled back \(\d+ step\(s\)\): the host is as it was/,
    );
    t.true(
      pings.every((p) => p.running),
      'the pings lasted longer than apply and rollback',
    );
    for (const p of pings) {
      const l = await lossOf(p);
      t.is(l.received, l.sent, l.output);
    }
    t.deepEqual(await capture(vm), before, 'exactly as before');
    await t.throwsAsync(access(state), undefined, 'no state file is left');
  },
);
