// What revert restores: the host's relevant state before the first apply
// (addresses of the prefix with their prefix lengths and flags on the uplink,
// lo and the dummy; forwarding and accept_ra sysctls), and what apply created.
// planRestore turns (snapshot, current state) into make-before-break steps; it
// serves `host revert` and the rollback of a failed apply or revert alike.
import { inPrefix, parsePrefix64 } from '../../lib/ip.js';
import { moveAddress, type WantedForm } from './moves.js';
import { tunnelRouteArgs } from './tunnelroute.js';
import { findLink, type AddressForm, type HostState } from './state.js';
import { ipStep, sysctlStep, type Plan, type PlanStep } from './steps.js';
import type { Ipv6Conf } from './sysctl.js';

export interface Snapshot {
  readonly uplink: string;
  readonly prefix: string;
  readonly tunnel: string;
  readonly dummy: string;
  /** Every address inside the prefix on the uplink, lo and the dummy interface. */
  readonly addresses: readonly AddressForm[];
  /** forwarding of every conf (all, default, each interface) and accept_ra of the uplink. */
  readonly conf: Ipv6Conf;
  readonly dummyExists: boolean;
  readonly tunnelRoute: boolean;
}

/** The state file: the snapshot from before the first apply, plus what the applies since then created. */
export interface SavedState extends Snapshot {
  readonly version: 1;
  readonly savedAt: string;
  readonly added: { readonly dummy: boolean; readonly tunnelRoute: boolean };
  /** Local addresses of every apply so far: their absence from `addresses` means "was not there". */
  readonly managed: readonly string[];
}

export interface Names {
  uplink: string;
  prefix: string;
  tunnel: string;
  dummy: string;
}

export function snapshotOf(state: HostState, n: Names): Snapshot {
  const prefix = parsePrefix64(n.prefix);
  const devs = [n.uplink, 'lo', n.dummy];
  const conf: Ipv6Conf = {};
  for (const [c, v] of Object.entries(state.conf)) {
    if (v.forwarding !== undefined) conf[c] = { forwarding: v.forwarding };
  }
  const ra = state.conf[n.uplink]?.accept_ra;
  if (ra !== undefined) conf[n.uplink] = { ...conf[n.uplink], accept_ra: ra };
  return {
    ...n,
    addresses: state.addresses
      .filter((a) => devs.includes(a.dev) && inPrefix(prefix, a.bytes))
      .map(({ address, dev, prefixLen, flags }) => ({ address, dev, prefixLen, flags: [...flags] })),
    conf,
    dummyExists: findLink(state, n.dummy) !== undefined,
    tunnelRoute: state.routes.some((r) => r.prefix?.text === prefix.text && r.devs.includes(n.tunnel)),
  };
}

/**
 * The state file after one more apply: the original snapshot stays; addresses
 * this apply manages for the first time get their forms from just before it.
 */
export function mergeSaved(
  saved: SavedState | undefined,
  before: Snapshot,
  managed: readonly string[],
  creates: { dummy: boolean; tunnelRoute: boolean },
  now: Date,
): SavedState {
  if (!saved) {
    return { version: 1, savedAt: now.toISOString(), ...before, added: { ...creates }, managed: [...managed] };
  }
  const fresh = managed.filter((m) => !saved.managed.includes(m) && !saved.addresses.some((a) => a.address === m));
  const conf: Ipv6Conf = { ...before.conf, ...saved.conf };
  return {
    ...saved,
    addresses: [...saved.addresses, ...before.addresses.filter((a) => fresh.includes(a.address))],
    conf,
    added: { dummy: saved.added.dummy || creates.dummy, tunnelRoute: saved.added.tunnelRoute || creates.tunnelRoute },
    managed: [...saved.managed, ...fresh],
  };
}

/**
 * Steps from `current` back to `target`: dummy and tunnel route first if they
 * have to come back, then the addresses (make-before-break), then what has to
 * go, sysctls last — the reverse of apply's order.
 */
