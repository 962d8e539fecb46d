// A stand-in for `ip` on a FakeIO host, for the router and the peer started on their parts (agent/router/parts.ts,
// agent/peer/parts.ts). What they configure is kept per interface as the kernel would hold it (addresses, routes),
// and `link set ... up` brings the FakeTun up, as a TUN is created down. Queries (`ip -j ...`) answer an empty list:
// the router then reads no local table, which is right on FakeIO, where every address stands for another host.
// A command it does not know fails, so a new one the code runs is noticed here.
import type { FakeIO } from '../../agent/io/fake.js';

export class FakeIp {
  /** Every command run, in order. */
  readonly commands: string[][] = [];
  private readonly addrs = new Map<string, Set<string>>();
  private readonly routeSet = new Map<string, Set<string>>();

  constructor(private readonly io: FakeIO) {}

  /** The IpCommand to hand in: resolves stdout, rejects as `ip` would. */
  readonly run = async (...args: string[]): Promise<string> => {
    this.commands.push(args);
    if (args[0] === '-j') return '[]';
    if (args[0] === 'link' && args[1] === 'set') return this.linkSet(args);
    if (args[0] === '-6' && args[1] === 'addr') return this.change(this.addrs, args[2]!, args[3]!, args);
    if (args[0] === '-6' && args[1] === 'route') return this.change(this.routeSet, args[2]!, args[3]!, args);
    throw new Error(`fake ip: no such command here: ip ${args.join(' ')}`);
  };

  /** The addresses on dev (address/length), while its TUN exists: the kernel drops them with the interface. */
  addresses(dev: string): string[] {
    return this.io.tun(dev) ? [...(this.addrs.get(dev) ?? [])].sort() : [];
  }

  routes(dev: string): string[] {
    return this.io.tun(dev) ? [...(this.routeSet.get(dev) ?? [])].sort() : [];
  }

  private device(args: string[]): string {
    const i = args.indexOf('dev');
    const dev = i < 0 ? undefined : args[i + 1];
    if (!dev || !this.io.tun(dev)) throw new Error(`fake ip: Cannot find device "${dev}": ip ${args.join(' ')}`);
    return dev;
  }

  private linkSet(args: string[]): string {
    const dev = this.device(args);
    if (args.includes('up')) this.io.tun(dev)!.up = true;
    if (args.includes('down')) this.io.tun(dev)!.up = false;
    return '';
  }

  /** add (refused when present), replace, del (refused when absent) of one address or route on a device. */
  private change(table: Map<string, Set<string>>, verb: string, what: string, args: string[]): string {
    const dev = this.device(args);
    const set = table.get(dev) ?? new Set<string>();
    table.set(dev, set);
    if (verb === 'add' && set.has(what))
      throw new Error(`fake ip: RTNETLINK answers: File exists: ip ${args.join(' ')}`);
    if (verb === 'del' && !set.delete(what))
      throw new Error(`fake ip: RTNETLINK answers: No such entry: ip ${args.join(' ')}`);
    if (verb === 'add' || verb === 'replace') set.add(what);
    return '';
  }
}
