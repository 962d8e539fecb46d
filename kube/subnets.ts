// Stable allocation of /64s to nodes. Pure: the durable record (the
// sixbed4.io/allocations annotation) goes in and comes out.
//
// * A node that has a /64 keeps it: across operator restarts, agent restarts,
//   and the Node object being deleted and re-created (allocations of nodes that
//   are gone are retained until the space runs out).
// * A new node's first choice is deterministic (a hash of its name), so even a
//   lost record mostly gives the same answer; on collision the next free /64.
// * Only when every /64 is taken are retained allocations of nodes that are no
//   longer selected reclaimed.
// * A /64 prefix has room for one node. If several are selected, the node that
//   already serves it keeps it; if none does, nobody gets it (which node is
//   meant is ambiguous, and two routers for one /64 would split its traffic).
import { fnv1a } from './hash.js';
import { formatIPv6, parsePrefix, type Prefix } from '../lib/ip.js';

export interface AllocationResult {
  /** The record to persist: node -> /64, sorted by node, including retained entries. */
  allocations: Record<string, string>;
  /** Selected nodes that have a /64. */
  assigned: Map<string, string>;
  /** Selected nodes that got none (no room, or ambiguous /64). */
  unassigned: string[];
  /** Entries of the previous record that were not usable, as messages. */
  dropped: string[];
  /** Nodes whose retained /64 was given to another node. */
  reclaimed: string[];
  /** Selected nodes that got a /64 in this round. */
  added: string[];
}

/** Number of /64s in a /48../64 prefix. */
export function subnetCount(prefix: Prefix): number {
  if (prefix.length > 64 || prefix.length < 48) throw new Error(`cannot split ${prefix.text} into /64s`);
  return 2 ** (64 - prefix.length);
}

/** The i-th /64 of prefix, as bytes. */
export function subnetBytes(prefix: Prefix, index: number): Uint8Array {
  // bits prefix.length..63 hold the index: at most 16 bits (a /48), in bytes 6..7
  const b = Uint8Array.from(prefix.bytes);
  b[6] = b[6]! | ((index >> 8) & 0xff);
  b[7] = b[7]! | (index & 0xff);
  return b;
}

export function subnetText(prefix: Prefix, index: number): string {
  return `${formatIPv6(subnetBytes(prefix, index))}/64`;
}

/** Index of a /64 (text) inside prefix, or -1 when it is not a /64 of it. */
export function subnetIndex(prefix: Prefix, text: string): number {
  let p: Prefix;
  try {
    p = parsePrefix(text);
  } catch {
    return -1;
  }
  if (p.length !== 64) return -1;
  for (let i = 0; i < 6; i++) {
    const maskBits = Math.max(0, Math.min(8, prefix.length - i * 8));
    const mask = (0xff << (8 - maskBits)) & 0xff;
    if ((p.bytes[i]! & mask) !== (prefix.bytes[i]! & mask)) return -1;
  }
  const index = (p.bytes[6]! << 8) | p.bytes[7]!;
  // the bits of bytes 6..7 that belong to the prefix must match too
  const hostBits = 64 - prefix.length;
  const fixed = 0xffff & ~((1 << hostBits) - 1);
  const prefixWord = (prefix.bytes[6]! << 8) | prefix.bytes[7]!;
  if ((index & fixed) !== (prefixWord & fixed)) return -1;
  return index & ((1 << hostBits) - 1);
}

/** FNV-1a (32 bit) of the node name: the deterministic first choice. */
export function preferredIndex(node: string, count: number): number {
  return fnv1a(node) % count;
}

/** Parses the annotation; anything unusable yields an empty record plus a message. */
export function parseAllocations(text: string | undefined): { record: Record<string, string>; error?: string } {
  if (text === undefined || text === '') return { record: {} };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { record: {}, error: `the allocations annotation is not JSON (${(e as Error).message}); starting afresh` };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return { record: {}, error: 'the allocations annotation is not a JSON object; starting afresh' };
  const record: Record<string, string> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) if (typeof val === 'string') record[k] = val;
  return { record };
}

export function formatAllocations(record: Record<string, string>): string {
  return JSON.stringify(
    Object.fromEntries(
      Object.keys(record)
        .sort()
        .map((k) => [k, record[k]!]),
    ),
  );
}

export function allocate(
  prefix: Prefix,
  selected: readonly string[],
  previous: Record<string, string>,
): AllocationResult {
  const a = new Allocation(prefix, [...new Set(selected)].sort());
  a.restore(previous);
  if (subnetCount(prefix) === 1) a.assignOnly();
  else a.assignEach();
  return a.result();
}

