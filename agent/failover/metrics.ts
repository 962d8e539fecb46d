// What an operator watches of failover, in the agent's registry (alerts are written against exactly these names):
// whether this node is the active member of a /64's group or a standby that could take over now, failovers by
// why they happened, and how long traffic stopped (the old active's last renew this node saw to the first packet
// this node forwarded after taking over).
import client from 'prom-client';

/** Why this member took the /64 over. */
export type FailoverReason = 'LeaseExpired' | 'Released' | 'DataPathDown';

const TAKEOVER_BUCKETS = [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30];

export class FailoverMetrics {
  readonly active: client.Gauge<'prefix'>;
  readonly standbyReady: client.Gauge<'prefix'>;
  readonly failovers: client.Counter<'prefix' | 'reason'>;
  readonly takeover: client.Histogram<'prefix'>;

  constructor(registry: client.Registry) {
    const registers = [registry];
    this.active = new client.Gauge({
      name: 'sixbed4_failover_active',
      help: "1 on the active member of the prefix's failover group, 0 on the others",
      labelNames: ['prefix'],
      registers,
    });
    this.standbyReady = new client.Gauge({
      name: 'sixbed4_failover_standby_ready',
      help: '1 when this standby could take the prefix over now (router bound, data path up, the API answering)',
      labelNames: ['prefix'],
      registers,
    });
    this.failovers = new client.Counter({
      name: 'sixbed4_failovers_total',
      help: 'Takeovers by this node, by why the previous active member stopped (LeaseExpired, Released, DataPathDown)',
      labelNames: ['prefix', 'reason'],
      registers,
    });
    this.takeover = new client.Histogram({
      name: 'sixbed4_failover_takeover_seconds',
      help: "From the old active member's last renew this node saw to the first packet this node forwarded after taking over",
      labelNames: ['prefix'],
      buckets: TAKEOVER_BUCKETS,
      registers,
    });
  }

  /** The member is gone: its series go too. */
  forget(prefix: string): void {
    this.active.remove(prefix);
    this.standbyReady.remove(prefix);
  }
}
