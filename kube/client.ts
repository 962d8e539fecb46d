// A small JSON client for the Kubernetes API on top of @kubernetes/client-node's
// KubeConfig (which handles kubeconfig files, in-cluster service-account tokens,
// client certificates and CAs). The operator works on plain JSON objects
// rather than the generated model classes: it compares what it rendered with
// what the server holds field by field, and sends server-side apply, JSON
// merge and JSON patches, so it wants the exact wire form in both directions.
import https from 'node:https';
import http from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { PatchStrategy } from '@kubernetes/client-node';
import type { KubeObject } from './api.js';

export class KubeError extends Error {
  override name = 'KubeError';
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

export interface KubeList<T> {
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

export type JsonPatchOp = { op: 'add' | 'remove' | 'replace' | 'test'; path: string; value?: unknown };

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
}

/** Called after every request that changes something (for metrics). */
export type WriteHook = (verb: string, path: string, status: number) => void;

export class Kube {
  private readonly server: string;
  onWrite?: WriteHook;
  /** Keep-alive agents by TLS material (a rotated client certificate gets a new one). */
  private agents = new Map<string, https.Agent>();

  constructor(
    readonly kc: KubeConfig,
    readonly userAgent = 'sixbed4-operator',
  ) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    this.server = cluster.server.replace(/\/+$/, '');
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const reqOpts: https.RequestOptions = {
      method,
      headers: { Accept: 'application/json', 'User-Agent': this.userAgent },
    };
    await this.kc.applyToHTTPSOptions(reqOpts);
    if (url.protocol === 'https:') reqOpts.agent = this.keepAlive(reqOpts) ?? reqOpts.agent;
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    if (body !== undefined) {
      reqOpts.headers = {
        ...reqOpts.headers,
        'Content-Type': opts.contentType ?? 'application/json',
        'Content-Length': Buffer.byteLength(body),
      };
    }
    const mod = url.protocol === 'http:' ? http : https;
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = mod.request(url, { ...reqOpts, timeout: opts.timeoutMs ?? 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', (e) => reject(new KubeError(0, 'ConnectionError', `${method} ${path}: ${e.message}`)));
      req.end(body);
    });
    if (method !== 'GET' && this.onWrite && !opts.query?.dryRun) this.onWrite(method, path, status);
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (status < 200 || status > 299) {
      const st = parsed as { reason?: string; message?: string } | undefined;
      throw new KubeError(
        status,
        st?.reason ?? String(status),
        `${method} ${path}: ${st?.message ?? (text.slice(0, 300) || `HTTP ${status}`)}`,
        parsed,
      );
    }
    return parsed as T;
  }

