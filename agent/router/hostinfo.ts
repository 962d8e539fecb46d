// What the router reads of its host, through its parts (parts.ts): the local routing table (the addresses it must
// not relay to) and whether IPv6 forwarding is on. Neither is needed to forward: a failure is logged, not thrown.
import { confValue } from '../host/sysctl.js';
import type { Logger } from '../../lib/log.js';
import { parseLocalTable } from './localtable.js';
import type { IPv4Range } from './refused.js';
import { ipJsonWith, type RouterParts } from './parts.js';

/** Once per process: a host without a readable table says so once, whatever number of routers it runs. */
let localTableWarned = false;

/** The host's local IPv4 addresses; on failure (no `ip`?) only the fixed ranges are refused, and the log says so. */
export async function localTable(parts: Pick<RouterParts, 'ip'>, log: Logger): Promise<IPv4Range[]> {
  try {
    return parseLocalTable(
      await ipJsonWith<Parameters<typeof parseLocalTable>[0]>(parts.ip, '-4', 'route', 'show', 'table', 'local'),
    );
  } catch (err) {
    if (!localTableWarned)
      log.warn(
        `cannot read the local routing table (${(err as Error).message}): relays to this host's other addresses are not refused`,
      );
    localTableWarned = true;
    return [];
  }
}

/** The router works without forwarding, but the native side then never reaches peers: say so once. */
export async function warnIfNotForwarding(parts: Pick<RouterParts, 'readIpv6Conf'>, log: Logger): Promise<void> {
  try {
    if (confValue(await parts.readIpv6Conf(), { conf: 'all', param: 'forwarding' }) !== '1') {
      log.warn(
        'IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): the kernel will not pass traffic between the uplink and the tunnel; run `sixbed4 host apply` or `sysctl -w net.ipv6.conf.all.forwarding=1`',
      );
    }
  } catch {
    /* no /proc/sys: nothing to say */
  }
}
