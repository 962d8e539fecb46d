// The agent's share of a SixBed4Prefix, as the operator renders it into the
// agent ConfigMap (mounted at /etc/sixbed4): prefix.json for what all nodes
// share, node.<name>.json for this node. Files rather than API reads, so an
// agent that restarts while the API server is down still gets its config.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { agentConfigNodeKey, AGENT_CONFIG_COMMON_KEY, type AgentCommonConfig, type AgentNodeConfig } from '../../kube/api.js';

export interface NodeShare { readonly common: AgentCommonConfig; readonly node: AgentNodeConfig | null; readonly text: string; }

/** Reads the config; node is null when this node has no share (yet). Throws when the common part is missing. */
export async function readShare(dir: string, nodeName: string): Promise<NodeShare> {
  const commonText = await readFile(join(dir, AGENT_CONFIG_COMMON_KEY), 'utf8');
  let nodeText = '';
  try {
    nodeText = await readFile(join(dir, agentConfigNodeKey(nodeName)), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return {
    common: JSON.parse(commonText) as AgentCommonConfig,
    node: nodeText ? JSON.parse(nodeText) as AgentNodeConfig : null,
    // What decides a restart: any change to this node's share.
    text: nodeText,
  };
}
