// The inbound policy of a node's slices, as nftables text. Pure: parsing the
// pod annotation, rendering the node's one table, reading the live table back
// (from `nft -j`). Nothing here touches the kernel (inbound-apply.ts does).
//
// A slice is globally routed but outside the cluster's CNI, so NetworkPolicy
// does not reach it. Per prefix the operator says `spec.slices.inbound:
// filtered | open` (filtered by default); a pod of a filtered prefix opens
// ports with the annotation `sixbed4.io/allow-inbound: "tcp/443, udp/5353,
// tcp/8000-8080"`.
//
// What the node holds: one table for all its slices, replaced as a whole in
// one nft transaction (so a change never leaves a moment without a filter):
//
//   table ip6 sixbed4_slices {
//     chain forward {                       hook forward, priority filter, policy accept
//       oifname vmap { "s4<hash>" : jump slice_s4<hash>, ... }     filtered slices only
//     }
//     chain slice_s4<hash> {
//       ct state established,related accept     replies to what the pod opened
//       ct state invalid drop                   garbage gets no answer
//       icmpv6 type { ...essential } accept     RFC 4890, see ESSENTIAL_ICMPV6
//       tcp dport { 443, 8000-8080 } accept     the annotation's ports
//       meta l4proto tcp reject with tcp reset  a closed TCP port is refused at once,
//       reject with icmpv6 admin-prohibited     anything else is told it is prohibited
//     }
//   }
//
// Why reject and not drop: a client of a closed port should learn so at once
// ("connection refused", "administratively prohibited") instead of hanging
// until its own timeout; hiding the pod gains nothing, since echo requests
// are answered anyway (RFC 4890). TCP gets a reset because every TCP stack
// acts on it immediately (some ignore ICMP errors during a connect); the
// kernel rate-limits the ICMPv6 errors, and a reset is never larger than the
// segment that caused it, so neither amplifies a flood.
//
// Matching is by the name of the interface the packet leaves through (the
// slice's host end), not its index: the rule may be in place before the veth
// exists and survives its re-creation. Only forwarded traffic is filtered:
// what the node itself sends to a pod (output hook) is not, nor anything the
// pod sends out. Open slices have no chain, and with no filtered slice at all
// the table is removed.
import { InputError } from '../../lib/errors.js';
import { HOST_IF_RE, parseSlice } from './slice.js';

export const ALLOW_INBOUND_ANNOTATION = 'sixbed4.io/allow-inbound';

export const INBOUND_PROTOS = ['tcp', 'udp', 'sctp'] as const;
export type InboundProto = (typeof INBOUND_PROTOS)[number];
export type InboundMode = 'filtered' | 'open';

/** Ports first..last (inclusive, 1..65535) of one protocol, open to inbound connections. */
export interface PortRule {
  proto: InboundProto;
  first: number;
  last: number;
}

/** One slice's policy on this node. */
export interface InboundEntry {
  /** The host end of the slice's veth (s4 + 13 hex digits, see hostIfName). */
  hostIf: string;
  /** The /112 (any valid spelling); hostIf must be its name. */
  slice: string;
  mode: InboundMode;
  /** Opened ports (only used when filtered); need not be sorted or merged. */
  rules: readonly PortRule[];
}

export const INBOUND_FAMILY = 'ip6';
export const INBOUND_TABLE = 'sixbed4_slices';
const CHAIN_PREFIX = 'slice_';

/**
 * ICMPv6 that a filtered slice accepts whatever its ports: RFC 4890 section
 * 4.3.1 (traffic that must not be dropped) lists destination unreachable,
 * packet too big (path MTU discovery breaks without it), time exceeded and
 * parameter problem (errors about the pod's own packets; conntrack also lets
 * most of them in as related, but not those about packets it did not track),
 * and echo request/reply (reachability checks, which the RFC asks to keep).
 * Codes are not split: the codes 4.3.1 leaves out of time exceeded and
 * parameter problem are in 4.3.2 (should not be dropped). Neighbour discovery
 * and MLD are link-local and never forwarded, so they have no place here.
 */
