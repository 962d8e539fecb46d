// The agent's entry in its prefix's status (status.nodes is a list map keyed
// by node name): each agent applies only its own fields with its own field
// manager, so agents and the operator never overwrite each other.
import { API_VERSION, KIND, agentFieldManager, type NodeStatus } from '../../kube/api.js';
import { paths, type Kube } from '../../kube/client.js';

export type AgentReport = Omit<NodeStatus, 'name' | 'prefix' | 'listen'>;

export async function reportNode(kube: Kube, prefixName: string, node: string, report: AgentReport): Promise<void> {
  await kube.apply(paths.prefixStatus(prefixName), {
    apiVersion: API_VERSION, kind: KIND, metadata: { name: prefixName },
    status: { nodes: [{ name: node, ...report }] },
  }, agentFieldManager(node), { force: true });
}
