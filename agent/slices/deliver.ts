// Delivering a /112 slice into a pod's network namespace, and taking it back.
//
//   node (the agent's namespace)                 pod
//   s4<hash>  fe80::1/64, up                     eth6  <slice>::1/112, up
//   route <slice>/112 dev s4<hash>     <-veth->  default via fe80::1 dev eth6   (if the pod has no IPv6 default)
//                                                rule from <slice>/112 lookup 25790: default via fe80::1 dev eth6
//
// - The host end has the fixed link-local fe80::1 so that the pod's routes
//   name a next hop that never changes (a veth's own link-local is derived
//   from a random MAC).
// - The /112 is routed on-link to the host end: the node resolves the pod's
//   addresses with ND on the veth, so whatever address of its slice the pod
//   configures works, not only ::1.
// - The pod's default route goes to the veth only when the pod has no IPv6
//   default of its own. A dual-stack CNI may have given it one; then the
//   source rule alone sends what comes from the slice back out of eth6, which
//   is the path the node routes the slice in on (a reply leaving through the
//   CNI's interface with a slice source would be dropped as spoofed).
// - Forwarding is the node's business (sixbed4 host apply turns it on); a
//   warning says when it is off on the new link.
//
// Re-delivery after an agent restart changes nothing that is in place: the
// state is read first (ip -j, on both sides) and only missing pieces are
// added (planDelivery, a pure function). A host link of our name whose
// alias names another pod, or whose peer is not in this pod, is replaced.
// Deleting the host end removes both ends, their addresses and every route
// through them; the pod's source rule is the one thing that outlives the
// link, so release() removes it when the pod is still there.
import { readFile } from 'node:fs/promises';
import { CommandError, formatArgv, runCommand } from '../host/command.js';
import { inNetns, ip, ipIn, ipJson, ipJsonIn, KERNEL_COMMAND_TIMEOUT_MS } from '../host/ip.js';
import { formatIPv6, parseIPv6 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { aliasFor, HOST_IF_RE, parseAlias, parseSlice, type Slice, type SliceOwner } from './slice.js';

/** Something that answers Neighbour Solicitations for addresses (NdpResponder fits). */
export interface NeighbourProxy {
  add(addr: Uint8Array): void;
  remove(addr: Uint8Array): void;
}

export interface DeliveryOptions {
  /** Name of the pod's end. Default eth6. */
  podIf?: string;
  /** Link-local of the host end, the pod's next hop. Default fe80::1. */
  gateway?: string;
  /** Routing table (and rule priority) in the pod for traffic from the slice. Default 25790 (0x64be). */
  table?: number;
  /** Told about each delivered slice's pod address, once per delivery, for upstreams that need ND answers. */
  proxy?: NeighbourProxy;
  log?: Logger;
  /** Where the kernel's net sysctls are (SIXBED4_PROC_SYS in a container whose /proc/sys is read-only). */
  procSys?: string;
}

type Resolved = Required<Omit<DeliveryOptions, 'proxy' | 'log'>>;

export function resolveOptions(o: DeliveryOptions = {}): Resolved {
  const podIf = o.podIf ?? 'eth6';
  if (!/^[A-Za-z][\w-]{0,14}$/.test(podIf))
    throw new InputError(`pod interface name '${podIf}' is not a valid interface name`);
  return {
    podIf,
    gateway: o.gateway ?? 'fe80::1',
    table: o.table ?? 25790,
    procSys: o.procSys ?? process.env.SIXBED4_PROC_SYS ?? '/proc/sys',
  };
}

// ---------------------------------------------------------------------------
// What is there

export interface HostSide {
  ifindex: number;
  /** The peer's ifindex in its namespace (veth link_index). */
  peerIfindex: number | null;
  up: boolean;
  owner: SliceOwner | null;
  /** The fixed link-local (fe80::1/64) is on it. */
  gateway: boolean;
}

export interface PodSide {
  /** The pod's end (eth6), or null when the pod has no interface of that name. */
  link: { ifindex: number; peerIfindex: number | null; up: boolean; address: boolean } | null;
  /** The pod's IPv6 default route in its main table. */
  mainDefault: 'ours' | 'other' | 'none';
  rule: boolean;
  tableRoute: boolean;
}

export interface Observed {
  host: HostSide | null;
  /** The node's route for the slice: through our host end, elsewhere, or none. */
  route: 'ours' | 'other' | 'none';
  pod: PodSide;
}

interface IpLinkAddr {
  ifindex: number;
  ifname: string;
  link_index?: number;
  flags?: string[];
  ifalias?: string;
  addr_info?: { family?: string; local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  table?: string;
  type?: string;
}
interface IpRule {
  priority: number;
  src?: string;
  srclen?: number;
  table?: string;
}

const isUp = (l: IpLinkAddr) => (l.flags ?? []).includes('UP');
/** One text form per address, whichever way `ip` chose to print it. */
function canon(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const slash = text.indexOf('/');
  try {
    return slash < 0
      ? formatIPv6(parseIPv6(text))
      : `${formatIPv6(parseIPv6(text.slice(0, slash)))}${text.slice(slash)}`;
  } catch {
    return text; // 'default', 'all', an IPv4 address
  }
}
const hasAddr = (l: IpLinkAddr, addr: string, len: number) =>
  (l.addr_info ?? []).some((a) => canon(a.local) === addr && a.prefixlen === len);

/** Reads both sides from `ip -j` output (parsed); pure, so the planner can be tested without a kernel. */
export function interpret(
  slice: Slice,
  o: Resolved,
  host: { links: IpLinkAddr[]; routes: IpRoute[] },
  pod: { links: IpLinkAddr[]; routes: IpRoute[]; rules: IpRule[] },
): Observed {
  const h = host.links.find((l) => l.ifname === slice.hostIf);
  const routes = host.routes.filter((r) => canon(r.dst) === slice.text && r.type === undefined);
  const p = pod.links.find((l) => l.ifname === o.podIf);
  const isOursVia = (r: IpRoute) => canon(r.gateway) === canon(o.gateway) && r.dev === o.podIf;
  const mainDefaults = pod.routes.filter((r) => r.dst === 'default' && r.table === undefined);
  const ruleSrc = slice.text.slice(0, slice.text.indexOf('/'));
  return {
    host: h
      ? {
          ifindex: h.ifindex,
          peerIfindex: h.link_index ?? null,
          up: isUp(h),
          owner: parseAlias(h.ifalias),
          gateway: hasAddr(h, canon(o.gateway)!, 64),
        }
      : null,
    route: routes.length === 0 ? 'none' : routes.some((r) => r.dev === slice.hostIf && !r.gateway) ? 'ours' : 'other',
    pod: {
      link: p
        ? {
            ifindex: p.ifindex,
            peerIfindex: p.link_index ?? null,
            up: isUp(p),
            address: hasAddr(p, slice.address, 112),
          }
        : null,
      mainDefault: mainDefaults.length === 0 ? 'none' : mainDefaults.some(isOursVia) ? 'ours' : 'other',
      rule: pod.rules.some(
        (r) => r.priority === o.table && canon(r.src) === ruleSrc && r.srclen === 112 && r.table === String(o.table),
      ),
      tableRoute: pod.routes.some((r) => r.dst === 'default' && r.table === String(o.table) && isOursVia(r)),
    },
  };
}

// ---------------------------------------------------------------------------
// What to do

/**
 * One command of a delivery, on the node or in the pod. Not a host plan's
 * PlanStep (host/steps.ts): that one changes only the namespace the agent is
 * in, can be rolled back from a saved state and may wait for DAD; a delivery
 * spans two namespaces and undoes itself by deleting the veth.
 */
export interface DeliveryStep {
  where: 'host' | 'pod';
  /** `ip` arguments, or for kind sysctl [path under procSys, value]. */
  kind: 'ip' | 'sysctl';
  args: string[];
  why: string;
}

export type Outcome = 'created' | 'unchanged' | 'repaired' | 'replaced';

/** The pod end's name is taken in the pod by an interface that is not ours (it is not ours to delete). */
export class InterfaceTakenError extends InputError {
  override name = 'InterfaceTakenError';
}

export interface PodRef {
  uid: string;
  name?: string;
  namespace?: string;
  /** Delivered for a CNI ADD: the sandbox's container ID (recorded in the alias, for DEL and GC). */
  containerId?: string;
  /** The pod end's name when not the deliverer's (a standalone CNI network's CNI_IFNAME). */
  podIf?: string;
}

/** Whether the existing host link is this slice's pair into this pod. */
export function inPlace(seen: Observed, slice: Slice, podUid: string): boolean {
  const h = seen.host;
  const p = seen.pod.link;
  return (
    !!h &&
    !!p &&
    h.owner?.slice === slice.text &&
    h.owner.podUid === podUid &&
    p.peerIfindex === h.ifindex &&
    h.peerIfindex === p.ifindex
  );
}

/**
 * The steps that bring what is there to a delivered slice. Pure. A link that
 * is in place is only topped up; anything else of our name is replaced. A
 * pod interface of the pod end's name that is not our pair's is refused
 * (InputError): it is not ours to delete.
 */
export function planDelivery(
  slice: Slice,
  pod: PodRef,
  podPath: string,
  seen: Observed,
  o: Resolved,
): { outcome: Outcome; steps: DeliveryStep[] } {
  const host = (args: string[], why: string): DeliveryStep => ({ where: 'host', kind: 'ip', args, why });
  const inPod = (args: string[], why: string): DeliveryStep => ({ where: 'pod', kind: 'ip', args, why });
  const enableIpv6: DeliveryStep = {
    where: 'pod',
    kind: 'sysctl',
    args: [`net/ipv6/conf/${o.podIf}/disable_ipv6`, '0'],
    why: 'IPv6 on the pod end (a runtime may disable it by default)',
  };
  const podRoutes = (p: PodSide, fresh: boolean): DeliveryStep[] => [
    ...(p.mainDefault === 'none'
      ? [
          inPod(
            ['-6', 'route', 'add', 'default', 'via', o.gateway, 'dev', o.podIf],
            'the pod has no IPv6 default route',
          ),
        ]
      : []),
    ...(!p.rule
      ? [
          inPod(
            ['-6', 'rule', 'add', 'pref', String(o.table), 'from', slice.text, 'table', String(o.table)],
            'traffic from the slice leaves through the veth',
          ),
        ]
      : []),
    ...(fresh || !p.tableRoute
      ? [
          inPod(
            ['-6', 'route', 'add', 'default', 'via', o.gateway, 'dev', o.podIf, 'table', String(o.table)],
            'next hop for traffic from the slice',
          ),
        ]
      : []),
  ];
  const hostRoute = host(
    ['-6', 'route', 'replace', slice.text, 'dev', slice.hostIf],
    'the node routes the slice to the pod',
  );

  if (inPlace(seen, slice, pod.uid)) {
    const h = seen.host!;
    const l = seen.pod.link!;
    const steps: DeliveryStep[] = [
      ...(!h.gateway
        ? [host(['addr', 'add', `${o.gateway}/64`, 'dev', slice.hostIf, 'nodad'], "the pod's next hop")]
        : []),
      ...(!h.up ? [host(['link', 'set', 'dev', slice.hostIf, 'up'], 'host end down')] : []),
      ...(!l.up ? [inPod(['link', 'set', 'dev', o.podIf, 'up'], 'pod end down')] : []),
      ...(!l.address
        ? [enableIpv6, inPod(['addr', 'add', `${slice.address}/112`, 'dev', o.podIf, 'nodad'], "the pod's address")]
        : []),
      ...podRoutes(seen.pod, false),
      ...(seen.route !== 'ours' ? [hostRoute] : []),
    ];
    return { outcome: steps.length ? 'repaired' : 'unchanged', steps };
  }

  const replacing = seen.host !== null;
  const podEndIsOld =
    seen.pod.link &&
    seen.host &&
    seen.pod.link.peerIfindex === seen.host.ifindex &&
    seen.host.peerIfindex === seen.pod.link.ifindex;
  if (seen.pod.link && !podEndIsOld) {
    throw new InterfaceTakenError(
      `the pod already has an interface named ${o.podIf} that is not sixbed4's: not touching it`,
    );
  }
  const ref = pod.namespace && pod.name ? `${pod.namespace}/${pod.name}` : undefined;
  const steps: DeliveryStep[] = [
    ...(replacing
      ? [
          host(
            ['link', 'del', 'dev', slice.hostIf],
            `${slice.hostIf} serves ${seen.host!.owner ? `pod ${seen.host!.owner.podUid}` : 'an unknown pod'}, not this one`,
          ),
        ]
      : []),
    host(
      ['link', 'add', slice.hostIf, 'type', 'veth', 'peer', 'name', o.podIf, 'netns', podPath],
      'the pair, pod end created in the pod',
    ),
    // The kernel ignores an alias given at creation; it is set right after.
    host(
      [
        'link',
        'set',
        'dev',
        slice.hostIf,
        'alias',
        aliasFor(
          slice.text,
          pod.uid,
          ref,
          pod.containerId ? { podIf: o.podIf, containerId: pod.containerId } : undefined,
        ),
      ],
      'which slice and pod the link serves',
    ),
    host(['addr', 'add', `${o.gateway}/64`, 'dev', slice.hostIf, 'nodad'], "the pod's next hop"),
    host(['link', 'set', 'dev', slice.hostIf, 'up'], 'host end up'),
    enableIpv6,
    inPod(['addr', 'add', `${slice.address}/112`, 'dev', o.podIf, 'nodad'], "the pod's address"),
    inPod(['link', 'set', 'dev', o.podIf, 'up'], 'pod end up'),
    // Routes through the old pod end died with it; a stale rule did not.
    ...podRoutes({ ...seen.pod, mainDefault: seen.pod.mainDefault === 'ours' ? 'none' : seen.pod.mainDefault }, true),
    hostRoute,
  ];
  return { outcome: replacing ? 'replaced' : 'created', steps };
}

// ---------------------------------------------------------------------------
// Doing it

export interface DeliveryResult {
  slice: string;
  address: string;
  hostIf: string;
  outcome: Outcome;
  /** The pod's IPv6 default route is through this veth (it had none of its own); else only the source rule is. */
  defaultRoute: boolean;
  /** The commands run, as a person would type them. */
  commands: string[];
}

export interface ReleaseResult {
  slice: string;
  hostIf: string;
  /** False when there was nothing of the slice left (the pod's namespace went away and took the veth). */
  removed: boolean;
  commands: string[];
}

/** A delivered slice as the node's links show it. */
export interface DeliveredSlice {
  hostIf: string;
  /** From the alias; null if the link has none (the agent stopped between creating and naming it). */
  owner: SliceOwner | null;
}

const isMissing = (err: unknown) =>
  err instanceof CommandError && /does not exist|Cannot find device/i.test(err.stderr);

export class SliceDeliverer {
  private readonly o: Resolved;
  private readonly log: Logger | undefined;
  private proxy: NeighbourProxy | undefined;
  /** Slices told to the proxy by this process (it counts references, so exactly once each). */
  private readonly proxied = new Map<string, Uint8Array>();
  private forwardingWarned = false;

  constructor(opts: DeliveryOptions = {}) {
    this.o = resolveOptions(opts);
    this.log = opts.log;
    this.proxy = opts.proxy;
  }

  get options(): Readonly<Resolved> {
    return this.o;
  }

  /** Our host links (named by the s4<hash> scheme), with the owner their alias records. */
  async list(): Promise<DeliveredSlice[]> {
    const links = await ipJson<IpLinkAddr[]>('link', 'show');
    return links
      .filter((l) => HOST_IF_RE.test(l.ifname))
      .map((l) => ({ hostIf: l.ifname, owner: parseAlias(l.ifalias) }));
  }

  /** The options with a per-pod interface name (checked like the deliverer's own). */
  private forPod(podIf: string | undefined): Resolved {
    return podIf === undefined || podIf === this.o.podIf
      ? this.o
      : { ...this.o, podIf: resolveOptions({ podIf }).podIf };
  }

  async observe(slice: Slice, podPath: string, podIf?: string): Promise<Observed> {
    const missingIsEmpty = (err: unknown): IpLinkAddr[] => {
      if (isMissing(err)) return [];
      throw err;
    };
    const [hostLink, hostAddrs, hostRoutes, podLinks, podRoutes, podRules] = await Promise.all([
      // `ip addr` does not print the alias, `ip link` no addresses: both, merged.
      ipJson<IpLinkAddr[]>('link', 'show', 'dev', slice.hostIf).catch(missingIsEmpty),
      ipJson<IpLinkAddr[]>('addr', 'show', 'dev', slice.hostIf).catch(missingIsEmpty),
      ipJson<IpRoute[]>('-6', 'route', 'show', 'exact', slice.text),
      ipJsonIn<IpLinkAddr[]>({ path: podPath }, ['addr', 'show']),
      ipJsonIn<IpRoute[]>({ path: podPath }, ['-6', 'route', 'show', 'table', 'all']),
      ipJsonIn<IpRule[]>({ path: podPath }, ['-6', 'rule', 'show']),
    ]);
    const hostLinks = hostLink.map((l) => ({
      ...l,
      addr_info: hostAddrs.find((a) => a.ifindex === l.ifindex)?.addr_info ?? [],
    }));
    return interpret(
      slice,
      this.forPod(podIf),
      { links: hostLinks, routes: hostRoutes },
      { links: podLinks, routes: podRoutes, rules: podRules },
    );
  }

  /** Delivers (or checks and tops up) the slice in the pod whose namespace is at podPath. */
  async deliver(sliceText: string, pod: PodRef, podPath: string): Promise<DeliveryResult> {
    const slice = parseSlice(sliceText);
    const seen = await this.observe(slice, podPath, pod.podIf);
    const plan = planDelivery(slice, pod, podPath, seen, this.forPod(pod.podIf));
    const commands: string[] = [];
    const ctx = { slice: slice.text, pod: pod.uid, hostIf: slice.hostIf };
    try {
      for (const step of plan.steps) {
        commands.push(this.commandLine(step));
        this.log?.info(this.commandLine(step), { ...ctx, reason: step.why });
        await this.runStep(step, podPath);
      }
    } catch (err) {
      if (plan.outcome === 'created' || plan.outcome === 'replaced') {
        // Nothing half-made stays behind: deleting the host end removes both ends and their routes.
        this.log?.warn(`delivery of ${slice.text} failed; removing what was made`, ctx);
        await this.removeRule(slice, podPath).catch(() => undefined);
        await ip('link', 'del', 'dev', slice.hostIf).catch(() => undefined);
      }
      throw err;
    }
    const who = pod.namespace && pod.name ? `${pod.namespace}/${pod.name}` : pod.uid;
    if (plan.outcome !== 'unchanged')
      this.log?.info(`slice ${slice.text} ${plan.outcome}: ${slice.address} in pod ${who}`, ctx);
    await this.checkForwarding(slice.hostIf);
    this.keep(slice.text);
    // planDelivery routes the pod's default through the veth unless the pod has another of its own.
    return {
      slice: slice.text,
      address: slice.address,
      hostIf: slice.hostIf,
      outcome: plan.outcome,
      defaultRoute: seen.pod.mainDefault !== 'other',
      commands,
    };
  }

  /**
   * Takes the slice back: the pod's source rule (when its namespace is still
   * there: podPath), then the host end, which takes the pod end, addresses and
   * routes with it. Idempotent.
   */
  async release(sliceText: string, podPath?: string): Promise<ReleaseResult> {
    const slice = parseSlice(sliceText);
    const commands: string[] = [];
    if (podPath) {
      const cmd = await this.removeRule(slice, podPath);
      if (cmd) commands.push(cmd);
    }
    try {
      await ip('link', 'del', 'dev', slice.hostIf);
      commands.push(`ip link del dev ${slice.hostIf}`);
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
    this.unproxy(slice.text);
    if (commands.length) this.log?.info(`slice ${slice.text} released`, { hostIf: slice.hostIf, commands });
    return { slice: slice.text, hostIf: slice.hostIf, removed: commands.length > 0, commands };
  }

  /** Deletes one of our host links whatever it serves (one without an alias has no slice to go by). */
  async removeLink(hostIf: string): Promise<boolean> {
    if (!HOST_IF_RE.test(hostIf)) throw new InputError(`'${hostIf}' is not a sixbed4 slice link name`);
    try {
      await ip('link', 'del', 'dev', hostIf);
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
    this.log?.info(`ip link del dev ${hostIf}`, { reason: 'a slice link that records no slice' });
    return true;
  }

  /** What a delivered slice lacks in the pod at podPath (empty: complete), for CNI CHECK. */
  async missing(sliceText: string, pod: PodRef, podPath: string): Promise<string[]> {
    const slice = parseSlice(sliceText);
    const seen = await this.observe(slice, podPath, pod.podIf);
    if (!inPlace(seen, slice, pod.uid)) return [`the veth pair of ${slice.hostIf} does not reach this pod`];
    return planDelivery(slice, pod, podPath, seen, this.forPod(pod.podIf)).steps.map((s) => s.why);
  }

  /** Answers ND for a delivered slice's pod address (once per slice; a slice delivered before this process started, too). */
  keep(sliceText: string): void {
    if (!this.proxy || this.proxied.has(sliceText)) return;
    const slice = parseSlice(sliceText);
    this.proxy.add(slice.addressBytes);
    this.proxied.set(slice.text, slice.addressBytes);
  }

  /** Slices this process has told the proxy about. */
  proxiedSlices(): string[] {
    return [...this.proxied.keys()];
  }

  /**
   * Moves every proxied slice to another proxy (the router restarted with a new
   * one, or without one): the old one forgets them, the new one learns them.
   */
  setProxy(next: NeighbourProxy | undefined): void {
    if (next === this.proxy) return;
    for (const addr of this.proxied.values()) {
      this.proxy?.remove(addr);
      next?.add(addr);
    }
    this.proxy = next;
  }

  /** Stops proxying a slice whose veth went away by itself (its pod's namespace was deleted). */
  unproxy(sliceText: string): void {
    const addr = this.proxied.get(sliceText);
    if (!addr) return;
    this.proxy?.remove(addr);
    this.proxied.delete(sliceText);
  }

  private async removeRule(slice: Slice, podPath: string): Promise<string | null> {
    const rules = await ipJsonIn<IpRule[]>({ path: podPath }, ['-6', 'rule', 'show']).catch(() => []);
    const src = slice.text.slice(0, slice.text.indexOf('/'));
    if (!rules.some((r) => r.priority === this.o.table && canon(r.src) === src && r.srclen === 112)) return null;
    const step: DeliveryStep = {
      where: 'pod',
      kind: 'ip',
      args: ['-6', 'rule', 'del', 'pref', String(this.o.table), 'from', slice.text, 'table', String(this.o.table)],
      why: 'release',
    };
    await this.runStep(step, podPath);
    return this.commandLine(step);
  }

  private async runStep(step: DeliveryStep, podPath: string): Promise<void> {
    if (step.where === 'host') {
      await ip(...step.args);
    } else if (step.kind === 'ip') {
      await ipIn({ path: podPath }, step.args);
    } else {
      // /proc/sys/net shows the namespace of the process that opens it, so a
      // shell entered into the pod's namespace writes the pod's setting. The
      // path and value are arguments, never part of the script.
      const [key, value] = step.args as [string, string];
      await runCommand(
        inNetns({ path: podPath }, ['sh', '-c', 'echo "$2" > "$1"', 'sh', `${this.o.procSys}/${key}`, value]),
        { timeoutMs: KERNEL_COMMAND_TIMEOUT_MS },
      );
    }
  }

  private commandLine(step: DeliveryStep): string {
    if (step.where === 'host') return `ip ${formatArgv(step.args)}`;
    if (step.kind === 'ip') return `nsenter --net=POD ip ${formatArgv(step.args)}`;
    return `nsenter --net=POD sysctl -w ${step.args[0]!.replace(/\//g, '.')}=${step.args[1]}`;
  }

  private async checkForwarding(hostIf: string): Promise<void> {
    if (this.forwardingWarned) return;
    const v = await readFile(`${this.o.procSys}/net/ipv6/conf/${hostIf}/forwarding`, 'utf8').then(
      (t) => t.trim(),
      () => null,
    );
    if (v === '0') {
      this.forwardingWarned = true;
      this.log?.warn(
        `IPv6 forwarding is off on ${hostIf}: the node will not route the slice (sixbed4 host apply turns it on)`,
      );
    }
  }
}
