// The operator's own check of a SixBed4Prefix spec. The CRD's CEL rules refuse
// most mistakes at the API server; this double-checks everything (an object
// may predate a CRD upgrade, CEL cannot see bytes) and turns the spec into
// parsed values with defaults filled in. Problems become the Degraded
// condition's reason and message instead of exceptions.
import {
  DEFAULT_METRICS_PORT,
  DEFAULT_PORT,
  FAILOVER_DEFAULTS,
  type FailoverUpstream,
  type FastPathMode,
  type FastPathModeName,
  type LocalAddressMode,
  type NdpProxyMode,
} from './api.js';
import { formatIPv6, inPrefix, parseIPv4, parseIPv4Port, parseIPv6, parsePrefix, type Prefix } from '../lib/ip.js';
import { LOCAL_ADDRESS_MODE_NAMES, localAddressModeOf, NDP_PROXY_MODE_NAMES, ndpProxyModeOf } from './modes.js';
import { isObj } from '../lib/guards.js';

export interface Problem {
  /** CamelCase, e.g. InvalidPrefix, MultipleNodesSelected */
  reason: string;
  message: string;
}

export interface LocalAddressSpec {
  /** 16 bytes; for an interface identifier (::11 form) the upper 8 are zero */
  bytes: Uint8Array;
  text: string;
  /** true for the ::x form: used in every node's /64 */
  perNode: boolean;
}

export interface CheckedSpec {
  prefix: Prefix;
  nodeSelector: Record<string, string>;
  listenAddress?: string;
  /** IPV4[:PORT] peers send to, forwarded by a DNAT to the listen address and port */
  advertise?: string;
  port: number;
  uplink?: string;
  localAddresses: LocalAddressSpec[];
  localAddressMode: LocalAddressMode;
  routes: string[];
  ndpProxy: NdpProxyMode;
  /** The router's in-kernel fast path, as its --fast-path takes it (default auto). */
  fastPath: FastPathMode;
  /** Peers' packets the kernel would forward go straight to the egress (--fast-path-direct; docs/router.md). */
  fastPathDirect: boolean;
  /**
   * With the fast path: peers' datagrams are decapsulated at the uplink driver's XDP hook, before GRO, where it has
   * one (--fast-path-xdp auto; default false: at tc only).
   */
  fastPathXdp: boolean;
  metricsPort: number;
  /** spec.failover with its defaults; absent when the /64 is served by one node */
  failover?: CheckedFailover;
}

export interface CheckedFailover {
  standbys: number;
  upstream: FailoverUpstream;
  /** canonical text, with RoutedNextHop */
  nextHop?: string;
  virtualRouterId: number;
  leaseDurationMs: number;
  renewIntervalMs: number;
  fenceAfterMs: number;
}

/**
 * spec.fastPath's names and the router's --fast-path words they stand for: Disabled, Auto (the default: where the
 * program loads, else the router says why once and runs without it), Required (the router does not start
 * without it). Not Off/On: YAML 1.1, which kubectl and Helm read, takes those for booleans.
 */
export const FAST_PATH_MODE_NAMES = { Disabled: 'off', Auto: 'auto', Required: 'on' } as const satisfies Record<
  FastPathModeName,
  FastPathMode
>;
/** The name users write for a fast path mode. */
export const fastPathModeName = (m: FastPathMode): FastPathModeName =>
  (Object.keys(FAST_PATH_MODE_NAMES) as FastPathModeName[]).find((k) => FAST_PATH_MODE_NAMES[k] === m)!;

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** True when bytes 12..13 (the 6bed4 port word) are zero: the address can never be a peer's. */
export function portWordZero(b: Uint8Array): boolean {
  return b[12] === 0 && b[13] === 0;
}

/** Records one problem; every check below says what it found through one of these, in the order it looks. */
type Bad = (reason: string, message: string) => void;

/**
 * Checks a spec. Returns the parsed spec unless the prefix itself is unusable
 * (then nothing can be served), and every problem found; items that fail are
 * left out of the parsed spec.
 */
