// The agent's side of /112 slices for one prefix on this node.
//
// Delivery is by CNI: the runtime calls the sixbed4-cni shim before the pod's containers start, and the node agent
// routes an ADD here (cni.ts): add() claims the pod's SixBed4Slice (claim.ts) and puts the veth, address and
// routes into the sandbox's namespace. DEL is the node's (cni.ts): the SixBed4Slice stays while the pod exists, so
// a new sandbox of the pod gets the same address; the operator releases it when the pod is gone.
//
// Passes repair: the SixBed4Slice objects bound to this node and prefix are what should be delivered; a pass
// releases links nothing wants and, for a slice with no link (a pod that started before sixbed4 was installed),
// finds the pod's namespace through /proc and delivers. Links made through CNI are left to the runtime. Each pass
// reports per slice in its status, with the agent's own field manager. CNI requests and passes run one at a time.
import type { Logger } from '../../lib/log.js';
import { parseIPv6, parsePrefix } from '../../lib/ip.js';
import { InterfaceTakenError, SliceDeliverer, type NeighbourProxy } from '../slices/deliver.js';
import { CNI, CniError, type Delivered } from '../cni/protocol.js';
import { ClaimError, claimSlice, namespaceWord, type ClaimPod } from './claim.js';
import { reservedSlices, sliceWords, type CheckedSlices } from '../../kube/slice-model.js';
import { defaultLocator } from '../slices/podns.js';
import { reconcileSlices, type DesiredSlice, type SliceStatus } from '../slices/reconcile.js';
import {
  agentFieldManager,
  API_VERSION,
  SLICE_KIND,
  SLICES_PATH,
  type KubeObject,
  type SixBed4Slice,
} from '../../kube/api.js';
import { paths } from '../../kube/client.js';
import type { Kube } from '../../kube/client.js';
import { Informer } from '../../kube/informer.js';

export interface SliceAgentOptions {
  prefixName: string;
  node: string;
  log: Logger;
  intervalMs?: number;
  /** Repair of pods that never had a CNI ADD of ours (they predate the install): what a pass needs to claim for them. */
  repair?: SliceRepair;
}

export interface SliceRepair {
  /** The prefix's spec.slices now. */
  slices: () => CheckedSlices;
  /** The pods bound to this node (a field-selected watch). */
  podsOnNode: () => readonly KubeObject[];
}

/** Where this node serves the prefix: what a claim needs besides the pod. */
export interface Serving {
  node64: string;
  /** the node's /64's index in the prefix */
  index: number;
  /** full addresses of the host inside the node's /64 (their slices are never handed out) */
  localAddresses: readonly string[];
}

/** A CNI ADD as the node agent hands it over: the pod and the sandbox. */
export interface PodAttach {
  pod: ClaimPod;
  containerId: string;
  netns: string;
  podIf: string;
  /** Runs once the slice is known, before anything routes to it (the inbound filter goes in first). */
  beforeDelivery?: (slice: string) => Promise<void>;
}

export class SliceAgent {
  private readonly slices = new Map<string, SixBed4Slice>();
  private readonly informer: Informer<SixBed4Slice>;
  private deliverer: SliceDeliverer | null = null;
  private node64: string | null = null;
  private serving: Serving | null = null;
  private chain = Promise.resolve();
  private queued = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly reported = new Map<string, string>();

  constructor(
    private readonly kube: Kube,
    private readonly o: SliceAgentOptions,
  ) {
    this.informer = new Informer<SixBed4Slice>(kube, SLICES_PATH, {
      name: 'sixbed4slices',
      log: o.log,
      fieldSelector: `spec.node=${o.node}`,
      onChange: (type, s) => {
        if (s.spec?.node !== o.node || s.spec?.prefix !== o.prefixName) return;
        if (type === 'delete' || s.metadata.deletionTimestamp) this.slices.delete(s.metadata.name!);
        else this.slices.set(s.metadata.name!, s);
        this.kick();
      },
    });
  }

  /** Starts delivering into this node's /64 (again after a config change), with the router's neighbour proxy if any. */
  start(serving: Serving, proxy?: NeighbourProxy): void {
    this.node64 = serving.node64;
    this.serving = serving;
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
    if (this.deliverer && this.node64) await this.pass(true);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.informer.stop();
    await this.chain;
  }

