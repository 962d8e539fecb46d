// The container image, built and run with a real Docker Engine (Debian's
// docker.io; no registry: the base images are made locally by
// test/docker/base-image.sh). Proves that the image builds from this
// checkout, prints its usage, and runs the ROUTER in a container with only
// CAP_NET_ADMIN + CAP_NET_RAW and /dev/net/tun (not --privileged), serving a
// 6bed4 peer that runs in a test namespace on the other end of a veth.
//
// The container's network namespace is held by a "pause" container (as in a
// Kubernetes pod) so that its address exists before the router starts; the
// router container joins it with --network container:HOLDER.
//
// Skips without root or Linux, or with SIXBED4_SKIP_DOCKER=1. When Docker
// cannot be installed or started it skips too, except under CI (CI=true),
// where that is a failure: CI is root and must run this.
import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { execCommand, runCommand, type CommandResult } from '../../agent/host/command.js';
import { ipIn, ipJsonIn } from '../../agent/host/ip.js';
import { findSystemTool } from '../../agent/host/tools.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { Proc } from '../../lab/proc.js';
import { ping6, startPeerIn } from '../../lab/sixbed4.js';
import { addressIPv4 } from '../../agent/protocol/address.js';
import { formatIPv4, parseIPv6 } from '../../lib/ip.js';
import { ensureDocker, releaseDocker } from '../helpers/docker.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPTS = `${ROOT}test/docker`;
const IMAGE = process.env.SIXBED4_TEST_IMAGE ?? 'sixbed4:test';
// What to build from: this checkout unless told otherwise.
const CONTEXT = process.env.SIXBED4_DOCKER_CONTEXT ?? ROOT;
const PREFIX = '2001:db8:9:10::/64';
const ROUTER_V4 = '203.0.113.1';
const PEER_V4 = '203.0.113.2';
/** Bits 12 (CAP_NET_ADMIN) and 13 (CAP_NET_RAW). */
const NET_ADMIN_RAW = (1n << 12n) | (1n << 13n);
/** The image must stay small: Debian minbase + node + iproute2 + nftables + the agent. */
const MAX_IMAGE_MB = 300;

const isCI = process.env.CI === 'true' || process.env.CI === '1';

/** Why these tests cannot run here (null: they can); also starts dockerd. */
async function prepare(): Promise<{ skip: string | null; fail: string | null; startedPid: number | null }> {
  if (process.env.SIXBED4_SKIP_DOCKER === '1') return { skip: 'SIXBED4_SKIP_DOCKER=1', fail: null, startedPid: null };
  if (process.platform !== 'linux')
    return { skip: `Docker and namespaces need Linux (this is ${process.platform})`, fail: null, startedPid: null };
  if (process.getuid?.() !== 0)
    return { skip: 'needs root to run dockerd and create network namespaces', fail: null, startedPid: null };
  const missing = ['ip', 'nsenter', 'ping'].filter((c) => !findSystemTool(c));
  if (missing.length > 0)
    return {
      skip: `missing command(s) ${missing.join(', ')} (install iproute2, util-linux, iputils-ping)`,
      fail: null,
      startedPid: null,
    };
  // Installs docker.io when missing and starts dockerd when nothing answers; counted until releaseDocker().
  const r = await ensureDocker();
  if (r.code !== 0) {
    const why = `no Docker Engine: test/docker/dockerd.sh ${r.timedOut ? 'timed out' : `failed (${r.code})`}: ${(r.stderr || r.stdout).trim().slice(-1500)}`;
    return isCI ? { skip: null, fail: why, startedPid: null } : { skip: why, fail: null, startedPid: null };
  }
  const m = /^started (\d+)/m.exec(r.stdout);
  return { skip: null, fail: null, startedPid: m ? Number(m[1]) : null };
}

