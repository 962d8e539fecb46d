// Leader election with a coordination.k8s.io/v1 Lease, as client-go does it:
// a candidate takes the Lease when it is free or its holder has not renewed it
// for leaseDuration (measured on the candidate's own clock from when it last
// saw the record change, so clock skew between machines does not matter),
// every write is a compare-and-swap on resourceVersion, the leader renews
// every retryPeriod and gives up when it could not renew for renewDeadline,
// and releases the Lease on shutdown so a standby takes over at once.
//
// The loops (acquire, holdUntilLost) serve the operator; a failover member (agent/failover/) drives single
// attempts itself (attempt(), release()), because it must fence by its own deadline, measured from when a renew was
// sent, and must know when it last saw another holder's record change (the start of a takeover).
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
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
  /** app.kubernetes.io/component on a Lease this candidate creates (default operator). */
  component?: string;
  /** Each request's timeout (default the client's, 30 s). */
  requestTimeoutMs?: number;
}

/** What one attempt found (times on the monotonic clock, performance.now()). */
export interface Attempt {
  /** The holder afterwards: this identity when the attempt won or renewed; '' when free; undefined when the API failed. */
  holder: string | undefined;
  /** When the request that won or renewed was sent: the holder fences from here. */
  sentAt: number;
  /** Annotations of the Lease as read (a releasing holder says why there). */
  annotations: Record<string, string>;
}

