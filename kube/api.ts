// The SixBed4Prefix API as the operator and the node agents see it: names,
// labels, annotations, and TypeScript shapes of the custom resource (the schema
// itself is crds/sixbed4.io_sixbed4prefixes.yaml) and of the agent config the
// operator renders into a ConfigMap per prefix.
import { fnv1a } from './hash.js';

export const GROUP = 'sixbed4.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'SixBed4Prefix';
export const PLURAL = 'sixbed4prefixes';
export const PREFIXES_PATH = `/apis/${GROUP}/${VERSION}/${PLURAL}`;

/** Finalizer that holds a deleted prefix until the agents reverted their hosts. */
export const FINALIZER = 'sixbed4.io/host-cleanup';
/** Field manager of the operator's server-side applies. */
export const FIELD_MANAGER = 'sixbed4-operator';
/** Field manager an agent uses for its own status.nodes entry. */
export const agentFieldManager = (node: string): string => `sixbed4-agent-${node}`.slice(0, 128);

/**
 * Annotation on the SixBed4Prefix with the durable node -> /64 allocation (JSON
 * object). Kept for nodes that are gone, so a re-created node gets its /64 back;
 * an admin may edit it to move a node to a chosen /64.
 */
export const ALLOCATIONS_ANNOTATION = 'sixbed4.io/allocations';
/** Per-prefix override of the operator's --cleanup-timeout, in seconds. */
export const CLEANUP_TIMEOUT_ANNOTATION = 'sixbed4.io/cleanup-timeout';

export const LABEL_PREFIX = 'sixbed4.io/prefix';
export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'sixbed4-operator';
export const LABEL_NAME = 'app.kubernetes.io/name';
export const LABEL_COMPONENT = 'app.kubernetes.io/component';

export const DEFAULT_PORT = 25790;
export const DEFAULT_METRICS_PORT = 9475;
/** Where the agent container finds the rendered ConfigMap. */
/** ConfigMap key of the part every node shares. */
export const AGENT_CONFIG_COMMON_KEY = 'prefix.json';
/** ConfigMap key of one node's share. */
export const agentConfigNodeKey = (node: string): string => `node.${node}.json`;

/** The modes in the agent ConfigMap (AgentNodeConfig): its wire format, kept for agents of the previous version. */
export type LocalAddressMode = 'uplink128' | 'dummy112';
export type NdpProxyMode = 'off' | 'on' | 'auto';
/** The modes in spec: CamelCase (YAML 1.1 safe); v1alpha1 still accepts the old spellings, which the operator maps. */
export type LocalAddressModeName = 'Uplink' | 'DummyInterface';
export type NdpProxyModeName = 'Disabled' | 'Always' | 'WhenOnLink';
/** The in-kernel fast path as the router's --fast-path takes it (and the agent ConfigMap carries it). */
export type FastPathMode = 'off' | 'auto' | 'on';
/**
 * spec.fastPath: CamelCase like the other modes, and none of them Off/On, which YAML 1.1 (kubectl, Helm) reads as
 * booleans. New in this version, so no other spelling is accepted.
 */
