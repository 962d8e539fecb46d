// Links between lab namespaces.
import type { Netns } from './netns.js';

/** Connects two namespaces with a veth pair and brings both ends up. */
export async function veth(a: Netns, ifA: string, b: Netns, ifB: string): Promise<void> {
  // Created directly inside the namespaces so the names never exist (and so
  // never collide) in the root namespace.
  await a.ip(['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  await Promise.all([a.ip(['link', 'set', ifA, 'up']), b.ip(['link', 'set', ifB, 'up'])]);
}
