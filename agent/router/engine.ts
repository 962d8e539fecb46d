// The forwarding engine of the 6bed4 router: every rule of the wire notes,
// applied to whole receive batches, with no I/O and no allocation per packet.
// The I/O loop (datapath.ts) receives a batch, calls fromPeers()/fromKernel(),
// and sends the output batches this engine filled. Forwarded packets are never
// copied: output batches share the receive buffer and only carry offsets;
// replies the router itself generates (RA, NA, ICMPv6 errors) are built in
// buffers of their own.
import {
  ICMP6_DST_UNREACH,
  ICMP6_TIME_EXCEEDED,
  IPV6_HEADER,
  ND_NEIGHBOR_SOLICIT,
  ND_REDIRECT,
  ND_ROUTER_SOLICIT,
  NH_ICMPV6,
  TUNNEL_MTU,
} from '../protocol/constants.js';
import { addressIPv4, addressPort, makeAddress, linkLayer, writeAddress } from '../protocol/address.js';
import { OFF_DST, OFF_HOP_LIMIT, OFF_SRC, equal16, isLinkLocal64, isUnspecified, readU32 } from '../protocol/ipv6.js';
import {
  ALL_NODES,
  ROUTER_LINK_LOCAL,
  isRouterSolicit,
  ndType,
  neighborSolicitTarget,
  writeNeighborAdvert,
  writeRouterAdvert,
} from '../protocol/nd.js';
import { writeIcmpError } from '../protocol/icmperror.js';
import { noErrorReply } from '../protocol/exthdr.js';
import type { Prefix } from '../../lib/ip.js';
import { type Batch, newBatch, sharedBatch } from '../io/batch.js';
import { Counters, type CountersSnapshot, type DropReason } from './counters.js';
import { DEFAULT_RATE_LIMIT, type RateLimitConfig, ReplyLimiter } from './ratelimit.js';
import { LivePeers, type LiveChange } from './live.js';
import { type IPv4Range, RefusedIPv4, refusedRanges } from './refused.js';

export interface EngineConfig {
  /** The served /64. */
  prefix: Prefix;
  /** The IPv4 address and UDP port the router listens on (its own 6bed4 address derives from them). */
  listenIPv4: number;
  port: number;
  /** Extra prefixes announced in RAs as routed through the router. */
  routes: readonly Prefix[];
  rateLimit?: RateLimitConfig;
  /** The limiter's state, shared by every worker's engine (newRateLimitState); default: this engine's own. */
  rateLimitState?: SharedArrayBuffer;
  /**
   * IPv4 destinations never sent to (relays, kernel → peer, replies): by
   * default only the fixed ones (refused.ts); the router adds its host's
   * local routing table and, with --refuse-private, private ranges.
   */
  refused?: readonly IPv4Range[];
}

const NO_ROUTES: readonly Prefix[] = [];
/** ICMPv4 errors read per call: they are rare, and more wait in the socket's error queue. */
const ICMP_BATCH = 16;
/** Entries in a reply batch; replies are rare, and more than this per receive batch are dropped. */
const REPLY_CAP = 64;
const REPLY_SLOT = TUNNEL_MTU;

export class Engine {
  readonly counters = new Counters();
  /** Peers seen recently (not used to forward: see live.ts). */
  readonly live = new LivePeers();
  /** Receive batches, filled by the I/O loop. */
  readonly udpRx: Batch;
  readonly tunRx: Batch;
  /** From peers: to the kernel, relayed to other peers, and replies to the sender. */
  readonly toTun: Batch;
  readonly relay: Batch;
  readonly udpReplies: Batch;
  /** From the kernel: to peers, and ICMPv6 errors back into the kernel. */
  readonly toPeers: Batch;
  readonly tunReplies: Batch;
  nToTun = 0;
  nRelay = 0;
  nUdpReplies = 0;
  nToPeers = 0;
  nTunReplies = 0;
  /** ICMPv4 errors about datagrams the router sent (IP_RECVERR), filled by the I/O loop; info[i] = type << 8 | code. */
  readonly icmpRx: Batch;
  readonly icmpInfo: Uint32Array;

