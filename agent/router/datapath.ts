// The I/O loop around the engine: waits for the UDP socket and the TUN queue
// to become readable, moves whole batches through the engine and sends what it
// decided. One native call per batch and direction; no allocation per packet.
import { native, type NativeIO, type PollHandle } from '../io/native.js';
import type { Engine } from './engine.js';
import type { Batch } from '../io/batch.js';
import { checkedSockets } from './steer.js';

/** Batches handled per readiness event before yielding to the other sockets, the other direction and timers. */
const ROUNDS_PER_EVENT = 16;

/**
 * Fairness under a flood: the UDP port is served by several SO_REUSEPORT
 * sockets, and the kernel puts each flow (source IPv4:port) on one of them
 * by its hash. A single source flooding the router fills only its own
 * socket's buffer, and since every socket gets the same budget per turn of
 * the event loop, the peers on the other sockets keep their share instead of
 * losing their datagrams in one shared, overflowing buffer.
 */
export class Datapath {
  private readonly polls: PollHandle[] = [];
  /** Replies and relays leave through the first socket (all have the same address and port). */
  private readonly udpFd: number;

  /**
   * io is the addon (the default) or a stand-in with its semantics, such as
   * the in-memory FakeIO (agent/io/fake.ts) the tests run the data path on
   * without root. One property read per readiness event, no allocation.
   */
  constructor(
    private readonly engine: Engine,
    private readonly udpFds: readonly number[],
    private readonly tunFd: number,
    private readonly io: NativeIO = native,
    steered = false,
  ) {
    this.udpFd = udpFds[0]!;
    this.checked = steered ? udpFds.slice(0, checkedSockets(udpFds.length)) : [];
  }

  /**
   * With the sockets steered (steer.ts), the first ones hold what passed the originator check in the kernel: they
   * are read before each turn of any other socket, so a flood in the others cannot keep the peers' traffic waiting
   * until their buffers overflow. Empty: not steered.
   */
  private readonly checked: readonly number[];

  start(): void {
    for (const fd of this.udpFds) this.polls.push(this.io.poll(fd, () => this.onUdp(fd)));
    this.polls.push(this.io.poll(this.tunFd, () => this.onTun()));
  }

  stop(): void {
    for (const p of this.polls.splice(0)) p.close();
  }

  /** Peers → kernel, peers → peers, and replies to peers. */
  onUdp(fd: number): void {
    if (this.checked.length && !this.checked.includes(fd)) for (const c of this.checked) this.readUdp(c);
    this.readUdp(fd);
  }

  private readUdp(fd: number): void {
    const e = this.engine,
      drops = e.counters.drops,
      io = this.io;
    // ICMP errors about what we sent wake the socket too (POLLERR); they are few, read them first.
    const m = io.udpRecvErrors(fd, e.icmpRx, e.icmpInfo);
    if (m) {
      e.fromIcmpErrors(m, Date.now());
      if (e.nTunReplies) drops.tx_dropped += e.nTunReplies - io.tunWrite(this.tunFd, e.tunReplies, e.nTunReplies);
      if (e.nUdpReplies) drops.tx_dropped += e.nUdpReplies - io.udpSend(this.udpFd, e.udpReplies, e.nUdpReplies);
      drops.tx_dropped += takeRefused(e.tunReplies) + takeRefused(e.udpReplies);
    }
    for (let round = 0; round < ROUNDS_PER_EVENT; round++) {
      const n = io.udpRecv(fd, e.udpRx);
      if (n === 0) return;
      e.fromPeers(n, Date.now());
      if (e.nToTun) drops.tx_dropped += e.nToTun - io.tunWrite(this.tunFd, e.toTun, e.nToTun);
      if (e.nRelay) drops.tx_dropped += e.nRelay - io.udpSend(this.udpFd, e.relay, e.nRelay);
      if (e.nUdpReplies) drops.tx_dropped += e.nUdpReplies - io.udpSend(this.udpFd, e.udpReplies, e.nUdpReplies);
      drops.tx_dropped += takeRefused(e.toTun) + takeRefused(e.relay) + takeRefused(e.udpReplies);
      if (n < e.udpRx.cap) return;
    }
  }

  /** Kernel → peers, and ICMPv6 errors back into the kernel. */
  onTun(): void {
    const e = this.engine,
      drops = e.counters.drops,
      io = this.io;
    for (let round = 0; round < ROUNDS_PER_EVENT; round++) {
      const n = io.tunRead(this.tunFd, e.tunRx);
      if (n === 0) return;
      e.fromKernel(n, Date.now());
      if (e.nToPeers) drops.tx_dropped += e.nToPeers - io.udpSend(this.udpFd, e.toPeers, e.nToPeers);
      if (e.nTunReplies) drops.tx_dropped += e.nTunReplies - io.tunWrite(this.tunFd, e.tunReplies, e.nTunReplies);
      drops.tx_dropped += takeRefused(e.toPeers) + takeRefused(e.tunReplies);
      if (n < e.tunRx.cap) return;
    }
  }
}

/** Packets the kernel refused one by one in sends from b since the last call (consumed, never delivered). */
function takeRefused(b: Batch): number {
  const n = b.refused[0]!;
  if (n) b.refused[0] = 0;
  return n;
}
