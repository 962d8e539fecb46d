// The CNI side of slice delivery, pure: what the sixbed4-cni shim forwards (agent/cni/shim), what a request means,
import { isObj } from '../../lib/guards.js';
// and the result or error the runtime gets back (CNI spec 1.1, with 0.4.0 and 1.0.0 results for older runtimes).
//
// The shim decides alone what needs no agent (VERSION; a chained ADD or CHECK for a pod that did not ask), so an
// outage of sixbed4 never blocks other pods; everything else reaches the agent as one request per connection.

/** Versions whose results we write (the shim's VERSION answer lists the same). */
export const SUPPORTED_VERSIONS = ['0.4.0', '1.0.0', '1.1.0'] as const;
/** The capability under which containerd and CRI-O pass the pod's annotations in runtimeConfig. */
export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';
/** The pod end's name when chained into the primary network (CNI_IFNAME is then the primary's eth0). */
export const DEFAULT_CHAINED_INTERFACE = 'eth6';

/** Well-known CNI error codes (spec: "Error"), and ours from 100 up. */
export const CNI = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** the pod asked, but its namespace takes no slices from a prefix this node serves */
  notOptedIn: 100,
  /** the namespace's word is full on this node */
  exhausted: 101,
  /** the pod end's name is taken in the pod by an interface that is not ours */
  interfaceTaken: 102,
} as const;

export class CniError extends Error {
  override name = 'CniError';
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
}

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';

/** One request as the shim forwards it. */
export interface CniRequest {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS, parsed: K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, ... */
  args: Record<string, string>;
  config: NetConfig;
}

export interface NetConfig {
  cniVersion: string;
  name: string;
  type: string;
  /** The pod end's name when chained (default eth6). */
  interface?: string;
  podAnnotation?: string;
  prevResult?: CniResult;
  runtimeConfig?: Record<string, unknown>;
  /** GC: the attachments the runtime still has. */
  'cni.dev/valid-attachments'?: { containerID: string; ifname: string }[];
  [k: string]: unknown;
}

export interface CniInterface {
  name: string;
  mac?: string;
  sandbox?: string;
  mtu?: number;
}
export interface CniIp {
  address: string;
  gateway?: string;
  interface?: number;
  version?: string;
}
export interface CniRoute {
  dst: string;
  gw?: string;
}
export interface CniResult {
  cniVersion?: string;
  interfaces?: CniInterface[];
  ips?: CniIp[];
  routes?: CniRoute[];
  dns?: Record<string, unknown>;
  [k: string]: unknown;
}

