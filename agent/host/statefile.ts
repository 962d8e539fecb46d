// The state file that lets `host revert` restore the host exactly. Written
// atomically (temporary file, fsync, rename, fsync of the directory) before
// apply's first change, so that a crash at any point leaves either no file or
// a complete one.
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError } from '../protocol/ip.js';
import type { SavedState } from './snapshot.js';

export const STATE_DIR = '/var/lib/sixbed4';

export function defaultStatePath(uplink: string): string {
  return `${STATE_DIR}/host-${uplink}.json`;
}

/** The saved state, or undefined when there is none. */
export async function readSavedState(path: string): Promise<SavedState | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InputError(`cannot read the state file ${path}: ${(err as Error).message}`);
  }
  let s: SavedState;
  try {
    s = JSON.parse(text) as SavedState;
  } catch {
    throw new InputError(`the state file ${path} is not valid JSON: it was not written by this version of sixbed4, or was edited`);
  }
  if (s.version !== 1 || !Array.isArray(s.addresses) || typeof s.uplink !== 'string' || typeof s.prefix !== 'string') {
    throw new InputError(`the state file ${path} is not a sixbed4 host state (version 1)`);
  }
  return s;
}

export async function writeSavedState(path: string, s: SavedState): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(JSON.stringify(s, null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new Error(`cannot write the state file ${path}: ${(err as Error).message}`);
  }
  const d = await open(dir, 'r');
  try { await d.sync(); } finally { await d.close(); }
}

export async function removeSavedState(path: string): Promise<void> {
  await rm(path, { force: true });
}
