// The SixBed4Prefix API as the operator and the node agents see it: names,
// labels, annotations, and TypeScript shapes of the custom resource (the schema
// itself is crds/sixbed4.io_sixbed4prefixes.yaml) and of the agent config the
// operator renders into a ConfigMap per prefix.

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
export const AGENT_CONFIG_DIR = '/etc/sixbed4';
/** ConfigMap key of the part every node shares. */
export const AGENT_CONFIG_COMMON_KEY = 'prefix.json';
/** ConfigMap key of one node's share. */
export const agentConfigNodeKey = (node: string): string => `node.${node}.json`;

export type LocalAddressMode = 'uplink128' | 'dummy112';
export type NdpProxyMode = 'off' | 'on' | 'auto';
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
  listen?: { address?: string; port?: number };
  uplink?: string;
  localAddresses?: string[];
  localAddressMode?: LocalAddressMode;
  routes?: string[];
  ndpProxy?: NdpProxyMode;
  metricsPort?: number;
  slices?: { enabled?: boolean; namespaceLabel?: string; podAnnotation?: string };
}

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
  // written by the operator
  prefix?: string;
  listen?: string;
  // written by the node's agent
  ready?: boolean;
  livePeers?: number;
  lastReport?: string;
  reverted?: boolean;
  message?: string;
}

export interface SixBed4PrefixStatus {
  observedGeneration?: number;
  nodesReady?: string;
  conditions?: Condition[];
  nodes?: NodeStatus[];
  slices?: { allocated?: number; namespaces?: { name: string; word: number; pods?: number }[] };
}

export interface SixBed4Prefix extends KubeObject {
  spec: SixBed4PrefixSpec;
  status?: SixBed4PrefixStatus;
}

/** One node's share, as the agent on that node reads it (ConfigMap key node.<name>.json). */
export interface AgentNodeConfig {
  /** the node's /64 */
  prefix: string;
  listen: { address: string; port: number };
  uplink?: string;
  /** full addresses inside the node's /64 */
  localAddresses: string[];
  localAddressMode: LocalAddressMode;
  routes: string[];
  ndpProxy: NdpProxyMode;
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

/** Names of what the operator creates for a prefix (in the operator's namespace). */
export const agentDaemonSetName = (prefixName: string): string => `sixbed4-agent-${prefixName}`;
export const agentConfigMapName = (prefixName: string): string => `sixbed4-agent-${prefixName}`;
