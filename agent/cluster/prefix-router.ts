// The router of a node's share: its options (from the share and what the agent found on the node), its start with
// the 1:1 NAT fallback, and what a failure to serve says in the node's report. Apart from the agent's lifecycle
// (prefix-agent.ts) because none of it depends on where in that lifecycle the agent is.
import type { Logger } from '../../lib/log.js';
import type { AgentNodeConfig } from '../../kube/api.js';
import type { HostConfig } from '../host/config.js';
import { hasBpf } from '../host/privilege.js';
import { AddressNotLocalError, routerConfig, type RouterOptions } from '../router/router.js';
import { proxiedLocalAddresses } from '../ndp/policy.js';
import { FastPathUnavailable } from '../bpf/fastpath.js';
import { FailoverRefused, type FailoverPlan } from '../failover/config.js';
import type { PrefixParts, PrefixRouter } from './prefix-parts.js';
import type { Problem } from './prefix-report.js';

/** What the router of a node's share runs with: the share, and what the agent found on the node. */
export function shareRouterOptions(
  n: AgentNodeConfig,
  at: { tun: string; uplink: string; host: HostConfig; bind?: string },
): RouterOptions {
  return {
    prefix: n.prefix,
    listen: n.listen.address,
    port: n.listen.port,
    routes: n.routes,
    tun: at.tun,
    // Behind a DNAT (spec.listen.advertise) peers know the router by that address; it binds as it would without.
    ...(at.bind ? { bind: at.bind } : {}),
    ...(n.listen.advertise ? { advertise: n.listen.advertise } : {}),
    // A new agent Pod starts beside the old one (the DaemonSet surges): it takes the tunnel and the port over.
    handover: true,
    ...(at.host.ndpProxy !== 'off'
      ? { ndpProxy: { uplink: at.uplink, mode: at.host.ndpProxy, localAddresses: proxiedLocalAddresses(at.host) } }
      : {}),
    // spec.fastPath Auto | Required (absent: Disabled, said out loud: the router's own default is auto); the words
    // are --fast-path's.
    fastPath: n.fastPath ?? 'off',
    // spec.fastPathDirect: --fast-path-direct (only ever with the fast path: checkSpec refuses it without).
    ...(n.fastPathDirect ? { fastPathDirect: true } : {}),
    // spec.fastPathXdp: --fast-path-xdp auto (the XDP stage where the uplink's driver has the hook).
    ...(n.fastPathXdp ? { fastPathXdp: true } : {}),
  };
}

/**
 * The router's refusal to start for want of its fast path (--fast-path on), in the spec's words, and what the
 * agent itself lacks; undefined for any other failure.
 */
export function fastPathRefusal(err: unknown): string | undefined {
  if (!(err instanceof FastPathUnavailable)) return undefined;
  return (
    `spec.fastPath Required: ${err.why}` +
    (hasBpf() ? '' : '; this agent has no CAP_BPF: the chart gives it to the agents unless agent.fastPath=false')
  );
}

/** Why the node cannot serve its share: the message, and the reason the operator turns into Degraded. */
export function serveProblem(n: AgentNodeConfig, err: unknown): Problem {
  const fast = n.fastPath === 'on' ? fastPathRefusal(err) : undefined;
  return {
    message: fast ?? (err as Error).message,
    reason:
      err instanceof AddressNotLocalError
        ? 'ListenAddressUnavailable'
        : fast
          ? 'FastPathUnavailable'
          : err instanceof FailoverRefused
            ? err.reason
            : '',
  };
}

/**
 * Starts the share's router; on a cloud-style node (its ExternalIP a 1:1 NAT in front of its InternalIP, which is
 * where peers' datagrams arrive) binds the InternalIP instead. Returns the router and how it listens when that is not
 * simply on the share's address ('' otherwise).
 */
export async function startShareRouter(
  start: PrefixParts['startRouter'],
  n: AgentNodeConfig,
  at: { tun: string; uplink: string; host: HostConfig; plan: FailoverPlan | undefined },
  log: Logger,
): Promise<{ router: PrefixRouter; listening: string }> {
  const { plan } = at;
  const attempt = (bind?: string) =>
    start(
      routerConfig({
        ...shareRouterOptions(n, { tun: at.tun, uplink: at.uplink, host: at.host, ...(bind ? { bind } : {}) }),
        // Every member binds the floating address, held or not: a takeover is announcements only.
        // Its fast path sits on the macvlan: datagrams to the floating address arrive there for this host (on the
        // uplink they are another host's, PACKET_OTHERHOST, which from-peers leaves to the router).
        ...(plan ? { freebind: true, bindUplink: plan.macvlan } : {}),
      }),
      log,
    );
  let router: PrefixRouter;
  let listening: string;
  try {
    router = await attempt();
    listening = n.listen.advertise
      ? `listening on ${n.listen.address}:${n.listen.port} for ${n.listen.advertise} (listen.advertise, forwarded by a DNAT)`
      : '';
  } catch (err) {
    if (!(err instanceof AddressNotLocalError) || !n.listen.bind) throw err;
    router = await attempt(n.listen.bind);
    listening = n.listen.advertise
      ? `listening on ${n.listen.bind}:${n.listen.port} (the InternalIP) for ${n.listen.advertise} (listen.advertise, forwarded by a DNAT)`
      : `listening on ${n.listen.bind} (the InternalIP) for ${n.listen.address}, which is not an address of this node (1:1 NAT)`;
  }
  if (listening) log.info(listening);
  // Auto where the program did not load: the router logged why; the node's entry says it runs without.
  if (n.fastPath === 'auto' && !router.fastPath) {
    listening = [listening, "without the fast path (fastPath Auto: it did not load here, the agent's log says why)"]
      .filter(Boolean)
      .join('; ');
  }
  return { router, listening };
}