const env = await prepare();
const serial = env.skip ? test.serial.skip : test.serial;
const title = (name: string): string => (env.skip ? `${name} (skipped: ${env.skip})` : name);
// The client from docker.io (matches its dockerd), as the scripts use.
const DOCKER = process.env.SIXBED4_DOCKER_CLI ?? (existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker');

let built = false;
/** Containers this file started; removed at the end whatever happens. */
const containers = new Set<string>();

function docker(args: readonly string[], timeoutMs = 60_000): Promise<CommandResult> {
  return execCommand([DOCKER, ...args], { timeoutMs });
}
async function dockerOk(args: readonly string[], timeoutMs = 60_000): Promise<string> {
  return runCommand([DOCKER, ...args], { timeoutMs });
}
async function removeContainers(names: Iterable<string>): Promise<void> {
  const list = [...names];
  if (list.length === 0) return;
  await docker(['rm', '-f', '-v', ...list], 30_000).catch(() => undefined);
  for (const n of list) containers.delete(n);
}
function needImage(): void {
  if (env.fail) throw new Error(env.fail);
  if (!built) throw new Error(`the image ${IMAGE} was not built (see the first test)`);
}

test.after.always(async () => {
  if (env.skip) return;
  await removeContainers(containers);
  // Leave the machine as found: the last test file using a dockerd the tests started stops it.
  await releaseDocker();
});

serial(
  title('the image builds from this checkout (local base images, multi-stage, cached) and stays small'),
  async (t) => {
    if (env.fail) {
      t.fail(env.fail);
      return;
    }
    t.timeout(25 * 60_000, 'a cold build: debootstrap, apt-get, npm ci, node-gyp, tsc');
    const start = Date.now();
    const r = await execCommand(['bash', `${SCRIPTS}/build-image.sh`, IMAGE, CONTEXT], { timeoutMs: 24 * 60_000 });
    const seconds = Math.round((Date.now() - start) / 1000);
    for (const line of r.stderr.split('\n')) if (/^\[\d\d:\d\d:\d\d\] /.test(line)) t.log(line);
    t.log(`build-image.sh took ${seconds} s`);
    t.is(r.code, 0, `build-image.sh failed:\n${r.stderr.slice(-6000)}`);
    if (r.code !== 0) return;
    const size = Number((await dockerOk(['image', 'inspect', '-f', '{{.Size}}', IMAGE])).trim());
    t.log(`${IMAGE}: ${Math.round(size / 1e6)} MB`);
    t.true(size < MAX_IMAGE_MB * 1e6, `image is ${Math.round(size / 1e6)} MB, more than ${MAX_IMAGE_MB} MB`);
    const cfg = JSON.parse(await dockerOk(['image', 'inspect', '-f', '{{json .Config}}', IMAGE])) as {
      Entrypoint: string[];
      User: string;
      Labels: Record<string, string>;
    };
    t.deepEqual(cfg.Entrypoint, ['node', '/app/dist/cli/main.js']);
    // OCI labels: the version of the context's package.json, the revision of its git checkout (build-image.sh passes both).
    const version = (JSON.parse(await readFile(`${CONTEXT}/package.json`, 'utf8')) as { version: string }).version;
    const revision = (await execCommand(['git', '-C', CONTEXT, 'rev-parse', 'HEAD'])).stdout.trim() || 'unknown';
    t.is(cfg.Labels['org.opencontainers.image.version'], version);
    t.is(cfg.Labels['org.opencontainers.image.revision'], revision);
    t.is(cfg.Labels['org.opencontainers.image.licenses'], 'BSD-2-Clause');
    t.truthy(cfg.Labels['org.opencontainers.image.source']);
    built = true;
  },
);

serial(title('the container prints its usage (--help, and with no arguments)'), async (t) => {
  needImage();
  const help = await docker(['run', '--rm', '--network', 'none', IMAGE, '--help']);
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /^usage: sixbed4 <command>/m);
  t.regex(help.stdout, /router +run a 6bed4 router/);
  const bare = await docker(['run', '--rm', '--network', 'none', IMAGE]);
  t.is(bare.code, 0, bare.stderr);
  t.regex(bare.stdout, /^usage: sixbed4/m);
  // The runtime has what the agent calls (iproute2, nftables) and the CNI plugin it installs, its native addons load,
  // and the pruned production dependencies (no .d.ts/.map/.md) still import.
  const js =
    "const r = (await import('node:module')).createRequire('/app/');" +
    "r('/app/build/Release/sixbed4_native.node'); r('raw-socket');" +
    "for (const m of ['@kubernetes/client-node', 'prom-client', 'winston', 'yaml', 'ipaddr.js']) await import(r.resolve(m));" +
    "console.log('modules ok')";
  const tools = await docker([
    'run',
    '--rm',
    '--network',
    'none',
    '--entrypoint',
    'sh',
    IMAGE,
    '-c',
    'ip -V && nft --version && test -x /app/build/Release/sixbed4-cni && exec node --input-type=module -e "$0"',
    js,
  ]);
  t.is(tools.code, 0, tools.stdout + tools.stderr);
  t.regex(tools.stdout, /iproute2/);
  t.regex(tools.stdout, /nftables v\d/);
  t.regex(tools.stdout, /modules ok/);
  // The version, the revision baked in at build time (as labelled), the image's Node.js, the addon loaded.
  const labels = JSON.parse(await dockerOk(['image', 'inspect', '-f', '{{json .Config.Labels}}', IMAGE])) as Record<
    string,
    string
  >;
  const version = await docker(['run', '--rm', '--network', 'none', IMAGE, '--version']);
  t.is(version.code, 0, version.stderr);
  t.regex(
    version.stdout,
    new RegExp(
      `^sixbed4 ${labels['org.opencontainers.image.version']!.replace(/\./g, '\\.')}\nrevision: ${labels['org.opencontainers.image.revision']}\nnode: v20\\.\\d+\\.\\d+\nnative addon: loaded\n$`,
    ),
  );
});

