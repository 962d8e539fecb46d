// System commands by absolute path. The agent runs `ip`, `nft` and `sysctl`; so do the lab and the tests, which
// run under npm, where PATH holds look-alikes (see below).
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';

// Under npm/npx/ava, PATH starts with node_modules/.bin, which holds look-alike
// commands: @vercel/nft (pulled in by ava) installs an `nft` that is not
// nftables and exits 0 on our rulesets.  So system tools are resolved in
// system directories first, and children get a PATH without node_modules.
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const toolCache = new Map<string, string | null>();

/** PATH without node_modules/.bin entries (see above). */
export function cleanPath(path: string | undefined): string {
  const dirs = (path ?? '').split(delimiter).filter((d) => d !== '' && !/(^|\/)node_modules(\/|$)/.test(d));
  for (const d of SYSTEM_DIRS) if (!dirs.includes(d)) dirs.push(d);
  return dirs.join(delimiter);
}

/**
 * Absolute path of a system command (e.g. `ip`, `nft`, `sysctl`), searched in
 * the system directories first and then the cleaned PATH; null if absent.
 */
export function findSystemTool(name: string): string | null {
  if (!toolCache.has(name)) {
    const dirs = [...SYSTEM_DIRS, ...cleanPath(process.env.PATH).split(delimiter)];
    const found = dirs
      .map((d) => join(d, name))
      .find((f) => {
        try {
          accessSync(f, fsConstants.X_OK);
          return true;
        } catch {
          return false;
        }
      });
    toolCache.set(name, found ?? null);
  }
  return toolCache.get(name)!;
}

/** Like findSystemTool but throws a clear error when the command is missing. */
export function systemTool(name: string): string {
  const found = findSystemTool(name);
  if (!found) throw new Error(`required command '${name}' not found in ${SYSTEM_DIRS.join(', ')} or PATH`);
  return found;
}
