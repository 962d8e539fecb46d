// Just enough of ELF64 (little-endian) to load a BPF object compiled by
// clang: sections by name, the symbol table and a section's relocations.
// What loading needs beyond that (map creation, relocation) is in object.ts.

export interface ElfSection {
  name: string;
  index: number;
  type: number;
  offset: number;
  size: number;
  info: number;
  bytes: Uint8Array;
}
export interface ElfSymbol {
  name: string;
  section: number;
  value: number;
  size: number;
}
export interface ElfRelocation {
  offset: number;
  type: number;
  symbol: ElfSymbol;
}

const SHT_SYMTAB = 2;
const SHT_REL = 9;

export class Elf {
  readonly sections: ElfSection[] = [];
  readonly symbols: ElfSymbol[] = [];

  constructor(
    readonly file: Uint8Array,
    readonly path: string,
  ) {
    const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
    if (file.length < 64 || v.getUint32(0) !== 0x7f454c46) throw new Error(`${path} is not an ELF file`);
    // ELFCLASS64, little-endian, EM_BPF (247): what clang -target bpf writes on this machine kind.
    if (file[4] !== 2 || file[5] !== 1 || v.getUint16(18, true) !== 247)
      throw new Error(`${path} is not a 64-bit little-endian BPF object`);
    const shoff = Number(v.getBigUint64(0x28, true));
    const shentsize = v.getUint16(0x3a, true),
      shnum = v.getUint16(0x3c, true),
      shstrndx = v.getUint16(0x3e, true);
    const raw = [];
    for (let i = 0; i < shnum; i++) {
      const o = shoff + i * shentsize;
      if (o + 64 > file.length) throw new Error(`${path}: section header ${i} lies past the end of the file`);
      const offset = Number(v.getBigUint64(o + 24, true)),
        size = Number(v.getBigUint64(o + 32, true));
      const type = v.getUint32(o + 4, true);
      // SHT_NOBITS (8) has no bytes in the file.
      if (type !== 8 && offset + size > file.length)
        throw new Error(`${path}: section ${i} lies past the end of the file`);
      raw.push({
        nameOff: v.getUint32(o, true),
        type,
        offset,
        size,
        link: v.getUint32(o + 40, true),
        info: v.getUint32(o + 44, true),
      });
    }
    const shstr = raw[shstrndx];
    if (!shstr) throw new Error(`${path}: no section name table`);
    raw.forEach((s, index) =>
      this.sections.push({
        name: cstring(file, shstr.offset + s.nameOff),
        index,
        type: s.type,
        offset: s.offset,
        size: s.size,
        info: s.info,
        bytes: s.type === 8 ? new Uint8Array(0) : file.subarray(s.offset, s.offset + s.size),
      }),
    );
    const symtab = raw.findIndex((s) => s.type === SHT_SYMTAB);
    if (symtab < 0) throw new Error(`${path}: no symbol table`);
    const st = raw[symtab]!,
      strtab = raw[st.link]!;
    for (let o = st.offset; o + 24 <= st.offset + st.size; o += 24) {
      this.symbols.push({
        name: cstring(file, strtab.offset + v.getUint32(o, true)),
        section: v.getUint16(o + 6, true),
        value: Number(v.getBigUint64(o + 8, true)),
        size: Number(v.getBigUint64(o + 16, true)),
      });
    }
  }

  section(name: string): ElfSection | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** The relocations (SHT_REL) that apply to section s. */
  relocations(s: ElfSection): ElfRelocation[] {
    const rel = this.sections.find((r) => r.type === SHT_REL && r.info === s.index);
    if (!rel) return [];
    const v = new DataView(this.file.buffer, this.file.byteOffset, this.file.byteLength);
    const out: ElfRelocation[] = [];
    for (let o = rel.offset; o + 16 <= rel.offset + rel.size; o += 16) {
      const info = v.getBigUint64(o + 8, true);
      const symbol = this.symbols[Number(info >> 32n)];
      if (!symbol) throw new Error(`${this.path}: relocation in ${s.name} names a symbol that does not exist`);
      out.push({ offset: Number(v.getBigUint64(o, true)), type: Number(info & 0xffffffffn), symbol });
    }
    return out;
  }
}

function cstring(b: Uint8Array, at: number): string {
  let end = at;
  while (end < b.length && b[end] !== 0) end++;
  return Buffer.from(b.subarray(at, end)).toString('latin1');
}
