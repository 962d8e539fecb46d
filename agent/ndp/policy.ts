// Which addresses the neighbour proxy answers for.
//
// Local addresses: in mode dummy112 they live on the dummy interface, so the
// kernel does not answer NS for them on the uplink and the proxy must; in
// uplink128 they are on the uplink and the kernel answers itself.
//
// 6bed4 peers: a peer owns a /114, 16384 lanips, each its own address and
// mostly its own solicited-node group; joining them all is impossible
// (per-socket membership memory runs out after a few thousand groups), and
// nearly all go unused. So the policy is a short list of lanips per peer: by
// default 1 (the stock peer's own address, and ours) and 0 (the router side
// of its /114).
import { DEFAULT_PEER_LANIP, MAX_LANIP } from '../protocol/constants.js';
import { InputError } from '../../lib/errors.js';
import type { HostConfig } from '../host/config.js';

export function proxiedLocalAddresses(cfg: Pick<HostConfig, 'localAddressMode' | 'localAddresses'>): Uint8Array[] {
  return cfg.localAddressMode === 'dummy112' ? cfg.localAddresses.map((a) => a.bytes) : [];
}

export const DEFAULT_PROXY_LANIPS: readonly number[] = [DEFAULT_PEER_LANIP, 0];

export function checkLanips(lanips: readonly number[]): readonly number[] {
  for (const l of lanips) {
    if (!Number.isInteger(l) || l < 0 || l > MAX_LANIP)
      throw new InputError(`lanip ${l} is out of range 0..${MAX_LANIP}`);
  }
  return [...new Set(lanips)];
}

/** The addresses to answer for while the peer with this 6bed4 address is live (any lanip of it will do). */
export function proxiedPeerAddresses(peer: Uint8Array, lanips: readonly number[] = DEFAULT_PROXY_LANIPS): Uint8Array[] {
  return lanips.map((lanip) => {
    const a = Uint8Array.from(peer.subarray(0, 16));
    a[14] = (a[14]! & 0xc0) | ((lanip >> 8) & 0x3f);
    a[15] = lanip & 0xff;
    return a;
  });
}