export const ESSENTIAL_ICMPV6 = [
  'destination-unreachable',
  'packet-too-big',
  'time-exceeded',
  'parameter-problem',
  'echo-request',
  'echo-reply',
] as const;

// ---------------------------------------------------------------------------
// The annotation

const MAX_PROBLEMS = 10;
const shown = (item: string) => `'${item.length > 40 ? `${item.slice(0, 37)}...` : item}'`;
const isProto = (p: string): p is InboundProto => (INBOUND_PROTOS as readonly string[]).includes(p);

function parsePort(digits: string): number | string {
  const n = Number(digits);
  if (n === 0) return 'port 0 is not a port';
  if (n > 65535) return `port ${digits.length > 8 ? `${digits.slice(0, 8)}...` : digits} is not a port (1..65535)`;
  return n;
}

function parseItem(item: string): PortRule | string {
  const slash = item.indexOf('/');
  if (slash < 0) {
    if (isProto(item.toLowerCase())) return `${shown(item)}: no port (e.g. ${item.toLowerCase()}/443)`;
    if (/^\d+(-\d+)?$/.test(item)) return `${shown(item)}: no protocol (e.g. tcp/${item})`;
    return `${shown(item)}: not of the form protocol/port or protocol/first-last (e.g. tcp/443, udp/8000-8080)`;
  }
  const proto = item.slice(0, slash).toLowerCase();
  const ports = item.slice(slash + 1);
  if (!isProto(proto)) return `${shown(item)}: protocol must be tcp, udp or sctp`;
  if (ports === '') return `${shown(item)}: no port (e.g. ${proto}/443)`;
  const m = /^(\d+)(?:-(\d+))?$/.exec(ports);
  if (!m)
    return `${shown(item)}: ${shown(ports)} is not a port number or range (1..65535, e.g. ${proto}/443 or ${proto}/8000-8080)`;
  const first = parsePort(m[1]!);
  if (typeof first === 'string') return `${shown(item)}: ${first}`;
  const last = m[2] === undefined ? first : parsePort(m[2]);
  if (typeof last === 'string') return `${shown(item)}: ${last}`;
  if (last < first) return `${shown(item)}: the range runs backwards (write ${proto}/${last}-${first})`;
  return { proto, first, last };
}

/**
 * Reads `sixbed4.io/allow-inbound`: items `proto/port` or `proto/first-last`
 * separated by commas and/or white space (spaces around `/` and `-` are
 * allowed; the protocol in any case). Every item that cannot be used becomes
 * a problem a person can act on (at most ten, then a count) and the others
 * still apply; overlapping, adjacent and repeated items are merged silently,
 * since nothing is lost. Never throws.
 */
export function parseAllowInbound(text: string): { rules: PortRule[]; problems: string[] } {
  const items = String(text ?? '')
    .split(',')
    .flatMap((part) =>
      part
        .replace(/\s*([/-])\s*/g, '$1')
        .trim()
        .split(/\s+/),
    )
    .filter((i) => i !== '');
  const rules: PortRule[] = [];
  const problems: string[] = [];
  for (const item of items) {
    const r = parseItem(item);
    if (typeof r === 'string') problems.push(r);
    else rules.push(r);
  }
  if (problems.length > MAX_PROBLEMS) {
    const more = problems.length - MAX_PROBLEMS;
    problems.splice(MAX_PROBLEMS, Infinity, `... and ${more} more item(s) that cannot be used`);
  }
  return { rules: mergeRules(rules), problems };
}

/** Sorted by protocol (tcp, udp, sctp) and port, overlapping and adjacent ranges joined. Assumes valid rules. */
function mergeRules(rules: readonly PortRule[]): PortRule[] {
  const order = (p: InboundProto) => INBOUND_PROTOS.indexOf(p);
  const sorted = [...rules].sort((a, b) => order(a.proto) - order(b.proto) || a.first - b.first || a.last - b.last);
  const out: PortRule[] = [];
  for (const r of sorted) {
    const prev = out[out.length - 1];
    if (prev && prev.proto === r.proto && r.first <= prev.last + 1) prev.last = Math.max(prev.last, r.last);
    else out.push({ proto: r.proto, first: r.first, last: r.last });
  }
  return out;
}

