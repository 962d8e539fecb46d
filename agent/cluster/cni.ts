// CNI requests on the node: the node agent's answer to the sixbed4-cni shim (agent/cni). An ADD goes to the
// prefix whose slices the pod's namespace takes (slices.ts claims and delivers); DEL, CHECK and GC work on the
// node's slice links by what their alias records (the sandbox's container ID), whatever prefix they belong to, so
// they work even while this node serves no prefix at all. STATUS always succeeds: a chained plugin that failed it
// would stop every pod on the node, and pods that ask are refused one by one (ADD) instead.
import { existsSync } from 'node:fs';
import type { Logger } from '../../lib/log.js';
import { SliceDeliverer } from '../slices/deliver.js';
import { sameContainer } from '../slices/slice.js';
import {
  addResult,
  asks,
  chained,
  CNI,
  CniError,
  passResult,
  podIdentity,
  podInterface,
  SUPPORTED_VERSIONS,
  type CniRequest,
  type CniResult,
} from '../cni/protocol.js';
import type { CniHandler } from '../cni/server.js';
import { paths, type Kube } from '../../kube/client.js';
import { DEFAULT_POD_ANNOTATION, type KubeObject } from '../../kube/api.js';
import type { CheckedSlices } from '../../kube/slice-model.js';
import type { SliceAgent } from './slices.js';
import { ALLOW_INBOUND_ANNOTATION, parseAllowInbound, type InboundEntry, type PortRule } from '../slices/inbound.js';
import { applyInbound, listInbound } from '../slices/inbound-apply.js';
import { hostIfName } from '../slices/slice.js';
import { POD_ANNOTATIONS_CAPABILITY } from '../cni/protocol.js';
import type { Recorder } from '../../kube/events.js';

/** A prefix this node serves, with its spec.slices. */
export interface CniTarget {
  name: string;
  slices: CheckedSlices;
  agent: SliceAgent;
}

export interface NodeCniOptions {
  node: string;
  log: Logger;
  /** Events on pods (a bad sixbed4.io/allow-inbound annotation). */
  recorder?: Recorder;
  /** The prefixes this node serves now. */
  targets: () => CniTarget[];
}

