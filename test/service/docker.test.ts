// The router-only container, as docs/host.md documents it: the image's own
// entrypoint, `router --config /etc/sixbed4/router.yaml` with the file mounted,
// NET_ADMIN + NET_RAW and /dev/net/tun (not privileged), in the network it is
// given — here, never the machine's own: `--network container:` of a holder
// whose namespace the test wired up as the seed's VM (an uplink to an ISP
// namespace with ::11/64 on it, an IPv4 link to a peer's namespace). The host
// part is applied inside, a peer gets an address, the ISP reaches it, SIGHUP
// reloads, and `docker stop` reverts the holder's addresses exactly.
//
// Docker mounts /proc/sys read-only in a container: forwarding is switched on
// beforehand, as on the host (docs/host.md says so), and the plan has no sysctl step.
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execCommand, runCommand } from '../../agent/host/command.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { Proc } from '../../lab/proc.js';
import { ping6, startPeerIn } from '../../lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPTS = `${ROOT}test/docker`;
const IMAGE = process.env.SIXBED4_SERVICE_TEST_IMAGE ?? 'sixbed4:service-test';
const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const PREFIX = '2001:db8:9:10::/64';
const L11 = '2001:db8:9:10::11';
const isCI = process.env.CI === 'true' || process.env.CI === '1';

async function prepare(): Promise<{ skip: string | null; startedPid: number | null }> {
  if (skipReason) return { skip: skipReason, startedPid: null };
  if (process.env.SIXBED4_SKIP_DOCKER === '1') return { skip: 'SIXBED4_SKIP_DOCKER=1', startedPid: null };
  const r = await execCommand(['bash', `${SCRIPTS}/dockerd.sh`], { timeoutMs: 150_000 });
  if (r.code !== 0) {
    const why = `no Docker Engine: test/docker/dockerd.sh failed: ${(r.stderr || r.stdout).trim().slice(-1000)}`;
    if (isCI) throw new Error(why);
    return { skip: why, startedPid: null };
  }
  const m = /^started (\d+)/m.exec(r.stdout);
  return { skip: null, startedPid: m ? Number(m[1]) : null };
}

const env = await prepare();
const serial = env.skip ? test.serial.skip : test.serial;
const docker = (args: readonly string[], timeoutMs = 60_000) => runCommand([DOCKER, ...args], { timeoutMs });
const containers = new Set<string>();

test.after.always(async () => {
  if (env.skip) return;
  if (containers.size) await execCommand([DOCKER, 'rm', '-f', '-v', ...containers], { timeoutMs: 30_000 });
  if (env.startedPid !== null)
    await execCommand(['bash', `${SCRIPTS}/dockerd.sh`, 'stop', String(env.startedPid)], { timeoutMs: 30_000 });
});

