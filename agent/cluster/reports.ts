// The node agent's reports on the prefixes it serves, as written into the
// node's heartbeat Lease (lease.ts): a report that changes goes out at once,
// one write at a time.
import type { AgentReport } from '../../kube/api.js';
import type { NodeLease } from './lease.js';

export class NodeReports {
  /** Each prefix's report as last sent. */
  private readonly byPrefix: Record<string, AgentReport> = {};
  /** Until there is a lease, reports are only kept (its first write carries them). */
  private lease: NodeLease | undefined;
  private writing: Promise<void> = Promise.resolve();
  /** A write is queued behind the one on its way; a report that changes meanwhile goes with it. */
  private queued = false;

  /** The report of a prefix; sent when it says something new (the time it was made aside). */
  update(name: string, r: AgentReport): void {
    const prev = this.byPrefix[name];
    const { lastReport: _l, ...before } = prev ?? {};
    if (prev && JSON.stringify(before) === JSON.stringify(r)) return;
    this.byPrefix[name] = { ...r, lastReport: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') };
    this.send();
  }

  /** The prefix is no longer served: its report goes. */
  remove(name: string): void {
    delete this.byPrefix[name];
    this.send();
  }

  /** Writes every report now and from now on into the lease. */
  writeTo(lease: NodeLease): void {
    this.lease = lease;
    this.writing = lease.renew(this.byPrefix);
  }

  /** Writes the reports again (the heartbeat, or a change). */
  send(): void {
    const lease = this.lease;
    if (!lease || this.queued) return;
    this.queued = true;
    this.writing = this.writing.then(() => {
      this.queued = false;
      return lease.renew(this.byPrefix);
    });
  }

  /** Settles when the writes under way (at the time of the call) are done. */
  written(): Promise<void> {
    return this.writing;
  }
}