export class NodeCni implements CniHandler {
  /** For DEL, CHECK and GC: they read and remove links, so they need no prefix (and no ND proxy: passes tidy that). */
  private readonly links: SliceDeliverer;
  private chain: Promise<unknown> = Promise.resolve();
  /** Changes of the node's inbound table, one at a time (each reads the live table and replaces it). */
  private inboundChain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly kube: Kube,
    private readonly o: NodeCniOptions,
  ) {
    this.links = new SliceDeliverer({ log: o.log });
  }

  async handle(req: CniRequest): Promise<CniResult | null> {
    switch (req.command) {
      case 'VERSION':
        return { cniVersion: req.config.cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
      case 'STATUS':
        return null;
      case 'ADD':
        return this.add(req);
      case 'DEL':
        await this.serial(() => this.del(req));
        return null;
      case 'CHECK':
        await this.serial(() => this.check(req));
        return null;
      case 'GC':
        await this.serial(() => this.gc(req));
        return null;
    }
  }

  private async add(req: CniRequest): Promise<CniResult> {
    const key = typeof req.config.podAnnotation === 'string' ? req.config.podAnnotation : DEFAULT_POD_ANNOTATION;
    let asked = asks(req, key);
    if (asked === 'no') return passResult(req);
    const id = podIdentity(req);
    if (!id) {
      if (chained(req)) return passResult(req);
      throw new CniError(
        CNI.invalidEnv,
        'CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME: sixbed4 gives slices to Kubernetes pods',
      );
    }
    const who = `${id.namespace}/${id.name}`;
    const ns = await this.kube.get<KubeObject>(paths.namespace(id.namespace));
    if (!ns?.metadata.uid) throw new CniError(CNI.tryAgainLater, `namespace ${id.namespace} not found`);
    const serving = this.o.targets().filter((t) => t.slices.enabled);
    const targets = serving.filter((t) => ns.metadata.labels?.[t.slices.namespaceLabel] === t.name);
    let uid = id.uid;
    const passed = req.config.runtimeConfig?.[POD_ANNOTATIONS_CAPABILITY];
    let annotations = typeof passed === 'object' && passed !== null ? (passed as Record<string, string>) : undefined;
    if (!annotations || !uid) {
      // The runtime passed no annotations (or no UID): the Pod object says.
      const pod = await this.kube.get<KubeObject>(paths.pod(id.namespace, id.name));
      if (!pod?.metadata.uid) throw new CniError(CNI.tryAgainLater, `pod ${who} not found`);
      uid = pod.metadata.uid;
      annotations = pod.metadata.annotations ?? {};
      if (asked === 'unknown') {
        asked = serving.some((t) => annotations![t.slices.podAnnotation] === 'true') ? 'yes' : 'no';
        if (asked === 'no') return passResult(req);
      }
    }
    const t = targets[0];
    if (!serving.length) {
      throw new CniError(
        CNI.tryAgainLater,
        `pod ${who} asks for a /112 slice, but node ${this.o.node} serves no SixBed4Prefix with slices enabled (yet: an agent that just started loads its prefixes first)`,
      );
    }
    if (!t) {
      const hint = `label it ${serving[0]!.slices.namespaceLabel}=${serving[0]!.name}`;
      throw new CniError(
        CNI.notOptedIn,
        `pod ${who} asks for a /112 slice, but namespace ${id.namespace} takes slices from no SixBed4Prefix that node ${this.o.node} serves (${hint})`,
      );
    }
    if (!t.agent.ready)
      throw new CniError(
        CNI.tryAgainLater,
        `node ${this.o.node} does not serve ${t.name} yet (its router is starting)`,
      );
    const t0 = Date.now();
    // The inbound filter: the pod's opened ports, in place before anything routes to the slice.
    const { rules, problems } = parseAllowInbound(annotations[ALLOW_INBOUND_ANNOTATION] ?? '');
    if (problems.length) {
      this.o.recorder?.event(
        { apiVersion: 'v1', kind: 'Pod', metadata: { name: id.name, namespace: id.namespace, uid } },
        'Warning',
        'InvalidAllowInbound',
        `annotation ${ALLOW_INBOUND_ANNOTATION}: ${problems.join('; ')} (these items are ignored; the rest is opened)`,
      );
    }
    const d = await t.agent.add(
      {
        pod: { ...id, uid, namespaceUid: ns.metadata.uid },
        containerId: req.containerId,
        netns: req.netns,
        podIf: podInterface(req),
        beforeDelivery: (slice) =>
          this.updateInbound({ add: { hostIf: hostIfName(slice), slice, mode: t.slices.inbound, rules } }),
      },
      t.slices,
    );
    this.o.log.info(`CNI ADD: pod ${who} has ${d.address} on ${d.podIf} (${Date.now() - t0} ms)`, {
      prefix: t.name,
      hostIf: d.hostIf,
      container: req.containerId.slice(0, 16),
    });
    return addResult(req, d);
  }

  /** Takes out what was made for this sandbox (idempotent; a DEL for an older sandbox of the pod leaves the newer one's). */
  private async del(req: CniRequest): Promise<void> {
    const uid = req.args.K8S_POD_UID;
    for (const l of await this.links.list()) {
      const o = l.owner;
      if (!o?.cni || !sameContainer(o.cni.containerId, req.containerId) || (uid && o.podUid !== uid)) continue;
      await this.links.release(o.slice, req.netns && existsSync(req.netns) ? req.netns : undefined);
      await this.updateInbound({ remove: l.hostIf });
      this.o.log.info(`CNI DEL: released ${o.slice} of pod ${o.podUid}`, {
        hostIf: l.hostIf,
        container: req.containerId.slice(0, 16),
      });
    }
  }

  private async check(req: CniRequest): Promise<void> {
    const id = podIdentity(req);
    const link = (await this.links.list()).find(
      (l) => l.owner?.cni && sameContainer(l.owner.cni.containerId, req.containerId),
    );
    if (!link?.owner) {
      // CHECK for a pod that did not ask (the runtime passed no annotations): nothing of ours to check.
      if (chained(req)) return;
      throw new CniError(
        CNI.unknownContainer,
        `no sixbed4 slice for container ${req.containerId.slice(0, 16)}${id ? ` (pod ${id.namespace}/${id.name})` : ''}`,
      );
    }
    // The pod end's name from the alias: CHECK's prevResult is the whole list's result, so it cannot tell chained.
    const missing = await this.links.missing(
      link.owner.slice,
      { uid: link.owner.podUid, podIf: link.owner.cni!.podIf },
      req.netns,
    );
    if (missing.length)
      throw new CniError(CNI.tryAgainLater, `slice ${link.owner.slice} is incomplete: ${missing.join('; ')}`);
  }

  /** Links made through CNI for sandboxes the runtime no longer has. */
  private async gc(req: CniRequest): Promise<void> {
    const valid = (req.config['cni.dev/valid-attachments'] ?? [])
      .map((a) => a.containerID)
      .filter((x): x is string => typeof x === 'string');
    for (const l of await this.links.list()) {
      const c = l.owner?.cni;
      if (!c || valid.some((id) => sameContainer(c.containerId, id))) continue;
      await this.links.release(l.owner!.slice);
      await this.updateInbound({ remove: l.hostIf });
      this.o.log.info(`CNI GC: released ${l.owner!.slice} (container ${c.containerId} is gone)`, { hostIf: l.hostIf });
    }
  }

  /**
   * The node's inbound table with one slice added (or replaced) or removed. The live table is the record of what
   * each filtered slice opens (it outlives agent restarts); the slices of its entries come from the links' aliases.
   */
  private updateInbound(change: { add?: InboundEntry; remove?: string }): Promise<void> {
    const p = this.inboundChain.then(async () => {
      const live = await listInbound();
      const drop = change.add?.hostIf ?? change.remove;
      if (!change.add && !live.filtered.some((f) => f.hostIf === drop)) return; // nothing of it in the table
      const slices = new Map((await this.links.list()).filter((l) => l.owner).map((l) => [l.hostIf, l.owner!.slice]));
      const entries: InboundEntry[] = [];
      for (const f of live.filtered) {
        const slice = slices.get(f.hostIf);
        if (f.hostIf === drop || !slice) continue; // replaced, removed, or its link is gone
        entries.push({ hostIf: f.hostIf, slice, mode: 'filtered', rules: f.rules as PortRule[] });
      }
      if (change.add) entries.push(change.add);
      await applyInbound(entries);
    });
    this.inboundChain = p.catch(() => undefined);
    return p;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }
}