  private readonly prefix8: Uint8Array;
  private readonly prefixHi: number;
  private readonly prefixLo: number;
  private readonly routerAddr: Uint8Array;
  private readonly routerLinkLocalIid: Uint8Array;
  private readonly routerLla: Uint8Array;
  private readonly limiter: ReplyLimiter;
  private readonly scratch = new Uint8Array(16);
  private readonly oldScratch = new Uint8Array(16);
  private refused: RefusedIPv4;
  /** Announced in RAs; replaced on reload (setRoutes), so not read from cfg. */
  private routes: readonly Prefix[];

  constructor(
    readonly cfg: EngineConfig,
    batchSize = 64,
  ) {
    this.prefix8 = cfg.prefix.bytes.subarray(0, 8);
    this.prefixHi = readU32(cfg.prefix.bytes, 0);
    this.prefixLo = readU32(cfg.prefix.bytes, 4);
    this.routerAddr = makeAddress(cfg.prefix.bytes, cfg.listenIPv4, cfg.port, 0);
    this.routerLinkLocalIid = Uint8Array.from(ROUTER_LINK_LOCAL);
    this.routerLinkLocalIid.set(this.routerAddr.subarray(8, 16), 8);
    this.routerLla = linkLayer(cfg.listenIPv4, cfg.port);
    this.limiter = new ReplyLimiter(cfg.rateLimit ?? DEFAULT_RATE_LIMIT, cfg.rateLimitState);
    this.refused = new RefusedIPv4(cfg.refused ?? refusedRanges([], false));
    this.routes = cfg.routes;
    // One extra byte per slot lets a too-long datagram show as longer than the MTU.
    this.udpRx = newBatch(batchSize, TUNNEL_MTU + 1);
    this.tunRx = newBatch(batchSize, TUNNEL_MTU + 1);
    this.toTun = sharedBatch(this.udpRx);
    this.relay = sharedBatch(this.udpRx);
    this.toPeers = sharedBatch(this.tunRx);
    this.icmpRx = newBatch(ICMP_BATCH, TUNNEL_MTU);
    this.icmpInfo = new Uint32Array(ICMP_BATCH);
    this.udpReplies = newBatch(REPLY_CAP, REPLY_SLOT);
    this.tunReplies = newBatch(REPLY_CAP, REPLY_SLOT);
    for (let i = 0; i < REPLY_CAP; i++) {
      this.udpReplies.off[i] = i * REPLY_SLOT;
      this.tunReplies.off[i] = i * REPLY_SLOT;
    }
  }

  /** Counters as of now, with the live-peer gauge current. */
  snapshot(): CountersSnapshot {
    this.counters.livePeers = this.live.size;
    this.counters.liveUntracked = this.live.untracked;
    return this.counters.snapshot();
  }

  /** Marks peers as seen now whose packets the in-kernel fast path forwarded (they passed its originator check). */
  touchPeers(peers: readonly LiveChange[], nowMs: number): void {
    for (const p of peers) this.live.touch(p.ipv4, p.port, nowMs);
  }

  /** Peers that appeared since the last call. */
  newPeers(): LiveChange[] {
    return this.live.takeAdded();
  }

  /** Expires idle peers and returns them. */
  expirePeers(nowMs: number): LiveChange[] {
    return this.live.expire(nowMs);
  }

  /** Replaces the refused destinations (the host's local table changed). */
  setRefused(ranges: readonly IPv4Range[]): void {
    this.refused = new RefusedIPv4(ranges);
  }

  /** New routes for the RAs from now on (a reload of the router's configuration). */
  setRoutes(routes: readonly Prefix[]): void {
    this.routes = routes;
  }

  /** New reply rates and bursts (a reload); the buckets, shared with the other workers, keep their tokens. */
  setRateLimit(rates: Omit<RateLimitConfig, 'tableSize'>): void {
    this.limiter.setRates(rates);
  }

  /** The router's own 6bed4 address (lanip 0). */
  get routerAddress(): Uint8Array {
    return this.routerAddr;
  }

