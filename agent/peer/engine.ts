// The forwarding decisions of a 6bed4 peer, on whole batches like the
// router's engine: everything the kernel sends into the tunnel goes to the
// router, or, for another peer of our /64 that answered a probe from exactly
// the IPv4:port its address embeds, straight to it (direct.ts decides). From
// UDP the router is believed, its RAs are handed up; another peer only for
// packets to our own address whose source address embeds the datagram's IPv4
// and port (the originator check the router makes), and only with the direct
// path on. The rest goes to the kernel. Data relayed by the router from a peer
// we send to straight is told to direct.ts: that peer may have given the path up.
import {
  IPV6_HEADER,
  ND_NEIGHBOR_ADVERT,
  ND_NEIGHBOR_SOLICIT,
  ND_REDIRECT,
  ND_ROUTER_ADVERT,
  ND_ROUTER_SOLICIT,
  NH_ICMPV6,
  TUNNEL_MTU,
} from '../protocol/constants.js';
import { equal16, OFF_DST, OFF_SRC, packetLength, payloadLength, readU32 } from '../protocol/ipv6.js';
import {
  ndType,
  neighborSolicitTarget,
  parseRouterAdvert,
  writeNeighborAdvert,
  writeNeighborSolicit,
  type RouterAdvert,
} from '../protocol/nd.js';
import { addressIPv4, addressPort, linkLayer } from '../protocol/address.js';
import { type Batch, newBatch, sharedBatch } from '../io/batch.js';
import type { DirectPaths } from './direct.js';

export class PeerCounters {
  udpRxPackets = 0;
  tunRxPackets = 0;
  toTunPackets = 0;
  toTunBytes = 0;
  toRouterPackets = 0;
  toRouterBytes = 0;
  /** packets sent straight to another peer, and received straight from one */
  directTxPackets = 0;
  directRxPackets = 0;
  probesSent = 0;
  probeAnswers = 0;
  neighborAdverts = 0;
  /** direct paths given up because the peer's data came through the router again */
  directViaRouter = 0;
  routerAdverts = 0;
  dropForeign = 0;
  dropInvalid = 0;
  dropMulticast = 0;
  dropNd = 0;
  /**
   * The TUN's offload (loop.ts): super-packets read from the TUN and the segments cut from them, single packets whose
   * checksum the kernel left to us (completed), super-packets that could not be cut; sends with UDP_SEGMENT, the
   * datagrams they carried, and refusals of one (grouping then went off); TCP super-packets written into the TUN,
   * the segments merged into them, and the kernel's refusals of one (written one by one instead).
   */
  tunGsoPackets = 0;
  tunGsoSegments = 0;
  tunChecksumsCompleted = 0;
  tunGsoBad = 0;
  udpGsoSends = 0;
  udpGsoDatagrams = 0;
  udpGsoRefused = 0;
  tunCoalescePackets = 0;
  tunCoalesceSegments = 0;
  tunCoalesceRefused = 0;
}

/** Probes and NA replies per batch; the rest wait for the next packet to that peer. */
const CONTROL_CAP = 32;
/** NA flags: solicited, override (a peer answering for itself, not a router). */
const NA_SOLICITED_OVERRIDE = 0x60;

export class PeerEngine {
  readonly counters = new PeerCounters();
  readonly udpRx: Batch;
  readonly tunRx: Batch;
  readonly toTun: Batch;
  /** to the router, or straight to a peer: each entry carries its IPv4:port */
  readonly toUdp: Batch;
  /** probes (NS) and answers to probes (NA), each to its peer's IPv4:port */
  readonly control: Batch;
  /** first probes to a peer: to go with the TTL FIRST_PROBE_TTL (direct.ts), after control */
  readonly firstProbes: Batch;
  nToTun = 0;
  nToUdp = 0;
  nControl = 0;
  nFirstProbes = 0;
  /** our 6bed4 address while we have one: direct datagrams must be for it */
  private own: Uint8Array | null = null;
  private ownLla: Uint8Array = new Uint8Array(6);
  private ownHi = 0;
  private ownLo = 0;
  /**
   * A LAN behind us (--lan, lan.ts): direct data for any lanip of our /114 is taken too (the kernel forwards it
   * there); other peers send to our LAN hosts straight once they are direct with us, the IPv4:port being ours.
   */
  serveLan = false;

  constructor(
    private readonly routerV4: number,
    private readonly routerPort: number,
    private readonly onAdvert: (ra: RouterAdvert) => void,
    batchSize = 64,
    private readonly direct?: DirectPaths,
  ) {
    this.udpRx = newBatch(batchSize, TUNNEL_MTU + 1);
    this.tunRx = newBatch(batchSize, TUNNEL_MTU + 1);
    this.toTun = sharedBatch(this.udpRx);
    this.toUdp = sharedBatch(this.tunRx);
    this.control = newBatch(CONTROL_CAP, IPV6_HEADER + 32);
    for (let i = 0; i < CONTROL_CAP; i++) this.control.off[i] = i * this.control.slot;
    this.firstProbes = newBatch(CONTROL_CAP, IPV6_HEADER + 32);
    for (let i = 0; i < CONTROL_CAP; i++) this.firstProbes.off[i] = i * this.firstProbes.slot;
  }