export function checkSpec(raw: unknown): { spec?: CheckedSpec; problems: Problem[] } {
  if (!isObj(raw)) return { problems: [{ reason: 'InvalidSpec', message: 'spec is missing' }] };
  const problems: Problem[] = [];
  const bad: Bad = (reason, message) => void problems.push({ reason, message });

  // One check per section, in the spec's order: the problems come out in this order (the Degraded condition's
  // message lists them so, and tests compare them). Local addresses and failover are read against the prefix
  // (and failover against the listen address), so those come first.
  const prefix = checkPrefix(raw.prefix, bad);
  const nodeSelector = checkNodeSelector(raw.nodeSelector, bad);
  const listen = checkListen(raw.listen, bad);
  const uplink = checkUplink(raw.uplink, bad);
  const localAddresses = checkLocalAddresses(raw.localAddresses, prefix, bad);
  const localAddressMode = checkLocalAddressMode(raw.localAddressMode, bad);
  const routes = checkRoutes(raw.routes, bad);
  const ndpProxy = checkNdpProxy(raw.ndpProxy, bad);
  const fastPath = checkFastPath(raw.fastPath, bad);
  const fastPathDirect = checkFastPathDirect(raw.fastPathDirect, fastPath, bad);
  const fastPathXdp = checkFastPathXdp(raw.fastPathXdp, bad);
  const metricsPort = checkMetricsPort(raw.metricsPort, bad);

  let failover: CheckedFailover | undefined;
  if (raw.failover !== undefined) {
    failover = checkFailover(raw.failover, raw, prefix, listen.listenAddress, bad);
    // A failover spec that cannot be served is not served at all, not by one node as if it said nothing.
    if (!failover) return { problems };
  }

  if (!prefix) return { problems };
  return {
    spec: {
      prefix,
      nodeSelector,
      ...(listen.listenAddress ? { listenAddress: listen.listenAddress } : {}),
      ...(listen.advertise ? { advertise: listen.advertise } : {}),
      port: listen.port,
      ...(uplink ? { uplink } : {}),
      localAddresses,
      localAddressMode,
      routes,
      ndpProxy,
      fastPath,
      fastPathDirect,
      fastPathXdp,
      metricsPort,
      ...(failover ? { failover } : {}),
    },
    problems,
  };
}

/**
 * spec.prefix: a /48 to /64 of global unicast (2000::/3) or unique local (fc00::/7) space. Undefined when unusable:
 * the caller then serves nothing, but still checks (and reports) the rest.
 */
function checkPrefix(v: unknown, bad: Bad): Prefix | undefined {
  if (typeof v !== 'string' || v === '') {
    bad('InvalidPrefix', 'spec.prefix is missing');
    return undefined;
  }
  let prefix: Prefix;
  try {
    prefix = parsePrefix(v, 'spec.prefix');
  } catch (e) {
    bad('InvalidPrefix', errMsg(e));
    return undefined;
  }
  if (prefix.length < 48 || prefix.length > 64) {
    bad('InvalidPrefix', `spec.prefix ${prefix.text} is a /${prefix.length}: use a /48 to /64`);
    return undefined;
  }
  if ((prefix.bytes[0]! & 0xe0) !== 0x20 && (prefix.bytes[0]! & 0xfe) !== 0xfc) {
    bad('InvalidPrefix', `spec.prefix ${prefix.text} is not a global unicast or unique local prefix`);
    return undefined;
  }
  return prefix;
}

/** spec.nodeSelector: label key → value; a non-string value is reported and left out, the others still select. */
function checkNodeSelector(v: unknown, bad: Bad): Record<string, string> {
  const nodeSelector: Record<string, string> = {};
  if (v === undefined) return nodeSelector;
  if (!isObj(v)) {
    bad('InvalidNodeSelector', 'spec.nodeSelector must be a map of label keys to values');
    return nodeSelector;
  }
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'string') nodeSelector[k] = x;
    else bad('InvalidNodeSelector', `spec.nodeSelector.${k} must be a string`);
  }
  return nodeSelector;
}

interface CheckedListen {
  listenAddress?: string;
  advertise?: string;
  port: number;
}

/** spec.listen: its address, advertise and port each checked on its own, so one bad field keeps the others. */
function checkListen(v: unknown, bad: Bad): CheckedListen {
  const out: CheckedListen = { port: DEFAULT_PORT };
  if (v === undefined) return out;
  if (!isObj(v)) {
    bad('InvalidListen', 'spec.listen must be an object with address and port');
    return out;
  }
  if (v.address !== undefined) {
    const a = listenField(v.address, 'address', bad, (s) => {
      const ip = parseIPv4(s);
      return ip !== 0 && ip >>> 24 !== 127;
    });
    if (a !== undefined) out.listenAddress = a;
  }
  if (v.advertise !== undefined) {
    const a = listenField(v.advertise, 'advertise', bad, (s) => {
      const ip = parseIPv4Port(s, 'spec.listen.advertise', DEFAULT_PORT).ipv4;
      // also not multicast or reserved (224/3): a peer's NAT would not send there
      return ip !== 0 && ip >>> 24 !== 127 && ip >>> 24 < 224;
    });
    if (a !== undefined) out.advertise = a;
  }
  if (v.port !== undefined) {
    const p = v.port;
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535)
      bad('InvalidListen', `spec.listen.port ${String(p)} is not a UDP port (1..65535)`);
    else out.port = p;
  }
  return out;
}

