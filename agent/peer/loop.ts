// The peer's I/O loop: datagrams from UDP through the engine into the TUN (and its answers back out), packets from
// the TUN through the engine to the router or straight to a peer. Each wake-up reads a bounded number of batches,
// so one busy side cannot starve the other.
import type { NativeIO, PollHandle } from '../io/native.js';
import { newBatch } from '../io/batch.js';
import type { Logger } from '../../lib/log.js';
import type { PeerEngine } from './engine.js';
import { FIRST_PROBE_TTL } from './direct.js';

/** Batches per wake-up before the loop lets the other side (and timers) run. */
const ROUNDS = 16;
/** At most one line a minute about an unreachable router. */
const ERROR_LOG_MS = 60_000;

export class PeerLoop {
  private readonly polls: PollHandle[] = [];
  private readonly errors = newBatch(8, 64);
  private readonly errorInfo = new Uint32Array(8);
  private lastErrorLog = 0;

  constructor(
    private readonly io: NativeIO,
    private readonly engine: PeerEngine,
    private readonly udpFd: number,
    private readonly tunFd: number,
    private readonly router: { v4: number; port: number; text: string },
    private readonly log: Logger,
  ) {}

  start(): void {
    this.polls.push(this.io.poll(this.udpFd, () => this.fromUdp()));
    this.polls.push(this.io.poll(this.tunFd, () => this.fromTun()));
  }

  stop(): void {
    for (const p of this.polls) p.close();
  }

  private fromUdp(): void {
    const { io, engine, udpFd } = this;
    this.readErrors();
    for (let round = 0; round < ROUNDS; round++) {
      const n = io.udpRecv(udpFd, engine.udpRx);
      if (n === 0) return;
      engine.fromRouter(n);
      if (engine.nToTun) io.tunWrite(this.tunFd, engine.toTun, engine.nToTun);
      if (engine.nControl) io.udpSend(udpFd, engine.control, engine.nControl);
      this.sendFirstProbes();
      if (n < engine.udpRx.cap) return;
    }
  }

  private fromTun(): void {
    const { io, engine, udpFd } = this;
    for (let round = 0; round < ROUNDS; round++) {
      const n = io.tunRead(this.tunFd, engine.tunRx);
      if (n === 0) return;
      engine.fromKernel(n);
      if (engine.nControl) io.udpSend(udpFd, engine.control, engine.nControl);
      this.sendFirstProbes();
      if (engine.nToUdp) io.udpSend(udpFd, engine.toUdp, engine.nToUdp);
      if (n < engine.tunRx.cap) return;
    }
  }

  /**
   * ICMP errors about what we sent (the router's port closed while it restarts, a host unreachable) land in the
   * socket's error queue (IP_RECVERR), and the socket reports POLLERR until that queue is read: left there, they
   * would stop this poll for good and the peer would never read its router's packets again. Read them first; say
   * so once a minute at most. The address stays: the router's side is stateless, and keepalives go on.
   */
  private readErrors(): void {
    const { errors, router } = this;
    let m: number,
      seen = 0,
      what = 0;
    while ((m = this.io.udpRecvErrors(this.udpFd, errors, this.errorInfo)) > 0) {
      // Errors about probes to other peers are what a NAT not (yet) letting them in says: expected, not worth a line.
      for (let i = 0; i < m; i++)
        if (errors.addr[i] === router.v4 && errors.port[i] === router.port) {
          seen++;
          what = this.errorInfo[i]!;
        }
      if (m < errors.cap) break;
    }
    if (seen && Date.now() - this.lastErrorLog > ERROR_LOG_MS) {
      this.lastErrorLog = Date.now();
      this.log.warn(
        `the router does not answer (ICMP type ${what >> 8} code ${what & 0xff}); keeping the address and sending keepalives`,
        { router: router.text },
      );
    }
  }

  /** First probes go hop-limited (direct.ts, FIRST_PROBE_TTL): the socket's TTL is set for them alone. */
  private sendFirstProbes(): void {
    const { io, engine, udpFd } = this;
    if (!engine.nFirstProbes) return;
    io.udpTtl(udpFd, FIRST_PROBE_TTL);
    try {
      io.udpSend(udpFd, engine.firstProbes, engine.nFirstProbes);
    } finally {
      io.udpTtl(udpFd, -1);
    }
  }
}