  /**
   * Applies the peer-side rules to udpRx[0, n). Fills toTun, relay and
   * udpReplies (counts in nToTun, nRelay, nUdpReplies).
   */
  fromPeers(n: number, nowMs: number): void {
    const rx = this.udpRx,
      d = rx.data,
      c = this.counters,
      drops = c.drops;
    const toTun = this.toTun,
      relay = this.relay;
    let nTun = 0,
      nRelay = 0;
    this.nUdpReplies = 0;
    for (let i = 0; i < n; i++) {
      const off = rx.off[i]!;
      const dlen = rx.len[i]!;
      const srcV4 = rx.addr[i]!,
        srcPort = rx.port[i]!;
      c.udpRxPackets++;
      c.udpRxBytes += dlen;
      // Port 0 is never a peer: its addresses (prefix:v4:0000:…) are the host's own and its /112 slices,
      // and 0 marks empty slots in the live table. Nothing from it is answered, forwarded or tracked.
      if (srcPort === 0) {
        drops.source_port_zero++;
        continue;
      }
      if (dlen === 0) {
        c.keepalives++;
        continue;
      }
      const len = admit(d, off, dlen, drops);
      if (len < 0) continue;
      // 1. Neighbour Discovery is answered here, never forwarded.
      const nd = ndTypeOf(d, off, len);
      if (nd) {
        this.peerND(off, len, nd, srcV4, srcPort, nowMs);
        continue;
      }
      // 2. Multicast is not carried over the tunnel.
      if (d[off + OFF_DST] === 0xff) {
        drops.multicast++;
        continue;
      }
      // 3. Originator check: the source must be the address this peer's public IPv4:port maps to.
      //    (Link-local sources are for ND on the tunnel link only: nothing beyond it could answer them.)
      if (!this.isOriginator(d, off + OFF_SRC, srcV4, srcPort, false)) {
        drops.spoofed++;
        // A source in our /64 is most likely a peer whose NAT mapping changed: tell it its new address.
        // Only the /114 (88 bytes): the route options are for an RS, and here the asker may be anyone
        // with a 40-byte header and a spoofed IPv4 source, so the reply must not be much larger.
        if (this.inPrefix(d, off + OFF_SRC)) this.replyRA(srcV4, srcPort, ALL_NODES, nowMs, false, off + OFF_SRC);
        continue;
      }
      this.live.touch(srcV4, srcPort, nowMs);
      // 4. Hop limit: a router decrements; at zero the sender learns why.
      const hops = d[off + OFF_HOP_LIMIT]!;
      if (hops <= 1) {
        drops.hop_limit++;
        this.replyError(this.udpReplies, off, len, srcV4, srcPort, nowMs);
        continue;
      }
      d[off + OFF_HOP_LIMIT] = hops - 1;
      // 5. Peer to peer: straight back out over UDP to the IPv4:port inside the destination.
      const dst = off + OFF_DST;
      if (this.inPrefix(d, dst)) {
        const port = addressPort(d, dst);
        if (port !== 0) {
          const v4 = addressIPv4(d, dst);
          if (v4 === this.cfg.listenIPv4) {
            // The router's own 6bed4 address is local to this host; any other port on
            // its IPv4 would let peers reach host services with the host as source.
            if (port !== this.cfg.port) {
              drops.bad_destination++;
              continue;
            }
          } else if (this.refused.has(v4)) {
            // Loopback, multicast, broadcast, link-local, another address of this host, a private range.
            drops.bad_destination++;
            continue;
          } else {
            relay.off[nRelay] = off;
            relay.len[nRelay] = len;
            relay.addr[nRelay] = v4;
            relay.port[nRelay] = port;
            nRelay++;
            c.relayPackets++;
            c.relayBytes += len;
            continue;
          }
        }
      }
      // 6./7. Local (port-0) destinations and the rest of the world: to the kernel.
      toTun.off[nTun] = off;
      toTun.len[nTun] = len;
      nTun++;
      c.udpToTunPackets++;
      c.udpToTunBytes += len;
    }
    this.nToTun = nTun;
    this.nRelay = nRelay;
  }

