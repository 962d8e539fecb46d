// Peers seen recently, for what needs to know who is there (the neighbour
// proxy answers only for live peers; the cluster status reports how many).
// Forwarding never consults it: the router stays stateless, and losing this
// table on restart breaks no flow. Memory is fixed: an open-addressing table
// of (IPv4, port) → last seen; when it is full, further peers go untracked
// (and are counted) rather than growing it.
//
// An attacker must not be able to fill it for the real peers: the engine
// tracks a peer only after its originator check; one IPv4 gets at most
// perIPv4 entries (one host has 65,535 ports); and new entries are admitted
// at a limited rate, so even spoofed IPv4 sources can hold at most
// rate × TTL + burst entries (below the capacity by default) while entries
// of real peers, once in, stay as long as they talk.

export interface LiveChange {
  readonly ipv4: number;
  readonly port: number;
}

export interface LiveLimits {
  /** Entries one IPv4 may hold (peers behind one NAT share it). */
  perIPv4: number;
  /** New entries admitted per second, and the burst. */
  newPerSecond: number;
  newBurst: number;
}

/** 200/s × 120 s + 1,000 = 25,000 entries at most from a flood of spoofed sources: well below 65,536. */
export const DEFAULT_LIVE_LIMITS: LiveLimits = { perIPv4: 64, newPerSecond: 200, newBurst: 1000 };

export class LivePeers {
  private readonly v4: Uint32Array;
  private readonly port: Uint16Array; // 0 = empty slot (port 0 is never a peer)
  private readonly seen: Float64Array;
  private readonly mask: number;
  private readonly capacity: number;
  private count = 0;
  /** Peers not tracked because the table was full, their IPv4 had its share, or too many were new at once. */
  untracked = 0;
  private added: LiveChange[] = [];
  /** Entries per IPv4 (changes only when a peer is added or expires). */
  private readonly perV4 = new Map<number, number>();
  private newTokens: number;
  private newStamp = 0;

  constructor(
    capacity = 65536,
    private readonly ttlMs = 120_000,
    private readonly limits: LiveLimits = DEFAULT_LIVE_LIMITS,
  ) {
    let size = 1;
    while (size < capacity * 2) size <<= 1; // load factor ≤ 0.5 keeps probes short
    this.v4 = new Uint32Array(size);
    this.port = new Uint16Array(size);
    this.seen = new Float64Array(size);
    this.mask = size - 1;
    this.capacity = capacity;
    this.newTokens = limits.newBurst;
  }

  get size(): number {
    return this.count;
  }

  /** Marks ipv4:port as seen at nowMs. Called per forwarded packet: no allocation unless the peer is new. */
  touch(ipv4: number, port: number, nowMs: number): void {
    // 0 marks an empty slot: an entry with port 0 could never be found or expired again.
    if (port === 0) return;
    let i = (Math.imul(ipv4 ^ (port << 16) ^ port, 0x9e3779b1) >>> 0) & this.mask;
    for (;;) {
      const p = this.port[i]!;
      if (p === 0) break;
      if (p === port && this.v4[i] === ipv4) {
        this.seen[i] = nowMs;
        return;
      }
      i = (i + 1) & this.mask;
    }
    if (this.count >= this.capacity) {
      this.untracked++;
      return;
    }
    const mine = this.perV4.get(ipv4) ?? 0;
    if (mine >= this.limits.perIPv4) {
      this.untracked++;
      return;
    }
    const l = this.limits;
    this.newTokens = Math.min(l.newBurst, this.newTokens + ((nowMs - this.newStamp) * l.newPerSecond) / 1000);
    this.newStamp = nowMs;
    if (this.newTokens < 1) {
      this.untracked++;
      return;
    }
    this.newTokens -= 1;
    this.perV4.set(ipv4, mine + 1);
    this.v4[i] = ipv4;
    this.port[i] = port;
    this.seen[i] = nowMs;
    this.count++;
    this.added.push({ ipv4, port });
  }

  /** Re-inserts a kept entry (no limits: it was admitted before). */
  private insert(ipv4: number, port: number, seen: number): void {
    let i = (Math.imul(ipv4 ^ (port << 16) ^ port, 0x9e3779b1) >>> 0) & this.mask;
    while (this.port[i] !== 0) i = (i + 1) & this.mask;
    this.v4[i] = ipv4;
    this.port[i] = port;
    this.seen[i] = seen;
    this.count++;
    this.perV4.set(ipv4, (this.perV4.get(ipv4) ?? 0) + 1);
  }

  /** Peers that appeared since the last call (reported quickly: a new peer's inbound traffic may depend on it). */
  takeAdded(): LiveChange[] {
    const a = this.added;
    this.added = [];
    return a;
  }

  /**
   * Removes peers not seen for the TTL and returns them. Rebuilds the table (a
   * sweep every few seconds is cheap next to per-packet work, and rebuilding
   * keeps linear probing correct without tombstones).
   */
  expire(nowMs: number): LiveChange[] {
    const removed: LiveChange[] = [];
    const keep: [number, number, number][] = [];
    for (let i = 0; i <= this.mask; i++) {
      const p = this.port[i]!;
      if (p === 0) continue;
      if (nowMs - this.seen[i]! > this.ttlMs) removed.push({ ipv4: this.v4[i]!, port: p });
      else keep.push([this.v4[i]!, p, this.seen[i]!]);
    }
    if (removed.length === 0) return removed;
    const pending = this.added;
    this.added = [];
    this.port.fill(0);
    this.count = 0;
    this.perV4.clear();
    for (const [v4, p, seen] of keep) this.insert(v4, p, seen);
    // Re-inserting is not appearing: keep only the additions not yet taken (and still here).
    const gone = new Set(removed.map((r) => r.ipv4 * 65536 + r.port));
    this.added = pending.filter((a) => !gone.has(a.ipv4 * 65536 + a.port));
    return removed;
  }
}
