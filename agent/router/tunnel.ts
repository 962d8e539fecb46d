// The router's tunnel interface: a TUN device the kernel routes the /64 to.
// The stock router adds addresses but no route, so replies from the Internet
// never reach its peers; here the route is part of bringing the tunnel up.
// The interface is not persistent: closing the fd removes it, and with it
// every address and route on it, so a crash leaves nothing behind.
//
// Handover (a router restarting without a forwarding gap, e.g. an agent Pod
// replaced by a new one): the tunnel is multi-queue, so the next router
// attaches its own queue to the same interface, adopts its addresses and
// route, and claims it by writing a token of its own into the interface's
// alias; the old router, seeing another claim, only closes its queues. The
// interface (and its route) never goes away, so only packets in flight in the
// old router's queues are lost.
import { randomBytes } from 'node:crypto';
import { native, type NativeIO } from '../io/native.js';
import { TUNNEL_MTU } from '../protocol/constants.js';
import { formatIPv6, type Prefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { ip as hostIp } from '../host/ip.js';
import { tunnelRouteArgs } from '../host/tunnelroute.js';
import type { Logger } from '../../lib/log.js';
import { ipJsonWith, type IpCommand } from './parts.js';

export interface Tunnel {
  readonly name: string;
  readonly fds: number[];
  close(): void;
  /** With handover: whether another router has claimed the interface since (its alias holds another token). */
  claimedByAnother(): Promise<boolean>;
}

export interface TunnelOptions {
  /** Open multi-queue and adopt an interface a previous router left up, claiming it (see the top of this file). */
  handover?: boolean;
  /** The TUN queues' backend: the addon (the default), or FakeIO. */
  io?: NativeIO;
  /** How `ip` runs (the default: the real one, in this namespace); a stand-in configures FakeIO's interfaces. */
  ip?: IpCommand;
  /** Ask for the TUN's offload (TSO/USO super-packets, native.ts tunOpen); off when the kernel refuses it (logged). */
  offload?: boolean;
}

const CLAIM = 'sixbed4-router ';

/**
 * Opens `queues` TUN queues named name (one per worker; more than one needs
 * IFF_MULTI_QUEUE), gives it MTU 1280, fe80:: and routerAddr, brings it up and
 * routes prefix to it. On any failure it closes what it opened, which removes
 * the interface, and throws an InputError saying what to do.
 */
export async function openTunnel(
  name: string,
  queues: number,
  routerAddr: Uint8Array,
  prefix: Prefix,
  log: Logger,
  opts: TunnelOptions = {},
): Promise<Tunnel> {
  const t = new TunTunnel(name, opts.handover === true, opts.io ?? native, opts.ip ?? hostIp);
  const adopted = t.handover && (await t.exists());
  t.openQueues(queues, opts.offload === true);
  try {
    await t.configure(routerAddr, prefix);
  } catch (err) {
    t.close();
    throw err;
  }
  log.info(adopted ? `tunnel ${name} taken over from the previous router` : `tunnel ${name} up`, {
    mtu: TUNNEL_MTU,
    address: formatIPv6(routerAddr),
    route: prefix.text,
    queues,
    handover: t.handover,
    offload: t.offload,
  });
  // Asked for and not had: the kernel refused it, or a predecessor's interface is without it (a handover).
  if (opts.offload && !t.offload) log.warn(`tunnel ${name}: without the TUN offload (see docs/router.md)`);
  return t;
}

/** The interface's queues, and the token that claims it (with handover). */
class TunTunnel implements Tunnel {
  readonly fds: number[] = [];
  /** The queues carry a virtio-net header (the TUN offload is on: the interface's mode, set by its first queue). */
  offload = false;
  private readonly token = CLAIM + randomBytes(8).toString('hex');

  constructor(
    readonly name: string,
    readonly handover: boolean,
    private readonly io: NativeIO,
    private readonly ip: IpCommand,
  ) {}

  /** One queue per worker; with handover always multi-queue, so that the next router can attach its own. */
  openQueues(queues: number, offload: boolean): void {
    try {
      for (let q = 0; q < queues; q++) {
        const t = this.io.tunOpen(this.name, queues > 1 || this.handover, offload);
        this.fds.push(t.fd);
        if (q === 0) this.offload = t.offload === true;
      }
    } catch (err) {
      this.close();
      throw tunOpenError(err as NodeJS.ErrnoException, this.name);
    }
  }

  /** MTU, queue length, addresses and the route, as `ip` commands a person could type. */
  async configure(routerAddr: Uint8Array, prefix: Prefix): Promise<void> {
    const { ip, name, handover } = this;
    // A longer queue than the TUN default (500) absorbs the bursts a batch of 64 brings.
    await ip(
      'link',
      'set',
      'dev',
      name,
      'mtu',
      String(TUNNEL_MTU),
      'txqueuelen',
      '1000',
      'up',
      ...(handover ? ['alias', this.token] : []),
    );
    // replace: an adopted interface has them already
    const verb = handover ? 'replace' : 'add';
    await ip('-6', 'addr', verb, 'fe80::/128', 'dev', name, 'scope', 'link', 'nodad');
    await ip('-6', 'addr', verb, `${formatIPv6(routerAddr)}/128`, 'dev', name, 'nodad');
    // replace, not add: a route left by an earlier run on another device must not stop us.
    await ip(...tunnelRouteArgs('replace', prefix.text, name));
  }

  /** Closing the last queue removes the interface, with its addresses and route (unless a successor holds one). */
  close(): void {
    for (const fd of this.fds.splice(0)) this.io.close(fd);
  }

  async claimedByAnother(): Promise<boolean> {
    if (!this.handover) return false;
    const alias = await this.alias();
    return alias !== null && alias.startsWith(CLAIM) && alias !== this.token;
  }

  async exists(): Promise<boolean> {
    return (await this.alias()) !== null;
  }

  /** The interface's alias ('' when it has none), or null when there is no such interface. */
  private async alias(): Promise<string | null> {
    try {
      const links = await ipJsonWith<{ ifalias?: string }[]>(this.ip, 'link', 'show', 'dev', this.name);
      return links[0]?.ifalias ?? '';
    } catch {
      return null;
    }
  }
}

function tunOpenError(err: NodeJS.ErrnoException, name: string): Error {
  switch (err.code) {
    case 'EPERM':
    case 'EACCES':
      return new InputError('no permission to create a TUN device: run as root or with CAP_NET_ADMIN');
    case 'ENOENT':
    case 'ENODEV':
      return new InputError(
        '/dev/net/tun does not exist: load the tun module (modprobe tun) or, in a container, mount /dev/net/tun',
      );
    case 'EBUSY':
      return new InputError(`interface ${name} is in use: is another router running? Choose another name with --tun`);
    case 'EINVAL':
      return new InputError(
        `cannot create TUN interface '${name}': the name is invalid or taken by a non-TUN interface (--tun NAME)`,
      );
    default:
      return new Error(`cannot create TUN interface ${name}: ${err.message}`);
  }
}
