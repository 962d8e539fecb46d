// The member's fence in the kernel: a dead man's switch that holds without the agent. The group's macvlan takes in
// nothing (no ARP request, no NS, no packet for the floating address) unless the set `alive` holds its name, and
// the active member puts it there with a timeout that ends exactly at its own deadline (fenceAfterMs after the
// last renew it sent that succeeded). A member that renews extends it; one that crashes, hangs or is killed
// (kill -9) goes silent at its deadline all the same: the Lease alone is no fence, and neither is a process that
// may not run any more.
//
// The uplink's own ARP replies for the floating address are dropped for good (the arp table): with arp_ignore 0,
// Linux answers ARP for any address of the host on any interface, so the uplink would answer for the address on
// the macvlan with its own MAC, beside the virtual MAC. And its ARP requests (for the gateway, when the router
// answers a peer from the floating address) carry the uplink's own address instead: with arp_announce 0 Linux puts
// the packet's source there, and every neighbour that knows the floating address would point it at the uplink's
// MAC (measured: the provider's entry moved to it, and the datagrams came in past the macvlan).
import { runCommand } from '../host/command.js';
import { systemTool } from '../host/tools.js';
import { formatIPv4 } from '../../lib/ip.js';
import type { FailoverPlan } from './config.js';

const NFT_TIMEOUT_MS = 5000;
/**
 * The kernel counts the element's timeout from when nft inserts it, a few ms after the remaining time was
 * computed: it is shortened by this much so that the kernel's fence never closes after the member's own deadline.
 */
const INSERT_MARGIN_MS = 50;

function nft(script: string): Promise<string> {
  return runCommand([systemTool('nft'), '-f', '-'], { input: script, timeoutMs: NFT_TIMEOUT_MS });
}

/**
 * The tables, as they are when both are there (a previous agent's, perhaps in use), else made anew. uplinkIPv4: the
 * uplink's own address, which the kernel's ARP requests from the uplink carry instead of the floating one.
 */
export async function ensureFence(p: FailoverPlan, uplinkIPv4?: string): Promise<void> {
  const nftBin = systemTool('nft');
  const there = async (family: string) =>
    runCommand([nftBin, 'list', 'table', family, p.table], { timeoutMs: NFT_TIMEOUT_MS }).then(
      () => true,
      () => false,
    );
  if ((await there('netdev')) && (await there('arp'))) return;
  const t = p.table;
  // A half left behind goes first, in the same transaction.
  await nft(`table netdev ${t}
delete table netdev ${t}
table arp ${t}
delete table arp ${t}
table netdev ${t} {
  set alive {
    type ifname
    flags timeout
  }
  chain in {
    type filter hook ingress device "${p.macvlan}" priority -500; policy drop;
    iifname @alive accept
  }
}
table arp ${t} {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "${p.uplink}" arp operation reply arp saddr ip ${formatIPv4(p.ipv4)} drop${
      uplinkIPv4
        ? `
    oifname "${p.uplink}" arp operation request arp saddr ip ${formatIPv4(p.ipv4)} arp saddr ip set ${uplinkIPv4}`
        : ''
    }
  }
}
`);
}

/** Open until remainingMs from now (at least 1 ms); a shorter one than before replaces it. */
export async function extendFence(p: FailoverPlan, remainingMs: number): Promise<void> {
  const ms = Math.max(1, Math.floor(remainingMs - INSERT_MARGIN_MS));
  await nft(
    `flush set netdev ${p.table} alive\nadd element netdev ${p.table} alive { "${p.macvlan}" timeout ${ms}ms }\n`,
  );
}

/** Whether the fence is open now: a member of this node is active (or died less than its fence time ago). */
export async function fenceOpen(p: FailoverPlan): Promise<boolean> {
  const out = await runCommand([systemTool('nft'), '-j', 'list', 'set', 'netdev', p.table, 'alive'], {
    timeoutMs: NFT_TIMEOUT_MS,
  });
  const set = (JSON.parse(out) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables.find((x) => x.set)?.set;
  return (set?.elem ?? []).length > 0;
}

/** Closed now. */
export async function closeFence(p: FailoverPlan): Promise<void> {
  await nft(`flush set netdev ${p.table} alive\n`);
}

export async function removeFence(p: FailoverPlan): Promise<void> {
  await nft(
    `table netdev ${p.table}\ndelete table netdev ${p.table}\ntable arp ${p.table}\ndelete table arp ${p.table}\n`,
  );
}