serial(
  `the router-only container runs router --config in the network it is given: a peer reachable, SIGHUP reloads, docker stop reverts the host${env.skip ? ` (skipped: ${env.skip})` : ''}`,
  async (t) => {
    t.timeout(25 * 60_000, 'the image build may be cold');
    // The image from this checkout (cached layers: seconds when only sources changed).
    const built = await execCommand(['bash', `${SCRIPTS}/build-image.sh`, IMAGE, ROOT], { timeoutMs: 24 * 60_000 });
    t.is(built.code, 0, built.stderr.slice(-4000));
    if (built.code !== 0) return;

    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-svcdkr-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const holder = uniqueName('svch'),
      router = uniqueName('svcr');
    const isp = await Netns.create(uniqueName('svci'));
    t.teardown(() => isp.destroy());
    const peerNs = await Netns.create(uniqueName('svcp'));
    t.teardown(() => peerNs.destroy());
    let logs: Proc | undefined;
    t.teardown(() => logs?.stop('SIGTERM', 2000));

    // The VM: a holder container with no network but what the test wires in; forwarding on beforehand.
    containers.add(holder);
    await docker([
      'run',
      '-d',
      '--name',
      holder,
      '--network',
      'none',
      '--cap-drop',
      'ALL',
      '--sysctl',
      'net.ipv6.conf.all.disable_ipv6=0',
      '--sysctl',
      'net.ipv6.conf.default.disable_ipv6=0',
      '--sysctl',
      'net.ipv6.conf.all.forwarding=1',
      '--sysctl',
      'net.ipv6.conf.default.forwarding=1',
      '--sysctl',
      'net.ipv6.conf.all.accept_dad=0',
      '--sysctl',
      'net.ipv6.conf.default.accept_dad=0',
      '--sysctl',
      'net.ipv6.conf.default.accept_ra=0',
      '--entrypoint',
      'sleep',
      IMAGE,
      'infinity',
    ]);
    const pid = Number((await docker(['inspect', '-f', '{{.State.Pid}}', holder])).trim());
    const vm = (args: string[]) => runCommand(['nsenter', `--net=/proc/${pid}/ns/net`, ...args]);
    // Its uplink eth0 to the ISP, which routes the /64 to the VM's link-local address; ::11/64 on it as on the seed's VM.
    await isp.ip(['link', 'add', 'isp0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(pid)]);
    await isp.ipBatch([
      'addr add 2001:db8:ffff::1/64 dev isp0',
      'addr add fe80::1/64 dev isp0',
      'link set isp0 up',
      `route add ${PREFIX} via fe80::2 dev isp0`,
    ]);
    await vm(['ip', 'link', 'set', 'lo', 'up']);
    await vm(['ip', 'addr', 'add', 'fe80::2/64', 'dev', 'eth0']);
    await vm(['ip', 'addr', 'add', '2001:db8:ffff::2/64', 'dev', 'eth0']);
    await vm(['ip', 'addr', 'add', `${L11}/64`, 'dev', 'eth0']);
    await vm(['ip', 'link', 'set', 'eth0', 'up']);
    await vm(['ip', '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0']);
    // Its IPv4 link to a peer.
    await peerNs.ip(['link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', String(pid)]);
    await peerNs.ipBatch(['addr add 203.0.113.2/24 dev p0', 'link set p0 up']);
    await vm(['ip', 'addr', 'add', '203.0.113.1/24', 'dev', 'wan0']);
    await vm(['ip', 'link', 'set', 'wan0', 'up']);
    const addrsBefore = await vm(['ip', '-6', '-br', 'addr', 'show', 'dev', 'eth0']);

    const file = join(dir, 'router.yaml');
    await writeFile(
      file,
      `prefix: ${PREFIX}\nlisten: {address: 203.0.113.1}\nlocalAddresses: ["::11"]\nroutes: [2001:db8:aaaa::/48]\n`,
    );
    containers.add(router);
    // docs/host.md's command, with --network container:HOLDER for --network host.
    await docker([
      'run',
      '-d',
      '--name',
      router,
      '--network',
      `container:${holder}`,
      '--cap-drop',
      'ALL',
      '--cap-add',
      'NET_ADMIN',
      '--cap-add',
      'NET_RAW',
      '--device',
      '/dev/net/tun',
      '-v',
      `${file}:/etc/sixbed4/router.yaml:ro`,
      IMAGE,
      'router',
      '--config',
      '/etc/sixbed4/router.yaml',
      '--log-format',
      'text',
    ]);
    logs = new Proc([DOCKER, 'logs', '-f', router]);
    await logs.waitFor(/router ready/, 30_000);
    t.regex(logs.output(), /host configured for 2001:db8:9:10::\/64/);
    t.regex(await vm(['ip', '-6', 'addr', 'show', 'dev', 'eth0']), new RegExp(`${L11}/128`));

    const peer = await startPeerIn(peerNs, ['--router', '203.0.113.1', '--default-route']);
    t.is((await ping6(isp, peer.address)).received, 3, "the ISP reaches the peer through the container's tunnel");
    t.is((await ping6(isp, L11)).received, 3, 'and the local address stays on the VM');

    await writeFile(
      file,
      `prefix: ${PREFIX}\nlisten: {address: 203.0.113.1}\nlocalAddresses: ["::11"]\nroutes: [2001:db8:bbbb::/48]\n`,
    );
    await docker(['kill', '-s', 'HUP', router]);
    await logs.waitFor(
      /reloaded without stopping the data path: routes \[2001:db8:aaaa::\/48\] -> \[2001:db8:bbbb::\/48\]/,
      15_000,
    );

    await peer.proc.stop();
    await docker(['stop', '-t', '20', router], 40_000);
    await logs.waitFor(/host reverted to its state before the router started/, 5000);
    t.is((await docker(['inspect', '-f', '{{.State.ExitCode}}', router])).trim(), '0');
    t.is(
      await vm(['ip', '-6', '-br', 'addr', 'show', 'dev', 'eth0']),
      addrsBefore,
      "the VM's addresses are back as they were",
    );
  },
);
