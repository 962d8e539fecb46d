// The forwarding decisions of a 6bed4 peer, on whole batches like the
// router's engine: everything the kernel sends into the tunnel goes to the
// router; from UDP only the router is believed, its RAs are handed up, and
// the rest goes to the kernel.
import { IPV6_HEADER, ND_REDIRECT, ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT, NH_ICMPV6, TUNNEL_MTU } from '../protocol/constants.js';
import { OFF_DST, packetLength } from '../protocol/ipv6.js';
import { parseRouterAdvert, type RouterAdvert } from '../protocol/nd.js';
import { addressPort } from '../protocol/address.js';
import { type Batch, newBatch, sharedBatch } from '../io/batch.js';

export class PeerCounters {
  udpRxPackets = 0; tunRxPackets = 0;
  toTunPackets = 0; toTunBytes = 0; toRouterPackets = 0; toRouterBytes = 0;
  routerAdverts = 0;
  dropForeign = 0; dropInvalid = 0; dropMulticast = 0; dropNd = 0;
}

export class PeerEngine {
  readonly counters = new PeerCounters();
  readonly udpRx: Batch;
  readonly tunRx: Batch;
  readonly toTun: Batch;
  readonly toRouter: Batch;
  nToTun = 0; nToRouter = 0;

  constructor(private readonly routerV4: number, private readonly routerPort: number,
    private readonly onAdvert: (ra: RouterAdvert) => void, batchSize = 64) {
    this.udpRx = newBatch(batchSize, TUNNEL_MTU + 1);
    this.tunRx = newBatch(batchSize, TUNNEL_MTU + 1);
    this.toTun = sharedBatch(this.udpRx);
    this.toRouter = sharedBatch(this.tunRx);
    this.toRouter.addr.fill(routerV4);
    this.toRouter.port.fill(routerPort);
  }

  fromRouter(n: number): void {
    const rx = this.udpRx, d = rx.data, c = this.counters, out = this.toTun;
    let k = 0;
    for (let i = 0; i < n; i++) {
      c.udpRxPackets++;
      // Only the router speaks to us over the tunnel: anything else could inject packets.
      if (rx.addr[i] !== this.routerV4 || rx.port[i] !== this.routerPort) { c.dropForeign++; continue; }
      const off = rx.off[i]!, dlen = rx.len[i]!;
      if (dlen === 0) continue; // keepalive echo: nothing to do
      if (dlen > TUNNEL_MTU) { c.dropInvalid++; continue; }
      const len = packetLength(d, off, dlen);
      if (len < 0) { c.dropInvalid++; continue; }
      if (d[off + 6] === NH_ICMPV6 && len > IPV6_HEADER) {
        const t = d[off + IPV6_HEADER]!;
        if (t === ND_ROUTER_ADVERT) {
          const ra = parseRouterAdvert(d, off, len);
          // A /114 with port word 0 is no 6bed4 address (that space is the router host's own and its
          // slices): taking it would put a local address of the router on this peer.
          if (ra && addressPort(ra.prefix114, 0) !== 0) { c.routerAdverts++; this.onAdvert(ra); } else c.dropNd++;
          continue;
        }
        if (t >= ND_ROUTER_SOLICIT && t <= ND_REDIRECT) { c.dropNd++; continue; }
      }
      out.off[k] = off; out.len[k] = len; k++;
      c.toTunPackets++; c.toTunBytes += len;
    }
    this.nToTun = k;
  }

  fromKernel(n: number): void {
    const rx = this.tunRx, d = rx.data, c = this.counters, out = this.toRouter;
    let k = 0;
    for (let i = 0; i < n; i++) {
      c.tunRxPackets++;
      const off = rx.off[i]!;
      const len = packetLength(d, off, rx.len[i]!);
      if (len < 0 || len > TUNNEL_MTU) { c.dropInvalid++; continue; }
      // The kernel's own MLD reports and solicitations on the tunnel link mean nothing to a 6bed4 router.
      if (d[off + OFF_DST] === 0xff) { c.dropMulticast++; continue; }
      out.off[k] = off; out.len[k] = len; k++;
      c.toRouterPackets++; c.toRouterBytes += len;
    }
    this.nToRouter = k;
  }
}

