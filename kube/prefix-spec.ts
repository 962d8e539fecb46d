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

/**
 * Checks a spec. Returns the parsed spec unless the prefix itself is unusable
 * (then nothing can be served), and every problem found; items that fail are
 * left out of the parsed spec.
 */
export function checkSpec(raw: unknown): { spec?: CheckedSpec; problems: Problem[] } {
  const problems: Problem[] = [];
  const bad = (reason: string, message: string) => problems.push({ reason, message });
  if (!isObj(raw)) return { problems: [{ reason: 'InvalidSpec', message: 'spec is missing' }] };

  let prefix: Prefix | undefined;
  if (typeof raw.prefix !== 'string' || raw.prefix === '') {
    bad('InvalidPrefix', 'spec.prefix is missing');
  } else {
    try {
      prefix = parsePrefix(raw.prefix, 'spec.prefix');
      if (prefix.length < 48 || prefix.length > 64) {
        bad('InvalidPrefix', `spec.prefix ${prefix.text} is a /${prefix.length}: use a /48 to /64`);
        prefix = undefined;
      } else if ((prefix.bytes[0]! & 0xe0) !== 0x20 && (prefix.bytes[0]! & 0xfe) !== 0xfc) {
        // global unicast (2000::/3) or unique local (fc00::/7)
        bad('InvalidPrefix', `spec.prefix ${prefix.text} is not a global unicast or unique local prefix`);
        prefix = undefined;
      }
    } catch (e) {
      bad('InvalidPrefix', errMsg(e));
    }
  }

  const nodeSelector: Record<string, string> = {};
  if (raw.nodeSelector !== undefined) {
    if (!isObj(raw.nodeSelector)) bad('InvalidNodeSelector', 'spec.nodeSelector must be a map of label keys to values');
    else
      for (const [k, v] of Object.entries(raw.nodeSelector)) {
        if (typeof v === 'string') nodeSelector[k] = v;
        else bad('InvalidNodeSelector', `spec.nodeSelector.${k} must be a string`);
      }
  }

  let listenAddress: string | undefined;
  let advertise: string | undefined;
  let port = DEFAULT_PORT;
  if (raw.listen !== undefined) {
    if (!isObj(raw.listen)) bad('InvalidListen', 'spec.listen must be an object with address and port');
    else {
      if (raw.listen.address !== undefined) {
        try {
          if (typeof raw.listen.address !== 'string') throw new Error('spec.listen.address must be a string');
          const v = parseIPv4(raw.listen.address);
          if (v === 0 || v >>> 24 === 127)
            throw new Error(`spec.listen.address ${raw.listen.address} is not an address peers can reach`);
          listenAddress = raw.listen.address;
        } catch (e) {
          bad('InvalidListen', errMsg(e).replace(/^'/, "spec.listen.address '"));
        }
      }
      if (raw.listen.advertise !== undefined) {
        try {
          if (typeof raw.listen.advertise !== 'string') throw new Error('spec.listen.advertise must be a string');
          const v = parseIPv4Port(raw.listen.advertise, 'spec.listen.advertise', DEFAULT_PORT).ipv4;
          if (v === 0 || v >>> 24 === 127 || v >>> 24 >= 224)
            throw new Error(`spec.listen.advertise ${raw.listen.advertise} is not an address peers can reach`);
          advertise = raw.listen.advertise;
        } catch (e) {
          bad('InvalidListen', errMsg(e).replace(/^'/, "spec.listen.advertise '"));
        }
      }
      if (raw.listen.port !== undefined) {
        const p = raw.listen.port;
        if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535)
          bad('InvalidListen', `spec.listen.port ${String(p)} is not a UDP port (1..65535)`);
        else port = p;
      }
    }
  }

  let uplink: string | undefined;
  if (raw.uplink !== undefined) {
    if (
      typeof raw.uplink !== 'string' ||
      !/^[A-Za-z0-9_.@-]{1,15}$/.test(raw.uplink) ||
      ['lo', '.', '..'].includes(raw.uplink)
    ) {
      bad('InvalidUplink', `spec.uplink ${JSON.stringify(raw.uplink)} is not a usable interface name`);
    } else uplink = raw.uplink;
  }

  const localAddresses: LocalAddressSpec[] = [];
  if (raw.localAddresses !== undefined) {
    if (!Array.isArray(raw.localAddresses)) bad('InvalidLocalAddress', 'spec.localAddresses must be a list');
    else {
      const seen = new Set<string>();
      for (const item of raw.localAddresses as unknown[]) {
        try {
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
          if (bytes.subarray(8).every((x) => x === 0))
            throw new Error(`local address ${text} has interface identifier 0`);
          if (seen.has(text)) continue;
          seen.add(text);
          localAddresses.push({ bytes, text, perNode });
        } catch (e) {
          bad('InvalidLocalAddress', errMsg(e));
        }
      }
    }
  }

  // The modes in either spelling: the CamelCase names (Uplink, DummyInterface;
  // Disabled, Always, WhenOnLink) or v1alpha1's first ones (uplink128,
  // dummy112; off, on, auto), which objects written before may hold. Both
  // become the one spelling the agent ConfigMap carries (its wire format, which
  // agents of the previous version read during a rolling upgrade).
  const names = (m: Record<string, string>) =>
    Object.keys(m)
      .join(', ')
      .replace(/, (\w+)$/, ' or $1');
  let localAddressMode: LocalAddressMode = 'uplink128';
  if (raw.localAddressMode !== undefined) {
    const m = localAddressModeOf(raw.localAddressMode);
    if (m) localAddressMode = m;
    else
      bad(
        'InvalidField',
        `spec.localAddressMode ${JSON.stringify(raw.localAddressMode)} is not ${names(LOCAL_ADDRESS_MODE_NAMES)}`,
      );
  }

  const routes: string[] = [];
  if (raw.routes !== undefined) {
    if (!Array.isArray(raw.routes)) bad('InvalidRoute', 'spec.routes must be a list');
    else
      for (const r of raw.routes as unknown[]) {
        try {
          if (typeof r !== 'string') throw new Error(`route ${JSON.stringify(r)} is not a string`);
          const p = parsePrefix(r, 'route');
          if (!routes.includes(p.text)) routes.push(p.text);
        } catch (e) {
          bad('InvalidRoute', errMsg(e));
        }
      }
  }

  let ndpProxy: NdpProxyMode = 'off';
  if (raw.ndpProxy !== undefined) {
    const m = ndpProxyModeOf(raw.ndpProxy);
    if (m) ndpProxy = m;
    else bad('InvalidField', `spec.ndpProxy ${JSON.stringify(raw.ndpProxy)} is not ${names(NDP_PROXY_MODE_NAMES)}`);
  }

  // A refused value: without the fast path (the prefix's Degraded condition says why).
  let fastPath: FastPathMode = raw.fastPath === undefined ? 'auto' : 'off';
  if (raw.fastPath !== undefined) {
    const v = raw.fastPath;
    if (typeof v !== 'string' || !Object.hasOwn(FAST_PATH_MODE_NAMES, v)) {
      const bool = typeof v === 'boolean' ? ' (unquoted on, off, yes and no are booleans in YAML 1.1)' : '';
      bad('InvalidField', `spec.fastPath ${JSON.stringify(v)} is not ${names(FAST_PATH_MODE_NAMES)}${bool}`);
    } else fastPath = FAST_PATH_MODE_NAMES[v as FastPathModeName];
  }

  let metricsPort = DEFAULT_METRICS_PORT;
  if (raw.metricsPort !== undefined) {
    const p = raw.metricsPort;
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1024 || p > 65535)
      bad('InvalidField', `spec.metricsPort ${String(p)} is not in 1024..65535`);
    else metricsPort = p;
  }

  let failover: CheckedFailover | undefined;
  if (raw.failover !== undefined) {
    const f = checkFailover(raw.failover, raw, prefix, listenAddress, bad);
    // A failover spec that cannot be served is not served at all, not by one node as if it said nothing.
    if (!f) return { problems };
    failover = f;
  }

  if (!prefix) return { problems };
  return {
    spec: {
      prefix,
      nodeSelector,
      ...(listenAddress ? { listenAddress } : {}),
      ...(advertise ? { advertise } : {}),
      port,
      ...(uplink ? { uplink } : {}),
      localAddresses,
      localAddressMode,
      routes,
      ndpProxy,
      fastPath,
      metricsPort,
      ...(failover ? { failover } : {}),
    },
    problems,
  };
}

const intIn = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

/**
 * spec.failover, as the CRD's CEL rules check it (an object may predate them). Undefined, with the problems said,
 * when it cannot be served: the operator then serves nothing of the prefix (never one node without its standbys as
 * if failover had not been asked for).
 */
function checkFailover(
  raw: unknown,
  spec: Record<string, unknown>,
  prefix: Prefix | undefined,
  listenAddress: string | undefined,
  bad: (reason: string, message: string) => void,
): CheckedFailover | undefined {
  const n = (message: string) => {
    bad('InvalidFailover', message);
    return undefined;
  };
  if (!isObj(raw)) return n('spec.failover must be an object with upstream and virtualRouterId');
  if (prefix && prefix.length !== 64)
    return n(
      `failover needs a /64 prefix; ${prefix.text} is split among nodes: use one SixBed4Prefix with failover per /64`,
    );
  if (listenAddress === undefined)
    return n('failover needs spec.listen.address: the floating IPv4 address that moves with the active node');
  if (isObj(spec.slices) && spec.slices.enabled === true)
    return n('spec.slices cannot be used with failover: a slice lives in a pod on one node, and the /64 moves');
  const standbys = raw.standbys ?? FAILOVER_DEFAULTS.standbys;
  if (!intIn(standbys, 1, 8)) return n(`spec.failover.standbys ${JSON.stringify(standbys)} is not 1 to 8`);
  const upstream = raw.upstream;
  if (upstream !== 'RoutedNextHop' && upstream !== 'OnLink')
    return n(`spec.failover.upstream ${JSON.stringify(upstream)} is not RoutedNextHop or OnLink`);
  let nextHop: string | undefined;
  if (upstream === 'RoutedNextHop') {
    if (typeof raw.nextHop !== 'string')
      return n('spec.failover.upstream RoutedNextHop needs nextHop: the IPv6 address the provider routes the /64 to');
    let b: Uint8Array;
    try {
      b = parseIPv6(raw.nextHop);
    } catch (e) {
      return n(`spec.failover.nextHop: ${errMsg(e)}`);
    }
    const linkLocal = b[0] === 0xfe && (b[1]! & 0xc0) === 0x80;
    const global = (b[0]! & 0xe0) === 0x20 || (b[0]! & 0xfe) === 0xfc;
    if (!linkLocal && !global)
      return n(`spec.failover.nextHop ${raw.nextHop} is not a unicast address (global or link-local)`);
    if (prefix && inPrefix(prefix, b))
      return n(
        `spec.failover.nextHop ${formatIPv6(b)} lies inside ${prefix.text}: the provider routes the /64 to an address outside it`,
      );
    nextHop = formatIPv6(b);
  } else if (raw.nextHop !== undefined) return n('spec.failover.nextHop is only for upstream RoutedNextHop');
  if (!intIn(raw.virtualRouterId, 1, 255))
    return n(`spec.failover.virtualRouterId ${JSON.stringify(raw.virtualRouterId)} is not 1 to 255`);
  const leaseDurationMs = raw.leaseDurationMs ?? FAILOVER_DEFAULTS.leaseDurationMs;
  const renewIntervalMs = raw.renewIntervalMs ?? FAILOVER_DEFAULTS.renewIntervalMs;
  const fenceAfterMs = raw.fenceAfterMs ?? FAILOVER_DEFAULTS.fenceAfterMs;
  if (
    !intIn(leaseDurationMs, 1000, 60000) ||
    !intIn(renewIntervalMs, 100, 10000) ||
    !intIn(fenceAfterMs, 200, 59000) ||
    !(renewIntervalMs < fenceAfterMs && fenceAfterMs < leaseDurationMs)
  ) {
    return n(
      `spec.failover timings ${String(renewIntervalMs)} / ${String(fenceAfterMs)} / ${String(leaseDurationMs)} ms must be whole milliseconds with ` +
        'renewIntervalMs < fenceAfterMs < leaseDurationMs (the active node withdraws before another may take the Lease)',
    );
  }
  return {
    standbys,
    upstream,
    ...(nextHop ? { nextHop } : {}),
    virtualRouterId: raw.virtualRouterId,
    leaseDurationMs,
    renewIntervalMs,
    fenceAfterMs,
  };
}
