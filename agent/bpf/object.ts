// Loads programs of BPF object files with raw bpf(2) calls: points their map
// loads at maps of a MapSet (created on first use, so programs of several
// objects that name the same map share it) and loads them. The maps' shapes
// are given by the caller (their C declarations say the same; a mismatch shows
// at once in the tests that run the programs): reading them from the objects'
// BTF would need a BTF parser for four fixed maps.
import { readFileSync } from 'node:fs';
import { bpfSyscalls, native } from '../io/native.js';
import { Elf } from './elf.js';

export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_HASH = 9;
export const BPF_MAP_TYPE_LPM_TRIE = 11;
export const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 20;
export const BPF_F_NO_PREALLOC = 1;
export const BPF_PROG_TYPE_SCHED_CLS = 3;
export const BPF_PROG_TYPE_SK_REUSEPORT = 21;

export interface MapSpec {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
}

/** Maps by their C names, created when a program first refers to them; shared by every program loaded with the set. */
export class MapSet {
  private readonly fds: Record<string, number> = {};

  constructor(private readonly specs: Readonly<Record<string, MapSpec>>) {}

  has(name: string): boolean {
    return name in this.specs;
  }

  /** The map's fd, creating it on first use. */
  fd(name: string): number {
    const spec = this.specs[name];
    if (!spec) throw new Error(`no map ${name} in this set`);
    return (this.fds[name] ??= bpfSyscalls.mapCreate(
      spec.type,
      spec.keySize,
      spec.valueSize,
      spec.maxEntries,
      name.slice(0, 15),
      spec.flags ?? 0,
    ));
  }

  /** Closes the maps (a program still loaded keeps its maps alive until it closes). */
  close(): void {
    for (const k of Object.keys(this.fds)) {
      native.close(this.fds[k]!);
      delete this.fds[k];
    }
  }
}

const R_BPF_64_64 = 1; // a 64-bit immediate load (ld_imm64) of a symbol's address: a map reference
const BPF_PSEUDO_MAP_FD = 1;
const LD_IMM64 = 0x18;

/**
 * Loads the program in section `section` of the object at path, of type progType, named name (≤ 15 characters), its
 * maps from maps. Returns the program's fd (close it with native.close; attached through a link it lives on until the
 * link closes).
 */
export function loadProgram(path: string, section: string, progType: number, name: string, maps: MapSet): number {
  const elf = new Elf(readFileSync(path), path);
  const prog = elf.section(section);
  if (!prog) throw new Error(`${path} has no section ${section}`);
  const license = elf.section('license');
  const insns = Uint8Array.from(prog.bytes);
  for (const r of elf.relocations(prog)) {
    if (r.type !== R_BPF_64_64 || !maps.has(r.symbol.name) || elf.sections[r.symbol.section]?.name !== '.maps') {
      throw new Error(
        `${path}: ${section} refers to ${r.symbol.name || '?'} (relocation type ${r.type}), which this loader does not know: ` +
          'only the maps given to it can be referenced (rebuild the objects and the loader together)',
      );
    }
    if (r.offset % 8 || r.offset + 16 > insns.length || insns[r.offset] !== LD_IMM64)
      throw new Error(`${path}: relocation of ${r.symbol.name} is not at a 64-bit load`);
    // src_reg says "imm is a map fd"; the kernel replaces it with the map's address.
    insns[r.offset + 1] = (insns[r.offset + 1]! & 0x0f) | (BPF_PSEUDO_MAP_FD << 4);
    new DataView(insns.buffer).setInt32(r.offset + 4, maps.fd(r.symbol.name), true);
  }
  const licenseText = license ? Buffer.from(license.bytes).toString('latin1').replace(/\0.*$/s, '') : 'GPL';
  return bpfSyscalls.progLoad(progType, insns, licenseText, name);
}
