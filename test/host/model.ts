// Host states for the planner's unit tests: written compactly, turned into the
// very JSON `ip -j` prints (so the pure parsers are exercised too), and a
// small simulator of the kernel's side of each step — including the facts the
// planner must respect: an address exists once per interface, `add` of an
// address already there fails, writing all.forwarding ripples to every
// interface, the kernel's prefix route lives as long as an address needs it.
import { parseAddrJson, parseRouteJson, type HostState } from '../../agent/host/state.js';
import type { PlanStep } from '../../agent/host/steps.js';
import type { Ipv6Conf } from '../../agent/host/sysctl.js';
import { formatIPv6, maskBytes, parseIPv6 } from '../../lib/ip.js';

export interface Spec {
  /** Interface → kind and addresses as 'ADDR/LEN [flag ...]' (flags as ip -j names them). */
  links: Record<string, { kind?: string; up?: boolean; addrs: string[] }>;
  /** As `ip -6 route` prints them: 'DST [via GW] dev DEV [proto P] [metric M]', or with 'nexthop' parts. */
  routes: string[];
  conf: Ipv6Conf;
  dummy?: { supported: boolean; error?: string };
}

/** The seed's VM (as captured from a namespace): ::11/64 and ::30/64 on eth0, default via fe80::1. */
export function seedSpec(): Spec {
  return {
    links: {
      lo: { addrs: ['::1/128'] },
      eth0: {
        kind: 'veth',
        addrs: ['2001:db8:9:10::30/64', '2001:db8:9:10::11/64', 'fe80::2/64 nodad', 'fe80::34ab:e2ff:fe06:c123/64'],
      },
    },
    routes: [
      '2001:db8:9:10::/64 dev eth0 proto kernel metric 256',
      'fe80::/64 dev eth0 proto kernel metric 256',
      'default via fe80::1 dev eth0 metric 1024',
    ],
    conf: {
      all: { forwarding: '0', accept_ra: '1' },
      default: { forwarding: '0', accept_ra: '1' },
      lo: { forwarding: '0', accept_ra: '1' },
      eth0: { forwarding: '0', accept_ra: '1' },
    },
  };
}

export function clone(s: Spec): Spec {
  return JSON.parse(JSON.stringify(s)) as Spec;
}

export function addrJson(s: Spec): unknown {
  return Object.entries(s.links).map(([name, l], i) => ({
    ifindex: i + 1,
    ifname: name,
    flags: name === 'lo' ? ['LOOPBACK', 'UP', 'LOWER_UP'] : [...(l.up === false ? [] : ['UP']), 'BROADCAST'],
    link_type: name === 'lo' ? 'loopback' : 'ether',
    address: name === 'lo' ? '00:00:00:00:00:00' : `02:00:00:00:00:${(i + 1).toString(16).padStart(2, '0')}`,
    ...(l.kind ? { linkinfo: { info_kind: l.kind } } : {}),
    addr_info: l.addrs.map((a) => {
      const [cidr, ...flags] = a.split(' ');
      const [local, len] = cidr!.split('/');
      return {
        family: 'inet6',
        local,
        prefixlen: Number(len),
        scope: local!.startsWith('fe80') ? 'link' : local === '::1' ? 'host' : 'global',
        ...Object.fromEntries(flags.map((f) => [f, true])),
        valid_life_time: flags.includes('dynamic') ? 3600 : 4294967295,
        preferred_life_time: flags.includes('deprecated') ? 0 : 4294967295,
      };
    }),
  }));
}

export function routeJson(s: Spec): unknown {
  return s.routes.map((r) => {
    const w = r.split(' ');
    const get = (k: string) => {
      const i = w.indexOf(k);
      return i >= 0 ? w[i + 1] : undefined;
    };
    const hops = w.flatMap((x, i) => (x === 'nexthop' ? [{ gateway: w[i + 2], dev: w[i + 4] }] : []));
    return {
      dst: w[0],
      ...(hops.length ? { nexthops: hops } : { ...(get('via') ? { gateway: get('via') } : {}), dev: get('dev') }),
      ...(get('proto') ? { protocol: get('proto') } : {}),
      metric: Number(get('metric') ?? 1024),
      flags: [],
      pref: 'medium',
    };
  });
}

export function stateOf(s: Spec): HostState {
  return {
    ...parseAddrJson(addrJson(s)),
    routes: parseRouteJson(routeJson(s)),
    conf: JSON.parse(JSON.stringify(s.conf)) as Ipv6Conf,
    ...(s.dummy ? { dummy: s.dummy } : {}),
  };
}

function prefixOf(addr: string, len: number): string {
  return `${formatIPv6(maskBytes(parseIPv6(addr), len))}/${len}`;
}

