// `sixbed4 peer --lan IF` in the lab: a LAN namespace behind peer A (a veth to A's namespace). The host there learns
// the /114 and its default route from the peer's Router Advertisement, takes an address with a lanip of its own in
// that /114 (the documented scheme: hosts pick a static lanip), pings the ISP and is pinged back. When the NAT
// mapping changes (as in nat-change.test.ts), the peer announces the new /114 and withdraws the old one; the host's
// address in the new /114 works. On stop the host loses its default route and A's forwarding sysctls are as before.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { Netns } from '../../lab/netns.js';
import { veth } from '../../lab/veth.js';
import { ping6, spawnSixbed4, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { systemTool } from '../../agent/host/tools.js';
import { addressPort } from '../../agent/protocol/address.js';
import { formatIPv6, parseIPv6 } from '../../lib/ip.js';
import { skipReason } from '../helpers/fixtures.js';
import { remapNat, REMAP_PORTS } from '../helpers/nat-remap.js';
import { eventually } from '../helpers/wait.js';

const why =
  skipReason ??
  (!hasConntrack() ? 'needs the conntrack tool (Debian package conntrack) to make the NAT forget its mapping' : null);
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
/** The host's lanip: any of 2..16383 (1 is the peer's own address). */
const HOST_LANIP = 0x123;
const LAN_IF = 'lan0';

function hasConntrack(): boolean {
  try {
    systemTool('conntrack');
    return true;
  } catch {
    return false;
  }
}

const s = {} as { topo: Topology; lan: Netns };

test.before(async () => {
  if (why) return;
  s.topo = await buildTopology({ tag: 'lan' });
  s.lan = await Netns.create(`${s.topo.prefix}-lan`);
  await veth(s.topo.peers.A, LAN_IF, s.lan, 'eth0');
  // A host as it comes: taking RAs (the lab's namespaces are made not to).
  await s.lan.sysctl('net.ipv6.conf.eth0.accept_ra', 1);
  await startRouterIn(s.topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4]);
});

test.after.always(async () => {
  await s.lan?.destroy();
  await s.topo?.destroy();
});

type Route = { dst: string; gateway?: string; dev?: string; expires?: number };

/** The /114 the host has on-link from an RA (null while none). */
async function lanPrefix(): Promise<string | null> {
  const routes = await s.lan.json<Route[]>(['-6', 'route', 'show', 'dev', 'eth0']);
  return routes.find((r) => r.dst.endsWith('/114'))?.dst ?? null;
}

/** The host's address in a /114: the prefix with HOST_LANIP in its last 14 bits. */
function hostAddress(prefix114: string): string {
  const b = parseIPv6(prefix114.split('/')[0]!);
  b[14] = (b[14]! & 0xc0) | (HOST_LANIP >> 8);
  b[15] = HOST_LANIP & 0xff;
  return formatIPv6(b);
}

function prefixOf(address: string): string {
  const b = parseIPv6(address);
  b[14] = b[14]! & 0xc0;
  b[15] = 0;
  return `${formatIPv6(b)}/114`;
}

async function forwarding(ns: Netns): Promise<string> {
  return (
    await ns.run([
      'sysctl',
      '-n',
      'net.ipv6.conf.all.forwarding',
      'net.ipv6.conf.eth0.forwarding',
      `net.ipv6.conf.${LAN_IF}.forwarding`,
    ])
  ).trim();
}

serial(title('--lan refuses a missing interface and the uplink, with the reason'), async (t) => {
  for (const [lan, re] of [
    ['nosuch0', /--lan nosuch0: no such interface/],
    [TOPO.peerIf, /is the interface towards the router/],
  ] as const) {
    const p = spawnSixbed4(s.topo.peers.B, ['peer', '--router', TOPO.routerV4, '--lan', lan]);
    const { code } = await p.exited;
    t.not(code, 0);
    t.regex(p.output(), re);
  }
});

serial(
  title('a LAN host behind peer A reaches the ISP and is reached from it, before and after a NAT mapping change'),
  async (t) => {
    const sysctlsBefore = await forwarding(s.topo.peers.A);
    const peer = await startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--lan', LAN_IF]);
    let stopped = false;
    t.teardown(async () => {
      if (!stopped) await peer.proc.stop();
    });

    // The RA gives the host the peer's /114 on-link and a default route via the peer.
    const first = await eventually('the /114 from the RA', lanPrefix);
    t.is(first, prefixOf(peer.address));
    const routes = await s.lan.json<Route[]>(['-6', 'route', 'show', 'default']);
    t.true(
      routes.some((r) => r.gateway?.startsWith('fe80:') && r.dev === 'eth0'),
      JSON.stringify(routes),
    );
    const addr1 = hostAddress(first);
    await s.lan.ip(['-6', 'addr', 'add', `${addr1}/128`, 'dev', 'eth0', 'nodad']);

    const out = await ping6(s.lan, TOPO.ispV6, { count: 3 });
    t.is(out.received, 3, out.output);
    const back = await ping6(s.topo.isp, addr1, { count: 3 });
    t.is(back.received, 3, back.output);
    // The peer itself is on the LAN's link too (its address is on IF as the /114).
    const toPeer = await ping6(s.lan, peer.address, { count: 1 });
    t.is(toPeer.received, 1, toPeer.output);

    const moved = await remapNat(s.topo, peer.proc);
    const newPort = addressPort(parseIPv6(moved), 0);
    t.true(newPort >= REMAP_PORTS.first && newPort <= REMAP_PORTS.last, moved);

    // The LAN moves with it: the new /114 on-link, the old one withdrawn (its route gone from the host).
    const second = await eventually('the new /114 and the old one withdrawn', async () => {
      const routes = await s.lan.json<Route[]>(['-6', 'route', 'show', 'dev', 'eth0']);
      const p = routes.filter((r) => r.dst.endsWith('/114')).map((r) => r.dst);
      return p.length === 1 && p[0] !== first ? p[0]! : null;
    });
    t.is(second, prefixOf(moved));
    // The host re-addresses in the new /114 (the same lanip), as the documented host script does.
    const addr2 = hostAddress(second);
    await s.lan.ip(['-6', 'addr', 'del', `${addr1}/128`, 'dev', 'eth0']);
    await s.lan.ip(['-6', 'addr', 'add', `${addr2}/128`, 'dev', 'eth0', 'nodad']);
    const out2 = await ping6(s.lan, TOPO.ispV6, { count: 3 });
    t.is(out2.received, 3, out2.output);
    const back2 = await ping6(s.topo.isp, addr2, { count: 3 });
    t.is(back2.received, 3, back2.output);

    // Stop: the last RA takes the default route away; the peer's address leaves IF; forwarding as before.
    stopped = true;
    t.is(await peer.proc.stop(), 0);
    await eventually(
      'the default route gone',
      async () => (await s.lan.json<Route[]>(['-6', 'route', 'show', 'default'])).length === 0,
    );
    const left = await s.topo.peers.A.json<{ addr_info: { scope: string }[] }[]>(['-6', 'addr', 'show', 'dev', LAN_IF]);
    t.false(
      left[0]!.addr_info.some((a) => a.scope === 'global'),
      'no global address left on IF',
    );
    t.is(await forwarding(s.topo.peers.A), sysctlsBefore);
  },
);