export type FastPathModeName = 'Disabled' | 'Auto' | 'Required';
export type ConditionStatus = 'True' | 'False' | 'Unknown';
export const CONDITION_TYPES = ['Ready', 'Progressing', 'Degraded'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  [k: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [k: string]: unknown;
}

export interface SixBed4PrefixSpec {
  prefix: string;
  nodeSelector?: Record<string, string>;
  listen?: { address?: string; port?: number; advertise?: string };
  uplink?: string;
  localAddresses?: string[];
  localAddressMode?: LocalAddressModeName | LocalAddressMode;
  routes?: string[];
  ndpProxy?: NdpProxyModeName | NdpProxyMode;
  fastPath?: FastPathModeName;
  fastPathDirect?: boolean;
  fastPathXdp?: boolean;
  metricsPort?: number;
  slices?: {
    enabled?: boolean;
    namespaceLabel?: string;
    podAnnotation?: string;
    namespaceWords?: { first?: number; last?: number };
    podWords?: { first?: number; last?: number };
  };
  /** A /64 served by a group of nodes, one active at a time (see FailoverSpec). */
  failover?: FailoverSpec;
}

/** How the provider reaches the /64 of a failover group (AgentFailoverConfig.upstream). */
export type FailoverUpstream = AgentFailoverConfig['upstream'];

/**
 * spec.failover: the /64 is served by 1 + standbys of the selected nodes, one active at a time; listen.address is the
 * floating IPv4 address that moves with the active node, and so does the /64's next hop (upstream).
 */
export interface FailoverSpec {
  /** how many nodes stand by, their routers running, ready to take over (default 1) */
  standbys?: number;
  upstream: FailoverUpstream;
  /** with upstream RoutedNextHop: the IPv6 address the provider routes the /64 to, held by the active node */
  nextHop?: string;
  /** VRRP-style virtual router id, 1-255: the moving addresses live on MAC 00:00:5e:00:01:<id> */
  virtualRouterId: number;
  leaseDurationMs?: number;
  renewIntervalMs?: number;
  fenceAfterMs?: number;
}

/** Defaults of spec.failover's timings (the CRD's defaults, repeated for objects written before them). */
export const FAILOVER_DEFAULTS = {
  standbys: 1,
  leaseDurationMs: 2000,
  renewIntervalMs: 500,
  fenceAfterMs: 1500,
} as const;

/**
 * The Lease that elects a failover group's active node, in the operator's namespace. The operator creates it (owned
 * by the prefix, labelled component=failover-lease, which its watch selects); the members renew it with their node
 * name as holderIdentity.
 */
export const failoverLeaseName = (prefixName: string): string => `sixbed4-failover-${prefixName}`;
export const FAILOVER_LEASE_COMPONENT = 'failover-lease';

export interface Condition {
  type: string;
  status: ConditionStatus;
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface NodeStatus {
  name: string;
  prefix?: string;
  listen?: string;
  // what the node's agent reports (in its Lease; the operator copies it here)
  ready?: boolean;
  livePeers?: number;
  lastReport?: string;
  reverted?: boolean;
  message?: string;
  /** why the agent cannot serve, one CamelCase word (e.g. ListenAddressUnavailable); absent when it can */
  reason?: string;
  /**
   * With spec.failover: this node's part in the group. Active: it holds the floating address; Standby: ready to take
   * over now (router bound, data path up, the API answering); NotReady: a member that could not take over now.
   */
  failover?: FailoverRole;
}

export type FailoverRole = 'Active' | 'Standby' | 'NotReady';

/** status.failover, written by the operator from the group's Lease and the members' reports. */
export interface FailoverStatus {
  /** the node holding the Lease (the printer column Active); absent while none does */
  active?: string;
  /** members other than the active one whose agent reports failover Standby (ready to take over), out of them, e.g. 1/1 */
  standbysReady?: string;
  /** the Lease's leaseTransitions: how many times it changed hands */
  transitions?: number;
  lastFailover?: { time: string; from?: string; to: string; reason: string; message: string };
}

export interface SixBed4PrefixStatus {
  observedGeneration?: number;
  nodesReady?: string;
  /** live 6bed4 peers over the ready nodes (their agents' livePeers) */
  livePeers?: number;
  conditions?: Condition[];
  nodes?: NodeStatus[];
  slices?: SlicesStatus;
  failover?: FailoverStatus;
}

/** status.slices, written by the slice allocator (field manager sixbed4-operator-slices). */
export interface SlicesStatus {
  allocated?: number;
  pending?: number;
  namespaces?: { name: string; word: number; pods?: number; range?: string }[];
}

export interface SixBed4Prefix extends KubeObject {
  spec: SixBed4PrefixSpec;
  status?: SixBed4PrefixStatus;
}

/** One node's share, as the agent on that node reads it (ConfigMap key node.<name>.json). */
export interface AgentNodeConfig {
  /** the node's /64 */
  prefix: string;
  /** bind: the node's InternalIP, for the agent to bind when address (its ExternalIP) is not on the node (1:1 NAT) */
  /**
   * advertise: IPV4[:PORT] peers send to when a DNAT forwards it to address:port; the router's identity is built
   * from it (spec.listen.advertise)
   */
  listen: { address: string; port: number; bind?: string; advertise?: string };
  uplink?: string;
  /** full addresses inside the node's /64 */
  localAddresses: string[];
  localAddressMode: LocalAddressMode;
  routes: string[];
  ndpProxy: NdpProxyMode;
  /**
   * The router's in-kernel fast path; absent: off. Written only when not off, so that an operator upgrade leaves
   * the shares of prefixes without it byte for byte as they were (a changed share restarts the node's router). The
   * agent says off to its router when absent: the router's own default is auto. (Prefixes created before the CRD's
   * default became Auto hold Disabled in etcd, where the API server put it: they stay off until changed.)
   */
  fastPath?: Exclude<FastPathMode, 'off'>;
  /** spec.fastPathDirect (the router's --fast-path-direct); written only when true, for the same reason. */
  fastPathDirect?: true;
  /** spec.fastPathXdp (the router's --fast-path-xdp auto); written only when true, for the same reason. */
  fastPathXdp?: true;
  /** the tunnel interface on the node (one per prefix: a node may serve several) */
  tunnel?: string;
  /**
   * Present when the /64 is served by a group of nodes, one active at a time (spec.failover): every member gets the
   * same prefix and listen port, and listen.address is the floating address below.
   */
  failover?: AgentFailoverConfig;
}

/**
 * The agents' side of spec.failover. Every member runs its router bound to the floating address (IP_FREEBIND), so
 * that taking over is announcements only; the Lease decides which member is active, and the active member stops
 * answering for the addresses by itself fenceAfterMs after its last successful renew (a Lease is no fence).
 */
export interface AgentFailoverConfig {
  /** The floating listen IPv4 address: on the active member's uplink only. */
  address: string;
  /**
   * The coordination.k8s.io Lease, in the agents' namespace, whose holder is the active member: holderIdentity is
   * `<node>_<8 hex digits>` (two agents of one node during a rollout are two candidates), the node before the '_'.
   * The agents need get/create/update/watch on it; a member that releases it writes annotation
   * sixbed4.io/release-reason (Released, DataPathDown).
   */
  leaseName: string;
  /** Every member node (the active one too), in the operator's order of preference. */
  members: string[];
  /**
   * How the provider reaches the /64: RoutedNextHop (routed to `nextHop`, an IPv6 address on the uplink that the
   * active member holds and announces with unsolicited NAs) or OnLink (on-link at the provider: the active member's
   * neighbour proxy answers for the peers).
   */
  upstream: 'RoutedNextHop' | 'OnLink';
  /** The next hop's IPv6 address, with upstream RoutedNextHop. */
  nextHop?: string;
  /**
   * VRRP-style virtual router id (1-255): the moving addresses live on a MAC 00:00:5e:00:01:<id> that moves too.
   * Unique per layer-2 segment, and per node (the member's macvlan is named 6b4vr<id>).
   */
  virtualRouterId: number;
  leaseDurationMs: number;
  renewIntervalMs: number;
  /** The active member's own deadline: it withdraws this long after its last successful renew (< leaseDurationMs). */
  fenceAfterMs: number;
  /**
   * Set on the share of a member whose node is cordoned (kubectl drain does not evict the agents' DaemonSet Pods),
   * while another member's node is not: the share changing is the signal (the agent restarts the member, which
   * withdraws and releases the Lease, so the standby takes over at once); the member should not take the Lease while
   * it is set.
   */
  cordoned?: true;
}

/** The part every node shares (ConfigMap key prefix.json). */
export interface AgentCommonConfig {
  apiVersion: typeof API_VERSION;
  kind: 'AgentConfig';
  /** name of the SixBed4Prefix */
  name: string;
  /** the whole prefix, e.g. 2001:db8:9::/48 */
  prefix: string;
  /** nodes that have a share, sorted */
  nodes: string[];
  metricsPort: number;
}

/** What a node agent reports about one prefix (NodeStatus's agent part). */
export type AgentReport = Pick<
  NodeStatus,
  'ready' | 'livePeers' | 'lastReport' | 'reverted' | 'message' | 'reason' | 'failover'
>;

/**
 * On a node agent's Lease: its reports, one per prefix it serves ({"<prefix>": AgentReport}), as JSON. The operator
 * copies them into each prefix's status, so that the agents never write the prefixes, which they all watch.
 */
export const AGENT_REPORTS_ANNOTATION = 'sixbed4.io/reports';

/** The node agent's heartbeat Lease (in the operator's namespace). */
export const agentLeaseName = (node: string): string => `sixbed4-agent-${node}`.slice(0, 253);

/** Names of what the operator creates for a prefix (in the operator's namespace). */
export const agentConfigMapName = (prefixName: string): string => `sixbed4-agent-${prefixName}`;

// ---------------------------------------------------------------------------
// /112 slices for namespaces and pods (issue 6): SixBed4Range claims a word A
// of a prefix for a namespace, SixBed4Slice hands one /112 to one pod. Both
// are cluster-scoped and named after what they claim, so the API server
// refuses a second claim (AlreadyExists). See operator/README.md, "Slices".

export const SLICE_KIND = 'SixBed4Slice';
export const SLICES_PLURAL = 'sixbed4slices';
export const RANGE_KIND = 'SixBed4Range';
export const RANGES_PLURAL = 'sixbed4ranges';
export const SLICES_PATH = `/apis/${GROUP}/${VERSION}/${SLICES_PLURAL}`;
export const RANGES_PATH = `/apis/${GROUP}/${VERSION}/${RANGES_PLURAL}`;

/** Field manager of the slice allocator's writes (status.slices and the SlicesAllocated condition, annotations). */
export const SLICES_FIELD_MANAGER = 'sixbed4-operator-slices';
/** The condition the slice allocator owns in a prefix's status.conditions. */
export const SLICES_CONDITION = 'SlicesAllocated';

/** Defaults of spec.slices (the CRD's defaults, repeated for objects written before them). */
export const DEFAULT_NAMESPACE_LABEL = 'sixbed4.io/prefix';
export const DEFAULT_POD_ANNOTATION = 'sixbed4.io/slice';

/** Pod annotations with the operator's answer: the /112 and the pod's address in it. */
export const ASSIGNED_SLICE_ANNOTATION = 'sixbed4.io/assigned-slice';
export const ADDRESS_ANNOTATION = 'sixbed4.io/address';
/** Namespace annotation with the namespace's range, e.g. 2001:db8:9:*:5:*:0:0/112. */
export const RANGE_ANNOTATION = 'sixbed4.io/slice-range';

/** Labels on SixBed4Slices and SixBed4Ranges (besides app.kubernetes.io/managed-by and sixbed4.io/prefix). */
export const LABEL_NAMESPACE = 'sixbed4.io/namespace';
export const LABEL_POD_UID = 'sixbed4.io/pod-uid';
export const LABEL_RANGE = 'sixbed4.io/range';

export interface SixBed4SliceSpec {
  /** name of the SixBed4Prefix */
  prefix: string;
  /** the Node whose /64 holds the slice and whose agent delivers it */
  node: string;
  /** canonical /112, e.g. 2001:db8:9:10:5:1::/112 */
  slice: string;
  /** the pod's address, the first of the slice */
  address: string;
  pod: { namespace: string; name: string; uid: string };
}

/** Written by the node agent (field manager sixbed4-agent-<node>, status subresource). */
export interface SixBed4SliceStatus {
  delivered?: boolean;
  state?: string;
  hostInterface?: string;
  message?: string;
  lastUpdate?: string;
}

export interface SixBed4Slice extends KubeObject {
  spec: SixBed4SliceSpec;
  status?: SixBed4SliceStatus;
}

export interface SixBed4RangeSpec {
  prefix: string;
  word: number;
  namespace: { name: string; uid: string };
  range?: string;
}

export interface SixBed4Range extends KubeObject {
  spec: SixBed4RangeSpec;
}

/**
 * The tunnel interface of a prefix on its nodes: one per prefix, since one agent serves every prefix of its node.
 * "6b4" and 8 hex digits of FNV-1a of the prefix's name (11 characters; interface names allow 15).
 */
export function tunnelName(prefixName: string): string {
  return `6b4${fnv1a(prefixName).toString(16).padStart(8, '0')}`;
}
