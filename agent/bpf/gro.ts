// The fast path's GRO pair: a veth pair the router makes so that a peer's TCP,
// decapsulated at the uplink's tc ingress (after the uplink's GRO, which does
// not look inside a datagram), is merged as native TCP is. from-peers sends
// each decapsulated TCP segment by the pair's sending end; the receiving end
// has GRO on (a veth receives through NAPI, and merges, when it has), and
// from-peers on its ingress hands the merged packet into the TUN as it hands
// its own decapsulations: the kernel forwards one packet where it forwarded
// each segment, with the same input interface (the TUN).
//
// The pair carries nothing else: no addresses, IPv6 off on both ends, and the
// program on the receiving end hands on only frames with the router's mark as
// their source MAC (from-peers.bpf.c) and drops the rest. TSO is off on
// the sending end, or veth would not hand its packets to GRO (it keeps a local
// sender's merged packets from being merged twice). Each router makes its own
// pair under a random name (a handover's two routers run side by side, maybe
// in two PID namespaces); a pair whose receiving end has no program attached
// belongs to a router that is gone (the kernel detached it when its process
// ended), and the next router to start removes it.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { bpfSyscalls, ethtoolSet, native } from '../io/native.js';
import { systemTool } from '../host/tools.js';
import { CONF_DIR } from '../host/sysctl.js';
import type { Logger } from '../../lib/log.js';
import { BPF_TCX_INGRESS } from './programs.js';
import { linkMac } from './link.js';

const PREFIX = '6bgro';
const NAME = /^6bgro([0-9a-f]{6})r$/;

export interface GroPair {
  /** The sending end (from-peers redirects to its egress) and the receiving end (GRO on). */
  tx: { name: string; index: number };
  rx: { name: string; index: number; mac: Uint8Array };
  /** Deletes the pair (both ends) before it returns: a router stops without waiting. Idempotent; never throws. */
  remove(): void;
}

/** `ip` with args, at once (the fast path attaches synchronously); throws with its message. */
function ipSync(...args: string[]): void {
  const r = spawnSync(systemTool('ip'), args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
}

/** Deletes a pair by either end (the other goes with it); one already gone is no error. */
function deletePair(dev: string): void {
  try {
    ipSync('link', 'del', 'dev', dev);
  } catch {
    // gone already, or never made
  }
}

/** Removes the pairs of routers that are gone: no program on the receiving end's ingress. */
function removeStale(log: Logger): void {
  for (const rx of readdirSync('/sys/class/net')) {
    const m = NAME.exec(rx);
    if (!m) continue;
    const index = native.ifIndex(rx);
    let attached: number;
    try {
      attached = index ? bpfSyscalls.progQuery(index, BPF_TCX_INGRESS) : 1;
    } catch {
      continue;
    }
    if (attached) continue;
    deletePair(rx);
    log.info(`fast path: removed ${PREFIX}${m[1]}t/${rx}, the GRO pair of a router that is gone`);
  }
}

/** Makes this router's pair, up, with nothing attached yet. Throws with what failed (nothing is left then). */
export function makeGroPair(log: Logger): GroPair {
  removeStale(log);
  const id = randomBytes(3).toString('hex');
  const tx = `${PREFIX}${id}t`,
    rx = `${PREFIX}${id}r`;
  ipSync('link', 'add', tx, 'type', 'veth', 'peer', 'name', rx);
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    deletePair(tx);
  };
  try {
    // No IPv6 of its own on the pair: the receiving end hands on only what carries the router's mark, and the sending
    // end's own packets (DAD, MLD, RS) would not.
    for (const dev of [tx, rx]) writeFileSync(`${CONF_DIR}/${dev}/disable_ipv6`, '1');
    ethtoolSet(tx, 'tso', false);
    ethtoolSet(rx, 'gro', true);
    ipSync('link', 'set', 'dev', rx, 'up');
    ipSync('link', 'set', 'dev', tx, 'up');
    const txIndex = native.ifIndex(tx),
      rxIndex = native.ifIndex(rx);
    if (!txIndex || !rxIndex) throw new Error(`the pair ${tx}/${rx} vanished`);
    return { tx: { name: tx, index: txIndex }, rx: { name: rx, index: rxIndex, mac: linkMac(rx) }, remove };
  } catch (err) {
    remove();
    throw err;
  }
}
