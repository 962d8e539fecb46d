// One node's member of a /64's failover group. The Lease (kube/leader.ts) decides who may be active; this member:
// - as standby keeps its router bound to the floating address and its macvlan down, tries the Lease every
//   renewIntervalMs and at once when a watch shows it released, and takes over only when the Lease is free or its
//   holder's record has stood unchanged for the whole lease duration on this node's own clock;
// - as active renews every renewIntervalMs and withdraws by itself fenceAfterMs after the last renew it sent that
//   succeeded (a timer here, and the kernel's fence, fence.ts, which holds even if this process dies), before any
//   standby may take the Lease (fenceAfterMs < leaseDurationMs, counted from sending here and from receiving there);
// - gives up when its data path breaks (uplink carrier, default routes, router), releasing the Lease with the reason DataPathDown,
//   and stays out until the path is back;
// - on a planned stop withdraws first, then releases the Lease, so a standby watching it takes over at once.
// When the API server does not answer, an active member cannot renew and so withdraws at its deadline: being
// unable to tell a partition from an outage, it prefers no answer to two (docs/failover.md).
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../lib/log.js';
import type { Kube } from '../../kube/client.js';
import { paths } from '../../kube/client.js';
import { Informer } from '../../kube/informer.js';
import type { KubeObject } from '../../kube/api.js';
import { LeaderElector, RELEASE_REASON_ANNOTATION } from '../../kube/leader.js';
import type { FailoverPlan } from './config.js';
import { Announcer } from './announcer.js';
import { routesState, uplinkState, within } from './health.js';
import type { FailoverMetrics, FailoverReason } from './metrics.js';
import { formatIPv4 } from '../../lib/ip.js';

export type MemberRole = 'active' | 'standby' | 'out' | 'stopped';

export interface MemberOptions {
  kube: Kube;
  /** The agents' namespace, where the group's Lease lives. */
  namespace: string;
  node: string;
  /** The SixBed4Prefix's name (the metrics' prefix label). */
  prefixName: string;
  plan: FailoverPlan;
  metrics: FailoverMetrics;
  /** Packets this node's router forwarded so far (both paths); undefined when it does not answer. */
  forwarded: () => Promise<number | undefined>;
  /** The role changed (the prefix agent reports it). */
  onChange?: (role: MemberRole, why: string) => void;
}

/** How long after a takeover the first forwarded packet is waited for (the takeover histogram). */
const FIRST_PACKET_WAIT_MS = 60_000;
const FIRST_PACKET_POLL_MS = 20;

export class FailoverMember {
  readonly identity: string;
  private readonly elector: LeaderElector;
  private readonly announcer: Announcer;
  private readonly watch: Informer<KubeObject>;
  private roleNow: MemberRole = 'standby';
  private why = 'starting';
  private apiAnswers = false;
  private pathOk = false;
  private timer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private again = false;
  private urgent = false;
  private lastAttempt = -Infinity;
  /** When this node last saw another member's record change (monotonic), and whose. */
  private lastOther: { at: number; holder: string } | undefined;
  private deadline = 0;

  constructor(
    private readonly o: MemberOptions,
    private readonly log: Logger,
  ) {
    const f = o.plan.config;
    // node_<random>: two agents of one node (a rollout's surge) are two candidates; the node is before the '_'.
    this.identity = `${o.node}_${randomBytes(4).toString('hex')}`;
    this.elector = new LeaderElector({
      kube: o.kube,
      namespace: o.namespace,
      name: f.leaseName,
      identity: this.identity,
      log,
      leaseDurationMs: f.leaseDurationMs,
      renewDeadlineMs: f.fenceAfterMs,
      retryPeriodMs: f.renewIntervalMs,
      component: 'failover',
      // An answer later than the deadline is of no use: the member has withdrawn by then.
      requestTimeoutMs: f.fenceAfterMs,
    });
    this.announcer = new Announcer(o.plan, log);
    this.watch = new Informer<KubeObject>(o.kube, paths.leases(o.namespace), {
      name: `failover Lease ${f.leaseName}`,
      log,
      fieldSelector: `metadata.name=${f.leaseName}`,
      onChange: (type, lease) => {
        const spec = (lease as { spec?: { holderIdentity?: string } }).spec;
        // The active member goes by its own writes (a late event of an older one must not become its record).
        if (this.roleNow !== 'standby') return;
        if (type !== 'delete') {
          this.elector.seen(lease as never);
          const seen = this.elector.observed;
          if (seen.holder !== '' && seen.holder !== this.identity)
            this.lastOther = { at: seen.at, holder: seen.holder };
        }
        // Released (or deleted): a standby tries at once; renewed: it tries when this record would expire.
        if (type === 'delete' || !spec?.holderIdentity) this.kick(true);
        else this.armExpiry();
      },
    });
  }

  get role(): MemberRole {
    return this.roleNow;
  }

  /** Ready to take over now: a standby whose data path works and whose API answers. */
  get standbyReady(): boolean {
    return this.roleNow === 'standby' && this.pathOk && this.apiAnswers;
  }

