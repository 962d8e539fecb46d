// A peer whose NAT mapping changes: its next packet arrives from a new public
// port, fails the originator check, and the router answers with an RA to
// all-nodes; the peer moves to the new address (make-before-break) and the
// native side reaches it there. Nothing at the router had to remember it.
import test from 'ava';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { systemTool } from '../../agent/host/tools.js';
import { addressPort } from '../../agent/protocol/address.js';
import { parseIPv6 } from '../../lib/ip.js';
import { skipReason } from '../helpers/fixtures.js';
import { remapNat, REMAP_PORTS } from '../helpers/nat-remap.js';

const why =
  skipReason ??
  (!hasConntrack() ? 'needs the conntrack tool (Debian package conntrack) to make the NAT forget its mapping' : null);

function hasConntrack(): boolean {
  try {
    systemTool('conntrack');
    return true;
  } catch {
    return false;
  }
}

(why ? test.skip : test)(
  why
    ? `a changed NAT mapping moves the peer (skipped: ${why})`
    : 'a changed NAT mapping moves the peer to its new address, told by the router',
  async (t) => {
    const topo = await buildTopology({ tag: 'remap' });
    t.teardown(() => topo.destroy());
    const router = await startRouterIn(topo.router, [
      '--prefix',
      TOPO.prefix,
      '--listen',
      TOPO.routerV4,
      '--metrics',
      '127.0.0.1:9464',
    ]);
    const peer = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    // On failure: what the router, the NAT and the peer saw.
    t.teardown(async () => {
      if (t.passed) return;
      const m = await scrape(topo.router, '127.0.0.1:9464').catch(() => new Map<string, number>());
      t.log(
        [...m]
          .filter(([k, v]) => v && /packets_total|nd_messages|dropped/.test(k))
          .map(([k, v]) => `${k} ${v}`)
          .join('\n'),
      );
      t.log(await topo.nat.run([systemTool('conntrack'), '-L']).catch((e: Error) => e.message));
      t.log(router.output().split('\n').slice(-20).join('\n'));
      t.log(peer.proc.output().split('\n').slice(-20).join('\n'));
    });
    const oldPort = addressPort(parseIPv6(peer.address), 0);
    t.truthy(await remapNat(topo, peer.proc));
    // A round's flush can have crossed the router's RA, so the peer may move once more: what counts is where it ends
    // up, its global address on the tunnel once the ISP reaches it there (its own traffic makes the router tell it).
    const globalAddresses = async () =>
      (
        await topo.peers.A.json<{ addr_info: { local: string; scope: string }[] }[]>([
          '-6',
          'addr',
          'show',
          'dev',
          '6bed4peer',
        ])
      )
        .flatMap((l) => l.addr_info)
        .filter((a) => a.scope === 'global')
        .map((a) => a.local);
    let moved = '',
      back = { received: 0, output: 'not pinged' };
    for (const until = Date.now() + 60_000; Date.now() < until;) {
      moved = (await globalAddresses()).find((a) => a !== peer.address) ?? '';
      if (moved) back = await ping6(topo.isp, moved, { count: 3 });
      if (back.received === 3) break;
      await ping6(topo.peers.A, TOPO.ispV6, { count: 1, timeoutS: 1 });
    }
    t.truthy(moved, `the peer has a new address (${(await globalAddresses()).join(' ')})`);
    const newPort = addressPort(parseIPv6(moved), 0);
    t.not(newPort, oldPort);
    t.true(
      newPort >= REMAP_PORTS.first && newPort <= REMAP_PORTS.last,
      `the new address carries the new public port (${newPort})`,
    );
    t.is(back.received, 3, back.output);
    const out = await ping6(topo.peers.A, TOPO.ispV6, { count: 3 });
    t.is(out.received, 3, out.output);
    t.deepEqual(await globalAddresses(), [moved], 'the old address is gone');
  },
);