serial(
  title('without CAP_NET_ADMIN the router refuses with a clear message (so the capability is really needed)'),
  async (t) => {
    needImage();
    const name = uniqueName('dkr');
    containers.add(name);
    try {
      const r = await docker([
        'run',
        '--name',
        name,
        '--network',
        'none',
        '--cap-drop',
        'ALL',
        '--device',
        '/dev/net/tun',
        IMAGE,
        'router',
        '--prefix',
        PREFIX,
        '--listen',
        '127.0.0.1',
        '--log-format',
        'text',
      ]);
      t.is(r.code, 2, r.stdout + r.stderr);
      t.regex(r.stderr, /no permission to create a TUN device: run as root or with CAP_NET_ADMIN/);
    } finally {
      await removeContainers([name]);
    }
  },
);

serial(
  title(
    'the router in a container (NET_ADMIN+NET_RAW and /dev/net/tun, not privileged) gives a peer in a namespace its 6bed4 address',
  ),
  async (t) => {
    needImage();
    t.timeout(3 * 60_000);
    const holder = uniqueName('dkr');
    const router = uniqueName('dkr');
    let peerNs: Netns | undefined;
    let logs: Proc | undefined;
    try {
      // 1. The pod's network namespace: no network but our veth, IPv6 on,
      //    forwarding on (what `sixbed4 host apply` would do on a node).
      containers.add(holder);
      await dockerOk([
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
        '--entrypoint',
        'sleep',
        IMAGE,
        'infinity',
      ]);
      const pid = Number((await dockerOk(['inspect', '-f', '{{.State.Pid}}', holder])).trim());
      t.true(pid > 0, 'the holder container runs');
      const pod = { path: `/proc/${pid}/ns/net` };

      // 2. A cable from a test namespace (the peer's host) into the pod.
      peerNs = await Netns.create(uniqueName('dkp'));
      await peerNs.ip(['link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', String(pid)]);
      await peerNs.ip(['addr', 'add', `${PEER_V4}/24`, 'dev', 'p0']);
      await peerNs.ip(['link', 'set', 'p0', 'up']);
      await ipIn(pod, ['addr', 'add', `${ROUTER_V4}/24`, 'dev', 'wan0']);
      await ipIn(pod, ['link', 'set', 'wan0', 'up']);

      // 3. The router: the image's own entrypoint, only the two capabilities.
      containers.add(router);
      await dockerOk([
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
        IMAGE,
        'router',
        '--prefix',
        PREFIX,
        '--listen',
        ROUTER_V4,
        '--log-format',
        'text',
      ]);
      logs = new Proc([DOCKER, 'logs', '-f', router]);
      const ready = await logs.waitFor(/router ready/, 20_000);
      t.log(ready);
      const routerAddress = /address=(\S+)/.exec(ready)?.[1];
      t.truthy(routerAddress, ready);

      // Not privileged, and holding exactly CAP_NET_ADMIN + CAP_NET_RAW.
      const hc = JSON.parse(await dockerOk(['inspect', '-f', '{{json .HostConfig}}', router])) as {
        Privileged: boolean;
        CapAdd: string[] | null;
        CapDrop: string[] | null;
      };
      t.false(hc.Privileged);
      const caps = (l: string[] | null) => (l ?? []).map((c) => c.replace(/^CAP_/, '')).sort();
      t.deepEqual(caps(hc.CapAdd), ['NET_ADMIN', 'NET_RAW']);
      t.deepEqual(caps(hc.CapDrop), ['ALL']);
      const routerPid = Number((await dockerOk(['inspect', '-f', '{{.State.Pid}}', router])).trim());
      const status = await readFile(`/proc/${routerPid}/status`, 'utf8');
      const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(status)![1]}`);
      t.is(capEff, NET_ADMIN_RAW, `the router's effective capabilities are ${capEff.toString(16)}`);

      // 4. The peer, from the host build, in its namespace.
      const peer = await startPeerIn(peerNs, ['--router', ROUTER_V4]);
      t.log(`peer address ${peer.address}`);
      t.true(peer.address.startsWith('2001:db8:9:10:'), peer.address);
      t.is(
        formatIPv4(addressIPv4(parseIPv6(peer.address), 0)),
        PEER_V4,
        "the address embeds the peer's IPv4 as the router saw it",
      );
      t.regex(peer.proc.output(), /peer address 2001:db8:9:10:/);

      // 5. Traffic through the tunnel into the container: the pod's kernel answers.
      const p = await ping6(peerNs, routerAddress!, { count: 3 });
      t.is(p.received, 3, p.output);

      // 6. A clean stop: docker stop sends SIGTERM; the router removes its tunnel and exits 0.
      await dockerOk(['stop', '-t', '10', router], 30_000);
      await logs.waitFor(/router stopped; tunnel removed/, 5000);
      t.is((await dockerOk(['inspect', '-f', '{{.State.ExitCode}}', router])).trim(), '0');
      const links = await ipJsonIn<{ ifname: string }[]>(pod, ['link', 'show']);
      t.false(
        links.some((l) => l.ifname === '6bed4'),
        'the tunnel is gone from the pod',
      );
    } finally {
      await logs?.stop('SIGTERM', 2000);
      await removeContainers([router, holder]);
      await peerNs?.destroy();
    }
  },
);
