// The slices' inbound policy on the kernel: one `nft -f -` run that replaces
// the node's table (see inbound.ts for what it holds and why). Applying the
// same entries again leaves the same table; a change is one transaction, so
// there is never a moment without a filter. This acts on the network
// namespace of this process (the node's: the agent runs with hostNetwork).
//
// nft is nftables' own, found in the system directories (under npm the PATH
// starts with node_modules/.bin, which has an unrelated `nft`; see
// host/tools.ts).
import { CommandError, runCommand } from '../host/command.js';
import { findSystemTool } from '../host/tools.js';
import {
  compareInbound,
  INBOUND_FAMILY,
  INBOUND_TABLE,
  normalizeEntries,
  readInbound,
  renderInbound,
  renderInboundRemoval,
  type InboundEntry,
  type LiveInbound,
} from './inbound.js';

export interface InboundOptions {
  /** Path of nftables' nft. Default: found in /usr/sbin, /sbin, ... */
  nft?: string;
}

export interface InboundResult {
  /** applied: the table now filters `filtered`; removed: no slice is filtered, there is no table. */
  action: 'applied' | 'removed';
  /** The links the table filters, sorted. */
  filtered: string[];
  /** The script given to nft, for logs and `host plan`-like output. */
  script: string;
}

async function nft(args: string[], opts: InboundOptions, input?: string): Promise<string> {
  const path = opts.nft ?? findSystemTool('nft');
  if (!path)
    throw new CommandError(
      ['nft', ...args],
      null,
      "nftables' nft command not found (install nftables): the slices' inbound policy needs it",
    );
  return runCommand([path, ...args], { timeoutMs: 30_000, ...(input === undefined ? {} : { input }) });
}

/**
 * Makes the node's table filter exactly the filtered entries (open ones are
 * let through untouched; with no filtered entry the table is removed).
 * Checks everything before running anything: a bad entry throws InputError
 * and the live table stays as it was; an nft failure throws CommandError
 * with nft's message, and the transaction leaves the old table in place.
 */
export async function applyInbound(
  entries: readonly InboundEntry[],
  opts: InboundOptions = {},
): Promise<InboundResult> {
  const script = renderInbound(entries);
  const filtered = normalizeEntries(entries)
    .filter((e) => e.mode === 'filtered')
    .map((e) => e.hostIf);
  await nft(['-f', '-'], opts, script);
  return { action: filtered.length ? 'applied' : 'removed', filtered, script };
}

/** Removes the table (nothing is filtered afterwards). Succeeds when there is none. */
export async function removeInbound(opts: InboundOptions = {}): Promise<void> {
  await nft(['-f', '-'], opts, renderInboundRemoval());
}

/** What the live table does (readInbound of `nft -j list table`); not present when there is none. */
export async function listInbound(opts: InboundOptions = {}): Promise<LiveInbound> {
  let out: string;
  try {
    out = await nft(['-j', 'list', 'table', INBOUND_FAMILY, INBOUND_TABLE], opts);
  } catch (err) {
    if (err instanceof CommandError && /No such file or directory|does not exist/i.test(err.stderr))
      return { present: false, filtered: [], oddities: [] };
    throw err;
  }
  return readInbound(out.trim() ? JSON.parse(out) : null);
}

/** CHECK: how the live table differs in meaning from the entries (compareInbound); empty when it matches. */
export async function checkInbound(entries: readonly InboundEntry[], opts: InboundOptions = {}): Promise<string[]> {
  return compareInbound(entries, await listInbound(opts));
}