  /**
   * KubeConfig gives every request an agent of its own, so each one is a new TCP connection and TLS handshake: at
   * the failover Leases' rate (a renewal every 500 ms per group) that was most of the API server's CPU and made
   * renewals queue for a second on a loaded machine (bench/failover-lease.ts). Requests with the same TLS material
   * share one keep-alive agent instead (idle sockets do not keep the process alive). Not through a proxy, which
   * KubeConfig's own agent handles.
   */
  private keepAlive(o: https.RequestOptions): https.Agent | undefined {
    if (this.kc.getCurrentCluster()?.proxyUrl) return undefined;
    const tls = {
      ca: o.ca,
      cert: o.cert,
      key: o.key,
      pfx: o.pfx,
      passphrase: o.passphrase,
      rejectUnauthorized: o.rejectUnauthorized,
      servername: o.servername,
    };
    const key = JSON.stringify(tls, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('base64') : v));
    let agent = this.agents.get(key);
    if (!agent) {
      for (const old of this.agents.values()) old.destroy();
      this.agents = new Map([
        [key, (agent = new https.Agent({ ...tls, keepAlive: true, keepAliveMsecs: 15_000 } as https.AgentOptions))],
      ]);
    }
    return agent;
  }

  /** GET; undefined on 404. */
  async get<T = KubeObject>(path: string): Promise<T | undefined> {
    try {
      return await this.request<T>('GET', path);
    } catch (e) {
      if (e instanceof KubeError && e.status === 404) return undefined;
      throw e;
    }
  }

  /** Lists every page. */
  async list<T = KubeObject>(path: string, query: Record<string, string | undefined> = {}): Promise<KubeList<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv: string | undefined;
    do {
      const page = await this.request<KubeList<T>>('GET', path, {
        query: { ...query, limit: 500, ...(cont ? { continue: cont } : {}) },
      });
      items.push(...(page.items ?? []));
      cont = page.metadata?.continue || undefined;
      rv = page.metadata?.resourceVersion;
    } while (cont);
    return { metadata: { ...(rv ? { resourceVersion: rv } : {}) }, items };
  }

  create<T = KubeObject>(collectionPath: string, obj: unknown, query: RequestOptions['query'] = {}): Promise<T> {
    return this.request<T>('POST', collectionPath, { body: obj, query });
  }

  /** Server-side apply (force: take over fields others changed). */
  apply<T = KubeObject>(
    path: string,
    obj: unknown,
    fieldManager: string,
    opts: { force?: boolean; dryRun?: boolean } = {},
  ): Promise<T> {
    return this.request<T>('PATCH', path, {
      body: obj,
      contentType: PatchStrategy.ServerSideApply,
      query: { fieldManager, force: opts.force ?? true, ...(opts.dryRun ? { dryRun: 'All' } : {}) },
    });
  }

  mergePatch<T = KubeObject>(path: string, patch: unknown, fieldManager?: string): Promise<T> {
    return this.request<T>('PATCH', path, {
      body: patch,
      contentType: PatchStrategy.MergePatch,
      query: { fieldManager },
    });
  }

  jsonPatch<T = KubeObject>(path: string, ops: JsonPatchOp[], fieldManager?: string): Promise<T> {
    return this.request<T>('PATCH', path, { body: ops, contentType: PatchStrategy.JsonPatch, query: { fieldManager } });
  }

  replace<T = KubeObject>(path: string, obj: unknown, fieldManager?: string): Promise<T> {
    return this.request<T>('PUT', path, { body: obj, query: { fieldManager } });
  }

  async delete(path: string, query: RequestOptions['query'] = {}): Promise<boolean> {
    try {
      await this.request('DELETE', path, { query });
      return true;
    } catch (e) {
      if (e instanceof KubeError && e.status === 404) return false;
      throw e;
    }
  }
}

/** REST paths of the kinds the operator touches. */
export const paths = {
  prefixes: '/apis/sixbed4.io/v1alpha1/sixbed4prefixes',
  prefix: (name: string) => `/apis/sixbed4.io/v1alpha1/sixbed4prefixes/${encodeURIComponent(name)}`,
  prefixStatus: (name: string) => `/apis/sixbed4.io/v1alpha1/sixbed4prefixes/${encodeURIComponent(name)}/status`,
  nodes: '/api/v1/nodes',
  node: (name: string) => `/api/v1/nodes/${encodeURIComponent(name)}`,
  daemonSets: (ns: string) => `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/daemonsets`,
  daemonSet: (ns: string, name: string) =>
    `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/daemonsets/${encodeURIComponent(name)}`,
  configMaps: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/configmaps`,
  configMap: (ns: string, name: string) =>
    `/api/v1/namespaces/${encodeURIComponent(ns)}/configmaps/${encodeURIComponent(name)}`,
  events: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/events`,
  event: (ns: string, name: string) =>
    `/api/v1/namespaces/${encodeURIComponent(ns)}/events/${encodeURIComponent(name)}`,
  namespaces: '/api/v1/namespaces',
  namespace: (name: string) => `/api/v1/namespaces/${encodeURIComponent(name)}`,
  allPods: '/api/v1/pods',
  pods: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`,
  pod: (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`,
  slices: '/apis/sixbed4.io/v1alpha1/sixbed4slices',
  slice: (name: string) => `/apis/sixbed4.io/v1alpha1/sixbed4slices/${encodeURIComponent(name)}`,
  sliceStatus: (name: string) => `/apis/sixbed4.io/v1alpha1/sixbed4slices/${encodeURIComponent(name)}/status`,
  ranges: '/apis/sixbed4.io/v1alpha1/sixbed4ranges',
  range: (name: string) => `/apis/sixbed4.io/v1alpha1/sixbed4ranges/${encodeURIComponent(name)}`,
  leases: (ns: string) => `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(ns)}/leases`,
  lease: (ns: string, name: string) =>
    `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(ns)}/leases/${encodeURIComponent(name)}`,
};

export function isConflict(e: unknown): boolean {
  return e instanceof KubeError && e.status === 409;
}
export function isNotFound(e: unknown): boolean {
  return e instanceof KubeError && e.status === 404;
}
/** A create that lost: an object of that name exists (someone else holds what the name claims). */
export function isAlreadyExists(e: unknown): boolean {
  return e instanceof KubeError && e.status === 409 && e.reason === 'AlreadyExists';
}
