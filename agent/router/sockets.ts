// The router's UDP sockets: several per worker on one port (SO_REUSEPORT), so that the kernel spreads flows and a
// flooding source shares its losses with few others (datapath.ts), optionally steered in the kernel (steer-ebpf.ts).
import type { NativeIO } from '../io/native.js';
import { formatIPv4 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import type { RouterConfig } from './config.js';
import type { RouterParts } from './parts.js';
import type { Steering } from './steer-ebpf.js';

/**
 * Opens workers × sockets UDP sockets on the bound address and port. On failure closes what it opened and throws
 * an error that says what to do (AddressNotLocalError when the address is not this host's).
 */
export function openRouterSockets(cfg: RouterConfig, io: NativeIO): number[] {
  const listenText = formatIPv4(cfg.bindIPv4);
  const n = cfg.workers * cfg.sockets;
  const fds: number[] = [];
  try {
    // A plain bind first: a port held by another router (even one using SO_REUSEPORT) is refused
    // here, instead of our sockets silently joining its reuseport group and sharing its traffic.
    // With handover, joining the previous router's group is the point (tunnel.ts).
    if (!cfg.handover) io.close(io.udpOpen(listenText, cfg.bindPort, false, cfg.freebind).fd);
    for (let i = 0; i < n; i++) fds.push(io.udpOpen(listenText, cfg.bindPort, n > 1 || cfg.handover, cfg.freebind).fd);
    return fds;
  } catch (err) {
    for (const fd of fds) io.close(fd);
    throw udpOpenError(err as NodeJS.ErrnoException, listenText, cfg.bindPort);
  }
}

/**
 * Steers datagrams that pass the originator check to each worker's first sockets, in the kernel (steer-ebpf.ts: the
 * eBPF program, also with handover; else the classic one, which cannot with handover). Whatever the kernel refuses
 * leaves its hash to spread the datagrams, as before, and the log says why.
 */
export function steerSockets(cfg: RouterConfig, udpFds: number[], steer: RouterParts['steer'], log: Logger): boolean {
  let s: Steering;
  try {
    s = steer(udpFds, { prefix: cfg.prefix.bytes, workers: cfg.workers, sockets: cfg.sockets, handover: cfg.handover });
  } catch (err) {
    log.warn(
      `cannot steer checked peers to their own sockets (${(err as Error).message}): the kernel's hash spreads all datagrams`,
    );
    return false;
  }
  if (s.program === 'cbpf')
    log.info(`checked peers are steered to their own sockets by a classic BPF program (no eBPF: ${s.ebpfError})`);
  else if (s.program === 'none' && s.ebpfError)
    log.warn(
      `cannot steer checked peers to their own sockets (${s.ebpfError}${s.cbpfError ? `; ${s.cbpfError}` : ''})${
        cfg.handover ? ', which with handover needs eBPF (CAP_BPF)' : ''
      }: the kernel's hash spreads all datagrams`,
    );
  else if (s.cbpfError) log.warn(`cannot replace the socket group's program (${s.cbpfError})`);
  return s.program !== 'none';
}

/** The listen (or bind) address is not one of this host's: the agent may fall back to the node's own address. */
export class AddressNotLocalError extends InputError {
  constructor(
    message: string,
    readonly address: string,
  ) {
    super(message);
  }
}

function udpOpenError(err: NodeJS.ErrnoException, addr: string, port: number): Error {
  switch (err.code) {
    case 'EADDRINUSE':
      return new InputError(
        `UDP port ${port} on ${addr} is in use: is another 6bed4 router running? Stop it or choose --port`,
      );
    case 'EADDRNOTAVAIL':
      return new AddressNotLocalError(
        `${addr} is not an address of this host: --listen (or --bind, behind a 1:1 NAT) must be one of its IPv4 addresses (see 'ip -4 addr')`,
        addr,
      );
    case 'EACCES':
      return new InputError(`no permission to bind UDP port ${port} on ${addr}`);
    default:
      return new Error(`cannot open UDP ${addr}:${port}: ${err.message}`);
  }
}
