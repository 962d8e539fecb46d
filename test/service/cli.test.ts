// The command line around the service: what `router --config` refuses (exit 2, one clear message, nothing
// changed), `--keep-host` leaving the host configured for a later `host revert`, and `status` with no router.
import test from 'ava';
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execCommand } from '../../agent/host/command.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { CLI } from '../../lab/sixbed4.js';
import { title, rootTest } from '../helpers/fixtures.js';
import { capture, host, L11, L30, PREFIX, seedVm } from '../host/hostlab.js';

const sixbed4 = (args: string[]) =>
  execCommand([process.execPath, CLI, ...args, '--log-format', 'text'], { timeoutMs: 30_000 });

test('router --config refuses other router flags, --keep-host alone, a missing file, an invalid one (all problems at once)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-svccli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bad = join(dir, 'bad.yaml');
  await writeFile(
    bad,
    'prefix: 2001:db8:9:10::/64\nlisten: {address: 198.51.100.1, port: 0}\nroutes: [nonsense]\nlocalAddressMode: off\n',
  );
  const cases: [string[], RegExp][] = [
    [['router', '--config', bad, '--prefix', PREFIX], /--prefix with --config: set it in .*bad\.yaml instead/],
    [['router', '--keep-host', '--prefix', PREFIX, '--listen', '198.51.100.1'], /--keep-host goes with --config/],
    [['router', '--config', join(dir, 'none.yaml')], /cannot read config file .*none\.yaml: no such file/],
    [
      ['router', '--config', bad],
      /bad\.yaml has 3 problems:\n {2}listen\.port 0 is not a UDP port \(1\.\.65535\)\n {2}localAddressMode "off" is not Uplink or DummyInterface\n {2}/,
    ],
  ];
  for (const [args, re] of cases) {
    const r = await sixbed4(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re);
  }
});

rootTest(title('status with no router answering: exit 2, saying where it asked and what to check'), async (t) => {
  const ns = await Netns.create(uniqueName('svcst'));
  t.teardown(() => ns.destroy());
  const r = await ns.exec([process.execPath, CLI, 'status', '--metrics', '127.0.0.1:9475']);
  t.is(r.code, 2, r.stderr);
  t.regex(
    r.stderr,
    /no sixbed4 router answers on 127\.0\.0\.1:9475 \(ECONNREFUSED\): is it running \(systemctl status sixbed4-router\)\?/,
  );
});

rootTest(
  title('--keep-host: the stop leaves the host configured; host revert --state restores it exactly'),
  async (t) => {
    const topo = await buildTopology({ tag: 'svckh', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-svckh-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const vm = await seedVm(topo);
    const before = await capture(vm);
    const file = join(dir, 'router.yaml'),
      state = join(dir, 'state.json');
    // A router that cannot start (its listen address is not the VM's): the host goes back at once, --keep-host or not.
    await writeFile(
      file,
      JSON.stringify({
        prefix: PREFIX,
        listen: { address: '192.0.2.99' },
        localAddresses: [L11, L30],
        stateFile: state,
      }),
    );
    const failed = await vm.exec(
      [process.execPath, CLI, 'router', '--config', file, '--keep-host', '--log-format', 'text'],
      { timeoutMs: 30_000 },
    );
    t.is(failed.code, 2, failed.stderr);
    t.regex(failed.stderr, /192\.0\.2\.99 is not an address of this host/);
    t.deepEqual(await capture(vm), before, 'nothing half-applied');

    await writeFile(
      file,
      JSON.stringify({
        prefix: PREFIX,
        listen: { address: TOPO.routerV4C },
        localAddresses: [L11, L30],
        stateFile: state,
      }),
    );
    const router = vm.spawn([process.execPath, CLI, 'router', '--config', file, '--keep-host', '--log-format', 'text']);
    await router.waitFor(/router ready/, 20_000);
    t.is(await router.stop('SIGTERM', 20_000), 0, router.output());
    t.regex(
      router.output(),
      new RegExp(
        `host kept as configured \\(--keep-host\\); undo with: sixbed4 host revert --state ${state.replace(/[.]/g, '\\.')}`,
      ),
    );
    await access(state);
    t.regex(await vm.run(['ip', '-6', 'addr', 'show', 'dev', 'eth0']), new RegExp(`${L11}/128`));
    t.false((await vm.run(['ip', 'link', 'show'])).includes('6bed4'), 'the tunnel is gone with the router');
    const reverted = await host(vm, ['revert', '--state', state]);
    t.is(reverted.code, 0, reverted.err);
    t.deepEqual(await capture(vm), before);
  },
);