const COMMANDS: readonly string[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'];
const str = (v: unknown) => (typeof v === 'string' ? v : '');

/** CNI_ARGS: "K=V;K=V". Keys and values are what the runtime sent; nothing is decoded. */
export function parseCniArgs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** The shim's request, checked. Throws CniError with the spec's codes. */
export function parseRequest(body: string): CniRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    throw new CniError(CNI.decode, `cannot decode the request: ${(err as Error).message}`);
  }
  if (!isObj(raw) || raw.version !== 1) throw new CniError(CNI.decode, 'not a sixbed4-cni request (version 1)');
  const command = str(raw.command);
  if (!COMMANDS.includes(command)) throw new CniError(CNI.invalidEnv, `unknown CNI_COMMAND '${command}'`);
  const config = raw.config;
  if (!isObj(config)) throw new CniError(CNI.decode, 'the network configuration is not a JSON object');
  for (const k of ['cniVersion', 'name', 'type'] as const) {
    if (typeof config[k] !== 'string' || !config[k])
      throw new CniError(CNI.invalidConfig, `the network configuration has no ${k}`);
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(config.cniVersion as string)) {
    throw new CniError(
      CNI.incompatibleVersion,
      `cniVersion ${String(config.cniVersion)} is not supported`,
      `supported: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  const req: CniRequest = {
    command: command as Command,
    containerId: str(raw.containerId),
    netns: str(raw.netns),
    ifname: str(raw.ifname),
    args: parseCniArgs(str(raw.args)),
    config: config as NetConfig,
  };
  if (['ADD', 'DEL', 'CHECK'].includes(command) && !req.containerId)
    throw new CniError(CNI.invalidEnv, 'CNI_CONTAINERID is not set');
  if (['ADD', 'CHECK'].includes(command) && (!req.netns || !req.ifname))
    throw new CniError(CNI.invalidEnv, 'CNI_NETNS and CNI_IFNAME must be set');
  const ifname = podInterface(req);
  if (['ADD', 'CHECK'].includes(command) && !/^[A-Za-z][\w-]{0,14}$/.test(ifname)) {
    throw new CniError(CNI.invalidConfig, `interface name '${ifname}' is not a valid interface name`);
  }
  return req;
}

/** Whether we are chained after the primary network (a prevResult), or a network of our own (Multus). */
export const chained = (r: CniRequest): boolean => r.config.prevResult !== undefined;

/** The pod end's name: our own when chained (CNI_IFNAME is the primary's), the runtime's when standalone. */
export function podInterface(r: CniRequest): string {
  return chained(r)
    ? typeof r.config.interface === 'string'
      ? r.config.interface
      : DEFAULT_CHAINED_INTERFACE
    : r.ifname;
}

export interface PodIdentity {
  namespace: string;
  name: string;
  uid: string;
}

/** The pod from CNI_ARGS; null when the caller is not a Kubernetes runtime (cnitool without K8S_ args). */
export function podIdentity(r: CniRequest): PodIdentity | null {
  const { K8S_POD_NAMESPACE: namespace, K8S_POD_NAME: name, K8S_POD_UID: uid } = r.args;
  return namespace && name ? { namespace, name, uid: uid ?? '' } : null;
}

/**
 * Whether the pod asks for a slice, as far as the request tells: standalone (the pod named this network) yes;
 * chained, by its annotation when the runtime passed the annotations; 'unknown' when it did not.
 */
export function asks(r: CniRequest, annotationKey: string): 'yes' | 'no' | 'unknown' {
  if (!chained(r)) return 'yes';
  const ann = r.config.runtimeConfig?.[POD_ANNOTATIONS_CAPABILITY];
  if (!isObj(ann)) return 'unknown';
  return ann[annotationKey] === 'true' ? 'yes' : 'no';
}

export interface Delivered {
  /** the host end's name */
  hostIf: string;
  /** the pod end's name, in the sandbox */
  podIf: string;
  /** the pod's address with its /112 */
  address: string;
  /** the pod's next hop (the host end's fixed link-local) */
  gateway: string;
  /** a default route was added in the pod (it had no IPv6 default of its own) */
  defaultRoute: boolean;
}

/**
 * The ADD result, in the config's version. Standalone: our interfaces, the address and (when added) the default
 * route. Chained: the prevResult with our interfaces added but not our address or route, because the reference
 * plugins' CHECK (ptp, bridge) requires every address of the result on their own interface and would fail the pod;
 * the address is in the pod's sixbed4.io/address annotation and its SixBed4Slice.
 */
export function addResult(r: CniRequest, d: Delivered): CniResult {
  const version = r.config.cniVersion;
  const prev = r.config.prevResult;
  const interfaces = [...(prev?.interfaces ?? []), { name: d.hostIf }, { name: d.podIf, sandbox: r.netns }];
  if (prev) return { ...prev, cniVersion: version, interfaces };
  const ip: CniIp = {
    address: d.address,
    gateway: d.gateway,
    interface: interfaces.length - 1,
    ...(version === '0.4.0' ? { version: '6' } : {}),
  };
  return {
    cniVersion: version,
    interfaces,
    ips: [ip],
    ...(d.defaultRoute ? { routes: [{ dst: '::/0', gw: d.gateway }] } : {}),
  };
}

/** The result of an ADD that did nothing (a pod that did not ask): the prevResult unchanged, or an empty result. */
export function passResult(r: CniRequest): CniResult {
  return r.config.prevResult
    ? { ...r.config.prevResult, cniVersion: r.config.cniVersion }
    : { cniVersion: r.config.cniVersion };
}

/** The error object the spec wants on stdout. */
export function errorBody(cniVersion: string | undefined, e: CniError): Record<string, unknown> {
  return {
    cniVersion: cniVersion ?? SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1],
    code: e.code,
    msg: e.message,
    ...(e.details ? { details: e.details } : {}),
  };
}