  /** What the node's report says. */
  describe(): string {
    const at = `${formatIPv4(this.o.plan.ipv4)} (failover ${this.o.plan.config.leaseName})`;
    switch (this.roleNow) {
      case 'active':
        return `active member for ${at}`;
      case 'standby':
        return this.standbyReady ? `ready standby for ${at}` : `standby for ${at}, not ready: ${this.why}`;
      case 'out':
        return `not a candidate for ${at}: ${this.why}`;
      default:
        return 'stopped';
    }
  }

  /** The macvlan (down) and the fence (closed), before the router starts. */
  prepare(): Promise<void> {
    return this.announcer.prepare();
  }

  /** Joins the election (the router runs). */
  async start(): Promise<void> {
    void this.watch
      .start()
      .catch((err: Error) => this.log.warn(`watching the failover Lease: ${err.message} (retrying)`));
    this.setRole('standby', 'starting');
    this.kick(true);
    this.timer = setInterval(() => this.kick(), this.o.plan.config.renewIntervalMs);
  }

  /**
   * Planned stop: withdraw first, then release the Lease (a standby watching it takes over at once). keep: the agent
   * restarts (the macvlan and the fence stay for the next one of this node); otherwise the share is gone.
   */
  async stop(keep = false): Promise<void> {
    if (this.roleNow === 'stopped') return;
    clearInterval(this.timer);
    const wasActive = this.roleNow === 'active';
    this.roleNow = 'stopped';
    await this.ticking;
    clearTimeout(this.fenceTimer);
    clearTimeout(this.expiryTimer);
    await this.announcer.stop(keep);
    if (wasActive) this.log.info(`withdrew from ${formatIPv4(this.o.plan.ipv4)}: stopping`);
    await this.elector.release('Released');
    await this.watch.stop();
    this.o.metrics.forget(this.o.prefixName);
    this.o.onChange?.('stopped', 'stopped');
  }

  /**
   * One round now (after the one under way). A standby follows the Lease by its watch and asks the API itself only
   * when it may take over (released, or expired by its clock: `urgent`), and otherwise once per lease duration in
   * case the watch missed something; the active member renews every round.
   */
  private kick(urgent = false): void {
    if (this.roleNow === 'stopped') return;
    if (urgent) this.urgent = true;
    if (this.again) return;
    this.again = true;
    this.ticking = this.ticking
      .then(async () => {
        this.again = false;
        if (this.roleNow === 'stopped') return;
        const urgentNow = this.urgent;
        this.urgent = false;
        await this.round(urgentNow);
      })
      .catch((err: Error) => {
        this.log.error(`failover: ${err.message}`);
      });
  }

  private async round(urgent: boolean): Promise<void> {
    // Drained (the operator marks the share once another member can take over): not a candidate for the Lease. The
    // share changing restarted this member, which released the Lease if it held it; it must not take it back.
    if (this.o.plan.config.cordoned && this.roleNow !== 'active') {
      if (this.roleNow !== 'out') {
        this.log.info('cordoned (kubectl drain): standing aside, not a candidate for the Lease');
        this.setRole('out', 'cordoned (kubectl drain): stands aside');
      }
      return;
    }
    const path = await this.dataPath();
    this.pathOk = path.ok;
    if (!path.ok) {
      if (this.roleNow === 'active') {
        this.log.error(`data path down (${path.why}): withdrawing and handing the Lease over`);
        await this.withdraw('DataPathDown');
        await this.elector.release('DataPathDown');
      } else if (this.roleNow === 'standby') {
        this.log.warn(`data path down (${path.why}): not a candidate until it is back`);
      }
      this.setRole('out', path.why ?? 'data path down');
      return;
    }
    if (this.roleNow === 'out') {
      this.log.info('data path back: standing by again');
      this.setRole('standby', 'data path back');
    }
    if (
      this.roleNow === 'standby' &&
      !urgent &&
      performance.now() - this.lastAttempt < this.o.plan.config.leaseDurationMs
    ) {
      this.publish();
      return;
    }
    const before = this.elector.observed;
    const decidedAt = performance.now();
    this.lastAttempt = decidedAt;
    const a = await this.elector.attempt();
    if (this.roleNow === 'stopped') return;
    this.apiAnswers = a.holder !== undefined;
    const seen = this.elector.observed;
    if (seen.holder !== '' && seen.holder !== this.identity) this.lastOther = { at: seen.at, holder: seen.holder };
    if (a.holder === this.identity) {
      this.deadline = a.sentAt + this.o.plan.config.fenceAfterMs;
      const remaining = this.deadline - performance.now();
      if (remaining <= 0) return; // answered after our own deadline: the next round renews again
      if (this.roleNow === 'active') {
        await this.announcer.extend(remaining);
        this.armFence();
      } else {
        await this.takeOver(before, a.annotations, decidedAt, remaining);
      }
      return;
    }
    if (this.roleNow === 'standby' && a.holder) this.armExpiry();
    if (this.roleNow === 'active' && a.holder !== undefined) {
      this.log.error(`the Lease ${this.o.plan.config.leaseName} is held by ${a.holder || 'nobody'}: withdrawing`);
      await this.withdraw('lost the Lease');
      return;
    }
    if (a.holder === undefined) this.why = 'the API server does not answer';
    this.publish();
    // API failure while active: the fence timer withdraws at the deadline.
  }

