// Which other peers of our /64 this peer reaches directly, and when to probe:
// the state behind direct peer-to-peer, apart from all I/O. A 6bed4 address
// embeds its owner's public IPv4:port, so a datagram can go straight there
// instead of through the router; whether it arrives depends on both NATs. A
// Neighbour Solicitation sent there (the probe) answers that: an NA coming
// back from exactly that IPv4:port proves the path both ways (and, sent by both
// sides, punches the holes that endpoint-independent NATs need). Until then,
// and whenever the direct path goes quiet, packets go through the router, which
// never stops relaying. The other side's data coming through the router again,
// after it had come straight, says the same sooner: that peer gave the path up
// (its probes went unanswered), so it is broken at least one way. The first
// probe to a peer is hop-limited (FIRST_PROBE_TTL), so that NATs which take
// unsolicited datagrams for themselves still let the later ones cross. The
// table is bounded and forgets peers not used for a minute; the time comes in
// from the caller (no clock here).

/** How long to wait between probes of a peer that has not answered yet. */
export const PROBE_MS = 1000;
/** Unanswered probes before backing off (a NAT that filters by endpoint and never lets the answer in). */
export const FAST_PROBES = 3;
/** Probe interval after that: such a NAT may change; trying costs one small datagram a minute. */
export const BACKOFF_PROBE_MS = 30_000;
/** While direct and sending: no answer for this long, and a probe goes to check the path is still there. */
export const REFRESH_MS = 400;
/** While direct and a probe is unanswered: the next ones go this often, so one lost datagram does not end the path. */
export const LOST_PROBE_MS = 250;
/**
 * While direct: probes unanswered for this long (from the first of them) and the path is given up: back through the
 * router. Counted from a probe, not from the last answer, so a path idle for a while is checked before it is dropped.
 * With REFRESH_MS, a path cut just after an answer is given up at most REFRESH_MS + QUIET_MS (+ a round trip) later;
 * four or five probes go unanswered first.
 */
export const QUIET_MS = 1000;
/**
 * The peer's data through the router, this long or more after its last datagram straight to us: it went back to the
 * router. Sooner, it may be a straggler it sent through the router before it went direct (the router's way is the
 * longer one), which must not end a path that works.
 */
export const STRAGGLER_MS = 250;
/**
 * The IPv4 TTL of the first probe to a peer: past our own NAT (one hop away, as a home router is), not as far as the
 * other peer's. A NAT without an input firewall (a plain Linux masquerade) takes a probe arriving before its own peer
 * has sent anything there for itself, and the conntrack entry that leaves makes it move its peer's own probe to
 * another port, which our NAT then drops: nothing would go direct. This one only opens our NAT's mapping; the full
 * probes after it (PROBE_MS later, by when the other peer, answering through the router, has sent its own) cross.
 */
export const FIRST_PROBE_TTL = 2;
/** The least time between two answers to one peer's probes. */
export const ANSWER_GAP_MS = 200;
/** Entries unused (nothing sent, nothing heard) for this long are forgotten. */
export const EXPIRE_MS = 60_000;
/** The most peers tracked at once; beyond it the longest unused entry goes. */
export const DEFAULT_MAX_PEERS = 256;

interface Entry {
  ipv4: number;
  port: number;
  direct: boolean;
  /**
   * when the peer last answered a probe of ours (an NA from exactly its IPv4:port): the only proof that what we send
   * reaches it. Its data and its probes reaching us prove the other direction only, which NATs may treat otherwise.
   */
  heard: number;
  /** when we last sent it a probe */
  probed: number;
  /** probes sent since the peer last answered */
  unanswered: number;
  /** when the first of those was sent (-1: none) */
  lost: number;
  /** when we last answered its NS */
  answered: number;
  /**
   * when its data last came straight to us since our path to it last changed (-Infinity: not since). Its data through
   * the router counts as a break only after this: a peer still probing its way to us sends through the router while
   * we are direct already, and that must not push us back (the two would take turns going direct).
   */
  straight: number;
  used: number;
}

/**
 * Why a path changed: answered (our probe's answer came: direct), quiet (probes unanswered for QUIET_MS), via-router
 * (the peer's data came through the router after it had come straight), forgotten (unused, or the table was full),
 * moved (our own address changed).
 */
export type PathWhy = 'answered' | 'quiet' | 'via-router' | 'forgotten' | 'moved';
export type PathChange = (ipv4: number, port: number, direct: boolean, why: PathWhy) => void;

export class DirectPaths {
  private readonly table = new Map<number, Entry>();
  /** Set by route(): a probe should go to that peer now. */
  probe = false;
  /** With `probe`: the first to that peer, to go with FIRST_PROBE_TTL. */
  firstProbe = false;
  /** How many entries are direct now: with none, data through the router needs no look-up. */
  private nDirect = 0;

  constructor(
    private readonly onChange: PathChange = () => undefined,
    private readonly max = DEFAULT_MAX_PEERS,
  ) {}

  /**
   * A packet for the peer at ipv4:port is about to go: true to send it
   * straight there, false through the router. Sets `probe` when a probe
   * should go along (the packet itself still takes the way returned).
   */
  route(ipv4: number, port: number, now: number): boolean {
    const e = this.entry(ipv4, port, now);
    e.used = now;
    this.probe = false;
    if (e.direct && e.lost >= 0 && now - e.lost > QUIET_MS) this.set(e, false, 'quiet');
    if (e.direct) {
      if (now - e.heard > REFRESH_MS && now - e.probed >= (e.unanswered > 0 ? LOST_PROBE_MS : REFRESH_MS))
        this.probing(e, now);
      return true;
    }
    if (now - e.probed >= (e.unanswered < FAST_PROBES ? PROBE_MS : BACKOFF_PROBE_MS)) this.probing(e, now);
    return false;
  }