  /**
   * Applies the kernel-side rules to tunRx[0, n). Fills toPeers and
   * tunReplies (ICMPv6 errors to write back into the kernel).
   */
  fromKernel(n: number, nowMs: number): void {
    const rx = this.tunRx,
      d = rx.data,
      c = this.counters,
      drops = c.drops;
    const out = this.toPeers;
    let nOut = 0;
    this.nTunReplies = 0;
    for (let i = 0; i < n; i++) {
      const off = rx.off[i]!;
      const dlen = rx.len[i]!;
      c.tunRxPackets++;
      c.tunRxBytes += dlen;
      const len = admit(d, off, dlen, drops);
      if (len < 0) continue;
      if (ndTypeOf(d, off, len)) {
        drops.nd_unexpected++;
        continue;
      }
      const dst = off + OFF_DST;
      if (d[dst] === 0xff) {
        drops.multicast++;
        continue;
      }
      if (!this.inPrefix(d, dst)) {
        drops.outside_prefix++;
        continue;
      }
      const port = addressPort(d, dst);
      if (port === 0) {
        drops.not_a_peer++;
        continue;
      }
      const v4 = addressIPv4(d, dst);
      // As from peers: nothing from outside may make the router send to services on its own IPv4.
      if (v4 === this.cfg.listenIPv4 || this.refused.has(v4)) {
        drops.bad_destination++;
        continue;
      }
      // Linux has no IPv6 reverse-path filter by default: from the Internet, a source inside the /64
      // carrying a port word (another peer's address) would undo the originator check for peers that
      // trust their /64. Only the kernel's own ICMPv6 from the router's address (echo replies, errors)
      // may carry one; that address answers nothing else.
      const src = off + OFF_SRC;
      if (
        this.inPrefix(d, src) &&
        addressPort(d, src) !== 0 &&
        !(d[off + 6] === NH_ICMPV6 && equal16(d, src, this.routerAddr, 0))
      ) {
        drops.spoofed_from_kernel++;
        continue;
      }
      const hops = d[off + OFF_HOP_LIMIT]!;
      if (hops <= 1) {
        drops.hop_limit++;
        // The error goes back into the kernel, which routes it to the sender.
        this.replyError(this.tunReplies, off, len, 0, 0, nowMs);
        continue;
      }
      d[off + OFF_HOP_LIMIT] = hops - 1;
      out.off[nOut] = off;
      out.len[nOut] = len;
      out.addr[nOut] = v4;
      out.port[nOut] = port;
      nOut++;
      c.tunToUdpPackets++;
      c.tunToUdpBytes += len;
    }
    this.nToPeers = nOut;
  }

  /**
   * ICMPv4 Destination Unreachable about datagrams the router sent to a peer
   * (typically port unreachable from a NAT that dropped the mapping) become
   * ICMPv6 Destination Unreachable from the router's address to the IPv6
   * sender of the packet inside, as the draft asks: into the kernel for a
   * native sender, over UDP for a peer whose packet was relayed. Rate limited
   * as every reply; the quoted packet must be the one sent to that peer (its
   * destination carries the IPv4:port the error is about), and an error about
   * an ICMPv6 error is not answered. Fills tunReplies and udpReplies.
   */
  fromIcmpErrors(n: number, nowMs: number): void {
    const rx = this.icmpRx,
      d = rx.data,
      c = this.counters,
      drops = c.drops;
    this.nTunReplies = 0;
    this.nUdpReplies = 0;
    for (let i = 0; i < n; i++) {
      const off = rx.off[i]!,
        qlen = rx.len[i]!,
        info = this.icmpInfo[i]!;
      c.icmp4Errors++;
      const type = info >>> 8,
        code4 = info & 0xff;
      // Only Destination Unreachable (3); Time Exceeded etc. from the IPv4 path are not the sender's business.
      if (type !== 3 || qlen < IPV6_HEADER || d[off]! >>> 4 !== 6) {
        drops.icmp4_unmatched++;
        continue;
      }
      const dst = off + OFF_DST;
      if (!this.inPrefix(d, dst) || addressIPv4(d, dst) !== rx.addr[i] || addressPort(d, dst) !== rx.port[i]) {
        drops.icmp4_unmatched++;
        continue;
      }
      if (noErrorReply(d, off, qlen)) {
        drops.error_for_error++;
        continue;
      }
      if (!this.takeReply(rx.addr[i]!, nowMs)) continue;
      // RFC 4443 codes: 0 no route (net unreachable), 1 administratively prohibited, 3 address unreachable, 4 port unreachable.
      const code6 = code4 === 3 ? 4 : code4 === 0 ? 0 : code4 === 9 || code4 === 10 || code4 === 13 ? 1 : 3;
      const src = off + OFF_SRC;
      const peerSender = this.inPrefix(d, src) && addressPort(d, src) !== 0;
      const r = peerSender ? this.udpReplies : this.tunReplies;
      const k = peerSender ? this.nUdpReplies : this.nTunReplies;
      if (k >= REPLY_CAP) {
        drops.rate_limited++;
        continue;
      }
      if (peerSender) {
        const v4 = addressIPv4(d, src);
        if (v4 === this.cfg.listenIPv4 || this.refused.has(v4)) {
          drops.reply_refused++;
          continue;
        }
        r.addr[k] = v4;
        r.port[k] = addressPort(d, src);
      }
      r.len[k] = writeIcmpError(r.data, r.off[k]!, ICMP6_DST_UNREACH, code6, 0, this.routerAddr, d, off, qlen);
      if (peerSender) this.nUdpReplies = k + 1;
      else this.nTunReplies = k + 1;
      c.icmpErrors++;
    }
  }

