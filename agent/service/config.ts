// The single host's one config file, /etc/sixbed4/router.yaml (YAML or JSON):
// the fields of SixBed4Prefix.spec, checked by the operator's own check
// (kube/prefix-spec.ts: the same rules and messages as in a cluster, one
// schema in both places), plus the few a single host chooses for itself that
// a cluster's agent chooses for its node (metricsAddress, tunnel, workers, ...).
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';
import { checkSpec, fastPathModeName, type CheckedSpec } from '../../kube/prefix-spec.js';
import { hostConfig, readHostConfigFile, type HostConfig } from '../host/config.js';
import { formatIPv6, parseIPv4 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { routerConfig, type RouterOptions } from '../router/router.js';
import type { RateLimitConfig } from '../router/ratelimit.js';

export const DEFAULT_CONFIG_PATH = '/etc/sixbed4/router.yaml';
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1';

/** SixBed4Prefix.spec's fields (crds/sixbed4.io_sixbed4prefixes.yaml). */
const SPEC_FIELDS = [
  'prefix',
  'nodeSelector',
  'listen',
  'uplink',
  'localAddresses',
  'localAddressMode',
  'routes',
  'ndpProxy',
  'fastPath',
  'fastPathDirect',
  'fastPathXdp',
  'metricsPort',
  'slices',
];
/** Spec fields about a cluster's nodes and pods: meaningless on one host, so refused rather than silently ignored. */
const CLUSTER_ONLY: Record<string, string> = {
  nodeSelector: 'a single host has no nodes to select',
  slices: 'slices are handed to Kubernetes pods by the operator',
};
/** What a single host sets that a cluster's agent decides for its node. */
const HOST_FIELDS = [
  'metricsAddress',
  'bind',
  'tunnel',
  'dummyInterface',
  'workers',
  'batch',
  'sockets',
  'refusePrivate',
  'replyRateLimit',
  'statsInterval',
  'stateFile',
];
const RATE_FIELDS = ['perSourceRate', 'perSourceBurst', 'totalRate', 'totalBurst'] as const;

export interface ServiceConfig {
  readonly file: string;
  readonly spec: CheckedSpec;
  /** Local addresses resolved into the /64 (an interface identifier such as ::11 becomes <prefix>::11). */
  readonly host: HostConfig;
  /** For routerConfig(); the neighbour proxy is added once the uplink is known (host apply resolves it). */
  readonly router: RouterOptions;
  /** host:port of /metrics and /healthz: always served, since `sixbed4 status` reads it (metricsAddress:metricsPort). */
  readonly metrics: string;
  readonly stateFile?: string;
}

/** Reads and checks the file; every problem in one InputError naming the file. */
export async function loadServiceConfig(file: string): Promise<ServiceConfig> {
  return serviceConfig(await readHostConfigFile(file), file);
}

export function serviceConfig(raw: Record<string, unknown>, file: string): ServiceConfig {
  const fail = (msgs: string[]): never => {
    throw new InputError(
      msgs.length === 1 ? `${file}: ${msgs[0]}` : `${file} has ${msgs.length} problems:\n  ${msgs.join('\n  ')}`,
    );
  };
  const unknown = Object.keys(raw).filter((k) => !SPEC_FIELDS.includes(k) && !HOST_FIELDS.includes(k));
  if (unknown.length)
    fail(
      unknown.map(
        (k) =>
          `unknown field '${k}' (known: ${[...SPEC_FIELDS.filter((f) => !CLUSTER_ONLY[f]), ...HOST_FIELDS].join(', ')})`,
      ),
    );
  const cluster = Object.keys(raw).filter((k) => CLUSTER_ONLY[k]);
  if (cluster.length) fail(cluster.map((k) => `${k} only applies in a Kubernetes cluster: ${CLUSTER_ONLY[k]}`));

  const specRaw = Object.fromEntries(Object.entries(raw).filter(([k]) => SPEC_FIELDS.includes(k)));
  const { spec, problems } = checkSpec(specRaw);
  // The operator's messages name the field inside the resource (spec.prefix); here the file holds the spec itself.
  const messages = problems.map((p) => p.message.replace(/\bspec\./g, ''));
  if (spec && spec.prefix.length !== 64) {
    messages.push(
      `prefix ${spec.prefix.text} is a /${spec.prefix.length}: a single host serves one /64 (a shorter prefix is split among the nodes of a cluster)`,
    );
  }
  if (spec && spec.listenAddress === undefined) {
    messages.push(
      'listen.address is required on a single host: the public IPv4 address peers send to, e.g. listen: {address: 198.51.100.1}',
    );
  }
  if (messages.length || !spec) fail(messages);
  const s = spec!;

  const h = hostFields(raw, fail);
  // An interface identifier (::11) means that address in this host's /64.
  const locals = s.localAddresses.map((a) => {
    if (!a.perNode) return a.text;
    const b = Uint8Array.from(a.bytes);
    b.set(s.prefix.bytes.subarray(0, 8));
    return formatIPv6(b);
  });
  let host: HostConfig;
  let router: RouterOptions;
  try {
    host = hostConfig({
      prefix: s.prefix.text,
      localAddresses: locals,
      localAddressMode: s.localAddressMode,
      ndpProxy: s.ndpProxy,
      ...(s.uplink ? { uplink: s.uplink } : {}),
      ...(h.tunnel ? { tunnel: h.tunnel } : {}),
      ...(h.dummyInterface ? { dummyInterface: h.dummyInterface } : {}),
    });
    router = {
      prefix: s.prefix.text,
      listen: s.listenAddress!,
      port: s.port,
      routes: s.routes,
      tun: host.tunnel,
      // listen.advertise: a DNAT in front of this host; the router binds listen.address and builds addresses from this.
      ...(s.advertise ? { advertise: s.advertise } : {}),
      // fastPath Disabled | Auto | Required: the router's --fast-path off | auto | on (needs CAP_BPF: see the unit).
      fastPath: s.fastPath,
      // fastPathDirect: --fast-path-direct (a host without a forward firewall: docs/router.md).
      ...(s.fastPathDirect ? { fastPathDirect: true } : {}),
      // fastPathXdp: --fast-path-xdp auto (the XDP stage, before GRO: bulk uploads; docs/router.md).
      ...(s.fastPathXdp ? { fastPathXdp: true } : {}),
      ...(h.bind ? { bind: h.bind } : {}),
      ...(h.workers !== undefined ? { workers: h.workers } : {}),
      ...(h.batch !== undefined ? { batch: h.batch } : {}),
      ...(h.sockets !== undefined ? { sockets: h.sockets } : {}),
      ...(h.refusePrivate ? { refusePrivate: true } : {}),
      ...(h.rateLimit ? { rateLimit: h.rateLimit } : {}),
      ...(h.statsInterval !== undefined ? { statsIntervalMs: h.statsInterval * 1000 } : {}),
    };
    // The router's own checks (ports, counts, names), before anything is changed.
    routerConfig(router);
  } catch (err) {
    if (err instanceof InputError) fail([err.message.replace(/--(\w+)/g, '$1')]);
    throw err;
  }
  const metricsHost = h.metricsAddress ?? DEFAULT_METRICS_ADDRESS;
  return {
    file,
    spec: s,
    host: host!,
    router: router!,
    metrics: `${metricsHost.includes(':') ? `[${metricsHost}]` : metricsHost}:${s.metricsPort}`,
    ...(h.stateFile ? { stateFile: h.stateFile } : {}),
  };
}

interface HostOnly {
  metricsAddress?: string;
  bind?: string;
  tunnel?: string;
  dummyInterface?: string;
  workers?: number;
  batch?: number;
  sockets?: number;
  refusePrivate?: boolean;
  rateLimit?: Omit<RateLimitConfig, 'tableSize'>;
  statsInterval?: number;
  stateFile?: string;
}

/** Types of the host-only fields; their ranges are the router's and the host's own checks. */
function hostFields(raw: Record<string, unknown>, fail: (m: string[]) => never): HostOnly {
  const out: HostOnly = {};
  const problems: string[] = [];
  const str = (k: 'metricsAddress' | 'bind' | 'tunnel' | 'dummyInterface' | 'stateFile') => {
    const v = raw[k];
    if (v === undefined) return;
    if (typeof v !== 'string' || v === '') problems.push(`${k} ${JSON.stringify(v)} must be a non-empty string`);
    else out[k] = v;
  };
  const int = (k: 'workers' | 'batch' | 'sockets' | 'statsInterval') => {
    const v = raw[k];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      problems.push(`${k} ${JSON.stringify(v)} must be a whole number, 1 or more`);
    else out[k] = v;
  };
  for (const k of ['metricsAddress', 'bind', 'tunnel', 'dummyInterface', 'stateFile'] as const) str(k);
  for (const k of ['workers', 'batch', 'sockets', 'statsInterval'] as const) int(k);
  if (raw.refusePrivate !== undefined) {
    if (typeof raw.refusePrivate !== 'boolean')
      problems.push(`refusePrivate ${JSON.stringify(raw.refusePrivate)} must be true or false`);
    else out.refusePrivate = raw.refusePrivate;
  }
  if (out.metricsAddress !== undefined && isIP(out.metricsAddress) === 0) {
    problems.push(
      `metricsAddress '${out.metricsAddress}' is not an IP address (127.0.0.1 by default; :: or 0.0.0.0 for all)`,
    );
  }
  if (out.bind !== undefined) {
    try {
      parseIPv4(out.bind);
    } catch (e) {
      problems.push(`bind: ${(e as Error).message}`);
    }
  }
  if (out.stateFile !== undefined && !isAbsolute(out.stateFile))
    problems.push(`stateFile '${out.stateFile}' must be an absolute path`);
  const rl = raw.replyRateLimit;
  if (rl !== undefined) {
    if (typeof rl !== 'object' || rl === null || Array.isArray(rl))
      problems.push('replyRateLimit must be a mapping of perSourceRate, perSourceBurst, totalRate, totalBurst');
    else {
      const r: Partial<Record<(typeof RATE_FIELDS)[number], number>> = {};
      for (const [k, v] of Object.entries(rl)) {
        if (!(RATE_FIELDS as readonly string[]).includes(k))
          problems.push(`replyRateLimit.${k} is not a field (known: ${RATE_FIELDS.join(', ')})`);
        else if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
          problems.push(`replyRateLimit.${k} ${JSON.stringify(v)} must be a number above 0`);
        else r[k as (typeof RATE_FIELDS)[number]] = v;
      }
      out.rateLimit = r as Omit<RateLimitConfig, 'tableSize'>;
    }
  }
  if (problems.length) fail(problems);
  return out;
}

/**
 * The fields whose change needs the router restarted (the data path's sockets, tunnel and host layout depend on
 * them), each with its old and new value; empty when a reload can apply the change.
 */
export function restartNeeded(a: ServiceConfig, b: ServiceConfig): string[] {
  const fixed = (c: ServiceConfig) => ({
    prefix: c.spec.prefix.text,
    'listen.address': c.spec.listenAddress,
    'listen.port': c.spec.port,
    'listen.advertise': c.spec.advertise,
    bind: c.router.bind,
    uplink: c.host.uplink,
    localAddressMode: c.spec.localAddressMode,
    ndpProxy: c.spec.ndpProxy,
    // The program is loaded and attached when the router starts (agent/bpf/fastpath.ts); a reload cannot.
    fastPath: fastPathModeName(c.spec.fastPath),
    fastPathDirect: c.spec.fastPathDirect,
    fastPathXdp: c.spec.fastPathXdp,
    tunnel: c.host.tunnel,
    dummyInterface: c.host.dummyInterface,
    workers: c.router.workers,
    batch: c.router.batch,
    sockets: c.router.sockets,
    refusePrivate: !!c.router.refusePrivate,
    statsInterval: c.router.statsIntervalMs,
    stateFile: c.stateFile,
  });
  const x = fixed(a),
    y = fixed(b);
  return (Object.keys(x) as (keyof typeof x)[])
    .filter((k) => x[k] !== y[k])
    .map((k) => `${k} ${show(x[k])} -> ${show(y[k])}`);
}

const show = (v: unknown) => (v === undefined ? '(default)' : String(v));
