// The planner: (configuration, current state) → the ordered steps that make
// the host match, make-before-break (linux-ipv6-facts.md §2), or a refusal
// (InputError) when going ahead could cut the host off. Pure: no I/O, so every
// order and every refusal is tested on state models.
import { tunnelRouteArgs } from './tunnelroute.js';
import { inPrefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { ndpProxyModeName } from '../../kube/modes.js';
import { type HostConfig } from './config.js';
import { moveAddress, type WantedForm } from './moves.js';
import { defaultRoutes, findLink, type HostState } from './state.js';
import { ipStep, sysctlStep, type Plan, type PlanStep } from './steps.js';
import { confValue } from './sysctl.js';

export interface ApplyPlan extends Plan {
  readonly uplink: string;
  /** What apply creates, so that revert removes exactly that and nothing the router made. */
  readonly creates: { readonly dummy: boolean; readonly tunnelRoute: boolean };
}

export const SEED_ERRATA =
  "the seed's `sysctl -w net.ipv6.conf.eth0.ip_forwarding=1` names a key that does not exist: " +
  'IPv6 forwarding is net.ipv6.conf.<interface>.forwarding (and .all.); its net.ipv6.conf.*.mc_forwarding is read-only — ' +
  'only a multicast routing daemon sets it, by opening the multicast routing socket — so sixbed4 does not try to set it';

/** The uplink: as configured, else the interface of the IPv6 default route. Refuses when there is no default route. */
export function resolveUplink(cfg: Pick<HostConfig, 'uplink'>, state: HostState): string {
  const defaults = defaultRoutes(state);
  if (defaults.length === 0) {
    throw new InputError(
      'this host has no IPv6 default route: refusing to change its IPv6 addresses, since a host without one ' +
        `may be reachable only through the addresses being moved; add it first (ip -6 route add default via ROUTER dev ${cfg.uplink ?? 'UPLINK'})`,
    );
  }
  let uplink = cfg.uplink;
  if (uplink === undefined) {
    const devs = [...new Set(defaults[0]!.devs)];
    if (devs.length !== 1) {
      throw new InputError(
        `the IPv6 default route uses ${devs.length ? `several interfaces (${devs.join(', ')})` : 'no interface'}: say which one is the uplink with --uplink`,
      );
    }
    uplink = devs[0]!;
  }
  if (!findLink(state, uplink)) {
    throw new InputError(
      `uplink '${uplink}' not found (interfaces here: ${state.links.map((l) => l.name).join(', ')})`,
    );
  }
  return uplink;
}

export function planApply(cfg: HostConfig, state: HostState): ApplyPlan {
  const uplink = resolveUplink(cfg, state);
  const { prefix, tunnel, dummyInterface: dummy } = cfg;
  const notes: string[] = [SEED_ERRATA];
  refuseUnknownPrefix(cfg, state, uplink, notes);
  refuseCompetingRoutes(cfg, state, uplink);
  refuseStrayAddresses(cfg, state, uplink);
  const dummyLink = findLink(state, dummy);
  if (cfg.localAddressMode === 'dummy112') refuseNoDummy(cfg, state, uplink);

  const steps: PlanStep[] = [];

  // 1. Forwarding: the kernel must pass packets between the uplink and the tunnel.
  if (confValue(state.conf, { conf: 'all', param: 'forwarding' }) !== '1') {
    steps.push(
      sysctlStep(
        { conf: 'all', param: 'forwarding' },
        '1',
        'IPv6 forwarding for the host, so the kernel passes packets between the uplink and the tunnel (writing "all" switches it on for every interface and "default" too)',
      ),
    );
  }
  if (confValue(state.conf, { conf: uplink, param: 'forwarding' }) !== '1') {
    steps.push(
      sysctlStep(
        { conf: uplink, param: 'forwarding' },
        '1',
        `IPv6 forwarding on ${uplink} (this is the key the seed calls ip_forwarding; mc_forwarding is read-only and not needed)`,
      ),
    );
  }
  const ra = defaultRoutes(state).find((r) => r.devs.includes(uplink) && r.protocol === 'ra');
  if (ra && confValue(state.conf, { conf: uplink, param: 'accept_ra' }) === '1') {
    steps.push(
      sysctlStep(
        { conf: uplink, param: 'accept_ra' },
        '2',
        `the default route comes from Router Advertisements, which a forwarding interface ignores unless accept_ra is 2: without this the host would lose its default route when it expires`,
      ),
    );
  }

  // 2. The dummy interface for dummy112.
  let createsDummy = false;
  if (cfg.localAddressMode === 'dummy112') {
    if (!dummyLink) {
      createsDummy = true;
      steps.push(
        ipStep(
          ['link', 'add', dummy, 'type', 'dummy'],
          `dummy interface ${dummy} to hold the local addresses as /112s`,
        ),
      );
      steps.push(ipStep(['link', 'set', dummy, 'up'], `bring ${dummy} up`));
    } else if (!dummyLink.up) {
      steps.push(ipStep(['link', 'set', dummy, 'up'], `bring ${dummy} up`));
    }
  }

  // 3. The /64 to the tunnel: it takes over from the kernel's on-link route once the last /64 address is gone.
  let addsRoute = false;
  const tunnelRoute = state.routes.some((r) => r.prefix?.text === prefix.text && r.devs.includes(tunnel));
  if (!findLink(state, tunnel)) {
    notes.push(
      `tunnel ${tunnel} does not exist yet: the router routes ${prefix.text} to it when it starts (sixbed4 router --prefix ${prefix.text} ...)`,
    );
  } else if (!tunnelRoute) {
    addsRoute = true;
    steps.push(
      ipStep(
        tunnelRouteArgs('add', prefix.text, tunnel),
        `route the /64 to the 6bed4 tunnel ${tunnel} (it takes over from the kernel's on-link route once no /64 address is left on ${uplink})`,
      ),
    );
  }

  // 4. Each local address into its port-0 form, make-before-break.
  const scope = [uplink, dummy];
  for (const local of cfg.localAddresses) {
    const forms = state.addresses.filter((a) => a.address === local.text);
    const want: WantedForm =
      cfg.localAddressMode === 'uplink128'
        ? {
            dev: uplink,
            prefixLen: 128,
            why: 'its /128 form, more specific than the /64 route to the tunnel, so it stays on this host',
          }
        : {
            dev: dummy,
            prefixLen: 112,
            why: 'its /112 form on the dummy interface, more specific than the /64 route to the tunnel',
          };
    steps.push(
      ...moveAddress(
        local.text,
        forms.filter((f) => scope.includes(f.dev)),
        [want],
        forms.filter((f) => !scope.includes(f.dev)),
        'its new form is in place, and an old /64 form would keep the prefix routed to the uplink',
      ),
    );
  }

  if (cfg.ndpProxy !== 'off') {
    notes.push(
      `ndpProxy ${ndpProxyModeName(cfg.ndpProxy)}: the router answers Neighbour Solicitations on ${uplink} for live addresses` +
        (cfg.localAddressMode === 'uplink128'
          ? ' (the kernel answers for the local /128s on the uplink itself)'
          : ', the local /112s included'),
    );
  }
  return { uplink, steps, notes, creates: { dummy: createsDummy, tunnelRoute: addsRoute } };
}

/**
 * The prefix must be this host's when addresses of it are to be moved: an address in it, or a route for it to the
 * uplink or the tunnel. Without local addresses there is nothing to move, and the clean case of a routed /64 — the
 * upstream routes it to this host's link-local address — leaves no trace here to check: the plan goes ahead with a
 * note (all it does then is forwarding and the route to the tunnel, both undone by revert).
 */
function refuseUnknownPrefix(cfg: HostConfig, state: HostState, uplink: string, notes: string[]): void {
  const devs = [uplink, 'lo', cfg.dummyInterface];
  const hasAddress = state.addresses.some((a) => devs.includes(a.dev) && inPrefix(cfg.prefix, a.bytes));
  const routed = state.routes.some(
    (r) =>
      r.prefix &&
      r.prefix.length > 0 &&
      r.prefix.length <= 64 &&
      inPrefix(r.prefix, cfg.prefix.bytes) &&
      (r.devs.includes(uplink) || r.devs.includes(cfg.tunnel)),
  );
  if (hasAddress || routed) return;
  if (cfg.allocated && cfg.localAddresses.length > 0) {
    notes.push(
      `${cfg.prefix.text} is this host's share of a larger prefix, routed here by the upstream: ` +
        `its local addresses (${cfg.localAddresses.map((l) => l.text).join(', ')}) are added as new server addresses`,
    );
    return;
  }
  if (cfg.localAddresses.length === 0) {
    notes.push(
      `${cfg.prefix.text} is neither on ${uplink} nor routed here by a local route: taken as routed to this host by the upstream ` +
        `(to ${uplink}'s link-local address); if it is not, nothing will reach the tunnel`,
    );
    return;
  }
  throw new InputError(
    `prefix ${cfg.prefix.text} is neither on ${uplink} (no address in it) nor routed to it (no route for it via ${uplink}): ` +
      `refusing to move local addresses of a prefix this host does not have; is it the /64 your provider routes to this host, and ${uplink} the right uplink? (ip -6 addr show dev ${uplink})`,
  );
}

/** A route for exactly the /64 on the uplink, other than the kernel's own, would compete with the tunnel's. */
function refuseCompetingRoutes(cfg: HostConfig, state: HostState, uplink: string): void {
  for (const r of state.routes) {
    if (r.prefix?.text !== cfg.prefix.text || !r.devs.includes(uplink) || r.protocol === 'kernel') continue;
    if (r.protocol === 'ra') {
      throw new InputError(
        `the upstream announces ${cfg.prefix.text} as on-link in Router Advertisements, so the kernel keeps routing it to ${uplink}: ` +
          `stop accepting that (sysctl -w net.ipv6.conf.${uplink}.accept_ra_pinfo=0, or ask the provider) and run again`,
      );
    }
    throw new InputError(
      `route '${cfg.prefix.text} dev ${uplink} proto ${r.protocol} metric ${r.metric}' sends the prefix back to ${uplink} and would compete with the route to the tunnel: ` +
        `delete it (ip -6 route del ${cfg.prefix.text} dev ${uplink}) and run again`,
    );
  }
}

/** Every address of the prefix on the uplink with a /64 (or shorter) route must be listed, or the on-link route stays. */
function refuseStrayAddresses(cfg: HostConfig, state: HostState, uplink: string): void {
  const listed = new Set(cfg.localAddresses.map((l) => l.text));
  for (const a of state.addresses) {
    if (a.dev !== uplink || !inPrefix(cfg.prefix, a.bytes)) continue;
    if (listed.has(a.address)) {
      if (a.dynamic) {
        throw new InputError(
          `local address ${a.address} on ${uplink} is managed by SLAAC or DHCPv6 (it has a lifetime): configure it statically first; sixbed4 only moves static addresses`,
        );
      }
    } else if (a.prefixLen <= 64 && !a.flags.includes('noprefixroute')) {
      throw new InputError(
        `${a.address}/${a.prefixLen} on ${uplink} is inside ${cfg.prefix.text} but not in localAddresses: it would keep the kernel's on-link route for the prefix on ${uplink}, ` +
          `which outranks the route to the tunnel, and 6bed4 peers would be unreachable; add it to localAddresses (--local ${a.address}) or remove it`,
      );
    }
  }
}

function refuseNoDummy(cfg: HostConfig, state: HostState, uplink: string): void {
  const link = findLink(state, cfg.dummyInterface);
  if (link) {
    if (link.kind !== undefined && link.kind !== 'dummy') {
      throw new InputError(
        `dummyInterface '${cfg.dummyInterface}' exists but is a ${link.kind} interface, not a dummy: choose another name (dummyInterface / --dummy)`,
      );
    }
    return;
  }
  if (state.dummy && !state.dummy.supported) {
    throw new InputError(
      `localAddressMode DummyInterface needs the kernel's dummy link type, which this kernel lacks ` +
        `(ip link add ${cfg.dummyInterface} type dummy says: ${state.dummy.error ?? 'failed'}); ` +
        `use localAddressMode Uplink (--mode Uplink), which keeps the local addresses as /128s on ${uplink}`,
    );
  }
}
