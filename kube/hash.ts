// FNV-1a (32 bit) over UTF-8: the deterministic first choices (a node's /64, a namespace's word) and the tunnel
// names, where any well-spread, stable hash of a name does.
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
