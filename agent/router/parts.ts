// What a router is made of besides its configuration, handed in as wireguard-go's device.NewDevice takes its tun
// and bind: the I/O backend (the addon, or FakeIO), the `ip` commands and sysctls it runs and reads, and the
// privileged pieces only a real kernel has (socket steering, the BPF fast path, the neighbour proxy's raw socket).
// realRouterParts are the real ones; test/router/fake-link.test.ts runs a whole router and peer on FakeIO with
// stand-ins, without root.
import { native, type NativeIO } from '../io/native.js';
import { ip } from '../host/ip.js';
import { readIpv6Conf, type Ipv6Conf } from '../host/sysctl.js';
import { hasNetAdmin, hasNetRaw } from '../host/privilege.js';
import { prepareFastPath } from '../bpf/fastpath.js';
import { NdpResponder } from '../ndp/responder.js';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import type { RouterConfig } from './config.js';
import { steerGroup, type Steering, type SteerOptions } from './steer-ebpf.js';

/** `ip ARGS` in the router's network namespace: resolves its stdout, rejects when it fails (agent/host/ip.ts). */
export type IpCommand = (...args: string[]) => Promise<string>;

export interface RouterParts {
  /** UDP sockets and TUN queues. Anything but the addon runs one worker only (a worker thread has its own memory). */
  readonly io: NativeIO;
  readonly ip: IpCommand;
  /** net.ipv6.conf.* (only read: the router warns when forwarding is off). */
  readIpv6Conf(): Promise<Ipv6Conf>;
  /** May this process make a tunnel (root, or CAP_NET_ADMIN)? */
  privileged(): boolean;
  /**
   * Steers the sockets' SO_REUSEPORT group (steer-ebpf.ts: the eBPF program, else the classic one of steer.ts): which
   * program does, and why the others do not. A stand-in may throw: then nothing steers.
   */
  steer(fds: readonly number[], o: SteerOptions): Steering;
  prepareFastPath: typeof prepareFastPath;
  /** The neighbour proxy on cfg.ndpProxy's uplink, started, answering for its local addresses. */
  startProxy(cfg: RouterConfig, log: Logger): Promise<NdpResponder>;
}

export const realRouterParts: RouterParts = {
  io: native,
  ip,
  readIpv6Conf,
  privileged: hasNetAdmin,
  steer: steerGroup,
  prepareFastPath,
  startProxy,
};

/** Starts the neighbour proxy, answering at once for the host's own proxied addresses. */
async function startProxy(cfg: RouterConfig, log: Logger): Promise<NdpResponder> {
  const p = cfg.ndpProxy!;
  if (!hasNetRaw()) throw new InputError('--ndp-proxy needs CAP_NET_RAW (or root) for its ICMPv6 socket');
  const proxy = new NdpResponder(p.uplink, log, { mode: p.mode, prefix: cfg.prefix });
  await proxy.start();
  for (const a of p.localAddresses) proxy.add(a);
  return proxy;
}

/** `ip -j ARGS` through ip, parsed (some subcommands print nothing at all instead of "[]"). */
export async function ipJsonWith<T>(ip: IpCommand, ...args: string[]): Promise<T> {
  const out = await ip('-j', ...args);
  return (out.trim() === '' ? [] : JSON.parse(out)) as T;
}