  /** ND from a peer: RS gets an RA, NS for the router gets an NA, the rest is dropped. */
  private peerND(off: number, len: number, type: number, srcV4: number, srcPort: number, nowMs: number): void {
    const d = this.udpRx.data,
      drops = this.counters.drops;
    if (type === ND_ROUTER_SOLICIT) {
      if (!isRouterSolicit(d, off, len)) {
        drops.nd_invalid++;
        return;
      }
      this.counters.routerSolicits++;
      // Not tracked live: an RS (from ::) carries nothing an originator check could verify. The peer
      // is tracked from its first packet that passes one.
      const dst = isUnspecified(d, off + OFF_SRC) ? ALL_NODES : d.subarray(off + OFF_SRC, off + OFF_SRC + 16);
      this.replyRA(srcV4, srcPort, dst, nowMs);
      return;
    }
    if (type === ND_NEIGHBOR_SOLICIT) {
      const target = neighborSolicitTarget(d, off, len);
      if (target < 0) {
        drops.nd_invalid++;
        return;
      }
      if (!this.isOriginator(d, off + OFF_SRC, srcV4, srcPort, true)) {
        drops.spoofed++;
        return;
      }
      this.live.touch(srcV4, srcPort, nowMs);
      if (!this.isRouterTarget(d, target)) {
        drops.ns_foreign_target++;
        return;
      }
      this.counters.neighborSolicits++;
      if (!this.mayReply(srcV4, nowMs)) return;
      const r = this.udpReplies,
        k = this.nUdpReplies;
      if (k >= REPLY_CAP) {
        drops.rate_limited++;
        return;
      }
      // The originator check let through only the sender's own address, never ::, so reply to it.
      const src = d.subarray(off + OFF_SRC, off + OFF_SRC + 16);
      r.len[k] = writeNeighborAdvert(r.data, r.off[k]!, ROUTER_LINK_LOCAL, src, this.routerAddr, this.routerLla);
      r.addr[k] = srcV4;
      r.port[k] = srcPort;
      this.nUdpReplies = k + 1;
      this.counters.neighborAdverts++;
      return;
    }
    // RA, NA and Redirect have no business coming from a peer; bad ND is counted as such.
    drops[ndType(d, off, len) < 0 ? 'nd_invalid' : 'nd_unexpected']++;
  }

  /**
   * Queues an RA telling ipv4:port its /114. oldAt, the offset in the receive
   * buffer of a source address that failed the originator check, adds that
   * address's /114 with zero lifetimes (the draft's withdrawal of a mapping
   * the NAT changed), unless it has no port word (never a peer's).
   */
  private replyRA(ipv4: number, port: number, dst: Uint8Array, nowMs: number, withRoutes = true, oldAt = -1): void {
    if (!this.mayReply(ipv4, nowMs)) return;
    const r = this.udpReplies,
      k = this.nUdpReplies;
    if (k >= REPLY_CAP) {
      this.counters.drops.rate_limited++;
      return;
    }
    // dst may point into the receive buffer; the RA is written into the reply buffer, so no overlap.
    writeAddress(this.scratch, 0, this.prefix8, ipv4, port, 0);
    let old: Uint8Array | undefined;
    if (oldAt >= 0 && addressPort(this.udpRx.data, oldAt) !== 0) {
      old = this.oldScratch;
      old.set(this.udpRx.data.subarray(oldAt, oldAt + 14));
      old[14] = this.udpRx.data[oldAt + 14]! & 0xc0;
      old[15] = 0; // lanip 0: the /114 itself
    }
    r.len[k] = writeRouterAdvert(
      r.data,
      r.off[k]!,
      dst,
      this.scratch,
      withRoutes ? this.routes : NO_ROUTES,
      false,
      old,
    );
    r.addr[k] = ipv4;
    r.port[k] = port;
    this.nUdpReplies = k + 1;
    this.counters.routerAdverts++;
  }

