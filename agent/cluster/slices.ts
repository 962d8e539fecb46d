// The agent's side of /112 slices: the SixBed4Slice objects bound to this
// node and this prefix are what should be delivered; each pass brings the
// node's veths and routes to that (agent/slices does the work) and reports
// per slice in its status, with the agent's own field manager. Passes run one
// at a time, on slice changes and on a timer (pods start after their slice is
// allocated, and a pod's namespace appears only when it runs).
import type { Logger } from '../log.js';
import { parsePrefix } from '../protocol/ip.js';
import { SliceDeliverer, type NeighbourProxy } from '../slices/deliver.js';
import { defaultLocator } from '../slices/podns.js';
import { reconcileSlices, type DesiredSlice, type SliceStatus } from '../slices/reconcile.js';
import { agentFieldManager, API_VERSION, SLICE_KIND, SLICES_PATH, type SixBed4Slice } from '../../kube/api.js';
import type { Kube } from '../../kube/client.js';
import { Informer } from '../../kube/informer.js';

export interface SliceAgentOptions { prefixName: string; node: string; log: Logger; intervalMs?: number; }

export class SliceAgent {
  private readonly slices = new Map<string, SixBed4Slice>();
  private readonly informer: Informer<SixBed4Slice>;
  private deliverer: SliceDeliverer | null = null;
  private node64: string | null = null;
  private chain = Promise.resolve();
  private queued = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly reported = new Map<string, string>();

  constructor(private readonly kube: Kube, private readonly o: SliceAgentOptions) {
    this.informer = new Informer<SixBed4Slice>(kube, SLICES_PATH, {
      name: 'sixbed4slices', log: o.log, fieldSelector: `spec.node=${o.node}`,
      onChange: (type, s) => {
        if (s.spec?.node !== o.node || s.spec?.prefix !== o.prefixName) return;
        if (type === 'delete' || s.metadata.deletionTimestamp) this.slices.delete(s.metadata.name!);
        else this.slices.set(s.metadata.name!, s);
        this.kick();
      },
    });
  }

  /** Starts delivering into this node's /64 (again after a config change), with the router's neighbour proxy if any. */
  start(node64: string, proxy?: NeighbourProxy): void {
    this.node64 = node64;
    this.deliverer ??= new SliceDeliverer({ log: this.o.log });
    this.deliverer.setProxy(proxy);
    if (!this.timer) {
      void this.informer.start().catch((err: Error) => this.o.log.warn(`watching slices: ${err.message} (retrying)`));
      this.timer = setInterval(() => this.kick(), this.o.intervalMs ?? 5000);
    }
    this.kick();
  }

  /** Releases every slice of this node (the prefix is going away), then stops. */
  async releaseAll(): Promise<void> {
    await this.stop();
    if (this.deliverer && this.node64) await this.pass([]);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.informer.stop();
    await this.chain;
  }

  /** At most one pass runs and one waits: a burst of changes costs two passes, not one each. */
  private kick(): void {
    if (this.queued) return;
    this.queued = true;
    this.chain = this.chain.then(() => { this.queued = false; return this.pass([...this.slices.values()].map(desired)); })
      .catch((err: Error) => { this.o.log.error(`slices: ${err.message}`); });
  }

  private async pass(want: DesiredSlice[]): Promise<void> {
    if (!this.deliverer || !this.node64) return;
    const { statuses } = await reconcileSlices(want, {
      deliverer: this.deliverer, locator: defaultLocator(), log: this.o.log, prefix: parsePrefix(this.node64),
    });
    for (const st of statuses) await this.report(st);
  }

  /** Writes a slice's status when it changed (a pass repeats every few seconds). */
  private async report(st: SliceStatus): Promise<void> {
    const obj = [...this.slices.values()].find((s) => s.spec.pod.uid === st.podUid || s.spec.slice === st.slice);
    if (!obj || st.state === 'released') return;
    const status = {
      delivered: st.state === 'delivered', state: st.state,
      // The CRD caps the message at 1024 characters.
      ...(st.hostIf ? { hostInterface: st.hostIf } : {}), message: (st.reason ?? st.outcome ?? st.state).slice(0, 1024),
    };
    const key = JSON.stringify(status);
    if (this.reported.get(obj.metadata.name!) === key) return;
    try {
      await this.kube.apply(`${SLICES_PATH}/${encodeURIComponent(obj.metadata.name!)}/status`, {
        apiVersion: API_VERSION, kind: SLICE_KIND, metadata: { name: obj.metadata.name },
        status: { ...status, lastUpdate: new Date().toISOString() },
      }, agentFieldManager(this.o.node), { force: true });
      this.reported.set(obj.metadata.name!, key);
    } catch (err) {
      this.o.log.warn(`cannot report slice ${obj.metadata.name}: ${(err as Error).message}`);
    }
  }
}

function desired(s: SixBed4Slice): DesiredSlice {
  return { slice: s.spec.slice, podUid: s.spec.pod.uid, podName: s.spec.pod.name, namespace: s.spec.pod.namespace };
}
