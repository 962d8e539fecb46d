// The agent's share of a SixBed4Prefix, as the operator renders it into the
// prefix's agent ConfigMap: key prefix.json for what all nodes share,
// node.<name>.json for one node. The node agent reads the ConfigMaps through
// the API and keeps a copy of each share on the node's disk, so an agent that
// restarts while the API server is down still serves what it served.
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  agentConfigNodeKey,
  AGENT_CONFIG_COMMON_KEY,
  type AgentCommonConfig,
  type AgentNodeConfig,
} from '../../kube/api.js';

export interface NodeShare {
  readonly common: AgentCommonConfig;
  readonly node: AgentNodeConfig | null;
  readonly text: string;
}

/** This node's share from a ConfigMap's data; node is null when it has none (yet). Throws when the common part is missing. */
export function shareFromData(data: Record<string, string>, nodeName: string): NodeShare {
  const commonText = data[AGENT_CONFIG_COMMON_KEY];
  if (!commonText) throw new Error(`no ${AGENT_CONFIG_COMMON_KEY} in the agent config`);
  const nodeText = data[agentConfigNodeKey(nodeName)] ?? '';
  return {
    common: JSON.parse(commonText) as AgentCommonConfig,
    node: nodeText ? (JSON.parse(nodeText) as AgentNodeConfig) : null,
    text: restartKey(nodeText),
  };
}

/**
 * What decides a restart: any change to this node's share that the agent acts on. The failover member list is the
 * operator's record of the group (every member's share lists all of them); no member uses it, so a standby joining
 * or leaving must not restart the active member's router, which would fail the /64 over for nothing.
 */
function restartKey(nodeText: string): string {
  if (!nodeText) return '';
  const node = JSON.parse(nodeText) as AgentNodeConfig;
  if (!node.failover) return nodeText;
  const { members: _members, ...failover } = node.failover;
  return JSON.stringify({ ...node, failover });
}

const CACHE_PREFIX = 'share-';

/** The node's copy of the shares it serves: <dir>/share-<prefix>.json holds the ConfigMap data. */
export const shareCache = {
  async save(dir: string, prefixName: string, data: Record<string, string>): Promise<void> {
    const file = join(dir, `${CACHE_PREFIX}${prefixName}.json`);
    await writeFile(`${file}.tmp`, JSON.stringify(data), { mode: 0o600 });
    await rename(`${file}.tmp`, file);
  },
  async remove(dir: string, prefixName: string): Promise<void> {
    await rm(join(dir, `${CACHE_PREFIX}${prefixName}.json`), { force: true });
  },
  /** Every cached share (prefix name → ConfigMap data); unreadable files are skipped. */
  async load(dir: string): Promise<Map<string, Record<string, string>>> {
    const out = new Map<string, Record<string, string>>();
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return out;
    }
    for (const n of names) {
      if (!n.startsWith(CACHE_PREFIX) || !n.endsWith('.json')) continue;
      try {
        out.set(
          n.slice(CACHE_PREFIX.length, -'.json'.length),
          JSON.parse(await readFile(join(dir, n), 'utf8')) as Record<string, string>,
        );
      } catch {
        /* a torn or foreign file: the API will tell */
      }
    }
    return out;
  },
};
