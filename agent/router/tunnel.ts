// The router's tunnel interface: a TUN device the kernel routes the /64 to.
// The stock router adds addresses but no route, so replies from the Internet
// never reach its peers; here the route is part of bringing the tunnel up.
// The interface is not persistent: closing the fd removes it, and with it
// every address and route on it, so a crash leaves nothing behind.
import { native } from '../io/native.js';
import { TUNNEL_MTU } from '../protocol/constants.js';
import { formatIPv6, InputError, type Prefix } from '../protocol/ip.js';
import { ip } from '../host/ip.js';
import { tunnelRouteArgs } from '../host/tunnelroute.js';
import type { Logger } from '../log.js';

export interface Tunnel { readonly name: string; readonly fds: number[]; close(): void; }

/**
 * Opens `queues` TUN queues named name (one per worker; more than one needs
 * IFF_MULTI_QUEUE), gives it MTU 1280, fe80:: and routerAddr, brings it up and
 * routes prefix to it. On any failure it closes what it opened, which removes
 * the interface, and throws an InputError saying what to do.
 */
export async function openTunnel(name: string, queues: number, routerAddr: Uint8Array, prefix: Prefix,
  log: Logger): Promise<Tunnel> {
  const fds: number[] = [];
  const close = () => { for (const fd of fds.splice(0)) native.close(fd); };
  try {
    for (let q = 0; q < queues; q++) fds.push(native.tunOpen(name, queues > 1).fd);
  } catch (err) {
    close();
    throw tunOpenError(err as NodeJS.ErrnoException, name);
  }
  try {
    // A longer queue than the TUN default (500) absorbs the bursts a batch of 64 brings.
    await ip('link', 'set', 'dev', name, 'mtu', String(TUNNEL_MTU), 'txqueuelen', '1000', 'up');
    await ip('-6', 'addr', 'add', 'fe80::/128', 'dev', name, 'scope', 'link', 'nodad');
    await ip('-6', 'addr', 'add', `${formatIPv6(routerAddr)}/128`, 'dev', name, 'nodad');
    // replace, not add: a route left by an earlier run on another device must not stop us.
    await ip(...tunnelRouteArgs('replace', prefix.text, name));
  } catch (err) {
    close();
    throw err;
  }
  log.info(`tunnel ${name} up`, { mtu: TUNNEL_MTU, address: formatIPv6(routerAddr), route: prefix.text, queues });
  return { name, fds, close };
}

function tunOpenError(err: NodeJS.ErrnoException, name: string): Error {
  switch (err.code) {
    case 'EPERM': case 'EACCES':
      return new InputError('no permission to create a TUN device: run as root or with CAP_NET_ADMIN');
    case 'ENOENT': case 'ENODEV':
      return new InputError('/dev/net/tun does not exist: load the tun module (modprobe tun) or, in a container, mount /dev/net/tun');
    case 'EBUSY':
      return new InputError(`interface ${name} is in use: is another router running? Choose another name with --tun`);
    case 'EINVAL':
      return new InputError(`cannot create TUN interface '${name}': the name is invalid or taken by a non-TUN interface (--tun NAME)`);
    default:
      return new Error(`cannot create TUN interface ${name}: ${err.message}`);
  }
}