  /** The peer at ipv4:port answered our probe (an NA from there, passing the originator check): direct. */
  answered(ipv4: number, port: number, now: number): void {
    const e = this.table.get(key(ipv4, port));
    // Only what we probed: an unsolicited NA creates nothing.
    if (!e || e.probed === -Infinity) return;
    e.heard = now;
    e.used = now;
    e.unanswered = 0;
    e.lost = -1;
    if (!e.direct) this.set(e, true, 'answered');
  }

  /**
   * The peer at ipv4:port probed us (its NS reached us straight from there).
   * Returns true when to answer (not when it asks again within ANSWER_GAP_MS:
   * a flood of NS with a spoofed IPv4 source gets few answers). Sets `probe`
   * when a probe should go back with the answer: it reaches us, but only an
   * answer to a probe of ours proves the way back (ours may have gone out
   * before its NAT let anything in; now it does). Only to a peer we send to:
   * a stranger's NS (its IPv4 source may be spoofed) gets one NA, no more.
   */
  solicited(ipv4: number, port: number, now: number): boolean {
    const known = this.table.has(key(ipv4, port));
    const e = this.entry(ipv4, port, now);
    e.used = now;
    this.probe = false;
    if (now - e.answered < ANSWER_GAP_MS) return false;
    e.answered = now;
    if (known && !e.direct) this.probing(e, now);
    return true;
  }

  /** Data came straight from the peer: keeps its entry from expiring, proves nothing about our way to it. */
  touch(ipv4: number, port: number, now: number): void {
    const e = this.table.get(key(ipv4, port));
    if (e) {
      e.used = now;
      e.straight = now;
    }
  }

  /**
   * Data from the peer at ipv4:port came through the router (which checked its source). While we send to it straight
   * and its data had come straight since, that peer has gone back to the router: its probes to us went unanswered,
   * so the path is broken in at least one direction. Ours goes back too, at once, instead of after our own probes
   * time out (meanwhile what it sends us straight would be lost the other way). True when the path was given up.
   */
  viaRouter(ipv4: number, port: number, now: number): boolean {
    if (this.nDirect === 0) return false;
    const e = this.table.get(key(ipv4, port));
    if (!e || !e.direct || e.straight === -Infinity || now - e.straight < STRAGGLER_MS) return false;
    this.set(e, false, 'via-router');
    return true;
  }

  isDirect(ipv4: number, port: number): boolean {
    return this.table.get(key(ipv4, port))?.direct ?? false;
  }

  get size(): number {
    return this.table.size;
  }

  /** The peers reached directly now, as [ipv4, port]. */
  directPeers(): [number, number][] {
    return [...this.table.values()].filter((e) => e.direct).map((e) => [e.ipv4, e.port]);
  }

  /** Forgets entries unused for EXPIRE_MS. */
  sweep(now: number): void {
    for (const [k, e] of this.table) {
      if (now - e.used <= EXPIRE_MS) continue;
      this.table.delete(k);
      if (e.direct) this.gone(e, 'forgotten');
    }
  }

  /** Forgets everything: our own address moved, so every other peer must learn the new one first. */
  clear(): void {
    for (const e of this.table.values()) if (e.direct) this.gone(e, 'moved');
    this.table.clear();
  }

  private probing(e: Entry, now: number): void {
    this.probe = true;
    // The first datagram straight to that peer (no probe, no answer to its NS yet) goes hop-limited; it cannot be
    // answered, so it does not count as unanswered.
    this.firstProbe = e.probed === -Infinity && e.answered === -Infinity;
    e.probed = now;
    if (this.firstProbe) return;
    if (e.unanswered++ === 0) e.lost = now;
  }

  private set(e: Entry, direct: boolean, why: PathWhy): void {
    e.direct = direct;
    this.nDirect += direct ? 1 : -1;
    e.straight = -Infinity; // only what comes straight from now on says the peer uses the path as we do
    if (!direct) {
      e.unanswered = 0;
      e.lost = -1;
    } // probe again at the fast rate: the path may come back
    this.onChange(e.ipv4, e.port, direct, why);
  }

  /** A direct entry leaves the table. */
  private gone(e: Entry, why: PathWhy): void {
    this.nDirect--;
    this.onChange(e.ipv4, e.port, false, why);
  }

  private entry(ipv4: number, port: number, now: number): Entry {
    const k = key(ipv4, port);
    let e = this.table.get(k);
    if (e) return e;
    if (this.table.size >= this.max) {
      this.sweep(now);
      if (this.table.size >= this.max) {
        // Still full: the longest unused entry makes room.
        let oldest: [number, Entry] | undefined;
        for (const kv of this.table) if (!oldest || kv[1].used < oldest[1].used) oldest = kv;
        this.table.delete(oldest![0]);
        if (oldest![1].direct) this.gone(oldest![1], 'forgotten');
      }
    }
    e = {
      ipv4,
      port,
      direct: false,
      heard: -Infinity,
      probed: -Infinity,
      unanswered: 0,
      lost: -1,
      answered: -Infinity,
      straight: -Infinity,
      used: now,
    };
    this.table.set(k, e);
    return e;
  }
}

function key(ipv4: number, port: number): number {
  return ipv4 * 65536 + port;
}
