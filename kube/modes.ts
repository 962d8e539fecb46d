// The spellings of the spec's modes, shared by the operator's spec check, the host config file and the agent: the
// API's CamelCase names and the older lowercase ones, both accepted, mapped to what sixbed4 handles inside.
import type { LocalAddressMode, LocalAddressModeName, NdpProxyMode, NdpProxyModeName } from './api.js';

/**
 * The modes as users write them (SixBed4Prefix spec, config file, flags), in
 * the Kubernetes API conventions' CamelCase, which no YAML 1.1 reader (kubectl,
 * Helm) takes for a boolean or a number, as it does with on/off/yes/no:
 *   localAddressMode  Uplink: each local address as a /128 on the uplink (was uplink128)
 *                     DummyInterface: as /112s on a dummy interface (was dummy112)
 *   ndpProxy          Disabled: no proxying (was off)
 *                     Always: answer Neighbour Solicitations for live addresses (was on)
 *                     WhenOnLink: start answering once solicitations show that the
 *                       provider treats the prefix as on-link (was auto)
 * The old spellings are still accepted (v1alpha1 objects and files written
 * before) and mean the same.
 */
export const LOCAL_ADDRESS_MODE_NAMES = { Uplink: 'uplink128', DummyInterface: 'dummy112' } as const satisfies Record<
  LocalAddressModeName,
  LocalAddressMode
>;
export const NDP_PROXY_MODE_NAMES = { Disabled: 'off', Always: 'on', WhenOnLink: 'auto' } as const satisfies Record<
  NdpProxyModeName,
  NdpProxyMode
>;

export const LOCAL_ADDRESS_MODES: readonly LocalAddressMode[] = ['uplink128', 'dummy112'];
export const NDP_PROXY_MODES: readonly NdpProxyMode[] = ['off', 'on', 'auto'];

/** A mode in either spelling (new CamelCase or old), as sixbed4 handles it inside; undefined if neither. */
export function localAddressModeOf(v: unknown): LocalAddressMode | undefined {
  return modeOf(v, LOCAL_ADDRESS_MODE_NAMES, LOCAL_ADDRESS_MODES);
}
export function ndpProxyModeOf(v: unknown): NdpProxyMode | undefined {
  return modeOf(v, NDP_PROXY_MODE_NAMES, NDP_PROXY_MODES);
}
/** The name users write for a mode (CamelCase). */
export function localAddressModeName(m: LocalAddressMode): LocalAddressModeName {
  return nameOf(m, LOCAL_ADDRESS_MODE_NAMES);
}
export function ndpProxyModeName(m: NdpProxyMode): NdpProxyModeName {
  return nameOf(m, NDP_PROXY_MODE_NAMES);
}

function modeOf<T extends string>(v: unknown, names: Record<string, T>, old: readonly T[]): T | undefined {
  if (typeof v !== 'string') return undefined;
  if (Object.hasOwn(names, v)) return names[v];
  return (old as readonly string[]).includes(v) ? (v as T) : undefined;
}
function nameOf<N extends string, T extends string>(m: T, names: Record<N, T>): N {
  return (Object.keys(names) as N[]).find((k) => names[k] === m)!;
}