/** On a Lease a holder released: why (e.g. Released, DataPathDown), for the member that takes it next. */
export const RELEASE_REASON_ANNOTATION = 'sixbed4.io/release-reason';

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
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
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
  /** When this candidate first saw the current record (monotonic, at the response that carried it). */
  private observedAt = 0;
  /** The holder of the record as last seen ('' free). */
  private observedHolder = '';
  private lastRenew = 0;
  private current: Lease | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly o: LeaderElectionOptions) {
    this.identity = o.identity ?? defaultIdentity();
    if (!(o.renewDeadlineMs < o.leaseDurationMs))
      throw new Error('leader election: the renew deadline must be shorter than the lease duration');
    if (!(o.retryPeriodMs < o.renewDeadlineMs))
      throw new Error('leader election: the retry period must be shorter than the renew deadline');
  }

  get isLeader(): boolean {
    return this.leader;
  }

  /** Waits until this candidate holds the Lease; false if stopped first. */
  async acquire(): Promise<boolean> {
    let logged = false;
    while (!this.stopped) {
      const { holder, sentAt } = await this.attempt();
      if (holder === this.identity) {
        this.leader = true;
        this.lastRenew = sentAt;
        this.o.log.info(`became leader (Lease ${this.o.namespace}/${this.o.name})`, { identity: this.identity });
        return true;
      }
      if (!logged && holder) {
        this.o.log.info(`waiting for the Lease ${this.o.namespace}/${this.o.name}, held by ${holder}`, {
          identity: this.identity,
        });
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
      const { holder, sentAt } = await this.attempt();
      if (holder === this.identity) {
        this.lastRenew = sentAt;
        continue;
      }
      if (holder !== undefined && holder !== '') {
        this.o.log.error(`lost the Lease ${this.o.namespace}/${this.o.name} to ${holder}`);
        this.leader = false;
        return 'lost';
      }
      if (performance.now() - this.lastRenew > this.o.renewDeadlineMs) {
        this.o.log.error(
          `could not renew the Lease ${this.o.namespace}/${this.o.name} for ${this.o.renewDeadlineMs} ms; stepping down`,
        );
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
    await this.release();
  }

  /**
   * Clears the holder if it is this candidate, so that a candidate watching the Lease takes it at once; reason goes
   * into an annotation for it. True when released (or not held); false when the API did not answer.
   */
  async release(reason = 'Released'): Promise<boolean> {
    try {
      const lease = await this.o.kube.get<Lease>(paths.lease(this.o.namespace, this.o.name));
      if (lease?.spec?.holderIdentity !== this.identity) return true;
      const now = microTime();
      await this.o.kube.replace(paths.lease(this.o.namespace, this.o.name), {
        ...lease,
        metadata: {
          ...lease.metadata,
          annotations: { ...lease.metadata.annotations, [RELEASE_REASON_ANNOTATION]: reason },
        },
        spec: {
          leaseDurationSeconds: 1,
          acquireTime: now,
          renewTime: now,
          leaseTransitions: lease.spec.leaseTransitions ?? 0,
        },
      });
      this.o.log.info(`released the Lease ${this.o.namespace}/${this.o.name}`);
      return true;
    } catch (e) {
      this.o.log.warn(`could not release the Lease: ${(e as Error).message}`);
      return false;
    }
  }

  /** When this candidate first saw the record it last read (monotonic), and whose it was ('' free). */
  get observed(): { at: number; holder: string } {
    return { at: this.observedAt, holder: this.observedHolder };
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

  /**
   * One attempt to take or renew the Lease. Another holder's record counts as expired only when this candidate has
   * seen it unchanged for its whole duration on its own clock, counted from the response that first carried it
   * (later than the holder sent its renew, so the holder's own deadline, counted from sending, always comes first).
   */
  async attempt(): Promise<Attempt> {
    const { kube, namespace, name } = this.o;
    const sentAt = performance.now();
    const now = new Date();
    const durationS = Math.max(1, Math.round(this.o.leaseDurationMs / 1000));
    let annotations: Record<string, string> = {};
    try {
      // While this candidate holds it, a renew is one PUT on the record it wrote last (a conflict: read it again).
      const held =
        this.current?.spec?.holderIdentity === this.identity && this.current.metadata.resourceVersion
          ? this.current
          : undefined;
      const lease = held ?? (await this.read());
      if (!lease) {
        const created = await kube.request<Lease>('POST', paths.leases(namespace), {
          ...this.timeout(),
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: {
              name,
              namespace,
              labels: {
                'app.kubernetes.io/name': 'sixbed4',
                'app.kubernetes.io/component': this.o.component ?? 'operator',
              },
            },
            spec: {
              holderIdentity: this.identity,
              leaseDurationSeconds: durationS,
              acquireTime: microTime(now),
              renewTime: microTime(now),
              leaseTransitions: 0,
            },
          },
        });
        this.observe(created);
        return { holder: this.identity, sentAt, annotations };
      }
      this.observe(lease);
      annotations = lease.metadata.annotations ?? {};
      const spec = lease.spec ?? {};
      const holder = spec.holderIdentity ?? '';
      const theirDurationMs = (spec.leaseDurationSeconds ?? durationS) * 1000;
      if (holder !== '' && holder !== this.identity && this.observedAt + theirDurationMs > performance.now())
        return { holder, sentAt, annotations };
      const mine = holder === this.identity;
      const { [RELEASE_REASON_ANNOTATION]: _gone, ...keep } = annotations;
      const updated = await kube.request<Lease>('PUT', paths.lease(namespace, name), {
        ...this.timeout(),
        body: {
          ...lease,
          metadata: { ...lease.metadata, annotations: keep },
          spec: {
            holderIdentity: this.identity,
            leaseDurationSeconds: durationS,
            acquireTime: mine && spec.acquireTime ? spec.acquireTime : microTime(now),
            renewTime: microTime(now),
            leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
          },
        },
      });
      this.observe(updated);
      return { holder: this.identity, sentAt, annotations };
    } catch (e) {
      if (isConflict(e)) {
        // someone else wrote first; find out who on the next round
        const h = this.current?.spec?.holderIdentity;
        this.current = undefined;
        return { holder: h === this.identity ? undefined : (h ?? undefined), sentAt, annotations };
      }
      if (!isNotFound(e)) this.o.log.warn(`leader election: ${(e as Error).message}`);
      return { holder: undefined, sentAt, annotations };
    }
  }

  private timeout(): { timeoutMs?: number } {
    return this.o.requestTimeoutMs ? { timeoutMs: this.o.requestTimeoutMs } : {};
  }

  private async read(): Promise<Lease | undefined> {
    try {
      return await this.o.kube.request<Lease>('GET', paths.lease(this.o.namespace, this.o.name), this.timeout());
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  private observe(lease: Lease): void {
    this.current = lease;
    const key = `${lease.metadata.resourceVersion}|${lease.spec?.holderIdentity}|${lease.spec?.renewTime}`;
    if (key !== this.observedKey) {
      this.observedKey = key;
      this.observedAt = performance.now();
      this.observedHolder = lease.spec?.holderIdentity ?? '';
    }
  }

  /** A record seen elsewhere (a watch): counts as an observation, as if read here. */
  seen(lease: Lease): void {
    this.observe(lease);
  }
}