/** Checks rules that came from elsewhere than the parser, then merges them; throws InputError. */
export function normalizeRules(rules: readonly PortRule[]): PortRule[] {
  const port = (n: unknown) => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
  for (const r of rules) {
    if (!isProto(r?.proto) || !port(r.first) || !port(r.last) || r.last < r.first) {
      throw new InputError(
        `inbound rule ${JSON.stringify(r)} is not a protocol (tcp, udp, sctp) with ports first..last in 1..65535`,
      );
    }
  }
  return mergeRules(rules);
}

/** Rules as the annotation spells them: `tcp/443, tcp/8000-8080`; '' for none. */
export function formatRules(rules: readonly PortRule[]): string {
  return rules.map((r) => `${r.proto}/${r.first === r.last ? r.first : `${r.first}-${r.last}`}`).join(', ');
}

// ---------------------------------------------------------------------------
// The table

const header = `# sixbed4: inbound policy of this node's slices (generated; the table is replaced as a whole)\n`;
/** Creating the table first makes the delete succeed whether it existed or not: one transaction either way. */
const replaceTable = `table ${INBOUND_FAMILY} ${INBOUND_TABLE} {}\ndelete table ${INBOUND_FAMILY} ${INBOUND_TABLE}\n`;

/** The nft script that removes the table (idempotent: succeeds when there is none). */
export function renderInboundRemoval(): string {
  return header + replaceTable;
}

const portSet = (rules: readonly PortRule[]) => {
  const items = rules.map((r) => (r.first === r.last ? `${r.first}` : `${r.first}-${r.last}`));
  return items.length === 1 ? items[0]! : `{ ${items.join(', ')} }`;
};

/** Checks entries and brings them to one canonical form: sorted by interface, rules merged. Throws InputError. */
export function normalizeEntries(entries: readonly InboundEntry[]): InboundEntry[] {
  const byIf = new Map<string, InboundEntry>();
  for (const e of entries) {
    if (typeof e?.hostIf !== 'string' || !HOST_IF_RE.test(e.hostIf)) {
      throw new InputError(
        `'${String(e?.hostIf).slice(0, 40)}' is not a sixbed4 slice link name (s4 and 13 hex digits): not putting it into an nft script`,
      );
    }
    if (e.mode !== 'filtered' && e.mode !== 'open')
      throw new InputError(`${e.hostIf}: inbound mode '${String(e.mode)}' is neither filtered nor open`);
    const slice = parseSlice(e.slice);
    if (slice.hostIf !== e.hostIf)
      throw new InputError(`${e.hostIf} is not the link of slice ${slice.text} (that is ${slice.hostIf})`);
    const entry: InboundEntry = {
      hostIf: e.hostIf,
      slice: slice.text,
      mode: e.mode,
      rules: e.mode === 'open' ? [] : normalizeRules(e.rules ?? []),
    };
    const seen = byIf.get(e.hostIf);
    if (seen && (seen.mode !== entry.mode || formatRules(seen.rules) !== formatRules(entry.rules))) {
      throw new InputError(`${e.hostIf} (${slice.text}) is given twice with different policies`);
    }
    byIf.set(e.hostIf, entry);
  }
  return [...byIf.values()].sort((a, b) => (a.hostIf < b.hostIf ? -1 : a.hostIf > b.hostIf ? 1 : 0));
}

/**
 * The nft script (for one `nft -f -` run) that replaces the node's table with
 * one filtering exactly the filtered entries; with none (an empty list, or
 * only open slices) it removes the table. The same entries in any order give
 * the same text. Throws InputError for an interface name that is not one of
 * our slice links, a hostIf that is not its slice's, a bad rule, or one link
 * given two policies.
 */
