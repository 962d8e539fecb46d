// A watched cache of one kind of object: @kubernetes/client-node's ListWatch
// (list, then watch from that resourceVersion, re-list on 410 Gone), plus what
// it leaves to its user: restarting after errors with a backoff, and telling
// when the first list has arrived (the controller only acts on a full cache).
import { ListWatch, Watch, type KubernetesObject } from '@kubernetes/client-node';
import type { KubeObject } from './api.js';
import type { Kube, KubeList } from './client.js';
import type { Logger } from '../lib/log.js';

export type ChangeType = 'add' | 'update' | 'delete';

export interface InformerOptions<T extends KubeObject> {
  /** for logs, e.g. 'nodes' */
  name: string;
  labelSelector?: string;
  /** e.g. spec.node=<node> for an agent's SixBed4Slices (a CRD's selectable field) */
  fieldSelector?: string;
  log: Logger;
  onChange: (type: ChangeType, obj: T) => void;
}

/** What a controller needs of an informer (tests give controllers an in-memory one: test/helpers/memkube.ts). */
export interface Watched<T extends KubeObject> {
  readonly synced: Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  get(name: string, namespace?: string): T | undefined;
  list(namespace?: string): readonly T[];
}

/** Makes the informers of a controller; the default watches the API server through kube. */
export type InformerFactory = <T extends KubeObject>(kube: Kube, path: string, opts: InformerOptions<T>) => Watched<T>;
export const apiInformers: InformerFactory = (kube, path, opts) => new Informer(kube, path, opts);

export class Informer<T extends KubeObject> implements Watched<T> {
  // client-node's types model metadata with its generated classes; the objects
  // are plain JSON as the server sent them, which is what the operator wants
  private readonly lw: ListWatch<KubernetesObject>;
  private stopped = false;
  private listed = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = 500;
  private syncedResolve!: () => void;
  /** resolves once the first list has been stored */
  readonly synced: Promise<void>;

  constructor(
    kube: Kube,
    path: string,
    private readonly opts: InformerOptions<T>,
  ) {
    this.synced = new Promise((r) => (this.syncedResolve = r));
    const listFn = async (): Promise<KubeList<T> & { apiVersion: string; kind: string }> => {
      const l = await kube.list<T>(path, {
        ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
        ...(opts.fieldSelector ? { fieldSelector: opts.fieldSelector } : {}),
      });
      return { apiVersion: 'v1', kind: 'List', ...l };
    };
    this.lw = new ListWatch<KubernetesObject>(
      path,
      new Watch(kube.kc),
      listFn as never,
      false,
      opts.labelSelector,
      opts.fieldSelector,
    );
    this.lw.on('add', (o) => opts.onChange('add', o as unknown as T));
    this.lw.on('update', (o) => opts.onChange('update', o as unknown as T));
    this.lw.on('delete', (o) => opts.onChange('delete', o as unknown as T));
    this.lw.on('error', (err: unknown) => this.onError(err));
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.lw.start();
    this.markSyncedIfListed();
  }

  private markSyncedIfListed(): void {
    // ListWatch stores a resourceVersion only after a successful list
    if (!this.listed && this.lw.latestResourceVersion() !== '') {
      this.listed = true;
      this.backoffMs = 500;
      this.syncedResolve();
    }
  }

  private onError(err: unknown): void {
    if (this.stopped) return;
    const msg = err instanceof Error ? err.message : JSON.stringify(err);
    this.opts.log.warn(`watch of ${this.opts.name} failed; retrying in ${this.backoffMs} ms`, { error: msg });
    if (this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopped) return;
      this.lw.start().then(
        () => this.markSyncedIfListed(),
        (e: unknown) => this.onError(e),
      );
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
  }

  /** Stops watching. Whoever still awaits `synced` is released too (and must check whether it was stopped). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.syncedResolve();
    await this.lw.stop();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.lw.get(name, namespace) as unknown as T | undefined;
  }

  list(namespace?: string): readonly T[] {
    return this.lw.list(namespace) as unknown as readonly T[];
  }
}
