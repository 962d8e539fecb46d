// The declarative host configuration: what `sixbed4 host` makes of the host.
// Field names are those of the SixBed4Prefix custom resource's spec, so one
// file can serve both a single host and (later) a cluster node; spec fields
// that only matter to the router or the cluster are accepted and ignored here.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { addressPort } from '../protocol/address.js';
import { formatIPv6, inPrefix, parseIPv6, parsePrefix64, type Prefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import type { LocalAddressMode, NdpProxyMode } from '../../kube/api.js';
import {
  LOCAL_ADDRESS_MODE_NAMES,
  localAddressModeOf,
  NDP_PROXY_MODE_NAMES,
  ndpProxyModeOf,
} from '../../kube/modes.js';

export interface LocalAddress {
  readonly bytes: Uint8Array;
  readonly text: string;
}

export interface HostConfig {
  readonly prefix: Prefix;
  /** Undefined: the interface of the IPv6 default route, found when the host's state is read. */
  readonly uplink?: string;
  readonly localAddresses: readonly LocalAddress[];
  readonly localAddressMode: LocalAddressMode;
  readonly dummyInterface: string;
  readonly tunnel: string;
  readonly ndpProxy: NdpProxyMode;
  /**
   * The prefix is this host's share of a larger one, allocated by the operator and routed here by the upstream:
   * the host cannot have had addresses in it, so its local addresses are new server addresses to add, not a sign
   * of a mistyped prefix. Set by the cluster agent only; never read from a file.
   */
  readonly allocated?: boolean;
}

/** Spec fields of the custom resource that other parts of sixbed4 use. */
const OTHER_SPEC_FIELDS = ['nodeSelector', 'listen', 'port', 'routes', 'slices'];
const FIELDS = ['prefix', 'uplink', 'localAddresses', 'localAddressMode', 'dummyInterface', 'tunnel', 'ndpProxy'];

/** Checks raw input (a parsed file, with command-line overrides merged in) and fills in defaults. */
export function hostConfig(raw: Record<string, unknown>): HostConfig {
  for (const k of Object.keys(raw)) {
    if (!FIELDS.includes(k) && !OTHER_SPEC_FIELDS.includes(k)) {
      throw new InputError(`unknown config field '${k}' (known: ${FIELDS.join(', ')})`);
    }
  }
  if (raw.prefix === undefined || raw.prefix === '') {
    throw new InputError(
      'prefix is required: the /64 your provider routes to this host, e.g. --prefix 2001:db8:9:10::/64 (or prefix: in the config file)',
    );
  }
  const prefix = parsePrefix64(str(raw.prefix, 'prefix'));
  const mode = oneOf(
    raw.localAddressMode ?? 'Uplink',
    'localAddressMode',
    localAddressModeOf,
    Object.keys(LOCAL_ADDRESS_MODE_NAMES),
  );
  const ndpProxy = oneOf(raw.ndpProxy ?? 'Disabled', 'ndpProxy', ndpProxyModeOf, Object.keys(NDP_PROXY_MODE_NAMES));
  const uplink = raw.uplink === undefined ? undefined : ifname(raw.uplink, 'uplink');
  const dummyInterface = ifname(raw.dummyInterface ?? 'dumbo0', 'dummyInterface');
  const tunnel = ifname(raw.tunnel ?? '6bed4', 'tunnel');
  if (uplink !== undefined && (uplink === tunnel || uplink === dummyInterface)) {
    throw new InputError(`uplink '${uplink}' cannot also be the ${uplink === tunnel ? 'tunnel' : 'dummy interface'}`);
  }
  if (uplink === 'lo')
    throw new InputError("uplink 'lo' is the loopback interface: name the interface your provider's router is on");
  if (tunnel === dummyInterface) throw new InputError(`tunnel and dummyInterface are both '${tunnel}'`);
  return {
    prefix,
    ...(uplink !== undefined ? { uplink } : {}),
    localAddresses: localAddresses(raw.localAddresses ?? [], prefix),
    localAddressMode: mode,
    dummyInterface,
    tunnel,
    ndpProxy,
  };
}

function localAddresses(v: unknown, prefix: Prefix): LocalAddress[] {
  if (!Array.isArray(v)) throw new InputError('localAddresses must be a list of IPv6 addresses');
  const seen = new Set<string>();
  return v.map((item, i) => {
    const text = str(item, `localAddresses[${i}]`);
    if (text.includes('/')) {
      throw new InputError(
        `local address '${text}': write the address without a prefix length; sixbed4 chooses it from localAddressMode`,
      );
    }
    const bytes = parseIPv6(text);
    const canon = formatIPv6(bytes);
    if (!inPrefix(prefix, bytes)) throw new InputError(`local address ${canon} is outside the prefix ${prefix.text}`);
    const port = addressPort(bytes, 0);
    if (port !== 0) {
      const b = Uint8Array.from(bytes);
      b[12] = 0;
      b[13] = 0;
      throw new InputError(
        `local address ${canon} has port word 0x${port.toString(16).padStart(4, '0')} (bytes 12..13) instead of 0: ` +
          `it would collide with 6bed4 peers, whose addresses carry their UDP port there; use a port-0 address such as ${formatIPv6(b)}`,
      );
    }
    if (bytes.subarray(8).every((x) => x === 0)) {
      throw new InputError(
        `local address ${canon} is the subnet-router anycast address of ${prefix.text} (interface identifier 0): choose another`,
      );
    }
    if (seen.has(canon)) throw new InputError(`local address ${canon} is listed twice`);
    seen.add(canon);
    return { bytes, text: canon };
  });
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string') throw new InputError(`${field} must be a string, not ${JSON.stringify(v)}`);
  return v.trim();
}

/** A mode in either spelling; the error names only the new ones. A YAML 1.1 boolean gets a hint. */
function oneOf<T extends string>(
  v: unknown,
  field: string,
  of: (v: unknown) => T | undefined,
  names: readonly string[],
): T {
  if (typeof v === 'boolean') {
    throw new InputError(`${field} ${String(v)}: use ${names.join(' or ')} (on, off, yes and no are booleans in YAML)`);
  }
  const s = str(v, field);
  const m = of(s);
  if (m === undefined) throw new InputError(`${field} '${s}': use ${names.join(' or ')}`);
  return m;
}

/** Linux interface names: 1..15 bytes, no slash, no white space, not . or .. */
function ifname(v: unknown, field: string): string {
  const s = str(v, field);
  if (!/^[^\s/:]{1,15}$/.test(s) || s === '.' || s === '..') {
    throw new InputError(`${field} '${s}' is not a usable interface name (1-15 characters, no '/', ':' or spaces)`);
  }
  return s;
}

/**
 * Reads a config file: YAML or JSON (YAML parses both). A whole SixBed4Prefix
 * object may be given; its spec is used.
 */
export async function readHostConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InputError(
      `cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
    );
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new InputError(`config file ${path} is neither YAML nor JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw new InputError(`config file ${path} must hold a mapping of fields (prefix, uplink, ...)`);
  const obj = doc as Record<string, unknown>;
  if (obj.kind === 'SixBed4Prefix' && typeof obj.spec === 'object' && obj.spec !== null)
    return { ...(obj.spec as Record<string, unknown>) };
  return { ...obj };
}
