// What a prefix should look like on the nodes: which nodes serve it, each
// node's /64, listen address and local addresses, and what cannot be served
// (problems, which become the Degraded condition). Pure.
import { allocate, type AllocationResult } from '../../kube/subnets.js';
import { tunnelName, type AgentNodeConfig, type KubeObject } from '../../kube/api.js';
import type { CheckedSpec, Problem } from '../../kube/prefix-spec.js';
import { formatIPv6, inPrefix, parseIPv6, parsePrefix, type Prefix } from '../../lib/ip.js';
import { planFailover, type FailoverState } from './failover.js';

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  /** first IPv4 ExternalIP, else first IPv4 InternalIP */
  address?: string;
  /** the first IPv4 InternalIP when address is an ExternalIP other than it: where to bind behind a 1:1 NAT */
  internal?: string;
  /** the node's IPv6 addresses (any type), canonical: a failover next hop must not be one */
  v6?: string[];
  /** spec.unschedulable (kubectl cordon, drain): a failover group hands over from it */
  cordoned?: boolean;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function nodeInfo(node: KubeObject): NodeInfo {
  const addrs = (
    (node.status as { addresses?: { type?: string; address?: string }[] } | undefined)?.addresses ?? []
  ).filter((a) => typeof a.address === 'string' && IPV4.test(a.address));
  const internal = addrs.find((a) => a.type === 'InternalIP')?.address;
  const address = addrs.find((a) => a.type === 'ExternalIP')?.address ?? internal;
  const v6: string[] = [];
  for (const a of (node.status as { addresses?: { address?: unknown }[] } | undefined)?.addresses ?? []) {
    if (typeof a.address !== 'string' || !a.address.includes(':')) continue;
    try {
      v6.push(formatIPv6(parseIPv6(a.address)));
    } catch {
      /* not an address: not ours to judge */
    }
  }
  return {
    name: node.metadata.name ?? '',
    labels: node.metadata.labels ?? {},
    ...(address ? { address } : {}),
    ...(internal && internal !== address ? { internal } : {}),
    ...(v6.length ? { v6 } : {}),
    ...((node.spec as { unschedulable?: boolean } | undefined)?.unschedulable ? { cordoned: true } : {}),
  };
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** Another SixBed4Prefix, for overlap checks and for listen addresses two prefixes would share on a node. */
export interface OtherPrefix {
  name: string;
  prefix: string;
  creationTimestamp?: string;
  /** node -> "address:port" its agent listens on for that prefix (from its agent ConfigMap) */
  listens?: ReadonlyMap<string, string>;
}

/** Whether the other prefix came first (older, or as old and a smaller name): it keeps what both want. */
function olderThan(o: OtherPrefix, name: string, created: string | undefined): boolean {
  const mine = created ?? '';
  const theirs = o.creationTimestamp ?? '';
  return theirs < mine || (theirs === mine && o.name < name);
}

export interface Plan {
  allocation: AllocationResult;
  /** node -> its share, for nodes that serve */
  nodes: Map<string, AgentNodeConfig>;
  problems: Problem[];
  selected: string[];
}

function list(names: readonly string[], max = 10): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

/** True when two prefixes share any address. */
export function overlaps(a: Prefix, b: Prefix): boolean {
  const shorter = a.length <= b.length ? a : b;
  const longer = shorter === a ? b : a;
  return inPrefix(shorter, longer.bytes);
}

/**
 * The older of two overlapping prefixes keeps serving (creation time, then name);
 * returns the names of older overlapping prefixes that win over `name`.
 */
export function overlappingWinners(
  name: string,
  created: string | undefined,
  prefix: Prefix,
  others: readonly OtherPrefix[],
): string[] {
  const winners: string[] = [];
  for (const o of others) {
    if (o.name === name) continue;
    let p: Prefix;
    try {
      p = parsePrefix(o.prefix);
    } catch {
      continue;
    }
    if (!overlaps(prefix, p)) continue;
    if (olderThan(o, name, created)) winners.push(`${o.name} (${p.text})`);
  }
  return winners;
}

export function plan(
  name: string,
  created: string | undefined,
  spec: CheckedSpec,
  allNodes: readonly NodeInfo[],
  previous: Record<string, string>,
  others: readonly OtherPrefix[] = [],
  failoverState: FailoverState = {},
): Plan {
  const problems: Problem[] = [];
  const winners = overlappingWinners(name, created, spec.prefix, others);
  const selectedInfos = allNodes
    .filter((n) => selects(spec.nodeSelector, n.labels))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const selected = selectedInfos.map((n) => n.name);
  if (winners.length) {
    problems.push({
      reason: 'PrefixOverlap',
      message: `prefix ${spec.prefix.text} overlaps the older SixBed4Prefix ${list(winners)}; this one is not served until the overlap is removed`,
    });
    return { allocation: allocate(spec.prefix, [], previous), nodes: new Map(), problems, selected };
  }

  const selectorText = Object.keys(spec.nodeSelector).length
    ? `spec.nodeSelector ${JSON.stringify(spec.nodeSelector)}`
    : 'spec.nodeSelector (empty: every node)';
  if (spec.failover) {
    const f = planFailover(name, spec, selectedInfos, previous, failoverState, selectorText);
    problems.push(...f.problems);
    problems.push(...listenClashes(name, created, f.nodes, others));
    return { allocation: f.allocation, nodes: f.nodes, problems, selected };
  }
  const allocation = allocate(spec.prefix, selected, previous);
  const selection = selectionProblem(spec, selected, allocation, selectorText);
  if (selection) problems.push(selection);
  const shared = sharedListen(spec, allocation.assigned.size);
  problems.push(...shared.problems);

  const nodes = new Map<string, AgentNodeConfig>();
  const noAddress: string[] = [];
  const servedLocal = new Set<string>();
  for (const info of selectedInfos) {
    const sub = allocation.assigned.get(info.name);
    if (!sub) continue;
    const share = nodeShare(name, spec, info, sub, shared, servedLocal);
    if (share) nodes.set(info.name, share);
    else noAddress.push(info.name);
  }
  problems.push(...listenClashes(name, created, nodes, others));
  if (noAddress.length) {
    problems.push({
      reason: 'NoNodeAddress',
      message: `node ${list(noAddress)} has no IPv4 ExternalIP or InternalIP to listen on; set spec.listen.address or give the node an IPv4 address`,
    });
  }
  const unserved = spec.localAddresses.filter((a) => !a.perNode && !servedLocal.has(a.text)).map((a) => a.text);
  if (unserved.length && nodes.size) {
    problems.push({
      reason: 'LocalAddressNotServed',
      message: `no serving node's /64 contains local address ${list(unserved)}; write ::x to use an address in every node's /64, or pin a node to that /64 in the ${'sixbed4.io/allocations'} annotation`,
    });
  }
  return { allocation, nodes, problems, selected };
}

/**
 * What is wrong with the selection, if anything: it selects no node; it selects several for a /64 (one node serves
 * a /64: the one already holding it keeps it); or more nodes than the prefix has /64s.
 */
function selectionProblem(
  spec: CheckedSpec,
  selected: readonly string[],
  allocation: AllocationResult,
  selectorText: string,
): Problem | undefined {
  if (selected.length === 0)
    return {
      reason: 'NoNodesSelected',
      message: `${selectorText} matches no node; nothing serves ${spec.prefix.text}`,
    };
  if (spec.prefix.length === 64 && selected.length > 1) {
    const holder = [...allocation.assigned.keys()][0];
    return {
      reason: 'MultipleNodesSelected',
      message:
        `${spec.prefix.text} is a /64, which exactly one node serves, but ${selectorText} matches ${selected.length} nodes (${list(selected)}); ` +
        (holder ? `${holder} keeps serving it` : 'none serves it until the selector matches exactly one node'),
    };
  }
  if (allocation.unassigned.length)
    return {
      reason: 'PrefixExhausted',
      message: `${selected.length} nodes are selected but ${spec.prefix.text} has only ${2 ** (64 - spec.prefix.length)} /64s; without a /64: ${list(allocation.unassigned)}`,
    };
  return undefined;
}

/** Whether spec.listen's address and advertise go unused because several nodes serve (and the problems saying so). */
interface SharedListen {
  listen: boolean;
  advertise: boolean;
  problems: Problem[];
}

/**
 * spec.listen.address and .advertise name one IPv4 address; with several serving nodes they cannot share it, so
 * each node uses its own instead. One advertised IPv4:port reaches one node through its DNAT: with several nodes it
 * would be a lie for all but one.
 */
function sharedListen(spec: CheckedSpec, serving: number): SharedListen {
  const out: SharedListen = {
    listen: spec.listenAddress !== undefined && serving > 1,
    advertise: spec.advertise !== undefined && serving > 1,
    problems: [],
  };
  if (out.listen) {
    out.problems.push({
      reason: 'ListenAddressShared',
      message: `spec.listen.address ${spec.listenAddress} is set but ${serving} nodes serve this prefix and cannot share one address; each uses its own node address instead (remove listen.address, or select one node)`,
    });
  }
  if (out.advertise) {
    out.problems.push({
      reason: 'ListenAddressShared',
      message: `spec.listen.advertise ${spec.advertise} is set but ${serving} nodes serve this prefix and cannot share one advertised address; each advertises its own listen address instead (remove listen.advertise, or select one node)`,
    });
  }
  return out;
}

/**
 * A serving node's share of the prefix, as its agent gets it: its /64, where it listens, and the spec's settings;
 * undefined when it has no address to listen on. Adds to servedLocal the full local addresses its /64 holds.
 */
function nodeShare(
  name: string,
  spec: CheckedSpec,
  info: NodeInfo,
  sub: string,
  shared: SharedListen,
  servedLocal: Set<string>,
): AgentNodeConfig | undefined {
  const address = shared.listen ? info.address : (spec.listenAddress ?? info.address);
  if (!address) return undefined;
  const local = localAddressesIn(spec, parsePrefix(sub), servedLocal);
  return {
    prefix: sub,
    // Cloud-style nodes: the ExternalIP may be a 1:1 NAT in front of the InternalIP; the agent binds this if so.
    listen: {
      address,
      port: spec.port,
      ...(address === info.address && info.internal ? { bind: info.internal } : {}),
      ...(spec.advertise && !shared.advertise ? { advertise: spec.advertise } : {}),
    },
    ...(spec.uplink ? { uplink: spec.uplink } : {}),
    localAddresses: local,
    localAddressMode: spec.localAddressMode,
    routes: spec.routes,
    ndpProxy: spec.ndpProxy,
    // Only when asked for: a share without it is the same text as before the field existed (no router restart).
    ...(spec.fastPath !== 'off' ? { fastPath: spec.fastPath } : {}),
    ...(spec.fastPathDirect ? { fastPathDirect: true as const } : {}),
    ...(spec.fastPathXdp ? { fastPathXdp: true as const } : {}),
    tunnel: tunnelName(name),
  };
}

/**
 * The local addresses in one node's /64: each ::x form with the /64's upper half, and the full addresses inside it
 * (those are added to servedLocal: a full address outside every serving /64 is a problem).
 */
function localAddressesIn(spec: CheckedSpec, subnet: Prefix, servedLocal: Set<string>): string[] {
  const local: string[] = [];
  for (const a of spec.localAddresses) {
    if (a.perNode) {
      const b = Uint8Array.from(subnet.bytes);
      b.set(a.bytes.subarray(8), 8);
      local.push(formatIPv6(b));
    } else if (inPrefix(subnet, a.bytes)) {
      local.push(a.text);
      servedLocal.add(a.text);
    }
  }
  return local;
}

/**
 * One agent serves every prefix of its node: two prefixes cannot listen on one IPv4:port there (their routers would
 * share the port and split each other's peers). The older prefix keeps it; this one does not serve that node (its
 * share is taken out of `nodes`).
 */
function listenClashes(
  name: string,
  created: string | undefined,
  nodes: Map<string, AgentNodeConfig>,
  others: readonly OtherPrefix[],
): Problem[] {
  const clashes: string[] = [];
  for (const [node, share] of nodes) {
    const at = `${share.listen.address}:${share.listen.port}`;
    const holder = others.find((o) => o.name !== name && o.listens?.get(node) === at && olderThan(o, name, created));
    if (holder) {
      clashes.push(`node ${node} listens on ${at} for the older SixBed4Prefix ${holder.name}`);
      nodes.delete(node);
    }
  }
  return clashes.length
    ? [
        {
          reason: 'ListenAddressShared',
          message: `${list(clashes, 5)}: not served there (set another spec.listen.port, or select other nodes)`,
        },
      ]
    : [];
}
