// The shipped systemd units without a running systemd: `systemd-analyze
// verify` accepts them (with sixbed4 where systemd looks for a bare command
// name, in a mount namespace of the test's own), they hold what the service
// needs and no more, and the peer unit's command line, with its environment
// file and instance name expanded, runs a peer in a namespace the test made, which says READY=1 on a socket of the
// test's own once it has its address.
import test from 'ava';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execCommand } from '../../agent/host/command.js';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { CLI, ping6, startRouterIn } from '../../lab/sixbed4.js';
import { STATE_DIR } from '../../agent/host/statefile.js';
import { skipReason, title, rootTest } from '../helpers/fixtures.js';
import { commandLine, PEER_LAN_DROPIN, PEER_UNIT, ROUTER_UNIT, runnable, UNIT_DIR, unitValue } from './units.js';
import { notifyListener } from './notify-listener.js';

const ANALYZE = '/usr/bin/systemd-analyze';
const noAnalyze = existsSync(ANALYZE) ? null : 'no systemd-analyze (apt-get install systemd)';
const verifySkip = skipReason ?? noAnalyze;
const verifyTest = verifySkip ? test.skip : test;

verifyTest(`systemd-analyze verify accepts both units${verifySkip ? ` (skipped: ${verifySkip})` : ''}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-units-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // verify checks that ExecStart's command exists: systemd looks a bare name up in /usr/local/bin and /usr/bin, where
  // npm install -g puts it. A tmpfs over /usr/local/bin, in a private mount namespace, holds it for this run only.
  const shim = join(dir, 'sixbed4');
  await writeFile(shim, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`);
  await chmod(shim, 0o755);
  const script =
    `mount -t tmpfs tmpfs /usr/local/bin && cp ${shim} /usr/local/bin/sixbed4 && ` +
    `exec ${ANALYZE} verify ${ROUTER_UNIT} ${PEER_UNIT} ${UNIT_DIR}sixbed4-peer@home.service`;
  const r = await execCommand(['unshare', '-m', '--propagation', 'private', 'sh', '-c', script], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stdout + r.stderr);
  t.is(r.stderr.trim(), '', 'no warnings either');
});

test('sixbed4-router.service: Type=notify, reload by SIGHUP, only the capabilities it needs, sandboxed, state in StateDirectory', (t) => {
  const v = (k: string) => unitValue(ROUTER_UNIT, k);
  t.is(v('Type'), 'notify');
  t.is(v('ExecReload'), 'kill -HUP $MAINPID');
  t.is(v('RestartPreventExitStatus'), '2', 'bad input (exit 2) is not retried in a loop');
  t.regex(v('ExecStart'), /^sixbed4 router --config \/etc\/sixbed4\/router\.yaml( |$)/);
  // CAP_BPF: router.yaml's fastPath (the in-kernel fast path needs it with CAP_NET_ADMIN, measured; no CAP_SYS_ADMIN)
  t.is(v('CapabilityBoundingSet'), 'CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_BPF');
  t.is(v('AmbientCapabilities'), v('CapabilityBoundingSet'));
  for (const [k, want] of [
    ['ProtectSystem', 'strict'],
    ['ProtectHome', 'yes'],
    ['PrivateTmp', 'yes'],
    ['NoNewPrivileges', 'yes'],
  ])
    t.is(v(k!), want, k);
  // The host's state file defaults to /var/lib/sixbed4, which StateDirectory=sixbed4 makes and keeps writable.
  t.is(`/var/lib/${v('StateDirectory')}`, STATE_DIR);
  t.false(
    /^ProtectKernelTunables=yes/m.test(readFileSync(ROUTER_UNIT, 'utf8')),
    'the router writes IPv6 forwarding sysctls',
  );
  t.is(unitValue(PEER_UNIT, 'CapabilityBoundingSet'), 'CAP_NET_ADMIN');
  t.is(unitValue(PEER_UNIT, 'EnvironmentFile'), '/etc/sixbed4/peer-%i.env');
});

