// One prefix on this node: makes the node what its share of the prefix says
// (host networking, then the router on the node's /64), keeps its entry in the
// prefix status current, and gives the host back when the prefix is deleted.
// The node agent (agent.ts) runs one of these per prefix that selects the node.
// The forwarding never depends on the API server: the share comes from the
// node agent (the API's ConfigMap, or its copy on the node's disk) and the
// router runs on whatever the API does; only status reports wait for it.
import { access } from 'node:fs/promises';
import type { Logger } from '../../lib/log.js';
import { applyHost, revertHost } from '../host/apply.js';
import { hostConfig, type HostConfig } from '../host/config.js';
import { hasBpf } from '../host/privilege.js';
import { readSavedState } from '../host/statefile.js';
import {
  AddressNotLocalError,
  routerConfig,
  startRouter,
  type RouterOptions,
  type RunningRouter,
} from '../router/router.js';
import { Counters, type CountersSnapshot } from '../router/counters.js';
import type { Kube } from '../../kube/client.js';
import { proxiedLocalAddresses } from '../ndp/policy.js';
import type { NodeShare } from './config.js';
import { SliceAgent, type SliceRepair } from './slices.js';
import type { AgentNodeConfig, AgentReport } from '../../kube/api.js';
import { parsePrefix } from '../../lib/ip.js';
import { subnetIndex } from '../../kube/subnets.js';
import { FastPathUnavailable } from '../bpf/fastpath.js';
import { failoverPlan, FailoverRefused, layer2Refusal, type FailoverPlan } from '../failover/config.js';
import { FailoverMember } from '../failover/member.js';
import type { FailoverMetrics } from '../failover/metrics.js';
import { ipJson } from '../host/ip.js';
import type { PrefixMetricsSource } from './metrics.js';

export interface PrefixAgentOptions {
  prefixName: string;
  node: string;
  /** Where the pre-change host state is kept (a hostPath in the cluster). */
  statePath: string;
  /** The latest share of this prefix for this node (null: none yet). */
  share: () => NodeShare | null;
  /** Hands the node agent this prefix's report (it goes out in the node's Lease when it changed). */
  report: (r: AgentReport) => void;
  /** How often the report is compared with what was written (and written when it differs). */
  heartbeatMs?: number;
  /** The tunnel interface name (default: the share's, else 6bed4). */
  tun?: string;
  /** Claims for pods that run without a slice (they predate the CNI plugin); see SliceAgent. */
  sliceRepair?: SliceRepair;
  /** For a share with failover: the agents' namespace (the group's Lease) and the agent's failover metrics. */
  failover?: { namespace: string; metrics: FailoverMetrics };
}

export interface PrefixAgent {
  /** Converge again (the share changed, or a retry is due). */
  kick(): Promise<void>;
  /** The prefix is being deleted: stop the router and revert the host. */
  deleting(): Promise<void>;
  /** Whether this prefix forwards (or has given its host back). */
  healthy(): boolean;
  counters(): Promise<CountersSnapshot>;
  /** What the node agent's /metrics shows of this prefix (metrics.ts). */
  metricsSource(): Omit<PrefixMetricsSource, 'prefix'>;
  /** The prefix's slices on this node (CNI requests go there). */
  readonly slices: SliceAgent;
  /**
   * Stops. A pod restart keeps the host as configured and hands the tunnel to the next agent's router when one
   * comes within waitForSuccessorMs.
   */
  stop(opts?: { waitForSuccessorMs?: number }): Promise<void>;
}

