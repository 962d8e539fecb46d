// The peer's entry point, as the CLI imports it: its configuration (config.ts), and startPeer, which starts a Peer
// (running.ts) on the real parts (parts.ts) with the I/O backend given. A test without root starts
// Peer.start(cfg, log, parts) with FakeIO and a stand-in for `ip` instead.
import { native, type NativeIO } from '../io/native.js';
import type { Logger } from '../../lib/log.js';
import type { PeerConfig } from './config.js';
import { realPeerParts } from './parts.js';
import { Peer, type RunningPeer } from './running.js';

export { peerConfig, type PeerConfig, type PeerOptions } from './config.js';
export { realPeerParts, type PeerParts } from './parts.js';
export { Peer, type RunningPeer } from './running.js';

/** io: the addon (the default), or a stand-in with its semantics such as FakeIO (agent/io/fake.ts). */
export function startPeer(cfg: PeerConfig, log: Logger, io: NativeIO = native): Promise<RunningPeer> {
  return Peer.start(cfg, log, { ...realPeerParts, io });
}