/**
 * One allocation round. A class because its steps share the record as it is being rebuilt (which node owns which
 * /64, both ways) and the lists of what happened that the result reports.
 */
class Allocation {
  private readonly count: number;
  private readonly isSelected: ReadonlySet<string>;
  /** index -> node */
  private readonly owner = new Map<number, string>();
  private readonly byNode = new Map<string, number>();
  private readonly assigned = new Map<string, string>();
  private readonly unassigned: string[] = [];
  private readonly dropped: string[] = [];
  private readonly reclaimed: string[] = [];
  private readonly added: string[] = [];

  constructor(
    private readonly prefix: Prefix,
    /** the selected nodes, sorted, each once */
    private readonly nodes: readonly string[],
  ) {
    this.count = subnetCount(prefix);
    this.isSelected = new Set(nodes);
  }

  /** The previous record, cleaned: inside the prefix, one node per /64. */
  restore(previous: Record<string, string>): void {
    for (const node of Object.keys(previous).sort()) {
      const idx = subnetIndex(this.prefix, previous[node]!);
      if (idx < 0) {
        this.dropped.push(`${node}: ${previous[node]} is not a /64 of ${this.prefix.text}`);
        continue;
      }
      const holder = this.owner.get(idx);
      if (holder !== undefined) {
        // two nodes on one /64 (a hand edit): the selected one wins, else the first by name
        if (this.nodes.includes(node) && !this.nodes.includes(holder)) {
          this.byNode.delete(holder);
          this.dropped.push(`${holder}: ${previous[node]} is also allocated to ${node}`);
        } else {
          this.dropped.push(`${node}: ${previous[node]} is also allocated to ${holder}`);
          continue;
        }
      }
      this.owner.set(idx, node);
      this.byNode.set(node, idx);
    }
  }

  /**
   * A /64 prefix, room for one node: the selected node that holds it keeps it; else a single selected node takes it
   * (from a holder no longer selected); several selected and none holding it is ambiguous, so nobody gets it.
   */
  assignOnly(): void {
    const nodes = this.nodes;
    const holder = this.owner.get(0);
    if (holder !== undefined && this.isSelected.has(holder)) {
      this.assigned.set(holder, subnetText(this.prefix, 0));
      for (const n of nodes) if (n !== holder) this.unassigned.push(n);
    } else if (nodes.length === 1) {
      if (holder !== undefined) {
        this.reclaimed.push(holder);
        this.byNode.delete(holder);
      }
      this.take(nodes[0]!, 0);
    } else {
      this.unassigned.push(...nodes);
    }
  }

  /** Several /64s: every selected node keeps its /64, then the others each get one, in name order. */
  assignEach(): void {
    for (const n of this.nodes) {
      const idx = this.byNode.get(n);
      if (idx !== undefined) this.assigned.set(n, subnetText(this.prefix, idx));
    }
    for (const n of this.nodes) {
      if (this.assigned.has(n)) continue;
      const chosen = this.choose(n);
      if (chosen < 0) this.unassigned.push(n);
      else this.take(n, chosen);
    }
  }

  /**
   * The /64 for a node without one, or -1: the first free one probing from its preferred index (a hash of its name,
   * so a lost record mostly gives the same answer); when all are taken, the first one retained for a node no longer
   * selected, in the same probe order (that node's allocation is reclaimed).
   */
  private choose(n: string): number {
    const start = preferredIndex(n, this.count);
    for (let k = 0; k < this.count; k++) {
      const idx = (start + k) % this.count;
      if (!this.owner.has(idx)) return idx;
    }
    for (let k = 0; k < this.count; k++) {
      const idx = (start + k) % this.count;
      const holder = this.owner.get(idx)!;
      if (!this.isSelected.has(holder)) {
        this.reclaimed.push(holder);
        this.byNode.delete(holder);
        return idx;
      }
    }
    return -1;
  }

  private take(n: string, idx: number): void {
    this.owner.set(idx, n);
    this.byNode.set(n, idx);
    this.assigned.set(n, subnetText(this.prefix, idx));
    this.added.push(n);
  }

  result(): AllocationResult {
    const allocations: Record<string, string> = {};
    for (const n of [...this.byNode.keys()].sort()) allocations[n] = subnetText(this.prefix, this.byNode.get(n)!);
    const { assigned, unassigned, dropped, reclaimed, added } = this;
    return { allocations, assigned, unassigned, dropped, reclaimed, added };
  }
}
