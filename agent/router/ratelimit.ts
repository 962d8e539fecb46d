// Token buckets for the replies the router generates (RA, NA, ICMPv6 errors).
// An RA is larger than the RS that asks for it, so unlimited replies would make
// the router a reflection amplifier towards spoofed IPv4 sources; the stock
// router has no such limit. Memory is a fixed table indexed by a hash of the
// source IPv4: colliding sources share a bucket (stricter, never looser), and
// nothing grows with the number of peers.

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
  perSourceRate: 4, perSourceBurst: 8, totalRate: 2000, totalBurst: 500, tableSize: 4096,
};

export class ReplyLimiter {
  private readonly tokens: Float64Array;
  private readonly stamp: Float64Array;
  private readonly keys: Uint32Array;
  private readonly mask: number;
  private total: number;
  private totalStamp = 0;

  constructor(private readonly cfg: RateLimitConfig = DEFAULT_RATE_LIMIT) {
    if (cfg.tableSize & (cfg.tableSize - 1)) throw new Error('rate limit tableSize must be a power of two');
    this.tokens = new Float64Array(cfg.tableSize);
    this.stamp = new Float64Array(cfg.tableSize);
    this.keys = new Uint32Array(cfg.tableSize);
    this.mask = cfg.tableSize - 1;
    this.total = cfg.totalBurst;
  }

  /** Takes one token for a reply to ipv4 at time nowMs; false means: do not reply. */
  allow(ipv4: number, nowMs: number): boolean {
    const c = this.cfg;
    this.total = Math.min(c.totalBurst, this.total + ((nowMs - this.totalStamp) * c.totalRate) / 1000);
    this.totalStamp = nowMs;
    if (this.total < 1) return false;
    const i = Math.imul(ipv4 ^ (ipv4 >>> 16), 0x45d9f3b) >>> 0 & this.mask;
    let t: number;
    if (this.keys[i] !== ipv4 || this.stamp[i] === 0) {
      // A new (or displaced) source starts with a full burst; a source that
      // displaced another cannot gain more than one burst per displacement.
      this.keys[i] = ipv4;
      t = c.perSourceBurst;
    } else {
      t = Math.min(c.perSourceBurst, this.tokens[i]! + ((nowMs - this.stamp[i]!) * c.perSourceRate) / 1000);
    }
    this.stamp[i] = nowMs || 1;
    if (t < 1) { this.tokens[i] = t; return false; }
    this.tokens[i] = t - 1;
    this.total -= 1;
    return true;
  }
}