  /** Queues a Time Exceeded about the packet at off, from the router's own address. */
  private replyError(r: Batch, off: number, len: number, ipv4: number, port: number, nowMs: number): void {
    const rx = r === this.udpReplies ? this.udpRx : this.tunRx;
    // Never answer an error with an error (RFC 4443 §2.4 e), wherever in the header chain it sits.
    if (noErrorReply(rx.data, off, len)) {
      this.counters.drops.error_for_error++;
      return;
    }
    if (
      r === this.udpReplies ? !this.mayReply(ipv4, nowMs) : !this.takeReply(addressIPv4(rx.data, off + OFF_SRC), nowMs)
    )
      return;
    const k = r === this.udpReplies ? this.nUdpReplies : this.nTunReplies;
    if (k >= REPLY_CAP) {
      this.counters.drops.rate_limited++;
      return;
    }
    r.len[k] = writeIcmpError(r.data, r.off[k]!, ICMP6_TIME_EXCEEDED, 0, 0, this.routerAddr, rx.data, off, len);
    r.addr[k] = ipv4;
    r.port[k] = port;
    if (r === this.udpReplies) this.nUdpReplies = k + 1;
    else this.nTunReplies = k + 1;
    this.counters.icmpErrors++;
  }

  /**
   * A reply over UDP goes to the datagram's source: one claiming to be an
   * address of this host (or loopback, broadcast, ...) is spoofed, and
   * answering it would reflect the reply into the host.
   */
  private mayReply(ipv4: number, nowMs: number): boolean {
    if (this.refused.has(ipv4) || ipv4 === this.cfg.listenIPv4) {
      this.counters.drops.reply_refused++;
      return false;
    }
    return this.takeReply(ipv4, nowMs);
  }

  private takeReply(ipv4: number, nowMs: number): boolean {
    if (this.limiter.allow(ipv4, nowMs)) return true;
    this.counters.drops.rate_limited++;
    return false;
  }

  private inPrefix(d: Uint8Array, a: number): boolean {
    return readU32(d, a) === this.prefixHi && readU32(d, a + 4) === this.prefixLo;
  }

  /**
   * The anti-spoofing rule: a source inside the /64 must carry exactly the
   * IPv4 and port the datagram came from. Where link-local sources are allowed
   * (ND), their interface identifier must carry them the same way, as the
   * stock router demands.
   */
  private isOriginator(d: Uint8Array, a: number, v4: number, port: number, linkLocal: boolean): boolean {
    if (port === 0) return false; // port-0 addresses are local use, never a peer's
    if (!this.inPrefix(d, a) && !(linkLocal && isLinkLocal64(d, a))) return false;
    return addressPort(d, a) === port && addressIPv4(d, a) === v4;
  }

  /** NS targets the router answers for: fe80::, fe80::<router iid>, its 6bed4 address. */
  private isRouterTarget(d: Uint8Array, t: number): boolean {
    return (
      equal16(d, t, ROUTER_LINK_LOCAL, 0) ||
      equal16(d, t, this.routerLinkLocalIid, 0) ||
      equal16(d, t, this.routerAddr, 0)
    );
  }
}

/**
 * The structural checks every datagram and TUN read must pass: no longer than
 * the tunnel MTU, at least an IPv6 header, version 6, a payload length that
 * fits. Returns the packet length, or -1 after counting the reason.
 */
function admit(d: Uint8Array, off: number, dlen: number, drops: Record<DropReason, number>): number {
  if (dlen > TUNNEL_MTU) {
    drops.oversize++;
    return -1;
  }
  if (dlen < IPV6_HEADER) {
    drops.short++;
    return -1;
  }
  if (d[off]! >>> 4 !== 6) {
    drops.not_ipv6++;
    return -1;
  }
  // The payload length must fit the datagram; bytes beyond it are tolerated (as the kernel does) but not forwarded.
  const len = IPV6_HEADER + ((d[off + 4]! << 8) | d[off + 5]!);
  if (len > dlen) {
    drops.bad_length++;
    return -1;
  }
  return len;
}

/** The ICMPv6 type when the packet is Neighbour Discovery (133..137), else 0. */
function ndTypeOf(d: Uint8Array, off: number, len: number): number {
  if (d[off + 6] !== NH_ICMPV6 || len <= IPV6_HEADER) return 0;
  const t = d[off + IPV6_HEADER]!;
  return t >= ND_ROUTER_SOLICIT && t <= ND_REDIRECT ? t : 0;
}
