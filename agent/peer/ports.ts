// The peer's UDP socket: a random even port as the stock peer binds, or the one the user fixed (behind a port
// forward, so that its 6bed4 address survives restarts). Errors say what to do.
import type { NativeIO } from '../io/native.js';
import { InputError } from '../../lib/errors.js';

/** Opens the peer's socket on cfg.listen: cfg.port when given, else a random even one. */
export function openPeerPort(cfg: { listen: string; port: number }, io: NativeIO): number {
  return cfg.port ? openFixedPort(cfg.listen, cfg.port, io) : openEvenPort(cfg.listen, io);
}

/**
 * Binds a random even port in 49152..65534, as the stock peer does (it
 * refuses odd ports and warns when its router reports an odd one), so both
 * kinds of peer look alike to routers and firewalls.
 */
function openEvenPort(listen: string, io: NativeIO): number {
  for (let attempt = 0; attempt < 64; attempt++) {
    const port = 49152 + 2 * Math.floor(Math.random() * 8192);
    try {
      return io.udpOpen(listen, port, false).fd;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
        throw new InputError(`cannot open a UDP socket on ${listen}: ${(err as Error).message}`);
      }
    }
  }
  throw new InputError(`no free even UDP port in 49152..65534 on ${listen}`);
}

/**
 * Binds the --port the user chose: behind a port forward on the NAT that port
 * is the public one too, so the 6bed4 address stays the same across restarts.
 */
function openFixedPort(listen: string, port: number, io: NativeIO): number {
  try {
    return io.udpOpen(listen, port, false).fd;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE')
      throw new InputError(
        `UDP port ${port} on ${listen} is in use: is another peer running? Stop it or choose another --port`,
      );
    if (e.code === 'EADDRNOTAVAIL')
      throw new InputError(`--listen ${listen} is not an address of this host (see 'ip -4 addr')`);
    if (e.code === 'EACCES') throw new InputError(`no permission to bind UDP port ${port} on ${listen}`);
    throw new InputError(`cannot open UDP ${listen}:${port}: ${e.message}`);
  }
}