  /** Whether CNI requests can be served (the node's /64 is known). */
  get ready(): boolean {
    return this.serving !== null && this.deliverer !== null;
  }

  /**
   * CNI ADD: the pod's slice (held, or claimed now) delivered into the sandbox. Throws CniError: the kubelet shows
   * the message and retries, so a pod never runs without the address it asked for.
   */
  add(a: PodAttach, slices: CheckedSlices): Promise<Delivered> {
    return this.serial(async () => {
      const srv = this.serving;
      if (!srv || !this.deliverer)
        throw new CniError(
          CNI.tryAgainLater,
          `this node does not serve ${this.o.prefixName} yet (its router is starting)`,
        );
      const obj = await this.claimFor(a.pod, slices, srv);
      const d = this.deliverer;
      await a.beforeDelivery?.(obj.spec.slice);
      let res;
      try {
        res = await d.deliver(
          obj.spec.slice,
          { uid: a.pod.uid, name: a.pod.name, namespace: a.pod.namespace, containerId: a.containerId, podIf: a.podIf },
          a.netns,
        );
      } catch (err) {
        if (err instanceof InterfaceTakenError) throw new CniError(CNI.interfaceTaken, err.message);
        throw err;
      }
      await this.report({
        slice: res.slice,
        hostIf: res.hostIf,
        podUid: a.pod.uid,
        state: 'delivered',
        outcome: res.outcome,
        reason: `delivered through CNI (${res.outcome})`,
      });
      return {
        hostIf: res.hostIf,
        podIf: a.podIf,
        address: `${res.address}/112`,
        gateway: d.options.gateway,
        defaultRoute: res.defaultRoute,
      };
    });
  }

  /**
   * The pod's slice on this node: the one it holds, or one claimed now (claim.ts). If the pod holds two after all
   * (two claims that saw different words), every agent and the operator keep the first in text order: that one.
   */
  private async claimFor(pod: ClaimPod, slices: CheckedSlices, srv: Serving): Promise<SixBed4Slice> {
    const held = [...this.slices.values()].find((x) => x.spec.pod.uid === pod.uid && x.spec.node === this.o.node);
    if (held) return held;
    const subnet = parsePrefix(srv.node64);
    const word = await namespaceWord(this.kube, this.o.prefixName, {
      name: pod.namespace,
      uid: pod.namespaceUid,
    }).catch(claimFailure);
    // Words held by other pods only: a slice of this pod that arrived meanwhile (another agent of this node, in a
    // rolling update, claimed it) is then found again by its name (AlreadyExists, same pod: adopted) instead of
    // being stepped over and doubled.
    const taken = new Set<number>();
    for (const x of this.slices.values()) {
      const w = sliceWords(x.spec.slice);
      if (w && w.a === word && x.spec.pod.uid !== pod.uid) taken.add(w.b);
    }
    const reserved = reservedSlices(
      subnet,
      srv.localAddresses.map((t) => ({ bytes: parseIPv6(t), text: t, perNode: false })),
    );
    const got = await claimSlice(
      this.kube,
      {
        prefixName: this.o.prefixName,
        node: this.o.node,
        subnet,
        index: srv.index,
        podWords: slices.podWords,
        reserved,
      },
      word,
      pod,
      (b) => taken.has(b),
      this.o.log,
    ).catch(claimFailure);
    this.slices.set(got.slice.metadata.name!, got.slice);
    const mine = [...this.slices.values()]
      .filter((x) => x.spec.pod.uid === pod.uid && x.spec.node === this.o.node)
      .sort((x, y) => x.spec.slice.localeCompare(y.spec.slice));
    return mine[0]!;
  }

