// A changed NAT mapping, as a NAT reboot or timeout makes one: the lab NAT maps the peers to other ports (40000-40999)
// and forgets the current mappings, and the peer's own traffic makes the router tell it its new /114. Shared by the
// tests of what follows a move (the address, the hooks, the LAN behind the peer).
import { TOPO, type Topology } from '../../lab/topology.js';
import { ping6 } from '../../lab/sixbed4.js';
import { systemTool } from '../../agent/host/tools.js';
import type { Proc } from '../../lab/proc.js';

/**
 * The new mappings' port range: below the ports our peers bind (even ports from 49152), which the NAT keeps as their
 * public port when it can. A range among those could hold the peer's current mapping, and the NAT would then keep
 * it: no move (it was 61000-61999, and a peer's port fell in it in about one run of sixteen).
 */
export const REMAP_PORTS = { first: 40000, last: 40999 };

/** The public ports the NAT maps peer A's datagrams to the router from (the reply direction's destination port). */
async function mappedPorts(topo: Topology): Promise<number[]> {
  const out = await topo.nat
    .run([systemTool('conntrack'), '-L', '-p', 'udp', '--orig-src', TOPO.peerAV4, '--orig-dst', TOPO.routerV4])
    .catch(() => '');
  return out
    .split('\n')
    .map((l) => [...l.matchAll(/dport=(\d+)/g)].at(-1)?.[1])
    .filter((p): p is string => p !== undefined)
    .map(Number);
}

/**
 * How a peer says it moved: our peer logs "address moved ... to=NEW"; the stock 6bed4peer logs "Assigning address X
 * to tunnel" on every RA it takes, so its move is such a line with an address other than its old one.
 */
export interface MoveSign {
  re: RegExp;
  address(line: string): string | undefined;
}
export const OUR_PEER_MOVED: MoveSign = { re: /address moved/, address: (line) => /to=(\S+)/.exec(line)?.[1] };
export const stockPeerMoved = (old: string): MoveSign => ({
  re: new RegExp(`Assigning address (?!${old.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} )\\S+ to tunnel`),
  address: (line) => /Assigning address (\S+) to tunnel/.exec(line)?.[1],
});

/**
 * Remaps the NAT and returns the address the peer (logging as `peer`) says it moved to; gives up after timeoutMs
 * (a hang detector by default; shorter where a test counts how often the move comes).
 */
export async function remapNat(
  topo: Topology,
  peer: Proc,
  sign: MoveSign = OUR_PEER_MOVED,
  timeoutMs = 90_000,
): Promise<string> {
  const nft = systemTool('nft'),
    conntrack = systemTool('conntrack');
  await topo.nat.run([nft, 'flush', 'chain', 'ip', 'sixbed4_nat', 'postrouting']);
  await topo.nat.run([
    nft,
    'add',
    'rule',
    'ip',
    'sixbed4_nat',
    'postrouting',
    'oifname',
    TOPO.natWanIf,
    'ip',
    'saddr',
    TOPO.natInside,
    'meta',
    'l4proto',
    'udp',
    'masquerade',
    'to',
    `:${REMAP_PORTS.first}-${REMAP_PORTS.last}`,
  ]);
  // Keep sending, as a peer's traffic would, until the router's RA has come (one lost packet or RA must not decide).
  // The time limits are hang detectors: on a loaded machine the rounds, the RA and the peer's `ip` commands take longer.
  const before = await mappedPorts(topo);
  if (before.some((p) => p >= REMAP_PORTS.first && p <= REMAP_PORTS.last)) {
    throw new Error(
      `the NAT maps peer A from port ${before.join(', ')} already, inside the remap range ${REMAP_PORTS.first}-${REMAP_PORTS.last}: it could not move`,
    );
  }
  const movedLine = peer.waitFor(sign.re, timeoutMs);
  let seen = false;
  void movedLine.then(
    () => {
      seen = true;
    },
    () => undefined,
  );
  // The NAT forgets the mapping again whenever it still maps the peer's datagrams to the router from an old port: a
  // packet of the peer's that crossed it while the rules changed can have renewed the old mapping (seen once in six
  // runs: the router then rightly kept forwarding from the old port). Not once the mapping is new: a flush then could
  // take the mapping the router's RA is on its way back through (seen once in CI on a loaded machine: no move in 90 s).
  const flushes: string[] = [];
  for (const until = Date.now() + timeoutMs; !seen && Date.now() < until;) {
    const ports = await mappedPorts(topo);
    if (!ports.length || ports.some((p) => p < REMAP_PORTS.first || p > REMAP_PORTS.last)) {
      await topo.nat.run([conntrack, '-F']).then(
        () => flushes.push(`flushed (mapped from ${ports.join(', ') || 'nothing'})`),
        (err: Error) => flushes.push(`flush failed: ${err.message}`),
      );
    }
    await ping6(topo.peers.A, TOPO.ispV6, { count: 1, timeoutS: 1 });
  }
  if (!seen)
    await movedLine.catch((err: Error) => {
      throw new Error(`${err.message}\nNAT rounds: ${flushes.slice(-10).join('; ')}`);
    });
  const line = await movedLine;
  const moved = sign.address(line);
  if (!moved) throw new Error(`no new address in the peer's line: ${line}`);
  return moved;
}
