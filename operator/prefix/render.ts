// The objects the operator keeps per prefix, rendered from the plan: a
// ConfigMap with the agent config (one key per node) and the agent DaemonSet.
// Pure. The pod template depends only on the spec and the operator's flags,
// never on which nodes serve, so node changes do not restart every agent: the
// agents pick up their share from the ConfigMap.
import {
  AGENT_CONFIG_COMMON_KEY, AGENT_CONFIG_DIR, API_VERSION, KIND, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PREFIX, MANAGED_BY,
  agentConfigMapName, agentConfigNodeKey, agentDaemonSetName,
  type AgentCommonConfig, type AgentNodeConfig, type KubeObject, type OwnerReference, type SixBed4Prefix,
} from '../../kube/api.js';

export interface ResourceList { cpu?: string; memory?: string }

export interface RenderOptions {
  /** namespace of the operator, where the per-prefix objects live */
  namespace: string;
  /** container image of the agents (entrypoint: the sixbed4 CLI) */
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** ServiceAccount the agents run as */
  serviceAccount: string;
  /** agents' --log-level */
  logLevel?: string;
  resources?: { requests?: ResourceList; limits?: ResourceList };
  /** host directory for the agents' saved host state (default AGENT_STATE_DIR) */
  stateDir?: string;
}

export const DEFAULT_AGENT_RESOURCES = { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } };

/** Where the agent keeps the saved host state, inside its container; the host directory behind it is RenderOptions.stateDir. */
export const AGENT_STATE_DIR = '/var/lib/sixbed4';

/** The agent's exec probe (agent/cli/probe.ts) and the socket it asks, in the Pod's own /tmp. */
export const AGENT_PROBE = '/app/dist/agent/cli/probe.js';
export const AGENT_HEALTH_SOCKET = '/tmp/sixbed4-agent.sock';

/** Where the agent finds /proc/sys/net of the host (its own /proc/sys is read-only in a container). */
export const AGENT_PROC_SYS = '/host/proc/sys';

export function agentLabels(prefixName: string): Record<string, string> {
  return { [LABEL_NAME]: 'sixbed4', [LABEL_COMPONENT]: 'agent', [LABEL_PREFIX]: prefixName };
}

function objectLabels(prefixName: string): Record<string, string> {
  return { ...agentLabels(prefixName), [LABEL_MANAGED_BY]: MANAGED_BY };
}

export function ownerReference(p: SixBed4Prefix): OwnerReference {
  return { apiVersion: API_VERSION, kind: KIND, name: p.metadata.name!, uid: p.metadata.uid!, controller: true, blockOwnerDeletion: true };
}

export function renderConfigMap(p: SixBed4Prefix, prefixText: string, metricsPort: number, nodes: ReadonlyMap<string, AgentNodeConfig>, opts: RenderOptions): KubeObject {
  const name = p.metadata.name!;
  const sorted = [...nodes.keys()].sort();
  const common: AgentCommonConfig = { apiVersion: API_VERSION, kind: 'AgentConfig', name, prefix: prefixText, nodes: sorted, metricsPort };
  const data: Record<string, string> = { [AGENT_CONFIG_COMMON_KEY]: JSON.stringify(common, null, 2) + '\n' };
  for (const n of sorted) data[agentConfigNodeKey(n)] = JSON.stringify(nodes.get(n), null, 2) + '\n';
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: agentConfigMapName(name), namespace: opts.namespace, labels: objectLabels(name), ownerReferences: [ownerReference(p)] },
    data,
  };
}

