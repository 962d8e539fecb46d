// iproute2 as the interface to the kernel's network configuration: every
// change sixbed4 makes is an `ip` or `sysctl` command a person could type,
// which is also what `host plan` prints. The agent, the slice deliverer and
// the lab all run `ip` (and read `ip -j`) through here, in this process's
// network namespace or in another one.
import { runCommand, type CommandOptions } from './command.js';

/**
 * Another network namespace: one named in /run/netns (`ip netns add`, the
 * lab's), or one known only by a path such as a pod's /proc/PID/ns/net or a
 * runtime's /var/run/netns/cni-... (entered with nsenter).
 */
export type NetnsRef = { readonly name: string } | { readonly path: string };

/**
 * How long the agent gives a command on the kernel's configuration: a hung one
 * (a kernel lock held elsewhere) must not stall its loops for long. The lab,
 * which waits on a loaded test machine, passes its own.
 */
export const KERNEL_COMMAND_TIMEOUT_MS = 10_000;

/** argv that runs argv inside the namespace (as is without one). */
export function inNetns(ns: NetnsRef | undefined, argv: readonly string[]): string[] {
  if (!ns) return [...argv];
  return 'name' in ns ? ['ip', 'netns', 'exec', ns.name, ...argv] : ['nsenter', `--net=${ns.path}`, ...argv];
}

/** argv of `ip ARGS` in the namespace; a named one through `ip -n`, cheaper than `ip netns exec`. */
function ipArgv(ns: NetnsRef | undefined, args: readonly string[]): string[] {
  return ns && 'name' in ns ? ['ip', '-n', ns.name, ...args] : inNetns(ns, ['ip', ...args]);
}

/** `ip ARGS` in the namespace (this process's without one); resolves stdout, rejects with a CommandError. */
export function ipIn(ns: NetnsRef | undefined, args: readonly string[], opts: CommandOptions = {}): Promise<string> {
  return runCommand(ipArgv(ns, args), { timeoutMs: KERNEL_COMMAND_TIMEOUT_MS, ...opts });
}

/** `ip -j ARGS` in the namespace, parsed. */
export async function ipJsonIn<T>(
  ns: NetnsRef | undefined,
  args: readonly string[],
  opts: CommandOptions = {},
): Promise<T> {
  // Some ip subcommands print nothing at all instead of "[]".
  const out = await ipIn(ns, ['-j', ...args], opts);
  return (out.trim() === '' ? [] : JSON.parse(out)) as T;
}

/** `ip ARGS` in this process's network namespace. */
export function ip(...args: string[]): Promise<string> {
  return ipIn(undefined, args);
}

/** `ip -j ARGS` in this process's network namespace, parsed. */
export function ipJson<T>(...args: string[]): Promise<T> {
  return ipJsonIn<T>(undefined, args);
}
