// Neighbour proxy for upstreams that treat the routed /64 as on-link and so
// send Neighbour Solicitations for every address in it (linux-ipv6-facts.md
// §6, the seed's "Poorly Configured Upstreams"). It answers for live
// addresses only — active peers, local addresses, slices — with the uplink's
// MAC, so the upstream hands their packets to this host, which routes them on.
//
// Addresses are reference-counted (the router may hold one for a peer while a
// slice holds it too), and so are solicited-node groups, which several
// addresses share whenever their last 24 bits agree — the scheme of MetalLB's
// NDP responder. Joining a group is what makes the kernel deliver the NS at all.
//
// Limits:
// - The NS's hop limit is not visible (raw-socket reads without ancillary
//   data), so the RFC 4861 "hop limit 255" check cannot be made; the exposure
//   is small because solicited-node groups are link-scoped (ff02::) and never
//   forwarded, so only on-link nodes reach the socket.
// - The upstream's reachability probes are unicast NS from its link-local
//   address to the proxied address. For an address that is not local (a
//   peer) the kernel neither delivers them here nor forwards them (it never
//   forwards a link-local source: Ip6InAddrErrors), so they go unanswered;
//   the upstream marks the entry FAILED and its next packet sends a multicast
//   NS, which is answered. Measured: one UDP datagram lost out of 150 sent at
//   10/s across such a cycle; traffic with upper-layer confirmation (TCP,
//   ping) keeps the entry REACHABLE and never probes.
//
// Mode "auto": groups are joined all the same (otherwise nothing could be
// seen), NS are counted, and the first NS for an address inside the prefix
// (not a DAD probe) switches answering on for good, with a warning saying the
// upstream treats the prefix as on-link. Before that, nothing is answered: a
// well-configured upstream routes the /64 and never asks.
import { inPrefix, formatIPv6, type Prefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { ipJson } from '../host/ip.js';
import { confValue, readIpv6Conf } from '../host/sysctl.js';
import type { Logger } from '../../lib/log.js';
import {
  advertisementBody,
  NA_OVERRIDE,
  NA_ROUTER,
  NA_SOLICITED,
  parseMac,
  parseSolicitation,
  solicitedNodeGroup,
} from './messages.js';
import { openNdSocket, type NdSocket } from './socket.js';

export type ResponderMode = 'on' | 'auto';

export interface NdpResponderOptions {
  /** Default 'on'. */
  mode?: ResponderMode;
  /** The /64: needed for 'auto', which watches for NS inside it. */
  prefix?: Prefix;
  /** The R flag in answers; default: whether the uplink forwards IPv6 (as the kernel's own proxy does). */
  router?: boolean;
  /**
   * The O flag; default true: the proxied addresses have no other owner on
   * the link, so an answer should replace whatever the upstream cached.
   */
  override?: boolean;
  /**
   * Joins per second, and the burst: each is an MLD report on the uplink and
   * socket option memory, and peers arriving in a rush (or an attacker making
   * new peers) must not turn into a storm of them. Default 50/s, burst 64.
   */
  joinRate?: { perSecond: number; burst: number };
  /** Tests: a socket and link details instead of the kernel's. */
  socket?: NdSocket;
  link?: { mac: string; ifindex: number };
}

export interface ResponderCounters {
  /** NS received (from any member group, or unicast to a local address). */
  received: number;
  answered: number;
  /** Not answered: target not live, malformed, our own, or 'auto' still watching. */
  ignored: number;
  /** NS for targets inside the prefix (what 'auto' watches for). */
  prefixSolicitations: number;
  sendErrors: number;
  /** Group joins made, failed (typically ENOBUFS once optmem_max is used up), and waiting for their turn. */
  joins: number;
  joinErrors: number;
  joinsPending: number;
  liveAddresses: number;
  groups: number;
}

const ALL_NODES = 'ff02::1';
/** At most one warning line about failed joins per this interval; the rest are counted. */
const JOIN_WARN_MS = 10_000;
type Group = { bytes: Uint8Array; refs: number; joined: boolean };
const key = (b: Uint8Array) => Buffer.from(b.subarray(0, 16)).toString('hex');

export class NdpResponder {
  private readonly live = new Map<string, { bytes: Uint8Array; refs: number }>();
  private readonly groups = new Map<string, Group>();
  /** Groups waiting for a join token, in arrival order. */
  private readonly pending = new Set<Group>();
  private joinTokens: number;
  private joinStamp = Date.now();
  private joinTimer: NodeJS.Timeout | undefined;
  private lastJoinWarn = 0;
  private suppressedJoinWarnings = 0;
  private socket: NdSocket | undefined;
  private mac: Uint8Array | undefined;
  private flags = 0;
  private seenOnLink = false;
  private readonly c = {
    received: 0,
    answered: 0,
    ignored: 0,
    prefixSolicitations: 0,
    sendErrors: 0,
    joins: 0,
    joinErrors: 0,
  };
  private readonly joinRate: { perSecond: number; burst: number };

  constructor(
    readonly uplink: string,
    private readonly log: Logger,
    private readonly opts: NdpResponderOptions = {},
  ) {
    if ((opts.mode ?? 'on') === 'auto' && !opts.prefix)
      throw new InputError('ndpProxy auto needs the prefix it watches');
    this.joinRate = opts.joinRate ?? { perSecond: 50, burst: 64 };
    this.joinTokens = this.joinRate.burst;
  }

  get mode(): ResponderMode {
    return this.opts.mode ?? 'on';
  }

  /** Whether answers go out: always in 'on'; in 'auto' once NS for the prefix were seen. */
  get answering(): boolean {
    return this.mode === 'on' || this.seenOnLink;
  }

  async start(): Promise<void> {
    if (this.socket) return;
    const link = this.opts.link ?? (await this.readLink());
    this.mac = parseMac(link.mac);
    const router =
      this.opts.router ?? confValue(await readIpv6Conf(), { conf: this.uplink, param: 'forwarding' }) === '1';
    this.flags = (router ? NA_ROUTER : 0) | ((this.opts.override ?? true) ? NA_OVERRIDE : 0);
    try {
      this.socket =
        this.opts.socket ??
        openNdSocket(this.uplink, link.ifindex, (err) => this.log.error(`neighbour proxy socket: ${err.message}`));
    } catch (err) {
      const e = err as Error;
      throw new InputError(
        /EPERM|not permitted/i.test(e.message)
          ? `the neighbour proxy needs CAP_NET_RAW for its raw ICMPv6 socket on ${this.uplink}: run as root or grant NET_RAW`
          : `cannot open the neighbour proxy's raw ICMPv6 socket on ${this.uplink}: ${e.message}`,
      );
    }
    this.socket.onSolicitation((body, source) => {
      void this.handleSolicitation(body, source);
    });
    for (const g of this.groups.values()) this.join(g);
    this.log.info(`neighbour proxy on ${this.uplink}`, {
      mode: this.mode,
      mac: link.mac,
      router,
      addresses: this.live.size,
      groups: this.groups.size,
    });
  }

  async stop(): Promise<void> {
    const s = this.socket;
    if (!s) return;
    this.socket = undefined;
    clearTimeout(this.joinTimer);
    this.joinTimer = undefined;
    this.pending.clear();
    for (const g of this.groups.values()) {
      if (g.joined) {
        try {
          s.leave(g.bytes);
        } catch {
          /* closing drops memberships anyway */
        }
        g.joined = false;
      }
    }
    s.close();
    this.log.info(`neighbour proxy on ${this.uplink} stopped`, { ...this.counters() });
  }

  /** One more holder of addr: answered for from the first add until the last remove. */
  add(addr: Uint8Array): void {
    const k = key(addr);
    const a = this.live.get(k);
    if (a) {
      a.refs++;
      return;
    }
    const bytes = Uint8Array.from(addr.subarray(0, 16));
    this.live.set(k, { bytes, refs: 1 });
    const gb = solicitedNodeGroup(bytes);
    const gk = key(gb);
    const g = this.groups.get(gk);
    if (g) {
      g.refs++;
      return;
    }
    const fresh = { bytes: gb, refs: 1, joined: false };
    this.groups.set(gk, fresh);
    if (this.socket) this.join(fresh);
  }

  remove(addr: Uint8Array): void {
    const k = key(addr);
    const a = this.live.get(k);
    if (!a) return;
    if (--a.refs > 0) return;
    this.live.delete(k);
    const gk = key(solicitedNodeGroup(a.bytes));
    const g = this.groups.get(gk)!;
    if (--g.refs > 0) return;
    this.groups.delete(gk);
    this.pending.delete(g);
    if (g.joined && this.socket) {
      try {
        this.socket.leave(g.bytes);
      } catch (err) {
        this.log.warn(`leaving ${formatIPv6(g.bytes)}: ${(err as Error).message}`);
      }
    }
  }

  has(addr: Uint8Array): boolean {
    return this.live.has(key(addr));
  }

  counters(): ResponderCounters {
    return { ...this.c, joinsPending: this.pending.size, liveAddresses: this.live.size, groups: this.groups.size };
  }

  /** Answers one NS (ICMPv6 body; source as text) if its target is live. Returns whether it answered. */
  async handleSolicitation(body: Uint8Array, source: string): Promise<boolean> {
    this.c.received++;
    const ns = parseSolicitation(body);
    if (!ns || !this.socket || !this.mac) {
      this.c.ignored++;
      return false;
    }
    const dad = source === '::';
    // Our own kernel's NS, looped back because we are in the group: never answer ourselves.
    if (ns.sourceLinkLayer && key16(ns.sourceLinkLayer) === key16(this.mac)) {
      this.c.ignored++;
      return false;
    }
    if (this.opts.prefix && inPrefix(this.opts.prefix, ns.target)) {
      this.c.prefixSolicitations++;
      if (!dad && !this.seenOnLink && this.mode === 'auto') {
        this.seenOnLink = true;
        this.log.warn(
          `the upstream on ${this.uplink} sends Neighbour Solicitations for ${this.opts.prefix.text} (it treats the prefix as on-link): answering for live addresses from now on`,
          { from: source, target: formatIPv6(ns.target) },
        );
      }
    }
    if (!this.live.has(key(ns.target)) || !this.answering) {
      this.c.ignored++;
      this.log.debug('NS not answered', {
        from: source,
        target: formatIPv6(ns.target),
        live: this.live.has(key(ns.target)),
      });
      return false;
    }
    // RFC 4861 §7.2.4: to the solicitor, solicited; a DAD probe (from ::) gets an unsolicited answer to all nodes.
    const flags = this.flags | (dad ? 0 : NA_SOLICITED);
    try {
      await this.socket.send(advertisementBody(ns.target, this.mac, flags), dad ? ALL_NODES : source);
      this.c.answered++;
      this.log.debug('NA sent', { to: dad ? ALL_NODES : source, target: formatIPv6(ns.target) });
      return true;
    } catch (err) {
      this.c.sendErrors++;
      this.log.warn(`cannot answer NS from ${source} for ${formatIPv6(ns.target)}: ${(err as Error).message}`);
      return false;
    }
  }

  /** Joins g now if a token is left, else queues it for the drain timer. */
  private join(g: Group): void {
    if (this.pending.size === 0 && this.takeJoinToken()) {
      this.joinNow(g);
      return;
    }
    this.pending.add(g);
    this.scheduleDrain();
  }

  private takeJoinToken(): boolean {
    const now = Date.now(),
      r = this.joinRate;
    this.joinTokens = Math.min(r.burst, this.joinTokens + ((now - this.joinStamp) * r.perSecond) / 1000);
    this.joinStamp = now;
    if (this.joinTokens < 1) return false;
    this.joinTokens -= 1;
    return true;
  }

  private scheduleDrain(): void {
    if (this.joinTimer || !this.socket) return;
    this.joinTimer = setTimeout(
      () => {
        this.joinTimer = undefined;
        for (const g of this.pending) {
          if (!this.socket || !this.takeJoinToken()) break;
          this.pending.delete(g);
          this.joinNow(g);
        }
        if (this.pending.size) this.scheduleDrain();
      },
      Math.max(10, Math.ceil(1000 / this.joinRate.perSecond)),
    );
    this.joinTimer.unref();
  }

  private joinNow(g: Group): void {
    try {
      this.socket!.join(g.bytes);
      g.joined = true;
      this.c.joins++;
    } catch (err) {
      // Typically ENOBUFS: the per-socket membership memory (net.core.optmem_max) is used up.
      // One line per interval: under a flood of new peers, a line per failure would flood the log.
      this.c.joinErrors++;
      const now = Date.now();
      if (now - this.lastJoinWarn < JOIN_WARN_MS) {
        this.suppressedJoinWarnings++;
        return;
      }
      const more = this.suppressedJoinWarnings
        ? ` (and ${this.suppressedJoinWarnings} more since the last warning)`
        : '';
      this.lastJoinWarn = now;
      this.suppressedJoinWarnings = 0;
      this.log.warn(
        `joining ${formatIPv6(g.bytes)}: ${(err as Error).message}${more}: NS for addresses in such groups will not be seen`,
      );
    }
  }

  private async readLink(): Promise<{ mac: string; ifindex: number }> {
    let links: { ifindex: number; address?: string; link_type?: string }[];
    try {
      links = await ipJson('link', 'show', 'dev', this.uplink);
    } catch {
      throw new InputError(`neighbour proxy: uplink '${this.uplink}' not found`);
    }
    const l = links[0];
    if (!l?.address || l.link_type !== 'ether')
      throw new InputError(`neighbour proxy: ${this.uplink} has no Ethernet address to answer with`);
    return { mac: l.address, ifindex: l.ifindex };
  }
}

function key16(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}
