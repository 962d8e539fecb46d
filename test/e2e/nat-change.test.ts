// A peer whose NAT mapping changes: its next packet arrives from a new public
// port, fails the originator check, and the router answers with an RA to
// all-nodes; the peer moves to the new address (make-before-break) and the
// native side reaches it there. Nothing at the router had to remember it.
import test from 'ava';
import { buildTopology, TOPO } from '../../agent/lab/topology.js';
import { ping6, startPeerIn, startRouterIn } from '../../agent/lab/sixbed4.js';
import { systemTool } from '../../agent/host/tools.js';
import { addressPort } from '../../agent/protocol/address.js';
import { parseIPv6 } from '../../agent/protocol/ip.js';
import { skipReason } from '../helpers/fixtures.js';

const why = skipReason ?? (!hasConntrack() ? 'needs the conntrack tool (Debian package conntrack) to make the NAT forget its mapping' : null);

function hasConntrack(): boolean {
  try { systemTool('conntrack'); return true; } catch { return false; }
}

(why ? test.skip : test)(why ? `a changed NAT mapping moves the peer (skipped: ${why})` : 'a changed NAT mapping moves the peer to its new address, told by the router', async (t) => {
  const topo = await buildTopology({ tag: 'remap' });
  t.teardown(() => topo.destroy());
  await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4]);
  const peer = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
  const oldPort = addressPort(parseIPv6(peer.address), 0);
  // The NAT now maps to other ports and forgets the current mapping, as a NAT reboot or timeout would.
  const nft = systemTool('nft');
  await topo.nat.run([nft, 'flush', 'chain', 'ip', 'sixbed4_nat', 'postrouting']);
  await topo.nat.run([nft, 'add', 'rule', 'ip', 'sixbed4_nat', 'postrouting', 'oifname', TOPO.natWanIf, 'ip', 'saddr', TOPO.natInside,
    'meta', 'l4proto', 'udp', 'masquerade', 'to', ':61000-61999']);
  await topo.nat.run([systemTool('conntrack'), '-D', '-p', 'udp']).catch(() => undefined);
  // The peer's next packets come from the new mapping; the router answers with an RA telling the new /114. As a
  // peer's traffic would, keep sending until that RA has come (one lost packet or RA must not decide the test). The
  // time limits are hang detectors: on a loaded machine the rounds, the RA and the peer's `ip` commands take longer.
  const movedLine = peer.proc.waitFor(/address moved/, 90_000);
  let seen = false;
  void movedLine.then(() => { seen = true; }, () => undefined);
  // The NAT forgets the mapping again each round: a packet of the peer's that crossed it while the rules changed can
  // have renewed the old mapping (seen once in six runs: the router then rightly kept forwarding from the old port).
  for (const until = Date.now() + 90_000; !seen && Date.now() < until;) {
    await topo.nat.run([systemTool('conntrack'), '-F']).catch(() => undefined);
    await ping6(topo.peers.A, TOPO.ispV6, { count: 1, timeoutS: 1 });
  }
  const line = await movedLine;
  t.truthy(/to=(\S+)/.exec(line)?.[1], line);
  // A round's flush can have crossed the router's RA, so the peer may move once more: what counts is where it ends
  // up, its global address on the tunnel once the ISP reaches it there (its own traffic makes the router tell it).
  const globalAddresses = async () => (await topo.peers.A.json<{ addr_info: { local: string; scope: string }[] }[]>(['-6', 'addr', 'show', 'dev', '6bed4peer']))
    .flatMap((l) => l.addr_info).filter((a) => a.scope === 'global').map((a) => a.local);
  let moved = '', back = { received: 0, output: 'not pinged' };
  for (const until = Date.now() + 60_000; Date.now() < until;) {
    moved = (await globalAddresses()).find((a) => a !== peer.address) ?? '';
    if (moved) back = await ping6(topo.isp, moved, { count: 3 });
    if (back.received === 3) break;
    await ping6(topo.peers.A, TOPO.ispV6, { count: 1, timeoutS: 1 });
  }
  t.truthy(moved, `the peer has a new address (${(await globalAddresses()).join(' ')})`);
  const newPort = addressPort(parseIPv6(moved), 0);
  t.not(newPort, oldPort);
  t.true(newPort >= 61000 && newPort <= 61999, `the new address carries the new public port (${newPort})`);
  t.is(back.received, 3, back.output);
  const out = await ping6(topo.peers.A, TOPO.ispV6, { count: 3 });
  t.is(out.received, 3, out.output);
  t.deepEqual(await globalAddresses(), [moved], 'the old address is gone');
});