  /**
   * Repair: pods of this node that ask for a slice of this prefix, run, and hold none (they started before sixbed4
   * was installed, or their runtime passed no annotations while the agent was away) get one claimed here; the pass
   * then finds their namespace through /proc and delivers. A pod still starting is left to its CNI ADD.
   */
  private async claimForStrays(): Promise<void> {
    const r = this.o.repair;
    const srv = this.serving;
    if (!r || !srv) return;
    const slices = r.slices();
    if (!slices.enabled) return;
    const namespaces = new Map<string, KubeObject | undefined>();
    for (const p of r.podsOnNode()) {
      const spec = (p.spec ?? {}) as { hostNetwork?: boolean };
      const phase = (p.status as { phase?: string } | undefined)?.phase;
      if (
        p.metadata.annotations?.[slices.podAnnotation] !== 'true' ||
        spec.hostNetwork ||
        phase !== 'Running' ||
        p.metadata.deletionTimestamp
      )
        continue;
      if ([...this.slices.values()].some((x) => x.spec.pod.uid === p.metadata.uid)) continue;
      const nsName = p.metadata.namespace!;
      if (!namespaces.has(nsName)) namespaces.set(nsName, await this.kube.get<KubeObject>(paths.namespace(nsName)));
      const ns = namespaces.get(nsName);
      if (ns?.metadata.labels?.[slices.namespaceLabel] !== this.o.prefixName || !ns.metadata.uid) continue;
      try {
        const got = await this.claimFor(
          { namespace: nsName, name: p.metadata.name!, uid: p.metadata.uid!, namespaceUid: ns.metadata.uid },
          slices,
          srv,
        );
        this.o.log.info(
          `repair: pod ${nsName}/${p.metadata.name} runs without a slice (it started before the CNI plugin, or without it): claimed ${got.spec.slice}`,
        );
      } catch (err) {
        this.o.log.warn(`repair: no slice for pod ${nsName}/${p.metadata.name}: ${(err as Error).message}`);
      }
    }
  }

  /** Runs fn after whatever pass or request is under way (one at a time: they touch the same links). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn);
    this.chain = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** At most one pass runs and one waits: a burst of changes costs two passes, not one each. */
  private kick(): void {
    if (this.queued) return;
    this.queued = true;
    this.chain = this.chain
      .then(() => {
        this.queued = false;
        return this.pass();
      })
      .catch((err: Error) => {
        this.o.log.error(`slices: ${err.message}`);
      });
  }

  /** One pass: repair claims first, then the node's links brought to the slices (to none when releasing everything). */
  private async pass(releaseEverything = false): Promise<void> {
    if (!this.deliverer || !this.node64) return;
    if (!releaseEverything)
      await this.claimForStrays().catch((err: Error) => this.o.log.warn(`repair: ${err.message}`));
    const want: DesiredSlice[] = releaseEverything ? [] : [...this.slices.values()].map(desired);
    const { statuses } = await reconcileSlices(want, {
      deliverer: this.deliverer,
      locator: defaultLocator(),
      log: this.o.log,
      prefix: parsePrefix(this.node64),
    });
    for (const st of statuses) await this.report(st);
  }

  /** Writes a slice's status when it changed (a pass repeats every few seconds). */
  private async report(st: SliceStatus): Promise<void> {
    const obj = [...this.slices.values()].find((s) => s.spec.pod.uid === st.podUid || s.spec.slice === st.slice);
    if (!obj || st.state === 'released') return;
    const status = {
      delivered: st.state === 'delivered',
      state: st.state,
      // The CRD caps the message at 1024 characters.
      ...(st.hostIf ? { hostInterface: st.hostIf } : {}),
      message: (st.reason ?? st.outcome ?? st.state).slice(0, 1024),
    };
    const key = JSON.stringify(status);
    if (this.reported.get(obj.metadata.name!) === key) return;
    try {
      await this.kube.apply(
        `${SLICES_PATH}/${encodeURIComponent(obj.metadata.name!)}/status`,
        {
          apiVersion: API_VERSION,
          kind: SLICE_KIND,
          metadata: { name: obj.metadata.name },
          status: { ...status, lastUpdate: new Date().toISOString() },
        },
        agentFieldManager(this.o.node),
        { force: true },
      );
      this.reported.set(obj.metadata.name!, key);
    } catch (err) {
      this.o.log.warn(`cannot report slice ${obj.metadata.name}: ${(err as Error).message}`);
    }
  }
}

function claimFailure(err: unknown): never {
  if (err instanceof ClaimError) throw new CniError(err.transient ? CNI.tryAgainLater : CNI.exhausted, err.message);
  throw err;
}

function desired(s: SixBed4Slice): DesiredSlice {
  return { slice: s.spec.slice, podUid: s.spec.pod.uid, podName: s.spec.pod.name, namespace: s.spec.pod.namespace };
}
