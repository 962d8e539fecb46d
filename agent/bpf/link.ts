// What the fast path reads of an interface from sysfs: its MAC (the XDP stage
// takes frames for the uplink's; the GRO pair's frames go to its receiving end's).
import { readFileSync } from 'node:fs';
import { parseMac } from '../ndp/messages.js';

/** The interface's MAC, as 6 bytes; throws where it has none (not Ethernet) or is gone. */
export function linkMac(dev: string): Uint8Array {
  const text = readFileSync(`/sys/class/net/${dev}/address`, 'utf8').trim();
  try {
    return parseMac(text);
  } catch {
    throw new Error(`${dev} has no MAC address (${text})`);
  }
}
