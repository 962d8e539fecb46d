// What the operator keeps per prefix, rendered from the plan: the agent
// ConfigMap, one key per serving node plus the part they share. Pure. The node
// agents (one DaemonSet for the cluster, owned by the chart) follow these
// ConfigMaps through the API, so node changes restart no agent.
import {
  AGENT_CONFIG_COMMON_KEY,
  API_VERSION,
  KIND,
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  LABEL_NAME,
  LABEL_PREFIX,
  MANAGED_BY,
  agentConfigMapName,
  agentConfigNodeKey,
  type AgentCommonConfig,
  type AgentNodeConfig,
  type KubeObject,
  type OwnerReference,
  type SixBed4Prefix,
} from '../../kube/api.js';

export interface RenderOptions {
  /** namespace of the operator, where the per-prefix objects live */
  namespace: string;
}

export function agentLabels(prefixName: string): Record<string, string> {
  return { [LABEL_NAME]: 'sixbed4', [LABEL_COMPONENT]: 'agent', [LABEL_PREFIX]: prefixName };
}

function objectLabels(prefixName: string): Record<string, string> {
  return { ...agentLabels(prefixName), [LABEL_MANAGED_BY]: MANAGED_BY };
}

export function ownerReference(p: SixBed4Prefix): OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: p.metadata.name!,
    uid: p.metadata.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function renderConfigMap(
  p: SixBed4Prefix,
  prefixText: string,
  metricsPort: number,
  nodes: ReadonlyMap<string, AgentNodeConfig>,
  opts: RenderOptions,
): KubeObject {
  const name = p.metadata.name!;
  const sorted = [...nodes.keys()].sort();
  const common: AgentCommonConfig = {
    apiVersion: API_VERSION,
    kind: 'AgentConfig',
    name,
    prefix: prefixText,
    nodes: sorted,
    metricsPort,
  };
  const data: Record<string, string> = { [AGENT_CONFIG_COMMON_KEY]: JSON.stringify(common, null, 2) + '\n' };
  for (const n of sorted) data[agentConfigNodeKey(n)] = JSON.stringify(nodes.get(n), null, 2) + '\n';
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: agentConfigMapName(name),
      namespace: opts.namespace,
      labels: objectLabels(name),
      ownerReferences: [ownerReference(p)],
    },
    data,
  };
}
