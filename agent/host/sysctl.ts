// IPv6 per-interface sysctls (net.ipv6.conf.<conf>.<param>), read and written
// through /proc/sys like sysctl(8) does, so the host code needs no procps.
// Interface names may contain dots (VLANs: eth0.100); sysctl(8) then needs the
// slash-separated key form, which is why keys are kept as (conf, param) pairs
// and rendered here rather than split on dots.
import { readdir, readFile, writeFile } from 'node:fs/promises';

/** One setting: `conf` is `all`, `default` or an interface name. */
export interface ConfKey {
  readonly conf: string;
  readonly param: string;
}

/** Values by conf, then by param: { all: { forwarding: '0' }, eth0: { forwarding: '1', accept_ra: '1' } }. */
export type Ipv6Conf = Record<string, Record<string, string>>;

/** The params the host code reads and may change. */
export const CONF_PARAMS = ['forwarding', 'accept_ra'] as const;

// In a container /proc/sys is read-only; the agent's DaemonSet mounts the host's
// /proc/sys/net elsewhere and says where in SIXBED4_PROC_SYS.
export const CONF_DIR = `${process.env.SIXBED4_PROC_SYS ?? '/proc/sys'}/net/ipv6/conf`;

/** The key as sysctl(8) accepts it: dotted, or with slashes when the interface name has a dot. */
export function sysctlKey(k: ConfKey): string {
  return k.conf.includes('.') ? `net/ipv6/conf/${k.conf}/${k.param}` : `net.ipv6.conf.${k.conf}.${k.param}`;
}

export function confValue(c: Ipv6Conf, k: ConfKey): string | undefined {
  return c[k.conf]?.[k.param];
}

/** Reads CONF_PARAMS for every conf directory (all, default and each interface). */
export async function readIpv6Conf(): Promise<Ipv6Conf> {
  const out: Ipv6Conf = {};
  let confs: string[];
  try {
    confs = await readdir(CONF_DIR);
  } catch {
    return out; // IPv6 disabled in this kernel: the planner reports what that means
  }
  await Promise.all(
    confs.map(async (conf) => {
      const values: Record<string, string> = {};
      for (const param of CONF_PARAMS) {
        try {
          values[param] = (await readFile(`${CONF_DIR}/${conf}/${param}`, 'utf8')).trim();
        } catch {
          /* interface went away */
        }
      }
      out[conf] = values;
    }),
  );
  return out;
}

export async function writeConf(k: ConfKey, value: string): Promise<void> {
  try {
    await writeFile(`${CONF_DIR}/${k.conf}/${k.param}`, value);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(
      `sysctl -w ${sysctlKey(k)}=${value} failed: ${e.code === 'EROFS' ? '/proc/sys is read-only here (a container without host networking privileges?)' : e.message}`,
    );
  }
}