rootTest(
  title(
    "sixbed4-peer@home.service's command line runs a peer in a namespace: tunnel s4p-home, pings through the router",
  ),
  async (t) => {
    const topo = await buildTopology({ tag: 'unit', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    await topo.router.sysctl('net.ipv6.conf.all.forwarding', 1);
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4C]);
    // What the environment file holds (systemd reads KEY=VALUE lines; # comments).
    const envFile = `# /etc/sixbed4/peer-home.env\nROUTER=${TOPO.routerV4C}\nPEER_FLAGS=--default-route --keepalive 10\n`;
    const env = Object.fromEntries(
      envFile
        .split('\n')
        .filter((l) => /^[A-Z_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const argv = commandLine(unitValue(PEER_UNIT, 'ExecStart'), { instance: 'home', env });
    t.deepEqual(argv, [
      'sixbed4',
      'peer',
      '--router',
      TOPO.routerV4C,
      '--tun',
      's4p-home',
      '--log-format',
      'text',
      '--default-route',
      '--keepalive',
      '10',
    ]);
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-peerunit-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const notify = await notifyListener(join(dir, 'notify.sock'));
    t.teardown(() => notify.stop());
    t.is(unitValue(PEER_UNIT, 'Type'), 'notify');
    const peer = topo.peers.C.spawn(runnable(argv), { env: { NOTIFY_SOCKET: join(dir, 'notify.sock') } });
    const line = await peer.waitFor(/peer address \S+/, 15_000);
    const address = /peer address (\S+)/.exec(line)![1]!;
    t.is(
      await notify.waitFor(/^notify READY=1/, 5000),
      `notify READY=1|STATUS=address ${address}|MAINPID=${peer.pid}`,
      'ready once it has its address',
    );
    t.regex(
      await topo.peers.C.run(['ip', '-6', 'addr', 'show', 'dev', 's4p-home']),
      new RegExp(address.replace(/:/g, ':')),
    );
    const p = await ping6(topo.peers.C, TOPO.ispV6);
    t.is(p.received, p.sent, p.output);
    t.is(await peer.stop(), 0, 'a clean stop (systemctl stop sends SIGTERM)');
  },
);

rootTest(
  title(
    "--lan needs the peer-lan.conf drop-in: with the unit's capabilities alone the LAN's raw socket is refused, with the drop-in's the peer serves the LAN",
  ),
  async (t) => {
    t.is(
      unitValue(PEER_LAN_DROPIN, 'ProtectKernelTunables'),
      'no',
      'the peer writes IPv6 forwarding sysctls for the LAN',
    );
    const topo = await buildTopology({ tag: 'unitlan', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    await topo.router.sysctl('net.ipv6.conf.all.forwarding', 1);
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4C]);
    await topo.peers.C.ip(['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan1']);
    await topo.peers.C.ip(['link', 'set', 'lan0', 'up']);
    await topo.peers.C.ip(['link', 'set', 'lan1', 'up']);
    const argv = runnable(
      commandLine(unitValue(PEER_UNIT, 'ExecStart'), {
        instance: 'lan',
        env: { ROUTER: TOPO.routerV4C, PEER_FLAGS: '--lan lan0' },
      }),
    );
    /** The peer as systemd would start it with the unit's (or the drop-in's) capabilities: those, and no others. */
    const withCaps = (unit: string) => {
      const caps = unitValue(unit, 'AmbientCapabilities')
        .split(/\s+/)
        .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)
        .join(',');
      return topo.peers.C.spawn([
        'setpriv',
        `--inh-caps=-all,${caps}`,
        `--ambient-caps=-all,${caps}`,
        `--bounding-set=-all,${caps}`,
        ...argv,
      ]);
    };
    const base = withCaps(PEER_UNIT);
    t.is((await base.exited).code, 2, base.output());
    t.regex(base.output(), /--lan lan0: cannot open a raw ICMPv6 socket on it/);
    const lan = withCaps(PEER_LAN_DROPIN);
    await lan.waitFor(/LAN lan0: \S+\/114 announced/, 15_000);
    t.is(await lan.stop(), 0, 'a clean stop: a last RA, forwarding as it was');
  },
);