/**
 * One IPv4 field of spec.listen: a string that parses (`reachable` throws the parser's error for one that does
 * not) and that peers can reach. The parser's errors start with the quoted value; they get the field's name.
 */
function listenField(
  v: unknown,
  field: 'address' | 'advertise',
  bad: Bad,
  reachable: (s: string) => boolean,
): string | undefined {
  try {
    if (typeof v !== 'string') throw new Error(`spec.listen.${field} must be a string`);
    if (!reachable(v)) throw new Error(`spec.listen.${field} ${v} is not an address peers can reach`);
    return v;
  } catch (e) {
    bad('InvalidListen', errMsg(e).replace(/^'/, `spec.listen.${field} '`));
    return undefined;
  }
}

/** spec.uplink: a Linux interface name (at most 15 characters), not the loopback. */
function checkUplink(v: unknown, bad: Bad): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^[A-Za-z0-9_.@-]{1,15}$/.test(v) || ['lo', '.', '..'].includes(v)) {
    bad('InvalidUplink', `spec.uplink ${JSON.stringify(v)} is not a usable interface name`);
    return undefined;
  }
  return v;
}

/** spec.localAddresses: each checked on its own (a bad one is reported and left out), duplicates dropped. */
function checkLocalAddresses(v: unknown, prefix: Prefix | undefined, bad: Bad): LocalAddressSpec[] {
  const localAddresses: LocalAddressSpec[] = [];
  if (v === undefined) return localAddresses;
  if (!Array.isArray(v)) {
    bad('InvalidLocalAddress', 'spec.localAddresses must be a list');
    return localAddresses;
  }
  const seen = new Set<string>();
  for (const item of v as unknown[]) {
    try {
      const a = checkLocalAddress(item, prefix);
      if (seen.has(a.text)) continue;
      seen.add(a.text);
      localAddresses.push(a);
    } catch (e) {
      bad('InvalidLocalAddress', errMsg(e));
    }
  }
  return localAddresses;
}

/**
 * One local address: either a full address inside the prefix or the ::x form (upper 64 bits zero) meaning that
 * interface identifier in every node's /64. Its port word must be zero so that it can never be a peer's address,
 * and its interface identifier non-zero (the /64's subnet-router anycast). Throws the problem's message.
 */
function checkLocalAddress(item: unknown, prefix: Prefix | undefined): LocalAddressSpec {
  if (typeof item !== 'string') throw new Error(`local address ${JSON.stringify(item)} is not a string`);
  const bytes = parseIPv6(item);
  const text = formatIPv6(bytes);
  const perNode = bytes.subarray(0, 8).every((x) => x === 0);
  if (!perNode && prefix && !inPrefix(prefix, bytes)) {
    throw new Error(
      `local address ${text} is outside the prefix ${prefix.text} (write ::x for an address in every node's /64)`,
    );
  }
  if (!portWordZero(bytes)) {
    throw new Error(
      `local address ${text} has a non-zero port word (bytes 12..13), where 6bed4 peers carry their UDP port`,
    );
  }
  if (bytes.subarray(8).every((x) => x === 0)) throw new Error(`local address ${text} has interface identifier 0`);
  return { bytes, text, perNode };
}

// The modes in either spelling: the CamelCase names (Uplink, DummyInterface;
// Disabled, Always, WhenOnLink) or v1alpha1's first ones (uplink128,
// dummy112; off, on, auto), which objects written before may hold. Both
// become the one spelling the agent ConfigMap carries (its wire format, which
// agents of the previous version read during a rolling upgrade).

/** A mode's accepted names for a message: "A, B or C". */
const modeNames = (m: Record<string, string>) =>
  Object.keys(m)
    .join(', ')
    .replace(/, (\w+)$/, ' or $1');

/** spec.localAddressMode (default Uplink). */
function checkLocalAddressMode(v: unknown, bad: Bad): LocalAddressMode {
  if (v === undefined) return 'uplink128';
  const m = localAddressModeOf(v);
  if (m) return m;
  bad('InvalidField', `spec.localAddressMode ${JSON.stringify(v)} is not ${modeNames(LOCAL_ADDRESS_MODE_NAMES)}`);
  return 'uplink128';
}

/** spec.routes: further prefixes the router announces to peers as routes; canonical text, duplicates dropped. */
function checkRoutes(v: unknown, bad: Bad): string[] {
  const routes: string[] = [];
  if (v === undefined) return routes;
  if (!Array.isArray(v)) {
    bad('InvalidRoute', 'spec.routes must be a list');
    return routes;
  }
  for (const r of v as unknown[]) {
    try {
      if (typeof r !== 'string') throw new Error(`route ${JSON.stringify(r)} is not a string`);
      const p = parsePrefix(r, 'route');
      if (!routes.includes(p.text)) routes.push(p.text);
    } catch (e) {
      bad('InvalidRoute', errMsg(e));
    }
  }
  return routes;
}

/** spec.ndpProxy (default Disabled). */
function checkNdpProxy(v: unknown, bad: Bad): NdpProxyMode {
  if (v === undefined) return 'off';
  const m = ndpProxyModeOf(v);
  if (m) return m;
  bad('InvalidField', `spec.ndpProxy ${JSON.stringify(v)} is not ${modeNames(NDP_PROXY_MODE_NAMES)}`);
  return 'off';
}

/**
 * spec.fastPath (default Auto). A refused value means without the fast path (the prefix's Degraded condition says
 * why), not the default: whoever wrote it did not ask for auto.
 */
function checkFastPath(v: unknown, bad: Bad): FastPathMode {
  if (v === undefined) return 'auto';
  if (typeof v !== 'string' || !Object.hasOwn(FAST_PATH_MODE_NAMES, v)) {
    const bool = typeof v === 'boolean' ? ' (unquoted on, off, yes and no are booleans in YAML 1.1)' : '';
    bad('InvalidField', `spec.fastPath ${JSON.stringify(v)} is not ${modeNames(FAST_PATH_MODE_NAMES)}${bool}`);
    return 'off';
  }
  return FAST_PATH_MODE_NAMES[v as FastPathModeName];
}

/**
 * spec.fastPathDirect (default false): with the fast path only. Refused, the prefix is served without it: a choice
 * that skips the host's forward firewall is made on purpose or not at all.
 */
function checkFastPathDirect(v: unknown, fastPath: FastPathMode, bad: Bad): boolean {
  if (v === undefined || v === false) return false;
  if (v !== true) {
    bad('InvalidField', `spec.fastPathDirect ${JSON.stringify(v)} is not true or false`);
    return false;
  }
  if (fastPath === 'off') {
    bad('InvalidField', 'spec.fastPathDirect needs the fast path: spec.fastPath Auto or Required, not Disabled');
    return false;
  }
  return true;
}

/**
 * spec.fastPathXdp (default false): the fast path's XDP stage. Harmless with fastPath Disabled (nothing to run it).
 * Refused, the default stands: no XDP stage, as for prefixes that do not say.
 */
function checkFastPathXdp(v: unknown, bad: Bad): boolean {
  if (v === undefined || v === false) return false;
  if (v !== true) {
    bad('InvalidField', `spec.fastPathXdp ${JSON.stringify(v)} is not true or false`);
    return false;
  }
  return true;
}

/** spec.metricsPort: an unprivileged port (default DEFAULT_METRICS_PORT). */
function checkMetricsPort(v: unknown, bad: Bad): number {
  if (v === undefined) return DEFAULT_METRICS_PORT;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1024 || v > 65535) {
    bad('InvalidField', `spec.metricsPort ${String(v)} is not in 1024..65535`);
    return DEFAULT_METRICS_PORT;
  }
  return v;
}

const intIn = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

/**
 * spec.failover, as the CRD's CEL rules check it (an object may predate them). Undefined, with the problems said,
 * when it cannot be served: the operator then serves nothing of the prefix (never one node without its standbys as
 * if failover had not been asked for). The first problem ends the check (one Degraded reason, InvalidFailover).
 */
function checkFailover(
  raw: unknown,
  spec: Record<string, unknown>,
  prefix: Prefix | undefined,
  listenAddress: string | undefined,
  bad: Bad,
): CheckedFailover | undefined {
  const n = (message: string) => {
    bad('InvalidFailover', message);
    return undefined;
  };
  if (!isObj(raw)) return n('spec.failover must be an object with upstream and virtualRouterId');
  const unfit = failoverUnfit(spec, prefix, listenAddress);
  if (unfit) return n(unfit);
  const standbys = raw.standbys ?? FAILOVER_DEFAULTS.standbys;
  if (!intIn(standbys, 1, 8)) return n(`spec.failover.standbys ${JSON.stringify(standbys)} is not 1 to 8`);
  const upstream = raw.upstream;
  if (upstream !== 'RoutedNextHop' && upstream !== 'OnLink')
    return n(`spec.failover.upstream ${JSON.stringify(upstream)} is not RoutedNextHop or OnLink`);
  const hop = checkNextHop(upstream, raw.nextHop, prefix);
  if ('refused' in hop) return n(hop.refused);
  if (!intIn(raw.virtualRouterId, 1, 255))
    return n(`spec.failover.virtualRouterId ${JSON.stringify(raw.virtualRouterId)} is not 1 to 255`);
  const timings = checkFailoverTimings(raw);
  if ('refused' in timings) return n(timings.refused);
  return { standbys, upstream, ...hop, virtualRouterId: raw.virtualRouterId, ...timings };
}

/** What a failover check refuses with: the Degraded message. */
type Refused = { refused: string };

/**
 * Why the rest of the spec rules failover out, or undefined: the /64 moves as one piece between nodes, held at a
 * floating IPv4 address, so it cannot be split among nodes or into slices living in pods on one node.
 */
function failoverUnfit(
  spec: Record<string, unknown>,
  prefix: Prefix | undefined,
  listenAddress: string | undefined,
): string | undefined {
  if (prefix && prefix.length !== 64)
    return `failover needs a /64 prefix; ${prefix.text} is split among nodes: use one SixBed4Prefix with failover per /64`;
  if (listenAddress === undefined)
    return 'failover needs spec.listen.address: the floating IPv4 address that moves with the active node';
  if (isObj(spec.slices) && spec.slices.enabled === true)
    return 'spec.slices cannot be used with failover: a slice lives in a pod on one node, and the /64 moves';
  return undefined;
}

/**
 * spec.failover.nextHop: required by RoutedNextHop (the address the active node takes over), refused with OnLink.
 * It must be unicast (global or link-local) and outside the prefix (the provider routes the /64 to it, so it cannot
 * be one of the /64's own addresses). Canonical text.
 */
function checkNextHop(
  upstream: 'RoutedNextHop' | 'OnLink',
  v: unknown,
  prefix: Prefix | undefined,
): { nextHop?: string } | Refused {
  if (upstream !== 'RoutedNextHop')
    return v !== undefined ? { refused: 'spec.failover.nextHop is only for upstream RoutedNextHop' } : {};
  if (typeof v !== 'string')
    return {
      refused: 'spec.failover.upstream RoutedNextHop needs nextHop: the IPv6 address the provider routes the /64 to',
    };
  let b: Uint8Array;
  try {
    b = parseIPv6(v);
  } catch (e) {
    return { refused: `spec.failover.nextHop: ${errMsg(e)}` };
  }
  const linkLocal = b[0] === 0xfe && (b[1]! & 0xc0) === 0x80;
  const global = (b[0]! & 0xe0) === 0x20 || (b[0]! & 0xfe) === 0xfc;
  if (!linkLocal && !global)
    return { refused: `spec.failover.nextHop ${v} is not a unicast address (global or link-local)` };
  if (prefix && inPrefix(prefix, b))
    return {
      refused: `spec.failover.nextHop ${formatIPv6(b)} lies inside ${prefix.text}: the provider routes the /64 to an address outside it`,
    };
  return { nextHop: formatIPv6(b) };
}

/**
 * The Lease timings with their defaults, in the CRD's bounds and ordered renew < fence < lease: the active node
 * renews well within its fence, and stops serving (fences) before its Lease runs out and another node may take it.
 */
function checkFailoverTimings(
  raw: Record<string, unknown>,
): { leaseDurationMs: number; renewIntervalMs: number; fenceAfterMs: number } | Refused {
  const leaseDurationMs = raw.leaseDurationMs ?? FAILOVER_DEFAULTS.leaseDurationMs;
  const renewIntervalMs = raw.renewIntervalMs ?? FAILOVER_DEFAULTS.renewIntervalMs;
  const fenceAfterMs = raw.fenceAfterMs ?? FAILOVER_DEFAULTS.fenceAfterMs;
  if (
    !intIn(leaseDurationMs, 1000, 60000) ||
    !intIn(renewIntervalMs, 100, 10000) ||
    !intIn(fenceAfterMs, 200, 59000) ||
    !(renewIntervalMs < fenceAfterMs && fenceAfterMs < leaseDurationMs)
  ) {
    return {
      refused:
        `spec.failover timings ${String(renewIntervalMs)} / ${String(fenceAfterMs)} / ${String(leaseDurationMs)} ms must be whole milliseconds with ` +
        'renewIntervalMs < fenceAfterMs < leaseDurationMs (the active node withdraws before another may take the Lease)',
    };
  }
  return { leaseDurationMs, renewIntervalMs, fenceAfterMs };
}