export async function startPrefixAgent(kube: Kube, o: PrefixAgentOptions, log: Logger): Promise<PrefixAgent> {
  let router: RunningRouter | null = null;
  let shareText: string | null = null;
  let hostApplied = false;
  let deleting = false;
  let reverted = false;
  let stopped = false;
  let lastProblem = '';
  /** a reason the operator turns into Degraded (the node cannot serve as configured) */
  let lastReason = '';
  /** how the router listens, when not simply on the share's address */
  let listening = '';
  /** The failover member, when the share has a failover block. */
  let member: FailoverMember | null = null;

  // The node agent sends it in the node's Lease (lease.ts) when it changed.
  const report = async (r: AgentReport) => {
    o.report(r);
  };
  const current = async (): Promise<AgentReport> => {
    if (reverted)
      return { ready: false, reverted: true, livePeers: 0, message: 'host reverted: the prefix is being deleted' };
    if (router && member) {
      const role = member.role === 'active' ? 'Active' : member.standbyReady ? 'Standby' : 'NotReady';
      return {
        ready: role !== 'NotReady',
        reverted: false,
        livePeers: (await router.counters()).livePeers,
        failover: role,
        message: role === 'Active' ? `forwarding; ${member.describe()}` : member.describe(),
        ...(role === 'NotReady' ? { reason: 'StandbyNotReady' } : {}),
      };
    }
    if (router)
      return {
        ready: true,
        reverted: false,
        livePeers: (await router.counters()).livePeers,
        message: listening ? `forwarding; ${listening}` : 'forwarding',
      };
    return {
      ready: false,
      reverted: false,
      livePeers: 0,
      message: (lastProblem || 'starting').slice(0, 1024),
      ...(lastReason ? { reason: lastReason } : {}),
    };
  };

  const stopRouter = async (waitForSuccessorMs = 0, restarting = false) => {
    // A failover member withdraws and hands the Lease over before its router stops: the standby is forwarding by then.
    if (member) {
      const m = member;
      member = null;
      await m.stop(restarting);
    }
    if (router) {
      const r = router;
      router = null;
      await r.stop({ waitForSuccessorMs });
    }
  };
  /** Everything this node's router forwarded, on both paths (the takeover's first packet). */
  const forwarded = async (): Promise<number | undefined> => {
    const r = router;
    if (!r) return undefined;
    const c = await r.counters();
    const f = r.fastPath?.counters();
    return (
      c.udpToTunPackets +
      c.tunToUdpPackets +
      c.relayPackets +
      (f ? f.fromPeers.fast.packets + f.toPeers.fast.packets + f.fromPeers.relay.packets : 0)
    );
  };

  /** Brings the node to what its share says; runs one at a time. */
  const converge = async () => {
    if (stopped) return;
    if (deleting) {
      if (reverted) return;
      await slices.releaseAll();
      await stopRouter();
      if (hostApplied || (await stateFileExists(o.statePath))) {
        await revertHost({ log, statePath: o.statePath });
        log.info('host reverted: the prefix is being deleted');
      }
      hostApplied = false;
      reverted = true;
      await report(await current());
      return;
    }
    const share = o.share();
    if (!share) {
      lastProblem = `no agent config for prefix ${o.prefixName} yet`;
      return;
    }
    if (share.text === shareText && (router || !share.node)) return;
    await stopRouter();
    shareText = share.text;
    if (!share.node) {
      lastProblem = `no share of ${share.common.prefix} for node ${o.node}`;
      log.warn(lastProblem);
      await report(await current());
      return;
    }
    const n = share.node;
    try {
      // A share that cannot fail over is refused before the host is touched (its layer 2 is checked once the
      // host plan has named the uplink).
      if (n.failover && !o.failover)
        throw new FailoverRefused('spec.failover: this agent was started without failover support');
      if (n.failover) failoverPlan(n, n.uplink ?? '');
      const host = {
        ...hostConfig({
          prefix: n.prefix,
          localAddresses: n.localAddresses,
          localAddressMode: n.localAddressMode,
          ndpProxy: n.ndpProxy,
          tunnel: o.tun ?? n.tunnel ?? '6bed4',
          ...(n.uplink ? { uplink: n.uplink } : {}),
        }),
        // A /64 split off a larger prefix is new to the node: its local addresses are added, not moved.
        allocated: n.prefix !== share.common.prefix,
      };
      // A share for another prefix (the operator moved this node): give the host back first, then take the new one.
      const saved = await readSavedState(o.statePath);
      if (saved && saved.prefix !== host.prefix.text) {
        log.info(`this node's share moved from ${saved.prefix} to ${host.prefix.text}: reverting the host first`);
        await revertHost({ log, statePath: o.statePath });
      }
      const applied = await applyHost(host, { log, statePath: o.statePath });
      hostApplied = true;
      log.info(
        applied.plan.steps.length ? `host configured for ${n.prefix}` : `host already configured for ${n.prefix}`,
      );
      let plan: FailoverPlan | undefined;
      if (n.failover) {
        plan = failoverPlan(n, applied.plan.uplink);
        const [link] = await ipJson<{ link_type?: string; flags?: string[] }[]>(
          'link',
          'show',
          'dev',
          plan.uplink,
        ).catch(() => []);
        const no = layer2Refusal(plan.uplink, link);
        if (no) {
          await revertHost({ log, statePath: o.statePath });
          hostApplied = false;
          throw new FailoverRefused(`spec.failover: ${no}`, 'FailoverUnsupported');
        }
        member = new FailoverMember(
          {
            kube,
            namespace: o.failover!.namespace,
            node: o.node,
            prefixName: o.prefixName,
            plan,
            metrics: o.failover!.metrics,
            forwarded,
            onChange: () => {
              void current().then(report);
            },
          },
          log.child({ component: 'failover' }),
        );
        // The macvlan first: with upstream OnLink the router's neighbour proxy answers on it, with the virtual MAC.
        await member.prepare();
      }
      const start = (bind?: string) =>
        startRouter(
          routerConfig({
            ...shareRouterOptions(n, {
              tun: o.tun ?? n.tunnel ?? '6bed4',
              uplink: plan?.macvlan ?? applied.plan.uplink,
              host,
              ...(bind ? { bind } : {}),
            }),
            // Every member binds the floating address, held or not: a takeover is announcements only.
            // Its fast path sits on the macvlan: datagrams to the floating address arrive there for this host (on the
            // uplink they are another host's, PACKET_OTHERHOST, which from-peers leaves to the router).
            ...(plan ? { freebind: true, bindUplink: plan.macvlan } : {}),
          }),
          log,
        );
      try {
        router = await start();
        listening = n.listen.advertise
          ? `listening on ${n.listen.address}:${n.listen.port} for ${n.listen.advertise} (listen.advertise, forwarded by a DNAT)`
          : '';
      } catch (err) {
        // Cloud-style node: its ExternalIP is a 1:1 NAT in front of its InternalIP. Peers send to the former; bind the latter.
        if (!(err instanceof AddressNotLocalError) || !n.listen.bind) throw err;
        router = await start(n.listen.bind);
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
      if (member) await member.start();
      slices.start(
        {
          node64: n.prefix,
          index: subnetIndex(parsePrefix(share.common.prefix), n.prefix),
          localAddresses: n.localAddresses,
        },
        router.proxy,
      );
      lastProblem = '';
      lastReason = '';
    } catch (err) {
      const fast = n.fastPath === 'on' ? fastPathRefusal(err) : undefined;
      lastProblem = fast ?? (err as Error).message;
      lastReason =
        err instanceof AddressNotLocalError
          ? 'ListenAddressUnavailable'
          : fast
            ? 'FastPathUnavailable'
            : err instanceof FailoverRefused
              ? err.reason
              : '';
      if (member) {
        const m = member;
        member = null;
        await m.stop().catch(() => undefined);
      }
      shareText = null; // try again at the next poll
      log.error(`cannot serve ${n.prefix} on this node: ${lastProblem}`);
    }
    await report(await current());
  };

  const slices = new SliceAgent(kube, {
    prefixName: o.prefixName,
    node: o.node,
    log,
    ...(o.sliceRepair ? { repair: o.sliceRepair } : {}),
  });
  let chain = Promise.resolve();
  const kick = () => {
    chain = chain.then(converge).catch((err: Error) => {
      log.error(`agent: ${err.message}`);
    });
    return chain;
  };
  await kick();
  const heartbeat = setInterval(() => {
    current()
      .then(report)
      .catch((err: Error) => log.warn(`heartbeat: ${err.message}`));
  }, o.heartbeatMs ?? 30_000);
  const zero = new Counters().snapshot();

  return {
    kick,
    async deleting() {
      if (deleting) return chain;
      deleting = true;
      log.info(`prefix ${o.prefixName} is being deleted: stopping the router and reverting the host`);
      return kick();
    },
    healthy: () => router !== null || reverted,
    slices,
    counters: () => (router ? router.counters() : Promise.resolve(zero)),
    metricsSource: () => ({
      ...(router ? { registry: router.registry } : {}),
      fastPath: { mode: o.share()?.node?.fastPath ?? 'off', running: router?.fastPath !== undefined },
    }),
    async stop(opts = {}) {
      if (stopped) return;
      stopped = true;
      clearInterval(heartbeat);
      await chain;
      // Slices stay in place across agent restarts: the next agent finds and keeps them.
      await slices.stop();
      await stopRouter(opts.waitForSuccessorMs ?? 0, true);
      if (!reverted) await report({ ready: false, reverted: false, livePeers: 0, message: 'agent stopped' });
    },
  };
}

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

async function stateFileExists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
