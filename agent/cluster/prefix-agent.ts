// One prefix on this node, as a class with its parts handed in (prefix-parts.ts): the node made what its share says
// (host, failover member, router, slices), its report kept current, and the host given back when the prefix is
// deleted. startPrefixAgent (prefix.ts) builds it with the real parts; the lifecycle table
// (test/cluster/prefix-lifecycle.test.ts) with fakes that record the order of their calls.
//
// The order is the contract (docs/kubernetes.md "Removing it", docs/failover.md "Planned stop"):
// - prefix deleted: slices released, failover member withdrawn (Lease handed over), router stopped, host reverted,
//   then the report says reverted (the operator's finalizer waits for that);
// - agent stopped (SIGTERM, a rollout): slices kept, member withdrawn (its macvlan kept for the next agent), router
//   stopped (handing the tunnel over), host kept;
// - the node's share changed or removed: member and router stopped first, then the host follows the new share (a
//   share of another /64 reverts the old one first); a removed share releases the slices and reverts the host.
import type { Logger } from '../../lib/log.js';
import type { Kube } from '../../kube/client.js';
import type { AgentNodeConfig } from '../../kube/api.js';
import { parsePrefix } from '../../lib/ip.js';
import { subnetIndex } from '../../kube/subnets.js';
import { hostConfig, type HostConfig } from '../host/config.js';
import { Counters, type CountersSnapshot } from '../router/counters.js';
import { failoverPlan, FailoverRefused, layer2Refusal, type FailoverPlan } from '../failover/config.js';
import type { NodeShare } from './config.js';
import type { PrefixMetricsSource } from './metrics.js';
import type { PrefixAgent, PrefixAgentOptions } from './prefix.js';
import type { HostPlanned, PrefixMember, PrefixParts, PrefixRouter, PrefixSlices } from './prefix-parts.js';
import { prefixReport, STOPPED_REPORT, type Problem } from './prefix-report.js';
import { serveProblem, startShareRouter } from './prefix-router.js';

/**
 * Where the prefix's removal stands: none asked, asked (the next pass gives the host back), done (the host is
 * reverted; nothing is started again). One field rather than two flags: "reverted but not deleting" cannot be said.
 */
type Removal = 'none' | 'asked' | 'reverted';

const ZERO = new Counters().snapshot();

export class PrefixAgentRunner<S extends PrefixSlices> implements Omit<PrefixAgent, 'slices'> {
  private removal: Removal = 'none';
  /** For good: no pass runs after stop(). */
  private stopped = false;
  /** This agent applied the host (a revert is due on deletion even without a state file check). */
  private hostApplied = false;
  /** The share text the node is configured for; null: configure at the next pass (none yet, or a retry is due). */
  private shareText: string | null = null;
  private router: PrefixRouter | null = null;
  /** The failover member, when the share has a failover block. */
  private member: PrefixMember | null = null;
  /** how the router listens, when not simply on the share's address */
  private listening = '';
  private problem: Problem = { message: '', reason: '' };
  /** Passes run one after the other: this is the last one asked for. */
  private chain: Promise<void> = Promise.resolve();
  private stopHeartbeat: () => void = () => undefined;

  private constructor(
    private readonly kube: Kube,
    private readonly o: PrefixAgentOptions,
    private readonly log: Logger,
    private readonly parts: PrefixParts<S>,
  ) {}

  /** Makes the node what its share says (the first pass), then keeps the report going every heartbeatMs. */
  static async start<S extends PrefixSlices>(
    kube: Kube,
    o: PrefixAgentOptions,
    log: Logger,
    parts: PrefixParts<S>,
  ): Promise<PrefixAgentRunner<S>> {
    const a = new PrefixAgentRunner(kube, o, log, parts);
    await a.kick();
    a.stopHeartbeat = parts.every(o.heartbeatMs ?? 30_000, () => {
      a.current()
        .then((r) => a.o.report(r))
        .catch((err: Error) => log.warn(`heartbeat: ${err.message}`));
    });
    return a;
  }

  /** The prefix's slices on this node (CNI requests go there). */
  get slices(): S {
    return this.parts.slices;
  }

  /** Converge again (the share changed, or a retry is due); settles (never rejects) when the pass is done. */
  kick(): Promise<void> {
    this.chain = this.chain
      .then(() => this.converge())
      .catch((err: Error) => {
        this.log.error(`agent: ${err.message}`);
      });
    return this.chain;
  }

