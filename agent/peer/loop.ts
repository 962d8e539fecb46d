// The peer's I/O loop: datagrams from UDP through the engine into the TUN (and its answers back out), packets from
// the TUN through the engine to the router or straight to a peer. Each wake-up reads a bounded number of batches,
// so one busy side cannot starve the other.
//
// With the TUN's offload (running.ts opens it so where the kernel takes it, as the router's tunnel.ts does), a read
// brings a whole TCP (or UDP) super-packet that the addon cuts into the packets the kernel would have handed over
// one by one (agent/native/gso.c), the engine decides on each as without it, and the datagrams for one super-packet
// to one destination leave in one send with UDP_SEGMENT (agent/native/udp.c: each with DF, as alone); writes into
// the TUN then carry a virtio_net_hdr, and consecutive TCP segments of one flow in a batch from the router go as one
// GSO super-packet (agent/native/coalesce.c). The router's datapath.ts does the same on its side.
import type { NativeIO, PollHandle } from '../io/native.js';
import {
  newBatch,
  newTunCoalesce,
  newTunGso,
  newUdpGso,
  takeCoalesceCounts,
  takeTunGsoCounts,
  takeUdpGsoCounts,
  type TunGso,
} from '../io/batch.js';
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
  /** The TUN queue has the offload (IFF_VNET_HDR): reads are cut with tunGso, writes carry the header. */
  readonly vnet: boolean;
  private readonly tunGso: TunGso | undefined;
  /** UDP_SEGMENT on the sends of data ([0]: on; the addon turns it off if the kernel refuses one). */
  readonly udpGso: Uint32Array;
  /** With the offload: the coalescing counters of the writes into the TUN (newTunCoalesce). */
  private readonly coalesce: Uint32Array | undefined;
  private resume: ReturnType<typeof setImmediate> | undefined;

  constructor(
    private readonly io: NativeIO,
    private readonly engine: PeerEngine,
    private readonly udpFd: number,
    private readonly tunFd: number,
    private readonly router: { v4: number; port: number; text: string },
    private readonly log: Logger,
  ) {
    this.vnet = io.tunOffload(tunFd);
    this.tunGso = this.vnet ? newTunGso() : undefined;
    this.udpGso = newUdpGso(this.vnet && io.udpGso(udpFd));
    this.coalesce = this.vnet ? newTunCoalesce() : undefined;
  }

  start(): void {
    this.polls.push(this.io.poll(this.udpFd, () => this.fromUdp()));
    this.polls.push(this.io.poll(this.tunFd, () => this.fromTun()));
  }

  stop(): void {
    for (const p of this.polls.splice(0)) p.close();
    if (this.resume) clearImmediate(this.resume);
    this.resume = undefined;
    if (this.tunGso) this.takeOffloadCounts(this.tunGso);
    this.takeCoalesceCounts();
  }

  private fromUdp(): void {
    const { io, engine, udpFd } = this;
    this.readErrors();
    for (let round = 0; round < ROUNDS; round++) {
      const n = io.udpRecv(udpFd, engine.udpRx);
      if (n === 0) return;
      engine.fromRouter(n);
      if (engine.nToTun) io.tunWrite(this.tunFd, engine.toTun, engine.nToTun, this.vnet, this.coalesce);
      if (engine.nControl) io.udpSend(udpFd, engine.control, engine.nControl);
      this.sendFirstProbes();
      if (n < engine.udpRx.cap) return;
    }
  }

  private fromTun(): void {
    const { io, engine, udpFd } = this,
      gso = this.tunGso;
    this.resume = undefined;
    for (let round = 0; round < ROUNDS; round++) {
      const n = io.tunRead(this.tunFd, engine.tunRx, gso);
      if (n === 0) break;
      engine.fromKernel(n);
      if (engine.nControl) io.udpSend(udpFd, engine.control, engine.nControl);
      this.sendFirstProbes();
      if (engine.nToUdp) io.udpSend(udpFd, engine.toUdp, engine.nToUdp, this.udpGso);
      if (n < engine.tunRx.cap) break;
    }
    this.takeCoalesceCounts();
    if (gso) {
      this.takeOffloadCounts(gso);
      // The rest of a super-packet waits in gso while the TUN may have nothing more to wake us with.
      if (gso.state[0] && !this.resume && this.polls.length) this.resume = setImmediate(() => this.fromTun());
    }
  }

  /** The addon's offload counts (batch.ts) into the engine's counters. */
  private takeOffloadCounts(gso: TunGso): void {
    takeTunGsoCounts(this.engine.counters, gso);
    takeUdpGsoCounts(this.engine.counters, this.udpGso);
  }

  /** Coalescing's counts (taken at stop and each turn the TUN is read). */
  private takeCoalesceCounts(): void {
    if (this.coalesce) takeCoalesceCounts(this.engine.counters, this.coalesce);
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
