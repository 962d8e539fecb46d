// Leader election with a coordination.k8s.io/v1 Lease, as client-go does it:
// a candidate takes the Lease when it is free or its holder has not renewed it
// for leaseDuration (measured on the candidate's own clock from when it last
// saw the record change, so clock skew between machines does not matter),
// every write is a compare-and-swap on resourceVersion, the leader renews
// every retryPeriod and gives up when it could not renew for renewDeadline,
// and releases the Lease on shutdown so a standby takes over at once.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../lib/log.js';
import { isConflict, isNotFound, paths, type Kube } from './client.js';

export interface LeaderElectionOptions {
  kube: Kube;
  namespace: string;
  name: string;
  identity?: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  log: Logger;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}
interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
  spec?: LeaseSpec;
}

/** RFC 3339 with microseconds, the wire form of metav1.MicroTime. */
export function microTime(d = new Date()): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export function defaultIdentity(): string {
  return `${hostname()}_${randomBytes(4).toString('hex')}`;
}

export class LeaderElector {
  readonly identity: string;
  private leader = false;
  private stopped = false;
  private observedKey = '';
  private observedAt = 0;
  private lastRenew = 0;
  private current: Lease | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly o: LeaderElectionOptions) {
    this.identity = o.identity ?? defaultIdentity();
    if (!(o.renewDeadlineMs < o.leaseDurationMs)) throw new Error('leader election: the renew deadline must be shorter than the lease duration');
    if (!(o.retryPeriodMs < o.renewDeadlineMs)) throw new Error('leader election: the retry period must be shorter than the renew deadline');
  }

  get isLeader(): boolean {
    return this.leader;
  }

  /** Waits until this candidate holds the Lease; false if stopped first. */
  async acquire(): Promise<boolean> {
    let logged = false;
    while (!this.stopped) {
      const holder = await this.tryAcquireOrRenew();
      if (holder === this.identity) {
        this.leader = true;
        this.lastRenew = Date.now();
        this.o.log.info(`became leader (Lease ${this.o.namespace}/${this.o.name})`, { identity: this.identity });
        return true;
      }
      if (!logged && holder) {
        this.o.log.info(`waiting for the Lease ${this.o.namespace}/${this.o.name}, held by ${holder}`, { identity: this.identity });
        logged = true;
      }
      await this.pause(this.o.retryPeriodMs);
    }
    return false;
  }

  /**
   * Renews until the Lease is lost (resolves 'lost') or stop() is called
   * (resolves 'stopped').
   */
  async holdUntilLost(): Promise<'lost' | 'stopped'> {
    while (!this.stopped) {
      await this.pause(this.o.retryPeriodMs);
      if (this.stopped) break;
      const holder = await this.tryAcquireOrRenew();
      if (holder === this.identity) {
        this.lastRenew = Date.now();
        continue;
      }
      if (holder !== undefined && holder !== '') {
        this.o.log.error(`lost the Lease ${this.o.namespace}/${this.o.name} to ${holder}`);
        this.leader = false;
        return 'lost';
      }
      if (Date.now() - this.lastRenew > this.o.renewDeadlineMs) {
        this.o.log.error(`could not renew the Lease ${this.o.namespace}/${this.o.name} for ${this.o.renewDeadlineMs} ms; stepping down`);
        this.leader = false;
        return 'lost';
      }
    }
    return 'stopped';
  }

  /** Stops trying; releases the Lease if held so a standby can take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    if (!this.leader) return;
    this.leader = false;
    try {
      const lease = await this.o.kube.get<Lease>(paths.lease(this.o.namespace, this.o.name));
      if (lease?.spec?.holderIdentity !== this.identity) return;
      const now = microTime();
      await this.o.kube.replace(paths.lease(this.o.namespace, this.o.name), {
        ...lease,
        spec: { leaseDurationSeconds: 1, acquireTime: now, renewTime: now, leaseTransitions: lease.spec.leaseTransitions ?? 0 },
      });
      this.o.log.info(`released the Lease ${this.o.namespace}/${this.o.name}`);
    } catch (e) {
      this.o.log.warn(`could not release the Lease: ${(e as Error).message}`);
    }
  }

  private async pause(ms: number): Promise<void> {
    const ac = new AbortController();
    this.wake = () => ac.abort();
    try {
      await sleep(ms, undefined, { signal: ac.signal });
    } catch {
      /* woken by stop() */
    } finally {
      this.wake = undefined;
    }
  }

  /** One attempt; returns the holder afterwards (this identity on success), undefined when the API failed. */
  private async tryAcquireOrRenew(): Promise<string | undefined> {
    const { kube, namespace, name } = this.o;
    const now = new Date();
    const durationS = Math.max(1, Math.round(this.o.leaseDurationMs / 1000));
    try {
      const lease = await kube.get<Lease>(paths.lease(namespace, name));
      if (!lease) {
        const created = await kube.create<Lease>(paths.leases(namespace), {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace, labels: { 'app.kubernetes.io/name': 'sixbed4', 'app.kubernetes.io/component': 'operator' } },
          spec: { holderIdentity: this.identity, leaseDurationSeconds: durationS, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        });
        this.observe(created, now);
        return this.identity;
      }
      this.observe(lease, now);
      const spec = lease.spec ?? {};
      const holder = spec.holderIdentity ?? '';
      const theirDurationMs = (spec.leaseDurationSeconds ?? durationS) * 1000;
      if (holder !== '' && holder !== this.identity && this.observedAt + theirDurationMs > now.getTime()) return holder;
      const mine = holder === this.identity;
      const updated = await kube.replace<Lease>(paths.lease(namespace, name), {
        ...lease,
        spec: {
          holderIdentity: this.identity,
          leaseDurationSeconds: durationS,
          acquireTime: mine && spec.acquireTime ? spec.acquireTime : microTime(now),
          renewTime: microTime(now),
          leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
        },
      });
      this.observe(updated, now);
      return this.identity;
    } catch (e) {
      if (isConflict(e)) {
        // someone else wrote first; find out who on the next round
        return this.current?.spec?.holderIdentity === this.identity ? undefined : this.current?.spec?.holderIdentity ?? undefined;
      }
      if (!isNotFound(e)) this.o.log.warn(`leader election: ${(e as Error).message}`);
      return undefined;
    }
  }

  private observe(lease: Lease, now: Date): void {
    this.current = lease;
    const key = `${lease.metadata.resourceVersion}|${lease.spec?.holderIdentity}|${lease.spec?.renewTime}`;
    if (key !== this.observedKey) {
      this.observedKey = key;
      this.observedAt = now.getTime();
    }
  }
}
