// Loads one program of a BPF object file with raw bpf(2) calls: creates the
// maps it references, points its map loads at them, and loads it. The maps'
// shapes are given by the caller (their C declarations say the same; a
// mismatch shows at once in the tests that run the program): reading them from
// the object's BTF would need a BTF parser for three fixed maps.
import { readFileSync } from 'node:fs';
import { bpfSyscalls, native } from '../io/native.js';
import { Elf } from './elf.js';

export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_PROG_TYPE_SCHED_CLS = 3;

export interface MapSpec { type: number; keySize: number; valueSize: number; maxEntries: number; }

export interface LoadedProgram {
  readonly progFd: number;
  /** Map fds by their C names. */
  readonly maps: Readonly<Record<string, number>>;
  /** Closes the program and its maps (a link holding the program keeps it alive until the link closes). */
  close(): void;
}

const R_BPF_64_64 = 1; // a 64-bit immediate load (ld_imm64) of a symbol's address: a map reference
const BPF_PSEUDO_MAP_FD = 1;
const LD_IMM64 = 0x18;

/** Loads the program in section `section` of the object at path, of type progType, named name (≤ 15 characters). */
export function loadProgram(path: string, section: string, progType: number, name: string, mapSpecs: Record<string, MapSpec>): LoadedProgram {
  const elf = new Elf(readFileSync(path), path);
  const prog = elf.section(section);
  if (!prog) throw new Error(`${path} has no section ${section}`);
  const license = elf.section('license');
  const insns = Uint8Array.from(prog.bytes);
  const maps: Record<string, number> = {};
  const close = () => { for (const fd of Object.values(maps)) native.close(fd); };
  try {
    for (const r of elf.relocations(prog)) {
      const spec = mapSpecs[r.symbol.name];
      if (r.type !== R_BPF_64_64 || !spec || elf.sections[r.symbol.section]?.name !== '.maps') {
        throw new Error(`${path}: ${section} refers to ${r.symbol.name || '?'} (relocation type ${r.type}), which this loader does not know: ` +
          'only the maps given to it can be referenced (rebuild the object and the loader together)');
      }
      if (r.offset % 8 || r.offset + 16 > insns.length || insns[r.offset] !== LD_IMM64) throw new Error(`${path}: relocation of ${r.symbol.name} is not at a 64-bit load`);
      maps[r.symbol.name] ??= bpfSyscalls.mapCreate(spec.type, spec.keySize, spec.valueSize, spec.maxEntries, r.symbol.name.slice(0, 15));
      // src_reg says "imm is a map fd"; the kernel replaces it with the map's address.
      insns[r.offset + 1] = (insns[r.offset + 1]! & 0x0f) | (BPF_PSEUDO_MAP_FD << 4);
      new DataView(insns.buffer).setInt32(r.offset + 4, maps[r.symbol.name]!, true);
    }
    for (const m of Object.keys(mapSpecs)) if (maps[m] === undefined) throw new Error(`${path}: ${section} does not use map ${m}`);
    const licenseText = license ? Buffer.from(license.bytes).toString('latin1').replace(/\0.*$/s, '') : 'GPL';
    const progFd = bpfSyscalls.progLoad(progType, insns, licenseText, name);
    return { progFd, maps, close: () => { native.close(progFd); close(); } };
  } catch (err) {
    close();
    throw err;
  }
}