  /** The prefix is being deleted: release the slices, stop the router and revert the host (once). */
  deleting(): Promise<void> {
    if (this.removal !== 'none') return this.chain;
    this.removal = 'asked';
    this.log.info(`prefix ${this.o.prefixName} is being deleted: stopping the router and reverting the host`);
    return this.kick();
  }

  /** Whether this prefix forwards (or has given its host back). */
  healthy(): boolean {
    return this.router !== null || this.removal === 'reverted';
  }

  counters(): Promise<CountersSnapshot> {
    return this.router ? this.router.counters() : Promise.resolve(ZERO);
  }

  metricsSource(): Omit<PrefixMetricsSource, 'prefix'> {
    return {
      ...(this.router ? { registry: this.router.registry } : {}),
      fastPath: { mode: this.o.share()?.node?.fastPath ?? 'off', running: this.router?.fastPath !== undefined },
    };
  }

  /**
   * Stops for a restart: the slices stay in place (the next agent finds and keeps them), the host stays configured,
   * and the router hands the tunnel to the next agent's when one comes within waitForSuccessorMs.
   */
  async stop(opts: { waitForSuccessorMs?: number } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopHeartbeat();
    await this.chain;
    await this.parts.slices.stop();
    await this.stopRouter(opts.waitForSuccessorMs ?? 0, true);
    if (this.removal !== 'reverted') this.o.report(STOPPED_REPORT);
  }

  /** One pass: the host given back when the prefix goes, else the node brought to its share. */
  private async converge(): Promise<void> {
    if (this.stopped) return;
    if (this.removal !== 'none') return this.giveBack();
    const share = this.o.share();
    if (!share) {
      this.problem = { ...this.problem, message: `no agent config for prefix ${this.o.prefixName} yet` };
      return;
    }
    if (share.text === this.shareText && (this.router || !share.node)) return;
    // Whatever changed in the share, the running member and router are of the old one.
    await this.stopRouter();
    this.shareText = share.text;
    if (!share.node) {
      this.problem = { ...this.problem, message: `no share of ${share.common.prefix} for node ${this.o.node}` };
      this.log.warn(this.problem.message);
      if (await this.configured()) {
        await this.parts.slices.releaseAll();
        await this.revertHost('this node no longer has a share of the prefix');
      }
      return this.sendReport();
    }
    await this.serve(share, share.node);
    await this.sendReport();
  }

  /**
   * The prefix is being deleted. Slices first (their links route into the /64), then the member (it hands the
   * Lease over while the router still forwards) and the router, and only then the host: the router's tunnel and
   * proxy sit on what the host part configured. The report says reverted last: it lets the operator drop the
   * finalizer, so it must not come before the host is back.
   */
  private async giveBack(): Promise<void> {
    if (this.removal === 'reverted') return;
    await this.parts.slices.releaseAll();
    await this.stopRouter();
    await this.revertHost('the prefix is being deleted');
    this.removal = 'reverted';
    await this.sendReport();
  }

  /**
   * The host reverted once the router is stopped (and the slices released): on deletion, and when the node leaves
   * the group that serves the prefix (unlabelled, not a failover member any more). Kept configured, its /64's
   * addresses and routes would clash with the node that serves the /64 now. A share that comes back is applied again.
   */
  private async revertHost(why: string): Promise<void> {
    if (await this.configured()) {
      await this.parts.revertHost({ log: this.log, statePath: this.o.statePath });
      this.log.info(`host reverted: ${why}`);
    }
    this.hostApplied = false;
  }

  /** This agent applied the host, or one before it did (a restart): its state file is there. */
  private async configured(): Promise<boolean> {
    return this.hostApplied || (await this.parts.stateExists(this.o.statePath));
  }

  /** Host, failover member, router, slices: in that order, each on what the one before made. */
  private async serve(share: NodeShare, n: AgentNodeConfig): Promise<void> {
    try {
      const { host, planned } = await this.applyShareHost(share, n);
      const plan = n.failover ? await this.joinFailover(n, planned.uplink) : undefined;
      const tun = this.o.tun ?? n.tunnel ?? '6bed4';
      const started = await startShareRouter(
        this.parts.startRouter,
        n,
        { tun, uplink: plan?.macvlan ?? planned.uplink, host, plan },
        this.log,
      );
      this.router = started.router;
      this.listening = started.listening;
      // The member joins the election only once its router runs: an active member must forward.
      if (this.member) await this.member.start();
      this.parts.slices.start(
        {
          node64: n.prefix,
          index: subnetIndex(parsePrefix(share.common.prefix), n.prefix),
          localAddresses: n.localAddresses,
        },
        this.router.proxy,
      );
      this.problem = { message: '', reason: '' };
    } catch (err) {
      this.problem = serveProblem(n, err);
      if (this.member) {
        const m = this.member;
        this.member = null;
        await m.stop().catch(() => undefined);
      }
      this.shareText = null; // try again at the next poll
      this.log.error(`cannot serve ${n.prefix} on this node: ${this.problem.message}`);
    }
  }

