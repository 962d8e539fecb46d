// Attaches the steering of the router's SO_REUSEPORT sockets (steer.ts says what it splits and why): the eBPF
// program (agent/bpf/steer.bpf.c, BPF_PROG_TYPE_SK_REUSEPORT) where the kernel loads it, else the classic one.
//
// The eBPF program picks sockets from a REUSEPORT_SOCKARRAY map in which the router puts its own sockets at known
// keys, so it steers right in a group that also holds another router's sockets: with handover, the new router's
// sockets join the previous one's group (tunnel.ts, router.ts). Attaching a program replaces the group's program,
// whichever router attached that one, and the kernel releases the old one (the router that loaded it still holds
// nothing of it: its fds are closed once attached). So the router that attaches last decides for the whole group:
//  - eBPF: every datagram goes to its own sockets, split; the previous router's sockets get nothing more (they
//    keep what they had queued, which their router still reads until it stops).
//  - classic, without handover: its indexes are the group's, which only its own sockets are in (a plain bind
//    first refuses a port held by another router).
//  - with handover and no eBPF (no CAP_BPF): no split, as before eBPF; a program that leaves every choice to the
//    kernel's hash replaces the group's, so a previous router's eBPF program does not keep steering everything
//    into its sockets while both run.
// A previous router's eBPF program that nobody replaces (its successor attaches nothing: one socket a worker, or an
// older version) finds its sockets gone from its map as they close, and then leaves the choice to the hash.
import { fileURLToPath } from 'node:url';
import { bpfSyscalls, native, udpSteer, udpSteerEbpf } from '../io/native.js';
import {
  BPF_MAP_TYPE_ARRAY,
  BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
  BPF_PROG_TYPE_SK_REUSEPORT,
  loadProgram,
  MapSet,
} from '../bpf/object.js';
import { checkedSockets, hashProgram, steerProgram } from './steer.js';

/** Where the build puts the object (dist/agent/bpf/, next to the fast path's). */
export const STEER_OBJECT = fileURLToPath(new URL('../bpf/steer.bpf.o', import.meta.url));

const CONFIG_SIZE = 24;

export interface SteerOptions {
  /** The served /64 (its first 8 bytes are used). */
  prefix: Uint8Array;
  workers: number;
  /** Sockets a worker: fds holds workers × sockets of them, worker by worker, in the order they were bound. */
  sockets: number;
  /** The sockets may share their group with another router's (handover). */
  handover: boolean;
  /** Tests: the object to load (default STEER_OBJECT); a path that does not exist stands for a refused load. */
  object?: string;
}

export interface Steering {
  /** Which program splits the datagrams: eBPF, classic, or none (the kernel's hash spreads them). */
  program: 'ebpf' | 'cbpf' | 'none';
  /** Why the eBPF program does not, when it does not (and there was something to split). */
  ebpfError?: string;
  /** Why the classic program does not either, when the kernel refused it. */
  cbpfError?: string;
}

/**
 * Steers datagrams that pass the originator check to the first half of each worker's sockets (the checked ones,
 * which the data path reads first), the rest to the others: see the file comment for which program and when.
 */
export function steerGroup(fds: readonly number[], o: SteerOptions): Steering {
  if (fds.length !== o.workers * o.sockets)
    throw new Error(`steering ${fds.length} sockets as ${o.workers} × ${o.sockets}`);
  if (checkedSockets(o.sockets) === 0) return { program: 'none', ...clearGroup(fds, o) };
  let ebpfError: string;
  try {
    attachEbpf(fds, o);
    return { program: 'ebpf' };
  } catch (err) {
    ebpfError = (err as Error).message;
  }
  if (o.handover) return { program: 'none', ebpfError, ...clearGroup(fds, o) };
  try {
    udpSteer(fds[0]!, steerProgram(o.prefix, o.workers, o.sockets)!);
    return { program: 'cbpf', ebpfError };
  } catch (err) {
    return { program: 'none', ebpfError, cbpfError: (err as Error).message };
  }
}

/** With handover, the hash decides from now on, not a previous router's program. */
function clearGroup(fds: readonly number[], o: SteerOptions): { cbpfError?: string } {
  if (!o.handover) return {};
  try {
    udpSteer(fds[0]!, hashProgram());
    return {};
  } catch (err) {
    return { cbpfError: (err as Error).message };
  }
}

/** Loads the program and its maps, puts the sockets in, attaches it. The group then holds all of it: no fd stays. */
function attachEbpf(fds: readonly number[], o: SteerOptions): void {
  const maps = new MapSet({
    sixbed4_steer_config: { type: BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: CONFIG_SIZE, maxEntries: 1 },
    sixbed4_steer_sockets: {
      type: BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
      keySize: 4,
      valueSize: 8,
      maxEntries: fds.length,
    },
  });
  let prog = -1;
  try {
    prog = loadProgram(o.object ?? STEER_OBJECT, 'sk_reuseport', BPF_PROG_TYPE_SK_REUSEPORT, 'sixbed4_steer', maps);
    const cfg = new Uint8Array(CONFIG_SIZE),
      v = new DataView(cfg.buffer);
    cfg.set(o.prefix.subarray(0, 8), 0);
    v.setUint32(8, o.workers, true);
    v.setUint32(12, o.sockets, true);
    v.setUint32(16, checkedSockets(o.sockets), true);
    bpfSyscalls.mapUpdate(maps.fd('sixbed4_steer_config'), new Uint8Array(4), cfg);
    const key = new Uint8Array(4),
      value = new Uint8Array(8);
    fds.forEach((fd, i) => {
      new DataView(key.buffer).setUint32(0, i, true);
      new DataView(value.buffer).setBigUint64(0, BigInt(fd), true);
      bpfSyscalls.mapUpdate(maps.fd('sixbed4_steer_sockets'), key, value);
    });
    udpSteerEbpf(fds[0]!, prog);
  } finally {
    if (prog >= 0) native.close(prog);
    maps.close();
  }
}
