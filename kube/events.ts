// Kubernetes Events about SixBed4Prefixes, Namespaces and Pods (what
// `kubectl describe` shows). The API server accepts core/v1 Events about
// cluster-scoped objects only in the `default` namespace (as client-go's
// recorder writes them), so events about prefixes and namespaces go there
// (a Role in `default`); events about a pod go to the pod's namespace (the
// slice allocator's ClusterRole allows that). A repeat of the same event
// within the process's memory bumps count and lastTimestamp instead of
// creating a new object, like client-go's correlator.
import type { Logger } from '../lib/log.js';
import type { KubeObject } from './api.js';
import { isNotFound, paths, type Kube } from './client.js';

export type EventType = 'Normal' | 'Warning';

export interface Recorder {
  event(obj: KubeObject, type: EventType, reason: string, message: string): void;
}

export class EventRecorder implements Recorder {
  private readonly seen = new Map<string, { name: string; count: number }>();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly kube: Kube,
    private readonly namespace: string,
    private readonly component: string,
    private readonly instance: string,
    private readonly log: Logger,
  ) {}

  event(obj: KubeObject, type: EventType, reason: string, message: string): void {
    this.log.info(`event ${reason}: ${message}`, { object: obj.metadata.name, type });
    // sequential and never failing the caller: events are best effort
    this.chain = this.chain
      .then(() => this.write(obj, type, reason, message))
      .catch((e: Error) => {
        this.log.warn(`could not record event ${reason}: ${e.message}`);
      });
  }

  /** Resolves when every event so far was written (tests, shutdown). */
  flush(): Promise<void> {
    return this.chain;
  }

  private async write(obj: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const msg = message.slice(0, 1024);
    const ns = obj.metadata.namespace ?? this.namespace;
    const key = `${obj.metadata.uid}|${type}|${reason}|${msg}`;
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const prev = this.seen.get(key);
    if (prev) {
      try {
        await this.kube.mergePatch(paths.event(ns, prev.name), { count: prev.count + 1, lastTimestamp: now });
        prev.count++;
        return;
      } catch (e) {
        if (!isNotFound(e)) throw e;
        this.seen.delete(key);
      }
    }
    const name = `${obj.metadata.name}.${(BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor(Math.random() * 1e6))).toString(16)}`;
    await this.kube.create(paths.events(ns), {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace: ns },
      involvedObject: {
        apiVersion: obj.apiVersion,
        kind: obj.kind,
        name: obj.metadata.name,
        uid: obj.metadata.uid,
        resourceVersion: obj.metadata.resourceVersion,
        ...(obj.metadata.namespace ? { namespace: obj.metadata.namespace } : {}),
      },
      type,
      reason,
      message: msg,
      source: { component: this.component },
      reportingComponent: this.component,
      reportingInstance: this.instance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
    if (this.seen.size > 500) this.seen.delete(this.seen.keys().next().value!);
    this.seen.set(key, { name, count: 1 });
  }
}