  /**
   * The host part of the share. A share that cannot fail over is refused before the host is touched (its layer 2 is
   * checked once the host plan has named the uplink, in joinFailover).
   */
  private async applyShareHost(
    share: NodeShare,
    n: AgentNodeConfig,
  ): Promise<{ host: HostConfig; planned: HostPlanned }> {
    const { o, log, parts } = this;
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
    // A share for another /64 (the operator moved this node): give the host back first, then take the new one.
    const saved = await parts.savedPrefix(o.statePath);
    if (saved && saved !== host.prefix.text) {
      log.info(`this node's share moved from ${saved} to ${host.prefix.text}: reverting the host first`);
      await parts.revertHost({ log, statePath: o.statePath });
    }
    const applied = await parts.applyHost(host, { log, statePath: o.statePath });
    this.hostApplied = true;
    log.info(applied.plan.steps.length ? `host configured for ${n.prefix}` : `host already configured for ${n.prefix}`);
    return { host, planned: applied.plan };
  }

  /**
   * The failover member of a share with a failover block, prepared (its macvlan up) but not started. An uplink whose
   * layer 2 cannot carry a floating address gets its host back before the refusal: nothing stays half-made.
   */
  private async joinFailover(n: AgentNodeConfig, uplink: string): Promise<FailoverPlan> {
    const { o, log, parts } = this;
    const plan = failoverPlan(n, uplink);
    const no = layer2Refusal(plan.uplink, await parts.uplinkLink(plan.uplink));
    if (no) {
      await parts.revertHost({ log, statePath: o.statePath });
      this.hostApplied = false;
      throw new FailoverRefused(`spec.failover: ${no}`, 'FailoverUnsupported');
    }
    this.member = parts.failoverMember(
      {
        kube: this.kube,
        namespace: o.failover!.namespace,
        node: o.node,
        prefixName: o.prefixName,
        plan,
        metrics: o.failover!.metrics,
        forwarded: () => this.forwarded(),
        onChange: () => {
          // A report that cannot be read now (the router stopping) goes out with the next heartbeat.
          this.current()
            .then((r) => this.o.report(r))
            .catch((err: Error) => log.warn(`failover report: ${err.message}`));
        },
      },
      log.child({ component: 'failover' }),
    );
    // The macvlan first: with upstream OnLink the router's neighbour proxy answers on it, with the virtual MAC.
    await this.member.prepare();
    return plan;
  }

  /**
   * The member withdraws and hands the Lease over before its router stops: the standby is forwarding by then.
   * restarting: the agent stops for a restart (the member keeps its macvlan for the next agent).
   */
  private async stopRouter(waitForSuccessorMs = 0, restarting = false): Promise<void> {
    if (this.member) {
      const m = this.member;
      this.member = null;
      await m.stop(restarting);
    }
    if (this.router) {
      const r = this.router;
      this.router = null;
      await r.stop({ waitForSuccessorMs });
    }
  }

  /** Everything this node's router forwarded, on both paths (the failover member's sign of a takeover's first packet). */
  private async forwarded(): Promise<number | undefined> {
    const r = this.router;
    if (!r) return undefined;
    const c = await r.counters();
    const f = r.fastPath?.counters();
    return (
      c.udpToTunPackets +
      c.tunToUdpPackets +
      c.relayPackets +
      (f ? f.fromPeers.fast.packets + f.toPeers.fast.packets + f.fromPeers.relay.packets : 0)
    );
  }

  private current() {
    return prefixReport({
      reverted: this.removal === 'reverted',
      router: this.router,
      member: this.member,
      listening: this.listening,
      problem: this.problem,
    });
  }

  /** The node agent sends it in the node's Lease (lease.ts) when it changed. */
  private async sendReport(): Promise<void> {
    this.o.report(await this.current());
  }
}
