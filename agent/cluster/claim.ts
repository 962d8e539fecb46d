// Claiming a /112 for a pod, on the pod's node: what the node agent does when the runtime asks for the pod's
// network (CNI ADD) and, as repair, for pods that started before sixbed4 was installed.
//
// Race-free by the name: the SixBed4Slice for word B of namespace word A in the node's /64 (index) is named
// <prefix>-<index>-<A>-<B>, and the API server lets exactly one create of a name succeed. The loser reads the
// object and adopts it when it was made for the same pod and node (a CNI ADD retried while the first one was still
// on its way, or the repair pass beside it), else tries the next word. The first word tried is a hash of the pod's
// namespace/name, so a StatefulSet's pod re-created on the same node gets its address back while it is free.
//
// The namespace's word A comes from its SixBed4Range, which the operator claims when the namespace is labelled;
// the agent never claims words. An admission policy (charts/sixbed4/templates/agent-admission.yaml) lets an agent
// create slices only for its own node.
import type { Logger } from '../../lib/log.js';
import type { Prefix } from '../../lib/ip.js';
import {
  API_VERSION,
  LABEL_MANAGED_BY,
  LABEL_NAMESPACE,
  LABEL_POD_UID,
  LABEL_PREFIX,
  LABEL_RANGE,
  MANAGED_BY,
  SLICE_KIND,
  type SixBed4Range,
  type SixBed4Slice,
} from '../../kube/api.js';
import { isAlreadyExists, paths, type Kube } from '../../kube/client.js';
import {
  chooseWord,
  isReserved,
  preferredWord,
  rangeName,
  sliceAddress,
  sliceName,
  sliceText,
  type WordRange,
} from '../../kube/slice-model.js';

/** AlreadyExists losses in one claim before giving up (the caller retries later, from a fresher view). */
const MAX_CONFLICTS = 32;

export interface ClaimTarget {
  prefixName: string;
  node: string;
  /** The node's /64 and its index in the prefix (the slice names carry it). */
  subnet: Prefix;
  index: number;
  podWords: WordRange;
  /** (A, B) keys that hold a configured local address of the host (kube/slice-model.ts reservedSlices). */
  reserved: ReadonlySet<number>;
}

export interface ClaimPod {
  namespace: string;
  name: string;
  uid: string;
  namespaceUid: string;
}

/** A reason the pod gets no slice now, for the CNI error and the pod's Events. */
export class ClaimError extends Error {
  override name = 'ClaimError';
  /** transient: the kubelet's retry may succeed (no range yet, lost races); else the user has to act. */
  constructor(
    readonly reason: string,
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
  }
}

/** The namespace's word A of this prefix: its valid SixBed4Range with the lowest word. */
export async function namespaceWord(
  kube: Kube,
  prefixName: string,
  ns: { name: string; uid: string },
): Promise<number> {
  const ranges = (
    await kube.list<SixBed4Range>(paths.ranges, {
      labelSelector: `${LABEL_PREFIX}=${prefixName},${LABEL_NAMESPACE}=${ns.name}`,
    })
  ).items;
  const words = ranges
    .filter(
      (r) =>
        !r.metadata.deletionTimestamp &&
        r.spec?.namespace?.uid === ns.uid &&
        r.spec.prefix === prefixName &&
        Number.isInteger(r.spec.word) &&
        r.metadata.name === rangeName(prefixName, r.spec.word),
    )
    .map((r) => r.spec.word)
    .sort((a, b) => a - b);
  if (!words.length) {
    throw new ClaimError(
      'NoNamespaceRange',
      `namespace ${ns.name} has no range of ${prefixName} yet (the operator claims one when the namespace is labelled; see the namespace's Events)`,
      true,
    );
  }
  return words[0]!;
}

/**
 * The pod's slice: the one it holds on this node (found by `held`, then by name on AlreadyExists), or a new one.
 * `taken(b)` is the caller's best knowledge of words held in (index, A); it is a first guess only.
 */
export async function claimSlice(
  kube: Kube,
  t: ClaimTarget,
  word: number,
  pod: ClaimPod,
  taken: (b: number) => boolean,
  log: Logger,
): Promise<{ slice: SixBed4Slice; created: boolean }> {
  const used = new Set<number>();
  const preferred = preferredWord(`${pod.namespace}/${pod.name}`, t.podWords);
  for (let conflicts = 0; conflicts <= MAX_CONFLICTS;) {
    const b = chooseWord(preferred, t.podWords, (x) => used.has(x) || taken(x) || isReserved(word, x, t.reserved));
    if (b === undefined) {
      throw new ClaimError(
        'SlicesExhausted',
        `namespace ${pod.namespace}'s word ${word} of ${t.prefixName} is full on node ${t.node} (${t.subnet.text}): every word B from ${t.podWords.first} to ${t.podWords.last} is held or reserved`,
        false,
      );
    }
    const obj: SixBed4Slice = {
      apiVersion: API_VERSION,
      kind: SLICE_KIND,
      metadata: {
        name: sliceName(t.prefixName, t.index, word, b),
        labels: {
          [LABEL_MANAGED_BY]: MANAGED_BY,
          [LABEL_PREFIX]: t.prefixName,
          [LABEL_NAMESPACE]: pod.namespace,
          [LABEL_POD_UID]: pod.uid,
          [LABEL_RANGE]: rangeName(t.prefixName, word),
        },
        // Owned by the Namespace (a cluster-scoped object may not have a namespaced owner): the garbage collector
        // removes it with its namespace; the operator releases it when its pod goes.
        ownerReferences: [{ apiVersion: 'v1', kind: 'Namespace', name: pod.namespace, uid: pod.namespaceUid }],
      },
      spec: {
        prefix: t.prefixName,
        node: t.node,
        slice: sliceText(t.subnet, word, b),
        address: sliceAddress(t.subnet, word, b),
        pod: { namespace: pod.namespace, name: pod.name, uid: pod.uid },
      },
    };
    try {
      const made = await kube.create<SixBed4Slice>(paths.slices, obj);
      log.info(`pod ${pod.namespace}/${pod.name} holds ${obj.spec.slice}`, { slice: obj.metadata.name });
      return { slice: made, created: true };
    } catch (e) {
      if (!isAlreadyExists(e)) throw e;
      conflicts++;
      used.add(b);
      const cur = await kube.get<SixBed4Slice>(paths.slice(obj.metadata.name!));
      if (cur && !cur.metadata.deletionTimestamp && cur.spec.pod.uid === pod.uid && cur.spec.node === t.node)
        return { slice: cur, created: false };
    }
  }
  throw new ClaimError(
    'ClaimConflicts',
    `pod ${pod.namespace}/${pod.name}: lost ${MAX_CONFLICTS} races for a slice of ${t.subnet.text}`,
    true,
  );
}
