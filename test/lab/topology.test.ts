/**
 * Tests of the namespace harness itself (lab/): if these fail, every
 * end-to-end test built on the lab is meaningless, so they check the
 * plumbing the others take for granted — NAT really translates, the direct
 * peer really is direct, the IPv6 uplink works, and nothing leaks.
 */
import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { execCommand } from '../../agent/host/command.js';
import { cleanupAll, listNamespaces, Netns, uniqueName } from '../../lab/netns.js';
import { buildTopology, requireRootReason, TOPO } from '../../lab/topology.js';

const skipReason = requireRootReason();
// Without root the lab tests cannot run at all; say why in the title rather
// than failing (or silently passing).
const labTest = skipReason ? test.skip : test;
const title = (s: string): string => (skipReason ? `${s} [skipped: ${skipReason}]` : s);

const NODE = process.execPath;
const ECHO_PORT = 7777;

/** UDP server that answers every datagram with the source "address:port" it saw. */
const UDP_ECHO = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send(r.address + ':' + r.port, r.port, r.address));
s.bind(Number(process.argv[1]), '0.0.0.0', () => console.log('listening ' + s.address().port));
`;

/** Sends datagrams to argv[1]:argv[2] until one reply arrives; prints it. */
const UDP_CLIENT = `
const s = require('node:dgram').createSocket('udp4');
const send = () => s.send('hello', Number(process.argv[2]), process.argv[1]);
s.on('message', (m) => { console.log(String(m)); process.exit(0); });
setInterval(send, 300); send();
setTimeout(() => { console.error('no reply'); process.exit(2); }, 5000);
`;

async function udpAsk(t: ExecutionContext, from: Netns, host: string): Promise<string> {
  const r = await from.exec([NODE, '-e', UDP_CLIENT, host, String(ECHO_PORT)], { timeoutMs: 10_000 });
  t.is(r.code, 0, `UDP from ${from.name} to ${host}: ${r.stderr}`);
  return r.stdout.trim();
}

async function ping(ns: Netns, addr: string, waitS = 3): Promise<{ code: number | null; out: string }> {
  const r = await ns.exec(['ping', '-n', '-c', '1', '-W', String(waitS), addr], { timeoutMs: 10_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

test('uniqueName gives distinct, short, prefixed names', (t) => {
  const a = uniqueName('x');
  const b = uniqueName('x');
  t.not(a, b);
  t.regex(a, /^s4-x-[0-9a-z]+(t[0-9a-z]+)?-[0-9a-z]+$/);
  t.true(a.length <= 24);
});

labTest(title('topology: NAT translates, peer C is direct, IPv6 uplink works, destroy removes all'), async (t) => {
  const topo = await buildTopology({ tag: 'topo', peerC: true });
  t.teardown(async () => {
    await topo.destroy();
    await cleanupAll(topo.prefix);
  });

  t.is(topo.names.length, 6);
  t.deepEqual(topo.peerIds, ['A', 'B', 'C']);
  const present = await listNamespaces();
  for (const n of topo.names) t.true(present.includes(n), `namespace ${n} exists`);

  // IPv4: NAT path and direct path.
  const echo = topo.router.spawn([NODE, '-e', UDP_ECHO, String(ECHO_PORT)]);
  await echo.waitFor(/^listening \d+/, 10_000);

  const [pingA, pingC] = await Promise.all([ping(topo.peers.A, TOPO.routerV4), ping(topo.peers.C, TOPO.routerV4C)]);
  t.is(pingA.code, 0, `peerA -> ${TOPO.routerV4}: ${pingA.out}`);
  t.is(pingC.code, 0, `peerC -> ${TOPO.routerV4C}: ${pingC.out}`);

  const [seenA, seenB, seenC] = await Promise.all([
    udpAsk(t, topo.peers.A, TOPO.routerV4),
    udpAsk(t, topo.peers.B, TOPO.routerV4),
    udpAsk(t, topo.peers.C, TOPO.routerV4C),
  ]);
  t.regex(seenA, new RegExp(`^${TOPO.natV4.replaceAll('.', '\\.')}:\\d+$`), 'peer A is masqueraded');
  t.regex(seenB, new RegExp(`^${TOPO.natV4.replaceAll('.', '\\.')}:\\d+$`), 'peer B is masqueraded');
  t.regex(seenC, new RegExp(`^${TOPO.peerCV4.replaceAll('.', '\\.')}:\\d+$`), 'peer C is not translated');

  // Peers are isolated from each other's networks and from the outside:
  // no default route beyond their gateway, and the router does not forward IPv4.
  const cToNat = await ping(topo.peers.C, TOPO.natV4, 1);
  t.not(cToNat.code, 0, 'router must not forward IPv4 between peer C and the NAT side');

  // IPv6 uplink between ISP and router, global and link-local.
  const [v6, ll] = await Promise.all([ping(topo.isp, TOPO.routerV6), ping(topo.isp, `${TOPO.routerLL}%${TOPO.ispIf}`)]);
  t.is(v6.code, 0, `isp -> ${TOPO.routerV6}: ${v6.out}`);
  t.is(ll.code, 0, `isp -> ${TOPO.routerLL}%${TOPO.ispIf}: ${ll.out}`);

  // The routes the 6bed4 router relies on are in place.
  const ispRoutes = await topo.isp.json<Array<{ dst: string; gateway?: string; dev: string }>>(['-6', 'route', 'show']);
  t.truthy(
    ispRoutes.find((r) => `${r.dst}/64` === TOPO.prefix || r.dst === TOPO.prefix),
    `isp routes ${TOPO.prefix}: ${JSON.stringify(ispRoutes)}`,
  );
  t.is(ispRoutes.find((r) => r.dst.startsWith('2001:db8:9:10::'))?.gateway, TOPO.routerLL);
  const rtrRoutes = await topo.router.json<Array<{ dst: string; gateway?: string }>>([
    '-6',
    'route',
    'show',
    'default',
  ]);
  t.is(rtrRoutes[0]?.gateway, TOPO.ispLL);
  t.is(await topo.router.getSysctl('net.ipv6.conf.all.forwarding'), '1');
  t.is(await topo.router.getSysctl(`net.ipv6.conf.${TOPO.routerUplinkIf}.forwarding`), '1');

  // Peers: IPv6 on, link-local only, not forwarding.
  for (const id of topo.peerIds) {
    const peer = topo.peers[id];
    const addrs = await peer.json<Array<{ addr_info: Array<{ family: string; local: string; scope: string }> }>>([
      '-6',
      'addr',
      'show',
      'dev',
      TOPO.peerIf,
    ]);
    const v6addrs = addrs.flatMap((a) => a.addr_info);
    t.true(v6addrs.length > 0, `peer ${id} has IPv6 enabled`);
    t.deepEqual(
      v6addrs.filter((a) => a.scope !== 'link'),
      [],
      `peer ${id} has only link-local IPv6`,
    );
    t.is(await peer.getSysctl('net.ipv6.conf.all.forwarding'), '0');
  }

  // destroy() stops the spawned echo server and removes every namespace.
  await topo.destroy();
  t.false(echo.running);
  const after = await listNamespaces();
  t.deepEqual(
    after.filter((n) => n.startsWith(topo.prefix)),
    [],
  );
  await topo.destroy(); // idempotent
});

labTest(title('topology without NAT or peer C refuses access to what was not built'), async (t) => {
  const topo = await buildTopology({ tag: 'min', nat: false });
  t.teardown(async () => {
    await topo.destroy();
    await cleanupAll(topo.prefix);
  });
  t.is(topo.names.length, 2);
  t.deepEqual(topo.peerIds, []);
  t.throws(() => topo.nat, { message: /nat: false/ });
  t.throws(() => topo.peers.A, { message: /peer A/ });
  t.throws(() => topo.peers.C, { message: /peerC: true/ });
  t.is((await ping(topo.isp, TOPO.routerV6)).code, 0);
});

labTest(title('Netns exec/run/json/sysctl behave as documented'), async (t) => {
  const ns = await Netns.create(uniqueName('ns'));
  t.teardown(() => ns.destroy());

  const r = await ns.exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
  t.is(r.code, 3);
  t.is(r.stdout, 'out\n');
  t.is(r.stderr, 'err\n');
  t.false(r.timedOut);

  await t.throwsAsync(ns.run(['sh', '-c', 'echo boom >&2; exit 1']), {
    message: /status 1: ip netns exec .*sh -c[\s\S]*boom/,
  });
  t.is(await ns.run(['cat'], { input: 'via stdin' }), 'via stdin');

  const slow = await ns.exec(['sleep', '10'], { timeoutMs: 200 });
  t.true(slow.timedOut);
  t.is(slow.code, null);

  const links = await ns.json<Array<{ ifname: string; flags: string[] }>>(['link', 'show']);
  t.deepEqual(
    links.map((l) => l.ifname),
    ['lo'],
  );
  t.true(links[0]!.flags.includes('UP'), 'lo is up');
  t.is(await ns.getSysctl('net.ipv6.conf.default.accept_dad'), '0');
  t.is(await ns.getSysctl('net.ipv6.conf.all.accept_ra'), '0');
  await ns.sysctl('net.ipv4.ip_forward', 1);
  t.is(await ns.getSysctl('net.ipv4.ip_forward'), '1');
});

labTest(
  title('Proc.waitFor sees past and future lines; stop() ends the process; destroy() kills leftovers'),
  async (t) => {
    const ns = await Netns.create(uniqueName('proc'));
    t.teardown(() => ns.destroy());

    const script = `
    console.log('starting');
    setTimeout(() => console.error('ready 42'), 200);
    process.on('SIGTERM', () => { console.log('bye'); process.exit(7); });
    setInterval(() => {}, 1000);
  `;
    const p = ns.spawn([NODE, '-e', script]);
    t.is(await p.waitFor(/ready (\d+)/, 10_000), 'ready 42', 'future line, on stderr');
    t.is(await p.waitFor(/^start/, 10), 'starting', 'line printed before waiting');
    await t.throwsAsync(p.waitFor(/never printed/, 200), {
      message: /did not print it within 200 ms[\s\S]*starting[\s\S]*ready 42/,
    });
    t.is(await p.stop(), 7);
    t.false(p.running);
    t.regex(p.output(), /bye/);
    t.is(await p.stop(), 7, 'stop() on an exited process just reports');

    // A process that ignores SIGTERM is killed after the timeout.
    const stubborn = ns.spawn([
      NODE,
      '-e',
      "process.on('SIGTERM', () => console.log('ignored')); console.log('up'); setInterval(() => {}, 1000);",
    ]);
    await stubborn.waitFor(/^up$/, 10_000);
    t.is(await stubborn.stop('SIGTERM', 300), null);
    t.is((await stubborn.exited).signal, 'SIGKILL');
    t.regex(stubborn.output(), /ignored/);

    // A waiter is rejected (with the output) when the process exits.
    const short = ns.spawn(['sh', '-c', 'echo only line; exit 0']);
    await t.throwsAsync(short.waitFor(/never/, 10_000), { message: /exited \(code 0[\s\S]*only line/ });

    // destroy() stops spawned processes and also kills strays nobody tracks.
    const tracked = ns.spawn([NODE, '-e', 'setInterval(() => {}, 1000)']);
    await ns.run(['sh', '-c', 'sleep 300 >/dev/null 2>&1 </dev/null &']);
    const pids = await pidsIn(ns.name);
    t.true(pids.length >= 2, `processes in the namespace: ${pids.join(' ')}`);
    await ns.destroy();
    t.false(tracked.running);
    for (const pid of pids) t.false(alive(pid), `pid ${pid} was killed`);
    t.false((await listNamespaces()).includes(ns.name));
    await ns.destroy(); // idempotent, no throw
    t.throws(() => ns.spawn(['true']), { message: /being destroyed/ });
  },
);

labTest(title('a failure inside buildTopology leaves no namespaces behind'), async (t) => {
  const prefix = uniqueName('fail');
  // Squat on one of the names the build will use, so that creating it fails
  // while its siblings succeed in parallel.
  const squatter = await Netns.create(`${prefix}-nat`);
  t.teardown(async () => {
    await squatter.destroy();
    await cleanupAll(prefix);
  });
  await t.throwsAsync(buildTopology({ tag: 'fail', prefix, peerC: true }), { message: /exists/ });
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  t.deepEqual(left, [squatter.name], 'only the squatter remains: the build cleaned up, and only its own namespaces');
});

// --- helpers ---------------------------------------------------------------

/** Pids of processes living in the namespace (via `ip netns pids`). */
async function pidsIn(name: string): Promise<number[]> {
  const r = await execCommand(['ip', 'netns', 'pids', name]);
  return r.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** True if pid exists and is not a zombie awaiting its reaper. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /s.test(stat);
  } catch {
    return false;
  }
}
