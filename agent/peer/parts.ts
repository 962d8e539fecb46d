// What a peer is made of besides its configuration, handed in as wireguard-go's device.NewDevice takes its tun and
// bind: the I/O backend (the addon, or FakeIO), `ip` (its interface, address and routes), and the LAN side's
// kernel pieces. realPeerParts are the real ones; test/router/fake-link.test.ts runs a peer and a router on FakeIO.
import { native, type NativeIO } from '../io/native.js';
import { ip } from '../host/ip.js';
import { hasNetAdmin } from '../host/privilege.js';
import type { Logger } from '../../lib/log.js';
import { checkLanInterface, LanSide } from './lan.js';

/** `ip ARGS` in the peer's network namespace: resolves its stdout, rejects when it fails (agent/host/ip.ts). */
export type IpCommand = (...args: string[]) => Promise<string>;

/** The LAN side (--lan, lan.ts) as the peer drives it. */
export interface PeerLan {
  start(): Promise<void>;
  setAddress(address: Uint8Array): Promise<void>;
  stop(): Promise<void>;
}

export interface PeerParts {
  readonly io: NativeIO;
  readonly ip: IpCommand;
  /** May this process make a tunnel (root, or CAP_NET_ADMIN)? */
  privileged(): boolean;
  /** Checks --lan (an interface of its own); resolves its index. */
  checkLan(lan: string, tun: string, routerV4: number): Promise<number>;
  newLan(lan: string, ifindex: number, tun: string, log: Logger): PeerLan;
}

export const realPeerParts: PeerParts = {
  io: native,
  ip,
  privileged: hasNetAdmin,
  checkLan: checkLanInterface,
  newLan: (lan, ifindex, tun, log) => new LanSide(lan, ifindex, tun, log),
};
