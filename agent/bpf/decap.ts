// The 4->6 fast path program (decap.bpf.c, compiled by `npm run build:bpf` to
// dist/agent/bpf/decap.bpf.o): its maps, its configuration and counters,
// running it on a test packet, and attaching it to an interface's ingress.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bpfSyscalls, native } from '../io/native.js';
import { BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_PROG_TYPE_SCHED_CLS, loadProgram, type LoadedProgram } from './object.js';

/** Where the build puts the object (next to this module in dist/). */
export const DECAP_OBJECT = fileURLToPath(new URL('./decap.bpf.o', import.meta.url));

/** Counter slots, in the order of enum verdict in decap.bpf.c. Names follow the engine's drop reasons where they match. */
export const DECAP_VERDICTS = [
  'fast',              // decapsulated and handed to the kernel by the program
  'not_6bed4',         // not a UDP/IPv4 datagram to the router's address and port
  'ipv4_unusual',      // IP options, fragments, bad IPv4 checksum or length, GSO, martian source
  'udp_checksum',      // UDP checksum not verified by the program
  'source_port_zero',
  'keepalive',
  'short',
  'oversize',
  'not_ipv6',
  'bad_length',        // payload length does not match the datagram exactly
  'nd',
  'multicast',
  'spoofed',
  'hop_limit',
  'to_prefix',         // destination inside the /64: a relay or a local address
  'decap_failed',      // the kernel refused a helper's request
] as const;
export type DecapVerdict = typeof DECAP_VERDICTS[number];

/** tc return codes (linux/pkt_cls.h). UNSPEC: tcx goes on to the next program, then the stack. */
export const TC_ACT_UNSPEC = -1;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;
/** enum bpf_attach_type BPF_TCX_INGRESS (Linux 6.6): newer than Debian's linux-libc-dev 6.1 headers, so defined here. */
export const BPF_TCX_INGRESS = 46;

export interface DecapConfig {
  /** The address the router's sockets are bound to (where peers' datagrams arrive), as a number. */
  bindIPv4: number;
  port: number;
  /** The served /64 (16 bytes; the first 8 are used). */
  prefix: Uint8Array;
  /** The router's TUN interface; 0 turns the program off (everything to the slow path, nothing counted). */
  tunIfindex: number;
}

const CONFIG_SIZE = 24;
const COUNTER_SIZE = 16;

const MAPS = {
  sixbed4_config: { type: BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: CONFIG_SIZE, maxEntries: 1 },
  sixbed4_counts: { type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: 4, valueSize: COUNTER_SIZE, maxEntries: DECAP_VERDICTS.length },
  sixbed4_scratch: { type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: 4, valueSize: 512, maxEntries: 1 },
};

export type DecapCounters = Record<DecapVerdict, { packets: number; bytes: number }>;

export class DecapProgram {
  private readonly loaded: LoadedProgram;
  private readonly cpus = possibleCpus();
  private readonly links: number[] = [];

  /** Loads the program (configured off: tunIfindex 0). Throws with the verifier's reason when the kernel refuses it. */
  constructor(objectPath = DECAP_OBJECT) {
    this.loaded = loadProgram(objectPath, 'tc', BPF_PROG_TYPE_SCHED_CLS, 'sixbed4_decap', MAPS);
  }

  get progFd(): number { return this.loaded.progFd; }

  configure(c: DecapConfig): void {
    const v = new Uint8Array(CONFIG_SIZE), d = new DataView(v.buffer);
    d.setUint32(0, c.bindIPv4 >>> 0, false); // network order, as in the packet
    d.setUint16(4, c.port, false);
    v.set(c.prefix.subarray(0, 8), 8);
    d.setUint32(16, c.tunIfindex, true);
    bpfSyscalls.mapUpdate(this.loaded.maps.sixbed4_config!, new Uint8Array(4), v);
  }

  /** Runs the program on one Ethernet frame in the kernel (BPF_PROG_TEST_RUN): nothing is sent or redirected. */
  run(frame: Uint8Array): { retval: number; out: Uint8Array } {
    const out = new Uint8Array(frame.length + 64);
    const r = bpfSyscalls.progTestRun(this.loaded.progFd, frame, out);
    return { retval: r.retval, out: out.subarray(0, r.size) };
  }

  /** The counters summed over CPUs. */
  counters(): DecapCounters {
    const stride = COUNTER_SIZE; // already a multiple of 8
    const buf = new Uint8Array(stride * this.cpus), d = new DataView(buf.buffer), key = new Uint8Array(4);
    const out = {} as DecapCounters;
    DECAP_VERDICTS.forEach((name, i) => {
      new DataView(key.buffer).setUint32(0, i, true);
      bpfSyscalls.mapLookup(this.loaded.maps.sixbed4_counts!, key, buf);
      let packets = 0, bytes = 0;
      for (let c = 0; c < this.cpus; c++) {
        packets += Number(d.getBigUint64(c * stride, true));
        bytes += Number(d.getBigUint64(c * stride + 8, true));
      }
      out[name] = { packets, bytes };
    });
    return out;
  }

  /** Zeroes the counters (after the load-time self-test, whose packet is not traffic). */
  resetCounters(): void {
    const zero = new Uint8Array(COUNTER_SIZE * this.cpus), key = new Uint8Array(4);
    for (let i = 0; i < DECAP_VERDICTS.length; i++) {
      new DataView(key.buffer).setUint32(0, i, true);
      bpfSyscalls.mapUpdate(this.loaded.maps.sixbed4_counts!, key, zero);
    }
  }

  /**
   * Attaches to ifindex's ingress through a tcx link (Linux 6.6+). The link lives as long as its fd: when this
   * process ends, however it ends, the kernel detaches the program. Throws when the kernel has no tcx.
   */
  attachIngress(ifindex: number): void {
    this.links.push(bpfSyscalls.linkCreate(this.loaded.progFd, ifindex, BPF_TCX_INGRESS));
  }

  /** Detaches (closes the links) and releases the program and its maps. Idempotent. */
  close(): void {
    for (const fd of this.links.splice(0)) native.close(fd);
    if (this.closed) return;
    this.closed = true;
    this.loaded.close();
  }
  private closed = false;
}

/** The number of possible CPUs: per-CPU map values hold one slot for each. */
export function possibleCpus(): number {
  const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  const last = /(\d+)$/.exec(text);
  if (!last) throw new Error(`cannot read the possible CPUs from /sys/devices/system/cpu/possible ('${text}')`);
  return Number(last[1]) + 1;
}
