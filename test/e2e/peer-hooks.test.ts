// `sixbed4 peer --hook SCRIPT` in the lab: the hook hears `add` with the address the router gave, `route-add` for
// the router's extra route, then `remove` old + `add` new when the NAT mapping changes (as in nat-change.test.ts),
// and `remove` + `route-remove` when the peer stops. A hook that fails on every call changes nothing for the peer.
import test from 'ava';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { systemTool } from '../../agent/host/tools.js';
import { addressIPv4, addressPort } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv6 } from '../../lib/ip.js';
import { skipReason } from '../helpers/fixtures.js';
import { remapNat, REMAP_PORTS } from '../helpers/nat-remap.js';

const why =
  skipReason ??
  (!hasConntrack() ? 'needs the conntrack tool (Debian package conntrack) to make the NAT forget its mapping' : null);
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const ROUTE = '2001:db8:77::/48';

/** The /114 of a 6bed4 address (lanip bits zero), as the peer tells its hook. */
function prefix114(address: string): string {
  const b = parseIPv6(address);
  b[14] = b[14]! & 0xc0;
  b[15] = 0;
  return `${formatIPv6(b)}/114`;
}

/** The public IPV4:PORT a 6bed4 address embeds. */
function mapping(address: string): string {
  const b = parseIPv6(address);
  return `${formatIPv4(addressIPv4(b, 0))}:${addressPort(b, 0)}`;
}

function hasConntrack(): boolean {
  try {
    systemTool('conntrack');
    return true;
  } catch {
    return false;
  }
}

const s = {} as { topo: Topology; dir: string };

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-hooks-'));
  s.topo = await buildTopology({ tag: 'hooks' });
  await startRouterIn(s.topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--route', ROUTE]);
});

test.after.always(async () => {
  await s.topo?.destroy();
  if (s.dir) await rm(s.dir, { recursive: true, force: true });
});

async function hookScript(name: string, body: string): Promise<string> {
  const p = join(s.dir, name);
  await writeFile(p, `#!/bin/sh\n${body}\n`);
  await chmod(p, 0o755);
  return p;
}

serial(title('the hook hears add at start, remove+add when the NAT mapping changes, remove at stop'), async (t) => {
  const events = join(s.dir, 'events');
  const hook = await hookScript(
    'record',
    `echo "$SIXBED4_EVENT $*\${SIXBED4_MAPPING:+ $SIXBED4_MAPPING}" >> ${events}\necho "recorded $SIXBED4_EVENT $*"`,
  );
  const peer = await startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--hook', hook]);
  await peer.proc.waitFor(/hook: recorded route-add/, 10_000);
  t.deepEqual(
    (await readFile(events, 'utf8')).trim().split('\n'),
    [`add add ${peer.address} ${prefix114(peer.address)} ${mapping(peer.address)}`, `route-add route-add ${ROUTE}`],
    "add with the address, its /114 and the public mapping; route-add for the router's extra route",
  );

  const moved = await remapNat(s.topo, peer.proc);
  await peer.proc.waitFor(new RegExp(`hook: recorded add add ${moved} `), 10_000);
  const afterMove = (await readFile(events, 'utf8')).trim().split('\n').slice(2);
  t.is(afterMove.length, 2, afterMove.join('\n'));
  t.deepEqual(afterMove, [
    `remove remove ${peer.address} ${prefix114(peer.address)} ${mapping(peer.address)}`,
    `add add ${moved} ${prefix114(moved)} ${mapping(moved)}`,
  ]);
  const newPort = Number(mapping(moved).split(':').at(-1));
  t.true(
    newPort >= REMAP_PORTS.first && newPort <= REMAP_PORTS.last,
    `the new address embeds the new mapping (${mapping(moved)})`,
  );
  // The move's RA has no route options: the router's extra route stays (no route-remove above).
  const kept = await s.topo.peers.A.json<{ dst: string }[]>(['-6', 'route', 'show', ROUTE]);
  t.is(kept.length, 1, 'the extra route survives the move');

  t.is(await peer.proc.stop(), 0);
  const atStop = (await readFile(events, 'utf8')).trim().split('\n').slice(4);
  t.deepEqual(atStop, [
    `remove remove ${moved} ${prefix114(moved)} ${mapping(moved)}`,
    `route-remove route-remove ${ROUTE}`,
  ]);
});

serial(
  title('a hook that fails every time is logged and changes nothing: the peer gets its address and pings the ISP'),
  async (t) => {
    const hook = await hookScript('fail', 'echo "cannot update DNS" >&2\nexit 1');
    const peer = await startPeerIn(s.topo.peers.B, ['--router', TOPO.routerV4, '--default-route', '--hook', hook]);
    t.teardown(() => peer.proc.stop());
    await peer.proc.waitFor(/hook failed \(exit 1\); the peer goes on/, 10_000);
    t.regex(peer.proc.output(), /warn.*hook: cannot update DNS/);
    const r = await ping6(s.topo.peers.B, TOPO.ispV6, { count: 3 });
    t.is(r.received, 3, r.output);
  },
);