  /** Our address changed (or went): other peers learn the new one through the router first. */
  setOwn(addr: Uint8Array | null): void {
    this.own = addr && Uint8Array.from(addr);
    if (addr) {
      this.ownHi = readU32(addr, 0);
      this.ownLo = readU32(addr, 4);
      this.ownLla = linkLayer(addressIPv4(addr, 0), addressPort(addr, 0));
    }
    this.direct?.clear();
  }

  /** Datagrams from UDP: the router's, and (direct path on) other peers'. Fills toTun and control. */
  fromRouter(n: number, nowMs = Date.now()): void {
    const rx = this.udpRx,
      d = rx.data,
      c = this.counters,
      out = this.toTun;
    let k = 0;
    this.nControl = 0;
    this.nFirstProbes = 0;
    for (let i = 0; i < n; i++) {
      c.udpRxPackets++;
      const off = rx.off[i]!,
        dlen = rx.len[i]!;
      const fromRouter = rx.addr[i] === this.routerV4 && rx.port[i] === this.routerPort;
      // Only the router, and peers passing the originator check, speak to us over the tunnel: anything else could inject packets.
      if (!fromRouter && !this.direct) {
        c.dropForeign++;
        continue;
      }
      if (dlen === 0) continue; // keepalive echo: nothing to do
      if (dlen > TUNNEL_MTU) {
        c.dropInvalid++;
        continue;
      }
      const len = packetLength(d, off, dlen);
      if (len < 0) {
        c.dropInvalid++;
        continue;
      }
      if (!fromRouter) {
        if (!this.fromPeer(off, len, rx.addr[i]!, rx.port[i]!, nowMs)) continue;
      } else if (d[off + 6] === NH_ICMPV6 && len > IPV6_HEADER) {
        const t = d[off + IPV6_HEADER]!;
        if (t === ND_ROUTER_ADVERT) {
          const ra = parseRouterAdvert(d, off, len);
          // A /114 with port word 0 is no 6bed4 address (that space is the router host's own and its
          // slices): taking it would put a local address of the router on this peer.
          if (ra && addressPort(ra.prefix114, 0) !== 0) {
            c.routerAdverts++;
            this.onAdvert(ra);
          } else c.dropNd++;
          continue;
        }
        if (t >= ND_ROUTER_SOLICIT && t <= ND_REDIRECT) {
          c.dropNd++;
          continue;
        }
      }
      // Relayed from another peer of our /64 (the router checked that it comes from where its source says).
      if (
        fromRouter &&
        this.direct &&
        this.own &&
        this.inOur64(d, off + OFF_SRC) &&
        this.direct.viaRouter(addressIPv4(d, off + OFF_SRC), addressPort(d, off + OFF_SRC), nowMs)
      )
        c.directViaRouter++;
      out.off[k] = off;
      out.len[k] = len;
      k++;
      c.toTunPackets++;
      c.toTunBytes += len;
    }
    this.nToTun = k;
  }

  /** Packets from the kernel: to the router, or straight to a peer. Fills toUdp and control (probes). */
  fromKernel(n: number, nowMs = Date.now()): void {
    const rx = this.tunRx,
      d = rx.data,
      c = this.counters,
      out = this.toUdp;
    let k = 0;
    this.nControl = 0;
    this.nFirstProbes = 0;
    for (let i = 0; i < n; i++) {
      c.tunRxPackets++;
      const off = rx.off[i]!;
      const len = packetLength(d, off, rx.len[i]!);
      if (len < 0 || len > TUNNEL_MTU) {
        c.dropInvalid++;
        continue;
      }
      // The kernel's own MLD reports and solicitations on the tunnel link mean nothing to a 6bed4 router.
      if (d[off + OFF_DST] === 0xff) {
        c.dropMulticast++;
        continue;
      }
      out.off[k] = off;
      out.len[k] = len;
      if (this.directTarget(d, off + OFF_DST)) {
        const v4 = addressIPv4(d, off + OFF_DST),
          port = addressPort(d, off + OFF_DST);
        const straight = this.direct!.route(v4, port, nowMs);
        if (this.direct!.probe) this.queueProbe(d.subarray(off + OFF_DST, off + OFF_DST + 16), v4, port);
        if (straight) {
          out.addr[k] = v4;
          out.port[k] = port;
          k++;
          c.directTxPackets++;
          continue;
        }
      }
      out.addr[k] = this.routerV4;
      out.port[k] = this.routerPort;
      k++;
      c.toRouterPackets++;
      c.toRouterBytes += len;
    }
    this.nToUdp = k;
  }