  private async takeOver(
    before: { at: number; holder: string },
    annotations: Record<string, string>,
    decidedAt: number,
    remaining: number,
  ): Promise<void> {
    const t0 = performance.now();
    const prev = this.lastOther;
    const releasedWhy = annotations[RELEASE_REASON_ANNOTATION];
    const reason: FailoverReason | undefined =
      releasedWhy === 'DataPathDown'
        ? 'DataPathDown'
        : releasedWhy
          ? 'Released'
          : before.holder !== '' && before.holder !== this.identity
            ? 'LeaseExpired'
            : undefined;
    const startCount = await this.o.forwarded();
    await this.announcer.activate(remaining - (performance.now() - t0));
    this.setRole('active', 'took the Lease');
    this.armFence();
    const announced = performance.now();
    if (!reason || !prev) {
      this.log.info(
        `active for ${formatIPv4(this.o.plan.ipv4)}: took the Lease ${this.o.plan.config.leaseName} (first holder)`,
      );
      return;
    }
    this.o.metrics.failovers.inc({ prefix: this.o.prefixName, reason });
    const parts = {
      reason,
      from: prev.holder,
      detectionMs: Math.round(decidedAt - prev.at),
      electionMs: Math.round(t0 - decidedAt),
      announceMs: Math.round(announced - t0),
    };
    this.log.info(`took over ${formatIPv4(this.o.plan.ipv4)} from ${prev.holder} (${reason})`, parts);
    void this.firstPacket(startCount ?? 0, prev.at, announced, parts);
  }

  /** The takeover histogram: from the old active's last renew seen to the first packet forwarded here. */
  private async firstPacket(
    startCount: number,
    from: number,
    announced: number,
    parts: Record<string, unknown>,
  ): Promise<void> {
    const until = performance.now() + FIRST_PACKET_WAIT_MS;
    while (this.roleNow === 'active' && performance.now() < until) {
      const n = await this.o.forwarded();
      if (n !== undefined && n > startCount) {
        const at = performance.now();
        this.o.metrics.takeover.observe({ prefix: this.o.prefixName }, (at - from) / 1000);
        this.log.info(
          `first packet forwarded after the takeover: ${Math.round(at - from)} ms after the old holder's last renew seen`,
          { ...parts, firstPacketMs: Math.round(at - announced), gapMs: Math.round(at - from) },
        );
        return;
      }
      await new Promise((r) => setTimeout(r, FIRST_PACKET_POLL_MS));
    }
  }

  /** Try the moment the holder's record, as last seen, expires by this node's clock. */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    const seen = this.elector.observed;
    if (seen.holder === '' || seen.holder === this.identity) return;
    const wait = Math.max(0, seen.at + this.o.plan.config.leaseDurationMs - performance.now() + 1);
    this.expiryTimer = setTimeout(() => this.kick(true), wait);
  }

  /** Withdraws at the deadline unless a renew moves it on first. */
  private armFence(): void {
    clearTimeout(this.fenceTimer);
    this.fenceTimer = setTimeout(
      () => {
        if (this.roleNow !== 'active') return;
        // Timers may fire a little early on the monotonic clock: then again at the deadline itself.
        if (performance.now() < this.deadline) {
          this.armFence();
          return;
        }
        this.log.error(
          `no renew of the Lease ${this.o.plan.config.leaseName} for ${this.o.plan.config.fenceAfterMs} ms: withdrawing at the deadline`,
        );
        // Now, not after the round under way (its request may hang until its own timeout).
        void this.withdraw('could not renew the Lease by the deadline');
      },
      Math.max(0, this.deadline - performance.now()),
    );
  }

  private async withdraw(why: string): Promise<void> {
    if (this.roleNow !== 'active') return;
    clearTimeout(this.fenceTimer);
    await this.announcer.withdraw();
    this.log.info(`withdrew from ${formatIPv4(this.o.plan.ipv4)}: ${why}`);
    this.setRole('standby', why);
  }

  private async dataPath(): Promise<{ ok: boolean; why?: string }> {
    const up = await uplinkState(this.o.plan.uplink);
    if (!up.ok) return up;
    const routes = await routesState();
    if (!routes.ok) return routes;
    const n = await within(this.o.forwarded(), 1000);
    if (n === undefined) return { ok: false, why: 'the router does not answer' };
    return { ok: true };
  }

  private setRole(role: MemberRole, why: string): void {
    const changed = role !== this.roleNow || why !== this.why;
    this.roleNow = role;
    this.why = why;
    this.publish();
    if (changed) this.o.onChange?.(role, why);
  }

  private publish(): void {
    const prefix = this.o.prefixName;
    this.o.metrics.active.set({ prefix }, this.roleNow === 'active' ? 1 : 0);
    this.o.metrics.standbyReady.set({ prefix }, this.standbyReady ? 1 : 0);
  }
}
