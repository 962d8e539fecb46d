// A /112 slice as the node sees it: the text the operator allocated, the
// pod's address in it, and the names sixbed4 gives the host end of the
// pod's veth. Pure functions only; nothing here touches the kernel.
//
// Only port-0 slices (`prefix:A:B:0::/112`) are accepted: a 6bed4 peer's
// address always has a non-zero port word, so such a slice can never take
// traffic meant for a peer (6bed4-wire.md, "Port 0 is never a 6bed4 peer").
// `prefix:0:0:0::/112` holds the host's own local addresses (::11, ::30, the
// dummy /112), so it is never a pod's either.
import { createHash } from 'node:crypto';
import { formatIPv6, parsePrefix, type Prefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';

export const SLICE_LEN = 112;

export interface Slice {
  readonly prefix: Prefix;
  /** Canonical text, e.g. 2001:db8:9:10:1:1::/112 (the identity used everywhere). */
  readonly text: string;
  /** The pod's address: the first after the all-zero one (prefix::1). */
  readonly address: string;
  readonly addressBytes: Uint8Array;
  /** Name of the host end of the veth (see hostIfName). */
  readonly hostIf: string;
}

/** Parses and checks a slice; throws InputError with a reason a person can act on. */
export function parseSlice(text: string): Slice {
  const prefix = parsePrefix(text, 'slice');
  if (prefix.length !== SLICE_LEN)
    throw new InputError(`slice '${text}' is a /${prefix.length}; slices are /${SLICE_LEN}`);
  const b = prefix.bytes;
  if (b[12] !== 0 || b[13] !== 0) {
    throw new InputError(
      `slice '${text}' has a non-zero port word (bits 96..111): it would take a 6bed4 peer's addresses`,
    );
  }
  if (b[8] === 0 && b[9] === 0 && b[10] === 0 && b[11] === 0) {
    throw new InputError(`slice '${text}' is the /64's :0:0:0::/112, which holds the host's own local addresses`);
  }
  const addressBytes = Uint8Array.from(b);
  addressBytes[15] = 1;
  return {
    prefix,
    text: prefix.text,
    address: formatIPv6(addressBytes),
    addressBytes,
    hostIf: hostIfName(prefix.text),
  };
}

/**
 * `s4` + 13 hex digits of SHA-256 of the canonical slice text: 15 characters,
 * the kernel's limit (IFNAMSIZ 16 with the NUL). A /112 inside a /64 has 96
 * bits of identity, too many to spell in 13 characters, so the name is a
 * hash and the slice itself is kept in the link's alias (see aliasFor); 52
 * bits make an accidental collision between slices on one node negligible.
 */
export function hostIfName(sliceText: string): string {
  return `s4${createHash('sha256').update(sliceText).digest('hex').slice(0, 13)}`;
}

/** What our host-side links look like; nothing else on a node is named so (netns names use `s4-`). */
export const HOST_IF_RE = /^s4[0-9a-f]{13}$/;

export interface SliceOwner {
  slice: string;
  podUid: string;
  /** Set when the runtime asked for the link through CNI: the pod end's name and the sandbox's container ID (first 24). */
  cni?: { podIf: string; containerId: string };
}

const ALIAS_TAG = 'sixbed4';

/**
 * The alias (IFLA_IFALIAS, at most 255 bytes) written on the host end: which
 * slice and which pod it serves, and for a link made through CNI which pod
 * interface and sandbox. It is what lets an agent that restarted tell its own
 * links apart, notice a slice that moved to another pod, and answer CNI DEL and
 * GC for the right sandbox; the namespace/name part is only for people running
 * `ip link`.
 */
export function aliasFor(
  slice: string,
  podUid: string,
  podRef?: string,
  cni?: { podIf: string; containerId: string },
): string {
  const base = `${ALIAS_TAG} slice=${slice} pod=${podUid}`;
  const via =
    cni && /^[\w-]+$/.test(cni.podIf) && /^[\w-]+$/.test(cni.containerId)
      ? ` if=${cni.podIf} cid=${cni.containerId.slice(0, 24)}`
      : '';
  const ref = podRef && /^[\w./-]+$/.test(podRef) ? ` ref=${podRef}` : '';
  return (base + via + ref).slice(0, 255);
}

/** The owner recorded by aliasFor, or null for any other alias (or none). */
export function parseAlias(alias: string | undefined): SliceOwner | null {
  const m = /^sixbed4 slice=(\S+) pod=(\S+)(?: if=(\S+) cid=(\S+))?/.exec(alias ?? '');
  if (!m) return null;
  return { slice: m[1]!, podUid: m[2]!, ...(m[3] && m[4] ? { cni: { podIf: m[3], containerId: m[4] } } : {}) };
}

/** Whether a CNI request's container ID is the one an alias recorded (it keeps the first 24 characters). */
export const sameContainer = (recorded: string, containerId: string): boolean => containerId.slice(0, 24) === recorded;