/** Carries out one step on the spec as the kernel would; throws as `ip` would fail. */
export function simulate(s: Spec, step: PlanStep): void {
  const a = step.action;
  if (a.kind === 'sysctl') {
    const conf = s.conf[a.key.conf];
    if (!conf) throw new Error(`no such sysctl conf ${a.key.conf}`);
    conf[a.key.param] = a.value;
    if (a.key.conf === 'all' && a.key.param === 'forwarding')
      for (const c of Object.values(s.conf)) c.forwarding = a.value;
    return;
  }
  const w = [...a.args];
  const line = w.join(' ');
  if (w[0] === 'link') {
    const name = w[2]!;
    if (w[1] === 'add') {
      if (s.links[name]) throw new Error(`RTNETLINK answers: File exists (${line})`);
      if (w[4] === 'dummy' && s.dummy && !s.dummy.supported) throw new Error('Error: Unknown device type.');
      s.links[name] = { kind: w[4]!, up: false, addrs: [] };
      s.conf[name] = { forwarding: s.conf.default!.forwarding!, accept_ra: '1' };
    } else if (w[1] === 'set') {
      s.links[name]!.up = true;
    } else if (w[1] === 'del') {
      delete s.links[name];
      delete s.conf[name];
      s.routes = s.routes.filter((r) => !r.includes(` dev ${name}`));
    }
    return;
  }
  if (w[1] === 'addr') {
    const [addr, lenText] = w[3]!.split('/');
    const len = Number(lenText);
    const dev = w[5]!;
    const link = s.links[dev];
    if (!link) throw new Error(`Cannot find device "${dev}"`);
    const here = link.addrs.findIndex((x) => x.split('/')[0] === addr);
    const flags = w.slice(6).filter((x) => x !== 'preferred_lft' && x !== '0');
    if (w.includes('preferred_lft')) flags.push('deprecated');
    const route = `${prefixOf(addr!, len)} dev ${dev} proto kernel metric 256`;
    if (w[2] === 'add') {
      if (here >= 0) throw new Error('RTNETLINK answers: File exists (address already assigned)');
      link.addrs.unshift([`${addr}/${len}`, ...flags].join(' '));
      if (len <= 64 && dev !== 'lo' && !flags.includes('noprefixroute') && !s.routes.includes(route))
        s.routes.unshift(route);
    } else {
      if (here < 0 || Number(link.addrs[here]!.split(' ')[0]!.split('/')[1]) !== len)
        throw new Error('RTNETLINK answers: Cannot assign requested address');
      link.addrs.splice(here, 1);
      const stillNeeded = link.addrs.some((x) => {
        const [c] = x.split(' ');
        const [ad, l] = c!.split('/');
        return Number(l) === len && prefixOf(ad!, len) === prefixOf(addr!, len);
      });
      if (!stillNeeded) s.routes = s.routes.filter((r) => r !== route);
    }
    return;
  }
  if (w[1] === 'route') {
    // route VERB DST [via GW] dev DEV [metric M], the words in any order after DST, as ip takes them
    const opt = (k: string) => {
      const i = w.indexOf(k, 4);
      return i > 0 ? w[i + 1] : undefined;
    };
    const [dst, via, dev, metric] = [w[3], opt('via'), opt('dev'), opt('metric')];
    const text = `${dst}${via ? ` via ${via}` : ''} dev ${dev}${metric ? ` metric ${metric}` : ''}`;
    const same = (r: string) =>
      r.startsWith(`${dst} `) && r.includes(` dev ${dev}`) && (!via || r.includes(` via ${via} `));
    if (w[2] === 'add') {
      if (s.routes.some(same)) throw new Error('RTNETLINK answers: File exists');
      s.routes.push(text);
    } else {
      const i = s.routes.findIndex(same);
      if (i < 0) throw new Error('RTNETLINK answers: No such process');
      s.routes.splice(i, 1);
    }
    return;
  }
  throw new Error(`simulator does not know: ${line}`);
}

/** Where an address is right now: 'dev/len' entries. */
export function formsOf(s: Spec, address: string): string[] {
  return Object.entries(s.links).flatMap(([dev, l]) =>
    l.addrs.filter((x) => x.split('/')[0] === address).map((x) => `${dev}/${x.split(' ')[0]!.split('/')[1]}`),
  );
}

/** Order-insensitive comparable form of a spec (what "restored exactly" means). */
export function canonical(s: Spec): unknown {
  return {
    links: Object.fromEntries(
      Object.entries(s.links)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([n, l]) => [n, { kind: l.kind, addrs: [...l.addrs].sort() }]),
    ),
    routes: [...s.routes].sort(),
    conf: s.conf,
  };
}
