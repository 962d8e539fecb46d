// The I/O loop around the engine: waits for the UDP socket and the TUN queue
// to become readable, moves whole batches through the engine and sends what it
// decided. One native call per batch and direction; no allocation per packet.
import { native, type NativeIO, type PollHandle } from '../io/native.js';
import type { Engine } from './engine.js';
import {
  type Batch,
  newTunCoalesce,
  newTunGso,
  newUdpGro,
  newUdpGso,
  takeCoalesceCounts,
  takeTunGsoCounts,
  takeUdpGsoCounts,
  type TunGso,
  UDP_GRO_DATAGRAMS,
  UDP_GRO_MERGED,
  UDP_GRO_PENDING,
  type UdpGro,
} from '../io/batch.js';
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
    // The TUN's offload (tunnel.ts opens it so where the kernel takes it): reads bring super-packets, cut in the
    // addon into the packets the engine decides on one by one, and the datagrams for one of them leave in one send.
    this.vnet = io.tunOffload(tunFd);
    this.tunGso = this.vnet ? newTunGso() : undefined;
    this.udpGso = newUdpGso(this.vnet && io.udpGso(this.udpFd));
    // And the other way: consecutive TCP segments from peers go to the kernel merged (agent/native/coalesce.c),
    // which cuts them again into the same segments where it must.
    this.coalesce = this.vnet ? newTunCoalesce() : undefined;
    // Sockets the router gave UDP_GRO (running.ts: where the fast path does not run) are read with it.
    for (const fd of udpFds) if (io.udpGro?.(fd)) this.udpGro.set(fd, newUdpGro());
  }

  /** The TUN queue has the offload (IFF_VNET_HDR): reads are cut with tunGso, writes carry the header. */
  readonly vnet: boolean;
  private readonly tunGso: TunGso | undefined;
  /** UDP_SEGMENT on the sends to peers ([0]: on; the addon turns it off if the kernel refuses one). */
  readonly udpGso: Uint32Array;
  /** TCP coalescing into the writes of what peers send to the kernel (with vnet): its counters. */
  private readonly coalesce: Uint32Array | undefined;
  private resume: ReturnType<typeof setImmediate> | undefined;
  /** The sockets with UDP_GRO: what each has received and not handed to the engine yet. */
  private readonly udpGro = new Map<number, UdpGro>();
  /** Sockets to read again on the next turn: datagrams wait in their UDP_GRO carry, which nothing else wakes. */
  private readonly udpResume = new Map<number, ReturnType<typeof setImmediate>>();

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
    if (this.resume) clearImmediate(this.resume);
    this.resume = undefined;
    for (const r of this.udpResume.values()) clearImmediate(r);
    this.udpResume.clear();
  }

  /** Peers → kernel, peers → peers, and replies to peers. */
  onUdp(fd: number): void {
    if (this.checked.length && !this.checked.includes(fd)) for (const c of this.checked) this.readUdp(c);
    this.readUdp(fd);
  }

  private readUdp(fd: number): void {
    const e = this.engine,
      drops = e.counters.drops,
      io = this.io,
      gro = this.udpGro.get(fd);
    // ICMP errors about what we sent wake the socket too (POLLERR); they are few, read them first.
    const m = io.udpRecvErrors(fd, e.icmpRx, e.icmpInfo);
    if (m) {
      e.fromIcmpErrors(m, Date.now());
      if (e.nTunReplies)
        drops.tx_dropped += e.nTunReplies - io.tunWrite(this.tunFd, e.tunReplies, e.nTunReplies, this.vnet);
      if (e.nUdpReplies) drops.tx_dropped += e.nUdpReplies - io.udpSend(this.udpFd, e.udpReplies, e.nUdpReplies);
      drops.tx_dropped += takeRefused(e.tunReplies) + takeRefused(e.udpReplies);
    }
    for (let round = 0; round < ROUNDS_PER_EVENT; round++) {
      const n = io.udpRecv(fd, e.udpRx, gro);
      if (n === 0) break;
      e.fromPeers(n, Date.now());
      if (e.nToTun) drops.tx_dropped += e.nToTun - io.tunWrite(this.tunFd, e.toTun, e.nToTun, this.vnet, this.coalesce);
      // Relays to one peer go grouped with UDP_SEGMENT too, as what the kernel sends to peers (the same datagrams).
      if (e.nRelay) drops.tx_dropped += e.nRelay - io.udpSend(this.udpFd, e.relay, e.nRelay, this.udpGso);
      if (e.nUdpReplies) drops.tx_dropped += e.nUdpReplies - io.udpSend(this.udpFd, e.udpReplies, e.nUdpReplies);
      drops.tx_dropped += takeRefused(e.toTun) + takeRefused(e.relay) + takeRefused(e.udpReplies);
      if (n < e.udpRx.cap) break;
    }
    if (this.coalesce) takeCoalesceCounts(this.engine.counters, this.coalesce);
    takeUdpGsoCounts(this.engine.counters, this.udpGso);
    if (gro) {
      const c = e.counters,
        st = gro.state;
      c.udpGroBuffers += st[UDP_GRO_MERGED]!;
      c.udpGroDatagrams += st[UDP_GRO_DATAGRAMS]!;
      st[UDP_GRO_MERGED] = st[UDP_GRO_DATAGRAMS] = 0;
      if (st[UDP_GRO_PENDING] && !this.udpResume.has(fd) && this.polls.length)
        this.udpResume.set(
          fd,
          setImmediate(() => {
            this.udpResume.delete(fd);
            this.onUdp(fd);
          }),
        );
    }
  }

  /** Kernel → peers, and ICMPv6 errors back into the kernel. */
  onTun(): void {
    const e = this.engine,
      drops = e.counters.drops,
      io = this.io,
      gso = this.tunGso;
    this.resume = undefined;
    for (let round = 0; round < ROUNDS_PER_EVENT; round++) {
      const n = io.tunRead(this.tunFd, e.tunRx, gso);
      if (n === 0) break;
      e.fromKernel(n, Date.now());
      if (e.nToPeers) drops.tx_dropped += e.nToPeers - io.udpSend(this.udpFd, e.toPeers, e.nToPeers, this.udpGso);
      if (e.nTunReplies)
        drops.tx_dropped += e.nTunReplies - io.tunWrite(this.tunFd, e.tunReplies, e.nTunReplies, this.vnet);
      drops.tx_dropped += takeRefused(e.toPeers) + takeRefused(e.tunReplies);
      if (n < e.tunRx.cap) break;
    }
    if (gso) {
      this.takeOffloadCounts(gso);
      // The rest of a super-packet waits in gso while the TUN may have nothing more to wake us with.
      if (gso.state[0] && !this.resume && this.polls.length) this.resume = setImmediate(() => this.onTun());
    }
  }

  private takeOffloadCounts(gso: TunGso): void {
    takeTunGsoCounts(this.engine.counters, gso);
    takeUdpGsoCounts(this.engine.counters, this.udpGso);
  }
}

/** Packets the kernel refused one by one in sends from b since the last call (consumed, never delivered). */
function takeRefused(b: Batch): number {
  const n = b.refused[0]!;
  if (n) b.refused[0] = 0;
  return n;
}