export function renderInbound(entries: readonly InboundEntry[]): string {
  const filtered = normalizeEntries(entries).filter((e) => e.mode === 'filtered');
  if (filtered.length === 0) return renderInboundRemoval();
  const lines = [
    `table ${INBOUND_FAMILY} ${INBOUND_TABLE} {`,
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy accept;',
    '\t\toifname vmap {',
    ...filtered.map(
      (e, i) => `\t\t\t"${e.hostIf}" : jump ${CHAIN_PREFIX}${e.hostIf}${i < filtered.length - 1 ? ',' : ''}`,
    ),
    '\t\t}',
    '\t}',
  ];
  for (const e of filtered) {
    lines.push(
      '',
      `\tchain ${CHAIN_PREFIX}${e.hostIf} {`,
      `\t\t# ${e.slice}: ${e.rules.length ? `open ${formatRules(e.rules)}` : 'no port open'}`,
      '\t\tct state established,related accept',
      '\t\tct state invalid drop',
      `\t\ticmpv6 type { ${ESSENTIAL_ICMPV6.join(', ')} } accept`,
    );
    for (const proto of INBOUND_PROTOS) {
      const mine = e.rules.filter((r) => r.proto === proto);
      if (mine.length) lines.push(`\t\t${proto} dport ${portSet(mine)} accept`);
    }
    lines.push('\t\tmeta l4proto tcp reject with tcp reset', '\t\treject with icmpv6 admin-prohibited', '\t}');
  }
  lines.push('}');
  return header + replaceTable + lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------
// Reading the live table back

/** A slice link the live table filters, with the ports its chain opens. */
export interface LiveFiltered {
  hostIf: string;
  rules: PortRule[];
}

export interface LiveInbound {
  /** Whether the table exists at all. */
  present: boolean;
  /** Links sent to a chain that ends in a reject or drop, sorted. */
  filtered: LiveFiltered[];
  /** What in the table is not as sixbed4 writes it (a person or another tool changed it). */
  oddities: string[];
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | null => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null);

/** Ports of a match's right side: 443, {"range": [a, b]}, {"set": [...]}. Null for anything else. */
function portsOf(right: unknown): [number, number][] | null {
  if (typeof right === 'number') return [[right, right]];
  const o = obj(right);
  const range = o?.range;
  if (Array.isArray(range) && typeof range[0] === 'number' && typeof range[1] === 'number')
    return [[range[0], range[1]]];
  if (o && Array.isArray(o.set)) {
    const all = o.set.map(portsOf);
    return all.every((p) => p !== null) ? (all as [number, number][][]).flat() : null;
  }
  return null;
}

/** Whether an expression list is exactly one verdict of these kinds. */
const endsIn = (expr: Json[], kinds: string[]) => expr.length > 0 && kinds.some((k) => k in expr[expr.length - 1]!);

/**
 * What the live table does, from `nft -j list table ip6 sixbed4_slices`
 * (parsed; or `nft -j list ruleset`): which slice links it filters and the
 * ports it opens for each. Reads the dispatch (the forward hook chain's
 * `oifname vmap`) and each target chain's `<proto> dport ... accept` rules; a
 * link counts as filtered only when its chain's last rule rejects or drops.
 * Null or anything without our table reads as not present.
 */
export function readInbound(listing: unknown): LiveInbound {
  const items = (obj(listing)?.nftables as unknown[] | undefined) ?? [];
  const ours = (o: Json | null) => o?.family === INBOUND_FAMILY && o.table === INBOUND_TABLE;
  const present = items.some((i) => {
    const t = obj(obj(i)?.table);
    return t?.family === INBOUND_FAMILY && t.name === INBOUND_TABLE;
  });
  const live: LiveInbound = { present, filtered: [], oddities: [] };
  if (!present) return live;
  const chains = items.map((i) => obj(obj(i)?.chain)).filter((c): c is Json => ours(c));
  const rules = items.map((i) => obj(obj(i)?.rule)).filter((r): r is Json => ours(r));
  const exprOf = (r: Json) => (Array.isArray(r.expr) ? r.expr.map(obj).filter((e): e is Json => e !== null) : []);
  const hooks = chains.filter((c) => c.hook === 'forward');
  if (hooks.length !== 1) live.oddities.push(`${hooks.length} forward hook chains (expected 1)`);

  const targets = new Map<string, string>();
  for (const hook of hooks) {
    for (const r of rules.filter((x) => x.chain === hook.name)) {
      const vmap = obj(exprOf(r)[0]?.vmap);
      const key = obj(obj(vmap?.key)?.meta)?.key;
      const data = obj(vmap?.data)?.set;
      if (!vmap || key !== 'oifname' || !Array.isArray(data)) {
        live.oddities.push(`a rule in chain ${String(hook.name)} that is not the oifname dispatch`);
        continue;
      }
      // One pair or a list of pairs, whichever nft printed.
      const pairs = (data.length === 2 && typeof data[0] === 'string' ? [data] : data) as unknown[];
      for (const pair of pairs) {
        const [name, verdict] = Array.isArray(pair) ? pair : [];
        const target = obj(obj(verdict)?.jump)?.target ?? obj(obj(verdict)?.goto)?.target;
        if (typeof name === 'string' && typeof target === 'string') targets.set(name, target);
        else
          live.oddities.push(`a dispatch element ${JSON.stringify(pair).slice(0, 80)} that is not "name" : jump chain`);
      }
    }
  }

  for (const [hostIf, target] of targets) {
    const chainRules = rules.filter((r) => r.chain === target).map(exprOf);
    if (!chains.some((c) => c.name === target)) {
      live.oddities.push(`${hostIf} is sent to chain ${target}, which is missing`);
      continue;
    }
    if (!HOST_IF_RE.test(hostIf)) live.oddities.push(`the dispatch names '${hostIf}', not a slice link`);
    if (target !== CHAIN_PREFIX + hostIf)
      live.oddities.push(`${hostIf} is sent to chain ${target}, not ${CHAIN_PREFIX}${hostIf}`);
    const last = chainRules[chainRules.length - 1];
    if (!last || !endsIn(last, ['reject', 'drop'])) {
      live.oddities.push(`chain ${target} (${hostIf}) does not end in a reject or drop: the link is not filtered`);
      continue;
    }
    const opened: PortRule[] = [];
    for (const expr of chainRules) {
      const payload = obj(obj(obj(expr[0]?.match)?.left)?.payload);
      const proto = payload?.protocol;
      if (
        expr.length !== 2 ||
        !endsIn(expr, ['accept']) ||
        payload?.field !== 'dport' ||
        typeof proto !== 'string' ||
        !isProto(proto)
      )
        continue;
      const ports = portsOf(obj(expr[0]!.match)!.right);
      if (!ports) {
        live.oddities.push(`chain ${target}: a ${proto} dport rule with ports that are not numbers`);
        continue;
      }
      opened.push(...ports.map(([first, last]) => ({ proto, first, last })));
    }
    live.filtered.push({ hostIf, rules: mergeRules(opened) });
  }
  live.filtered.sort((a, b) => (a.hostIf < b.hostIf ? -1 : a.hostIf > b.hostIf ? 1 : 0));
  return live;
}

/** The slice links the live table filters (see readInbound), sorted. */
export function filteredInterfaces(listing: unknown): string[] {
  return readInbound(listing).filtered.map((f) => f.hostIf);
}

/**
 * How the live table differs in meaning from what the entries want, one
 * sentence a difference; empty when it does what they say. For CHECK: it
 * looks at which links are filtered and which ports are open, not at the
 * text (an odd table is reported through live.oddities as well).
 */
export function compareInbound(entries: readonly InboundEntry[], live: LiveInbound): string[] {
  const want = normalizeEntries(entries);
  const got = new Map(live.filtered.map((f) => [f.hostIf, f]));
  const out: string[] = [];
  for (const e of want) {
    const g = got.get(e.hostIf);
    got.delete(e.hostIf);
    const who = `${e.hostIf} (${e.slice})`;
    if (e.mode === 'open') {
      if (g) out.push(`${who} should be open but is filtered`);
    } else if (!g) {
      out.push(`${who} should be filtered but is not`);
    } else if (formatRules(g.rules) !== formatRules(e.rules)) {
      out.push(`${who} opens ${formatRules(g.rules) || 'no port'} instead of ${formatRules(e.rules) || 'no port'}`);
    }
  }
  for (const g of got.values()) out.push(`${g.hostIf} is filtered, but no slice of this node has that link`);
  return [...out, ...live.oddities.map((o) => `the table: ${o}`)];
}
