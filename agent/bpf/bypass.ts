// What the fast path bypasses on the host, found where it can be: nftables
// chains that would see the router's datagrams and do not when the programs
// handle them. from-peers runs at the uplink's tc ingress, before the
// prerouting and input hooks; to-peers and relays send from tc straight to the
// uplink, past the output and postrouting hooks. Rules there (a host firewall
// on the router's port, an SNAT of what it sends) apply to the TypeScript path
// only: the router says so at start (docs/router.md). Forwarded IPv6 is
// unaffected: the kernel forwards it as ever, before to-peers and after
// from-peers. iptables-legacy rules are not seen here.
import { execCommand } from '../host/command.js';
import { findSystemTool } from '../host/tools.js';

/** The hooks whose rules the fast path bypasses, by which of the router's datagrams pass them. */
const RECEIVE_HOOKS = new Set(['prerouting', 'input']);
const SEND_HOOKS = new Set(['output', 'postrouting']);
/** With --fast-path-direct, peers' decapsulated packets skip these too (IPv6 and inet chains). */
const FORWARD_HOOKS = new Set(['prerouting', 'forward']);

export interface Bypassed {
  /** Chains with rules (as "family table chain (hook)") that peers' datagrams to the router would pass. */
  receive: string[];
  /** The same for the datagrams the router sends. */
  send: string[];
  /** IPv6 chains with rules that peers' packets skip with --fast-path-direct. */
  forward: string[];
}

interface NftItem {
  chain?: { family: string; table: string; name: string; hook?: string };
  rule?: { family: string; table: string; chain: string };
}

/** The IPv4 chains with rules at the hooks the fast path bypasses, from `nft -j list ruleset` output. */
export function bypassedChains(json: string): Bypassed {
  const items = (JSON.parse(json) as { nftables?: NftItem[] }).nftables ?? [];
  const rules = new Map<string, number>();
  for (const { rule } of items) {
    if (rule)
      rules.set(
        `${rule.family} ${rule.table} ${rule.chain}`,
        (rules.get(`${rule.family} ${rule.table} ${rule.chain}`) ?? 0) + 1,
      );
  }
  const out: Bypassed = { receive: [], send: [], forward: [] };
  for (const { chain } of items) {
    if (!chain?.hook) continue;
    const key = `${chain.family} ${chain.table} ${chain.name}`;
    if (!rules.get(key)) continue;
    if ((chain.family === 'ip6' || chain.family === 'inet') && FORWARD_HOOKS.has(chain.hook))
      out.forward.push(`${key} (${chain.hook})`);
    if (chain.family !== 'ip' && chain.family !== 'inet') continue;
    if (RECEIVE_HOOKS.has(chain.hook)) out.receive.push(`${key} (${chain.hook})`);
    if (SEND_HOOKS.has(chain.hook)) out.send.push(`${key} (${chain.hook})`);
  }
  return out;
}

/** This network namespace's bypassed chains; undefined when nft is missing or cannot list (no nftables, no right). */
export async function hostBypassed(): Promise<Bypassed | undefined> {
  const nft = findSystemTool('nft');
  if (!nft) return undefined;
  const r = await execCommand([nft, '-j', 'list', 'ruleset'], { timeoutMs: 5000 }).catch(() => undefined);
  if (!r || r.code !== 0) return undefined;
  try {
    return bypassedChains(r.stdout);
  } catch {
    return undefined;
  }
}
