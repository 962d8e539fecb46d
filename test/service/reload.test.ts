// The single host as a service, end to end on real kernel networking: the
// seed's VM (::11 and ::30 on its uplink as /64s, forwarding off) runs the
// command line of the shipped sixbed4-router.service, with a NOTIFY_SOCKET of
// the test's own. It configures the host, says READY=1 once a peer's pings
// cross the tunnel, reloads on the unit's ExecReload (SIGHUP) while the ISP
// pings the peer every 20 ms — every reply counted, none may be lost — and
// applies new routes, rate limits, metrics address and a new local address;
// refuses a change that needs a restart and an invalid file, keeping what
// runs; `sixbed4 status` summarises it; and the stop gives the host back
// exactly as `ip -j` showed it before.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { CLI, ping6, scrape, startPeerIn } from '../../lab/sixbed4.js';
import { exchange, title, rootTest } from '../helpers/fixtures.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { capture, L11, L30, pingEvery20ms, PREFIX, repliesOf, seedVm } from '../host/hostlab.js';
import { commandLine, ROUTER_UNIT, runnable, unitValue } from './units.js';
import { notifyListener } from './notify-listener.js';
import { count, nthLine } from './lines.js';
import { parseRouterAdvert, writeRouterSolicit } from '../../agent/protocol/nd.js';
import { formatIPv6 } from '../../lib/ip.js';

/** The routes in the RA the router sends now to an RS from ns (a fresh UDP port: a new peer to the router). */
async function announcedRoutes(ns: Parameters<typeof exchange>[0]): Promise<string[]> {
  const rs = new Uint8Array(64);
  const x = await exchange(ns, TOPO.routerV4C, 25790, [rs.subarray(0, writeRouterSolicit(rs, 0))]);
  const ra = x.replies.map((r) => parseRouterAdvert(r.bytes, 0, r.bytes.length)).find((a) => a);
  if (!ra) throw new Error('no RA came back');
  return ra.routes.map((r) => `${formatIPv6(r.bytes)}/${r.length}`);
}

const L40 = '2001:db8:9:10::40';
const PINGS = 6000; // at most 2 min at 20 ms: stopped once the reload is done and 50 more replies came

const config = (
  o: { routes: string[]; metricsPort: number; locals: string[]; prefix?: string; perSourceRate?: number },
  state: string,
) => `
# the single host: SixBed4Prefix.spec's fields, and what a host chooses itself
prefix: ${o.prefix ?? PREFIX}
listen:
  address: ${TOPO.routerV4C}
localAddresses: [${o.locals.join(', ')}]
localAddressMode: Uplink
routes: [${o.routes.join(', ')}]
ndpProxy: Disabled
metricsPort: ${o.metricsPort}
replyRateLimit: {perSourceRate: ${o.perSourceRate ?? 4}, perSourceBurst: 8}
stateFile: ${state}
workers: 2   # the reload reaches every forwarding worker
`;

