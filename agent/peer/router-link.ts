// What the peer says to its router on its own: Router Solicitations until the first RA (with backoff), then
// keepalives that hold the NAT mapping open, a solicitation every few of them (so that a silently changed mapping is
// noticed: the router answers from where it now sees us), and a sign of life from our address.
import { newBatch, type NativeIO } from '../io/native.js';
import { TUNNEL_MTU } from '../protocol/constants.js';
import { ROUTER_LINK_LOCAL, writeNeighborSolicit, writeRouterSolicit } from '../protocol/nd.js';
import type { Logger } from '../../lib/log.js';
import type { PeerConfig } from './config.js';

const FIRST_SOLICIT_MS = 1000;
const MAX_SOLICIT_MS = 30_000;
/** Re-solicit every this many keepalives, so a silently changed NAT mapping is noticed. */
const SOLICIT_EVERY_KEEPALIVES = 10;

export class RouterLink {
  private readonly control = newBatch(2, TUNNEL_MTU);
  private readonly timers: NodeJS.Timeout[] = [];
  /** Our address while we have one (the presence NS comes from it). */
  private ours: Uint8Array | null = null;
  private delay = FIRST_SOLICIT_MS;
  private beats = 0;

  constructor(
    private readonly cfg: PeerConfig,
    private readonly io: NativeIO,
    private readonly udpFd: number,
    private readonly routerText: string,
    private readonly log: Logger,
  ) {
    this.control.addr.fill(cfg.routerV4);
    this.control.port.fill(cfg.routerPort);
  }

  /**
   * Solicits with exponential backoff until held() (the first RA), then keeps the NAT mapping alive every
   * keepalive; onBeat runs with each (direct paths are swept there).
   */
  start(held: () => boolean, onBeat: () => void): void {
    const solicit = () => {
      if (held()) return;
      this.log.info('sending router solicitation', { router: this.routerText, nextInMs: this.delay });
      this.sendSolicit();
      this.timers.push(setTimeout(solicit, this.delay));
      this.delay = Math.min(this.delay * 2, MAX_SOLICIT_MS);
    };
    solicit();
    this.timers.push(setInterval(() => this.beat(onBeat), this.cfg.keepaliveMs));
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
  }

  /** Our address is now addr: the router hears of it at once. */
  setOwn(addr: Uint8Array): void {
    this.ours = addr;
    this.sendPresence();
  }

  private beat(onBeat: () => void): void {
    if (++this.beats % SOLICIT_EVERY_KEEPALIVES === 0) {
      this.sendSolicit();
      this.sendPresence();
    } else this.sendKeepalive();
    onBeat();
  }

  private sendSolicit(): void {
    this.control.len[0] = writeRouterSolicit(this.control.data, 0);
    this.io.udpSend(this.udpFd, this.control, 1);
  }

  /** An empty datagram: the router echoes nothing, the NAT keeps the mapping. */
  private sendKeepalive(): void {
    this.control.len[0] = 0;
    this.io.udpSend(this.udpFd, this.control, 1);
  }

  /**
   * An NS for the router from our own address: the router tracks a peer as live (its neighbour proxy answers for
   * it) only from a packet that passes its originator check, which an RS from :: cannot.
   */
  private sendPresence(): void {
    if (!this.ours) return;
    this.control.len[0] = writeNeighborSolicit(this.control.data, 0, this.ours, ROUTER_LINK_LOCAL, ROUTER_LINK_LOCAL);
    this.io.udpSend(this.udpFd, this.control, 1);
  }
}