export function planRestore(
  target: Snapshot,
  current: HostState,
  may: { deleteDummy: boolean; deleteTunnelRoute: boolean },
): Plan {
  const prefix = parsePrefix64(target.prefix);
  const steps: PlanStep[] = [];
  const notes: string[] = [];
  const dummyNow = findLink(current, target.dummy);

  if (target.dummyExists && !dummyNow) {
    steps.push(
      ipStep(['link', 'add', target.dummy, 'type', 'dummy'], `dummy interface ${target.dummy} existed before`),
    );
    steps.push(ipStep(['link', 'set', target.dummy, 'up'], `bring ${target.dummy} up`));
  }
  const routeNow = current.routes.some((r) => r.prefix?.text === prefix.text && r.devs.includes(target.tunnel));
  if (target.tunnelRoute && !routeNow && findLink(current, target.tunnel)) {
    steps.push(
      ipStep(
        tunnelRouteArgs('add', prefix.text, target.tunnel),
        `the route of ${prefix.text} to ${target.tunnel} existed before`,
      ),
    );
  }

  const scope = [target.uplink, 'lo', target.dummy];
  const inScope = (a: AddressForm) => scope.includes(a.dev);
  const touched = current.addresses.filter((a) => inScope(a) && inPrefix(prefix, a.bytes)).map((a) => a.address);
  for (const address of [...new Set([...target.addresses.map((a) => a.address), ...touched])]) {
    const forms = current.addresses.filter((a) => a.address === address);
    const wanted: WantedForm[] = target.addresses
      .filter((a) => a.address === address)
      .map((a) => ({ dev: a.dev, prefixLen: a.prefixLen, flags: a.flags, why: 'as it was before' }));
    steps.push(
      ...moveAddress(
        address,
        forms.filter(inScope),
        wanted,
        forms.filter((f) => !inScope(f)),
        'it was not there before',
      ),
    );
  }

  if (!target.tunnelRoute && routeNow && may.deleteTunnelRoute) {
    steps.push(
      ipStep(
        ['-6', 'route', 'del', prefix.text, 'dev', target.tunnel],
        `the route of ${prefix.text} to ${target.tunnel} was added by sixbed4 host apply`,
      ),
    );
  }
  if (!target.dummyExists && dummyNow && may.deleteDummy) {
    const foreign = current.addresses.filter(
      (a) => a.dev === target.dummy && a.scope !== 'link' && !inPrefix(prefix, a.bytes),
    );
    if (foreign.length > 0) {
      notes.push(
        `${target.dummy} was created by sixbed4 but now also holds ${foreign.map((a) => `${a.address}/${a.prefixLen}`).join(', ')}: left in place`,
      );
    } else {
      steps.push(ipStep(['link', 'del', target.dummy], `dummy interface ${target.dummy} did not exist before`));
    }
  }
  steps.push(...restoreConf(target, current));
  return { steps, notes };
}

/**
 * Writing all.forwarding sets forwarding on "default" and on every interface
 * too, so it is written first and the model updated before the others are compared.
 */
function restoreConf(target: Snapshot, current: HostState): PlanStep[] {
  const steps: PlanStep[] = [];
  const now: Ipv6Conf = Object.fromEntries(Object.entries(current.conf).map(([c, v]) => [c, { ...v }]));
  const wantAll = target.conf.all?.forwarding;
  if (wantAll !== undefined && now.all?.forwarding !== wantAll) {
    steps.push(
      sysctlStep(
        { conf: 'all', param: 'forwarding' },
        wantAll,
        "IPv6 forwarding as it was before (this resets every interface's forwarding too)",
      ),
    );
    for (const v of Object.values(now)) if (v.forwarding !== undefined) v.forwarding = wantAll;
  }
  for (const [conf, values] of Object.entries(target.conf)) {
    for (const [param, value] of Object.entries(values)) {
      if (conf === 'all' && param === 'forwarding') continue;
      const have = now[conf]?.[param];
      if (have === undefined || have === value) continue; // interface gone, or already right
      steps.push(sysctlStep({ conf, param }, value, `${param} on ${conf} as it was before`));
    }
  }
  return steps;
}