export function renderDaemonSet(p: SixBed4Prefix, nodeSelector: Record<string, string>, port: number, metricsPort: number, opts: RenderOptions): KubeObject {
  const name = p.metadata.name!;
  const selector = agentLabels(name);
  // Delivering /112 slices means entering pods' network namespaces: the agent must see their
  // processes (hostPID), open their namespaces across users (SYS_PTRACE) and setns into them
  // (SYS_ADMIN) — what CNI plugins have. Without slices it keeps to NET_ADMIN and NET_RAW.
  const slices = p.spec.slices?.enabled === true;
  const caps = slices ? ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE'] : ['NET_ADMIN', 'NET_RAW'];
  // Exec probes ask this container's agent on its own Unix socket: while a new agent Pod starts beside the old one,
  // the metrics port on the host network is still the old agent's (agent/cli/probe.ts).
  const probe = (extra: Record<string, number>) => ({ exec: { command: ['node', AGENT_PROBE, AGENT_HEALTH_SOCKET] }, ...extra });
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: agentDaemonSetName(name), namespace: opts.namespace, labels: objectLabels(name), ownerReferences: [ownerReference(p)] },
    spec: {
      selector: { matchLabels: selector },
      // Make before break: the new agent Pod starts beside the old one and takes its tunnel and UDP port over
      // (router handover), then the old one goes; so an upgrade loses only packets in flight. This is why the Pod
      // declares no ports: on the host network a declared port is a host port, and two Pods could not share it.
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { ...selector } },
        spec: {
          hostNetwork: true,
          ...(slices ? { hostPID: true } : {}),
          dnsPolicy: 'ClusterFirstWithHostNet',
          serviceAccountName: opts.serviceAccount,
          nodeSelector: { 'kubernetes.io/os': 'linux', ...nodeSelector },
          tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }],
          terminationGracePeriodSeconds: 30,
          securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
          containers: [{
            name: 'agent',
            image: opts.image,
            imagePullPolicy: opts.imagePullPolicy ?? 'IfNotPresent',
            args: ['agent', '--prefix', name, '--metrics', `:${metricsPort}`, '--health-socket', AGENT_HEALTH_SOCKET,
              '--log-format', 'json', ...(opts.logLevel ? ['--log-level', opts.logLevel] : [])],
            env: [
              { name: 'NODE_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } } },
              { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } } },
              { name: 'SIXBED4_AGENT_CONFIG_DIR', value: AGENT_CONFIG_DIR },
              { name: 'SIXBED4_PROC_SYS', value: AGENT_PROC_SYS },
              // metrics on the node's InternalIP, not on every address (the routed /64 would reach them)
              { name: 'SIXBED4_METRICS_ADDRESS', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'status.hostIP' } } },
            ],
            readinessProbe: probe({ periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 }),
            livenessProbe: probe({ initialDelaySeconds: 15, periodSeconds: 20, timeoutSeconds: 10, failureThreshold: 3 }),
            resources: opts.resources ?? DEFAULT_AGENT_RESOURCES,
            securityContext: {
              privileged: false,
              allowPrivilegeEscalation: false,
              readOnlyRootFilesystem: true,
              runAsUser: 0,
              runAsNonRoot: false,
              capabilities: { drop: ['ALL'], add: caps },
            },
            volumeMounts: [
              { name: 'config', mountPath: AGENT_CONFIG_DIR, readOnly: true },
              { name: 'dev-net-tun', mountPath: '/dev/net/tun' },
              { name: 'proc-sys-net', mountPath: `${AGENT_PROC_SYS}/net` },
              { name: 'state', mountPath: AGENT_STATE_DIR },
              { name: 'tmp', mountPath: '/tmp' },
            ],
          }],
          volumes: [
            { name: 'config', configMap: { name: agentConfigMapName(name) } },
            { name: 'dev-net-tun', hostPath: { path: '/dev/net/tun', type: 'CharDevice' } },
            { name: 'proc-sys-net', hostPath: { path: '/proc/sys/net', type: 'Directory' } },
            { name: 'state', hostPath: { path: opts.stateDir ?? AGENT_STATE_DIR, type: 'DirectoryOrCreate' } },
            { name: 'tmp', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
          ],
        },
      },
    },
  };
}