rootTest(
  title(
    'router --config as the unit runs it: READY=1 on NOTIFY_SOCKET, reload without a lost ping, restart-needed and invalid files refused, exact revert',
  ),
  async (t) => {
    const topo = await buildTopology({ tag: 'svc', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-svc-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const vm = await seedVm(topo);
    const before = await capture(vm);
    const file = join(dir, 'router.yaml');
    const state = join(dir, 'state.json');
    // ::30 as an interface identifier: this host's /64 is meant, as in a cluster's spec.
    await writeFile(file, config({ routes: ['2001:db8:aaaa::/48'], metricsPort: 9475, locals: [L11, '::30'] }, state));

    const notify = await notifyListener(join(dir, 'notify.sock'));
    t.teardown(() => notify.stop());
    const exec = runnable(commandLine(unitValue(ROUTER_UNIT, 'ExecStart')), { '/etc/sixbed4/router.yaml': file });
    t.deepEqual(exec.slice(2), ['router', '--config', file, '--log-format', 'text']);
    const router = vm.spawn(exec, { env: { NOTIFY_SOCKET: join(dir, 'notify.sock') } });
    const ready = await notify.waitFor(/^notify READY=1/, 20_000);
    t.regex(
      ready,
      new RegExp(`STATUS=forwarding ${PREFIX.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\|MAINPID=${router.pid}`),
    );
    t.regex(router.output(), /router ready/, 'READY=1 comes after the router forwards');

    // The host as the file says: local addresses as /128s, the /64 to the tunnel, forwarding on.
    const addrs = await vm.run(['ip', '-6', 'addr', 'show', 'dev', 'eth0']);
    t.regex(addrs, new RegExp(`${L11}/128`));
    t.regex(addrs, new RegExp(`${L30}/128`));
    t.is(await vm.getSysctl('net.ipv6.conf.all.forwarding'), '1');
    const peer = await startPeerIn(topo.peers.C, ['--router', TOPO.routerV4C, '--default-route']);
    t.is((await ping6(topo.isp, peer.address)).received, 3);
    t.is((await ping6(topo.isp, L11)).received, 3);
    t.deepEqual(await announcedRoutes(topo.peers.C), ['2001:db8:aaaa::/48']);

    // sixbed4 status, the admin's first command, against the running router.
    const status = await vm.exec([process.execPath, CLI, 'status', '--config', file]);
    t.is(status.code, 0, status.stderr);
    t.regex(status.stdout, /^live peers +1$/m);
    t.regex(status.stdout, /^peers -> kernel +[1-9]\d* +\d/m);
    t.regex(status.stdout, /^kernel -> peers +[1-9]\d* +\d/m);
    t.regex(status.stdout, /^uptime +\d+s|^uptime +\d+m/m);
    t.log(status.stdout);

    // Reload under pings through the tunnel: routes, rate limits, the metrics port and a new local address.
    const pings = pingEvery20ms(topo.isp, peer.address, PINGS);
    await pings.waitFor(/bytes from/, 5000);
    await writeFile(
      file,
      config({ routes: ['2001:db8:bbbb::/48'], metricsPort: 9476, locals: [L11, L30, L40], perSourceRate: 2 }, state),
    );
    const reload = commandLine(unitValue(ROUTER_UNIT, 'ExecReload'), { env: { MAINPID: String(router.pid) } });
    t.deepEqual(reload, ['kill', '-HUP', String(router.pid)]);
    const firstBatch = repliesOf(pings).last;
    await vm.run(reload);
    await router.waitFor(/reloaded without stopping the data path/, 15_000);
    // Pings from before the reload until well after it; no sequence number missing in between (what was still in
    // flight when ping is stopped does not count). The limit is a hang detector.
    const after = repliesOf(pings).last;
    for (const until = Date.now() + 60_000; repliesOf(pings).last < after + 50 && pings.running && Date.now() < until;)
      await sleep(100);
    await pings.stop('SIGINT');
    const got = repliesOf(pings);
    t.true(
      firstBatch > 0 && got.last >= after + 50,
      `replies before the reload (${firstBatch}) and 50 after it (${after} -> ${got.last}):\n${pings.output()}`,
    );
    t.deepEqual(got.missing, [], `replies lost during the reload:\n${pings.output()}`);
    t.log(`reload: pings 1..${got.last} at 20 ms through the router, ${got.missing.length} lost`);
    const line = router.lines().find((l) => /reloaded without stopping/.test(l.text))!.text;
    t.regex(line, /routes \[2001:db8:aaaa::\/48\] -> \[2001:db8:bbbb::\/48\]/);
    t.regex(line, /metrics 127\.0\.0\.1:9475 -> 127\.0\.0\.1:9476/);
    t.regex(line, /replyRateLimit/);
    t.regex(line, new RegExp(`localAddresses .* -> \\[${L11}, ${L30}, ${L40}\\]`));
    await nthLine(notify, /^notify READY=1/, 2);
    t.true(
      notify.lines().some((l) => /^notify RELOADING=1\|MONOTONIC_USEC=\d+$/.test(l.text)),
      notify.output(),
    );
    t.true((await scrape(vm, '127.0.0.1:9476')).has('sixbed4_router_live_peers'), 'metrics on the new port');
    t.is(
      (
        await vm.exec([
          process.execPath,
          '-e',
          "fetch('http://127.0.0.1:9475/metrics').then(() => process.exit(0), () => process.exit(3))",
        ])
      ).code,
      3,
      'and not on the old one',
    );
    t.is((await ping6(topo.isp, L40)).received, 3, 'the new local address answers');
    t.deepEqual(await announcedRoutes(topo.peers.C), ['2001:db8:bbbb::/48'], 'RAs carry the new routes');
    t.regex(await vm.run(['ip', '-6', 'addr', 'show', 'dev', 'eth0']), new RegExp(`${L40}/128`));
    t.is((await ping6(topo.isp, peer.address)).received, 3, 'the peer kept its address: the data path never stopped');

    // A change that needs a restart: said, and nothing done (not even the metrics port in the same file).
    await writeFile(
      file,
      config({ routes: [], metricsPort: 9477, locals: ['::11', '::30', '::40'], prefix: '2001:db8:9:20::/64' }, state),
    );
    await vm.run(reload);
    await router.waitFor(/needs a restart/, 15_000);
    t.regex(
      router.output(),
      /prefix 2001:db8:9:10::\/64 -> 2001:db8:9:20::\/64 needs a restart \(systemctl restart sixbed4-router\); nothing changed/,
    );
    t.true((await scrape(vm, '127.0.0.1:9476')).has('sixbed4_router_live_peers'), 'metrics stay where they were');

    // An invalid file: refused with the error, the running configuration stays.
    await writeFile(
      file,
      config({ routes: ['2001:db8:cccc::/48'], metricsPort: 80, locals: [L11, L30, L40] }, state).replace(
        `prefix: ${PREFIX}`,
        'prefix: 2001:db8::/40',
      ),
    );
    await vm.run(reload);
    await router.waitFor(/reload refused/, 15_000);
    t.regex(router.output(), /reload refused, the running configuration stays: .*router\.yaml has 2 problems:/);
    t.regex(router.output(), /prefix 2001:db8::\/40 is a \/40: use a \/48 to \/64/);
    t.regex(router.output(), /metricsPort 80 is not in 1024\.\.65535/);
    t.true((await scrape(vm, '127.0.0.1:9476')).has('sixbed4_router_live_peers'));
    t.is((await ping6(topo.isp, peer.address)).received, 3);
    t.is(count(notify, /^notify READY=1/), 4, 'READY=1 again after each reload, whatever its outcome');

    // A local address left out: it keeps its /128 until the stop (its /64 back on eth0 would take the /64 from the tunnel).
    await writeFile(
      file,
      config({ routes: ['2001:db8:bbbb::/48'], metricsPort: 9476, locals: [L11, L30], perSourceRate: 2 }, state),
    );
    await vm.run(reload);
    await router.waitFor(/left the file/, 15_000);
    t.regex(
      router.output(),
      new RegExp(`local address\\(es\\) ${L40} left the file: they keep their port-0 form until the router stops`),
    );
    t.regex(await vm.run(['ip', '-6', 'addr', 'show', 'dev', 'eth0']), new RegExp(`${L40}/128`));
    t.is((await ping6(topo.isp, peer.address)).received, 3);

    // Stop: the tunnel goes, the host is reverted exactly (the local address added by the reload too).
    await peer.proc.stop();
    t.is(await router.stop('SIGTERM', 20_000), 0, router.output());
    await nthLine(notify, /^notify STOPPING=1/, 1);
    t.regex(router.output(), /host reverted to its state before the router started/);
    t.deepEqual(await capture(vm), before, 'the host is back exactly as it was');
  },
);
