// Putting the sixbed4-cni plugin on a node, and taking it off: the agent DaemonSet's init container runs
// `sixbed4 cni install` (the binary into the runtime's CNI bin directory, our entry chained at the end of the
// primary network's config list), the agent re-checks that every minute (a primary CNI that rewrites its own list
// drops our entry), and `sixbed4 cni uninstall` (the agent, when it stops because the DaemonSet was deleted) takes
// both off again. Files are replaced by rename, so the runtime never reads half a file.
//
// The primary list is the first *.conflist of the directory in name order: the one containerd and CRI-O use.
import { constants } from 'node:fs';
import { chmod, copyFile, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError } from '../../lib/errors.js';
import { POD_ANNOTATIONS_CAPABILITY } from './protocol.js';
import { isObj } from '../../lib/guards.js';

export const PLUGIN_TYPE = 'sixbed4-cni';

export interface PluginSettings {
  /** The agent's socket, as the shim sees it (a host path). */
  agentSocket: string;
  podAnnotation: string;
  /** The pod end's name. */
  interface: string;
}

/** Our entry of a config list's plugins: the pod annotations capability lets the shim answer pods that did not ask alone. */
export function pluginEntry(s: PluginSettings): Record<string, unknown> {
  return {
    type: PLUGIN_TYPE,
    capabilities: { [POD_ANNOTATIONS_CAPABILITY]: true },
    agentSocket: s.agentSocket,
    podAnnotation: s.podAnnotation,
    interface: s.interface,
  };
}

/**
 * The config list with our entry last (added, or replaced where it was: chained plugins run in list order, and ours
 * needs the primary's result), or without it. Null when nothing changes. Pure.
 */
export function patchConflist(text: string, entry: Record<string, unknown> | null): string | null {
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch (err) {
    throw new InputError(`not JSON: ${(err as Error).message}`);
  }
  if (!isObj(list) || !Array.isArray(list.plugins)) throw new InputError('not a CNI config list (no "plugins" array)');
  const plugins = list.plugins as unknown[];
  const others = plugins.filter((p) => !(isObj(p) && p.type === PLUGIN_TYPE));
  const next = entry ? [...others, entry] : others;
  if (JSON.stringify(next) === JSON.stringify(plugins)) return null;
  return `${JSON.stringify({ ...list, plugins: next }, null, 2)}\n`;
}

/** The primary config list: the first *.conflist by name (what the runtime loads). */
export async function primaryConflist(confDir: string): Promise<string | null> {
  const names = (await readdir(confDir).catch(() => [] as string[])).filter((n) => n.endsWith('.conflist')).sort();
  return names.length ? join(confDir, names[0]!) : null;
}

async function replaceFile(path: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = join(path, '..', `.${process.pid}.sixbed4.tmp`);
  try {
    await write(tmp);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface InstallResult {
  binary: string;
  conflist: string | null;
  changed: boolean;
}

/** Installs the plugin binary and chains our entry into the primary list (idempotent). */
export async function install(o: {
  pluginBinary: string;
  binDir: string;
  confDir: string;
  settings: PluginSettings;
}): Promise<InstallResult> {
  const target = join(o.binDir, PLUGIN_TYPE);
  const [have, want] = await Promise.all([readFile(target).catch(() => null), readFile(o.pluginBinary)]);
  let changed = false;
  if (!have || !have.equals(want)) {
    await replaceFile(target, async (tmp) => {
      await copyFile(o.pluginBinary, tmp, constants.COPYFILE_FICLONE);
      await chmod(tmp, 0o755);
    });
    changed = true;
  }
  const list = await primaryConflist(o.confDir);
  if (list) {
    const patched = patchConflist(await readFile(list, 'utf8'), pluginEntry(o.settings));
    if (patched) {
      await replaceFile(list, (tmp) => writeFile(tmp, patched, { mode: 0o644 }));
      changed = true;
    }
  }
  return { binary: target, conflist: list, changed };
}

/** Takes our entry out of every config list of the directory and removes the binary. */
export async function uninstall(o: { binDir: string; confDir: string }): Promise<string[]> {
  const done: string[] = [];
  for (const n of (await readdir(o.confDir).catch(() => [] as string[])).filter((x) => x.endsWith('.conflist'))) {
    const path = join(o.confDir, n);
    let patched: string | null;
    try {
      patched = patchConflist(await readFile(path, 'utf8'), null);
    } catch {
      continue; // not ours to judge
    }
    if (patched) {
      await replaceFile(path, (tmp) => writeFile(tmp, patched!, { mode: 0o644 }));
      done.push(`removed the ${PLUGIN_TYPE} entry from ${path}`);
    }
  }
  const bin = join(o.binDir, PLUGIN_TYPE);
  try {
    await rm(bin);
    done.push(`removed ${bin}`);
  } catch {
    /* not there */
  }
  return done;
}