  /**
   * A datagram from another peer: kept (true) only when its source is the
   * 6bed4 address of the IPv4:port it came from and it is for our address.
   * Its NS for us is answered, its NA to our probe proves the path.
   */
  private fromPeer(off: number, len: number, v4: number, port: number, now: number): boolean {
    const d = this.udpRx.data,
      c = this.counters,
      direct = this.direct!;
    const src = off + OFF_SRC;
    if (
      !this.own ||
      port === 0 ||
      !this.inOur64(d, src) ||
      addressPort(d, src) !== port ||
      addressIPv4(d, src) !== v4 ||
      !(equal16(d, off + OFF_DST, this.own, 0) || (this.serveLan && this.inOur114(d, off + OFF_DST)))
    ) {
      c.dropForeign++;
      return false;
    }
    const nd = d[off + 6] === NH_ICMPV6 && len > IPV6_HEADER ? d[off + IPV6_HEADER]! : 0;
    if (nd >= ND_ROUTER_SOLICIT && nd <= ND_REDIRECT) {
      // Probes and their answers are between the peers themselves, never for a LAN host.
      if (!equal16(d, off + OFF_DST, this.own, 0)) {
        c.dropNd++;
        return false;
      }
      if (nd === ND_NEIGHBOR_SOLICIT) {
        const t = neighborSolicitTarget(d, off, len);
        if (t < 0 || !equal16(d, t, this.own, 0)) {
          c.dropNd++;
          return false;
        }
        // It reached us; whether we reach it, only our own probe's answer can say.
        if (!direct.solicited(v4, port, now)) return false;
        if (direct.probe) this.queueProbe(d.subarray(src, src + 16), v4, port);
        if (this.nControl < CONTROL_CAP) {
          const r = this.control,
            j = this.nControl++;
          r.len[j] = writeNeighborAdvert(
            r.data,
            r.off[j]!,
            this.own,
            d.subarray(src, src + 16),
            this.own,
            this.ownLla,
            NA_SOLICITED_OVERRIDE,
          );
          r.addr[j] = v4;
          r.port[j] = port;
          c.neighborAdverts++;
        }
        return false;
      }
      // An NA for the address we probed (its sender's own), from where that address says: the path works both ways.
      if (
        nd === ND_NEIGHBOR_ADVERT &&
        ndType(d, off, len) === ND_NEIGHBOR_ADVERT &&
        payloadLength(d, off) >= 24 &&
        equal16(d, off + IPV6_HEADER + 8, d, src)
      ) {
        c.probeAnswers++;
        direct.answered(v4, port, now);
        return false;
      }
      c.dropNd++;
      return false;
    }
    // Data straight from a peer (it sends so only after our NA): taken, but only our probes' answers keep our way to it.
    direct.touch(v4, port, now);
    c.directRxPackets++;
    return true;
  }

  /**
   * Another peer of our /64 (a port word, not our own IPv4:port, not the router's own 6bed4 address), while we
   * have an address and the direct path is on.
   */
  private directTarget(d: Uint8Array, a: number): boolean {
    if (!this.direct || !this.own || !this.inOur64(d, a)) return false;
    const port = addressPort(d, a);
    if (port === 0) return false;
    const v4 = addressIPv4(d, a);
    if (v4 === this.routerV4 && port === this.routerPort) return false;
    return !(v4 === addressIPv4(this.own, 0) && port === addressPort(this.own, 0));
  }

  /** The same /114 as our address: the same 114 bits (the lanip is the last 14). */
  private inOur114(d: Uint8Array, a: number): boolean {
    const o = this.own!;
    for (let i = 0; i < 14; i++) if (d[a + i] !== o[i]) return false;
    return (d[a + 14]! & 0xc0) === (o[14]! & 0xc0);
  }

  private inOur64(d: Uint8Array, a: number): boolean {
    return readU32(d, a) === this.ownHi && readU32(d, a + 4) === this.ownLo;
  }

  /** An NS from our address to target's (its own NUD form), sent straight to the IPv4:port target embeds. */
  private queueProbe(target: Uint8Array, v4: number, port: number): void {
    const first = this.direct!.firstProbe;
    if ((first ? this.nFirstProbes : this.nControl) >= CONTROL_CAP || !this.own) return;
    const r = first ? this.firstProbes : this.control,
      j = first ? this.nFirstProbes++ : this.nControl++;
    r.len[j] = writeNeighborSolicit(r.data, r.off[j]!, this.own, target, target);
    r.addr[j] = v4;
    r.port[j] = port;
    this.counters.probesSent++;
  }
}
