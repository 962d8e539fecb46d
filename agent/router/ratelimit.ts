// Token buckets for the replies the router generates (RA, NA, ICMPv6 errors).
// An RA is larger than the RS that asks for it, so unlimited replies would make
// the router a reflection amplifier towards spoofed IPv4 sources; the stock
// router has no such limit. Memory is a fixed table indexed by a hash of the
// source IPv4: colliding sources share a bucket (stricter, never looser), and
// nothing grows with the number of peers.
//
// The buckets live in one SharedArrayBuffer that every forwarding worker
// uses, so the overall cap is one cap however many workers there are (and a
// source whose flows the kernel spreads over several workers still has one
// bucket). Replies are rare next to forwarding, so a spinlock around the few
// arithmetic operations costs nothing that matters.

export interface RateLimitConfig {
  /** Replies per second to one IPv4 source, and the burst allowed. */
  perSourceRate: number;
  perSourceBurst: number;
  /** Replies per second in all, and the burst allowed. */
  totalRate: number;
  totalBurst: number;
  /** Buckets in the per-source table (a power of two). */
  tableSize: number;
}

export const DEFAULT_RATE_LIMIT: RateLimitConfig = {
  perSourceRate: 4,
  perSourceBurst: 8,
  totalRate: 2000,
  totalBurst: 500,
  tableSize: 4096,
};

/** Bytes of shared state for cfg: a lock word (8 bytes with padding), the total bucket, then the table. */
export function rateLimitBytes(cfg: RateLimitConfig): number {
  return 8 + 8 * (2 + 2 * cfg.tableSize);
}

/** Shared state for a limiter, to hand to every worker's engine. */
export function newRateLimitState(cfg: RateLimitConfig = DEFAULT_RATE_LIMIT): SharedArrayBuffer {
  return new SharedArrayBuffer(rateLimitBytes(cfg));
}

export class ReplyLimiter {
  private readonly lock: Int32Array;
  /** [0] total tokens, [1] its stamp (0 = never used: full), then tokens[i], stamp[i] per bucket. */
  private readonly f: Float64Array;
  private readonly mask: number;

  constructor(
    private cfg: RateLimitConfig = DEFAULT_RATE_LIMIT,
    shared?: SharedArrayBuffer,
  ) {
    if (cfg.tableSize & (cfg.tableSize - 1)) throw new Error('rate limit tableSize must be a power of two');
    const sab = shared ?? newRateLimitState(cfg);
    if (sab.byteLength !== rateLimitBytes(cfg))
      throw new Error('rate limit shared state does not match its configuration');
    this.lock = new Int32Array(sab, 0, 1);
    this.f = new Float64Array(sab, 8, 2 + 2 * cfg.tableSize);
    this.mask = cfg.tableSize - 1;
  }

  /** New rates and bursts (a reload); the table, its size and the tokens in it stay. */
  setRates(rates: Omit<RateLimitConfig, 'tableSize'>): void {
    this.cfg = { ...rates, tableSize: this.cfg.tableSize };
  }

  /** Takes one token for a reply to ipv4 at time nowMs; false means: do not reply. */
  allow(ipv4: number, nowMs: number): boolean {
    while (Atomics.compareExchange(this.lock, 0, 0, 1) !== 0) {
      /* another worker holds it for a few ns */
    }
    try {
      return this.take(ipv4, nowMs);
    } finally {
      Atomics.store(this.lock, 0, 0);
    }
  }

  private take(ipv4: number, nowMs: number): boolean {
    const c = this.cfg,
      f = this.f;
    const now = nowMs || 1;
    const total =
      f[1] === 0 ? c.totalBurst : Math.min(c.totalBurst, f[0]! + (Math.max(0, now - f[1]!) * c.totalRate) / 1000);
    f[0] = total;
    f[1] = now;
    if (total < 1) return false;
    // The bucket belongs to the slot, not to the key: a source that displaces another (a colliding
    // key) inherits its tokens, so alternating with a victim's key gains nothing.
    const i = 2 + 2 * ((Math.imul(ipv4 ^ (ipv4 >>> 16), 0x45d9f3b) >>> 0) & this.mask);
    const stamp = f[i + 1]!;
    const t =
      stamp === 0
        ? c.perSourceBurst
        : Math.min(c.perSourceBurst, f[i]! + (Math.max(0, now - stamp) * c.perSourceRate) / 1000);
    f[i + 1] = now;
    if (t < 1) {
      f[i] = t;
      return false;
    }
    f[i] = t - 1;
    f[0] = total - 1;
    return true;
  }
}
