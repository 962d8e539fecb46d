// The state file that lets `host revert` restore the host exactly. Written
// atomically (temporary file, fsync, rename, fsync of the directory) before
// apply's first change, so that a crash at any point leaves either no file or
// a complete one.
//
// It lives in a directory an administrator may share with others, and its
// contents become `ip` arguments on revert, so: the temporary file is created
// with O_EXCL|O_NOFOLLOW (a planted symlink or file makes the write fail
// instead of writing through it), the file is read with O_NOFOLLOW, and every
// field is checked before anything uses it. apply and revert hold a flock on
// a lock file beside it, so two runs never interleave their steps.
import { constants as fsc } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { inPrefix, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { native } from '../io/native.js';
import { KEPT_FLAGS } from './state.js';
import type { SavedState } from './snapshot.js';

export const STATE_DIR = '/var/lib/sixbed4';

export function defaultStatePath(uplink: string): string {
  return `${STATE_DIR}/host-${uplink}.json`;
}

/** The saved state, or undefined when there is none. */
export async function readSavedState(path: string): Promise<SavedState | undefined> {
  let text: string;
  try {
    const fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP')
      throw new InputError(
        `the state file ${path} is a symbolic link: refusing to follow it (remove it, or give --state a real file)`,
      );
    throw new InputError(`cannot read the state file ${path}: ${(err as Error).message}`);
  }
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    throw new InputError(
      `the state file ${path} is not valid JSON: it was not written by this version of sixbed4, or was edited`,
    );
  }
  return validateSavedState(s, path);
}

const IFNAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;
const CONF_VALUE = /^[0-2]$/;

/**
 * Checks a parsed state file field by field; its values end up as `ip` and
 * sysctl arguments, so nothing unexpected may pass. Returns it typed.
 */
export function validateSavedState(x: unknown, path: string): SavedState {
  const bad = (what: string): never => {
    throw new InputError(`the state file ${path} is not a sixbed4 host state (version 1): ${what}`);
  };
  const obj = (v: unknown, what: string): Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : bad(`${what} is not an object`);
  const s = obj(x, 'the file');
  if (s.version !== 1) bad('version is not 1');
  for (const f of ['uplink', 'tunnel', 'dummy'] as const) {
    if (typeof s[f] !== 'string' || !IFNAME.test(s[f] as string) || s[f] === '.' || s[f] === '..')
      bad(`${f} is not an interface name`);
  }
  if (typeof s.savedAt !== 'string' || Number.isNaN(Date.parse(s.savedAt))) bad('savedAt is not a time');
  if (typeof s.prefix !== 'string') bad('prefix is missing');
  let prefix;
  try {
    prefix = parsePrefix64(s.prefix as string);
  } catch {
    return bad(`prefix '${String(s.prefix)}' is not a /64`);
  }
  const inside = (a: unknown, what: string): void => {
    if (typeof a !== 'string') bad(`${what} is not an address`);
    let bytes;
    try {
      bytes = parseIPv6(a as string);
    } catch {
      return bad(`${what} '${String(a)}' is not an IPv6 address`);
    }
    if (!inPrefix(prefix, bytes)) bad(`${what} ${String(a)} is outside ${prefix.text}`);
  };
  const devs = [s.uplink, 'lo', s.dummy];
  if (!Array.isArray(s.addresses)) bad('addresses is not a list');
  (s.addresses as unknown[]).forEach((v, i) => {
    const a = obj(v, `addresses[${i}]`);
    inside(a.address, `addresses[${i}].address`);
    if (!devs.includes(a.dev)) bad(`addresses[${i}].dev is not the uplink, lo or the dummy`);
    if (!Number.isInteger(a.prefixLen) || (a.prefixLen as number) < 1 || (a.prefixLen as number) > 128)
      bad(`addresses[${i}].prefixLen is not 1..128`);
    if (!Array.isArray(a.flags) || !a.flags.every((f) => (KEPT_FLAGS as readonly unknown[]).includes(f)))
      bad(`addresses[${i}].flags holds an unknown flag`);
  });
  const conf = obj(s.conf, 'conf');
  for (const [k, v] of Object.entries(conf)) {
    if (!IFNAME.test(k)) bad(`conf key '${k}' is not an interface name`);
    for (const [p, val] of Object.entries(obj(v, `conf.${k}`))) {
      if (p !== 'forwarding' && p !== 'accept_ra') bad(`conf.${k}.${p} is not a parameter sixbed4 changes`);
      if (typeof val !== 'string' || !CONF_VALUE.test(val)) bad(`conf.${k}.${p} is not 0, 1 or 2`);
    }
  }
  if (typeof s.dummyExists !== 'boolean' || typeof s.tunnelRoute !== 'boolean')
    bad('dummyExists/tunnelRoute are not true/false');
  const added = obj(s.added, 'added');
  if (typeof added.dummy !== 'boolean' || typeof added.tunnelRoute !== 'boolean')
    bad('added.dummy/added.tunnelRoute are not true/false');
  if (!Array.isArray(s.managed)) bad('managed is not a list');
  (s.managed as unknown[]).forEach((m, i) => inside(m, `managed[${i}]`));
  return s as unknown as SavedState;
}

export async function writeSavedState(path: string, s: SavedState): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  // A name nobody can predict, created only if it does not exist and never through a symlink.
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(JSON.stringify(s, null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path); // replaces a symlink at path itself, never its target
  } catch (err) {
    await rm(tmp, { force: true });
    throw new Error(`cannot write the state file ${path}: ${(err as Error).message}`);
  }
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export async function removeSavedState(path: string): Promise<void> {
  await rm(path, { force: true });
}

/** How long apply/revert wait for another one to finish before giving up. */
const LOCK_WAIT_MS = 60_000;

/**
 * Runs fn while holding an exclusive flock on `<path>.lock`. A second apply
 * or revert of the same state waits (up to a minute) instead of interleaving
 * its steps with the first. The lock goes with the process, also on a crash;
 * the lock file stays (removing it would race with a waiter).
 */
export async function withStateLock<T>(
  path: string,
  fn: () => Promise<T>,
  onWait?: () => void,
  waitMs = LOCK_WAIT_MS,
): Promise<T> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const lockPath = `${path}.lock`;
  let fh;
  try {
    fh = await open(lockPath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw new InputError(`cannot open the lock file ${lockPath}: ${(err as Error).message}`);
  }
  try {
    const deadline = Date.now() + waitMs;
    let waited = false;
    while (!native.tryLock(fh.fd)) {
      if (!waited) {
        waited = true;
        onWait?.();
      }
      if (Date.now() > deadline) {
        throw new InputError(
          `another sixbed4 host apply or revert holds ${lockPath} for more than ${Math.round(waitMs / 1000)} s: let it finish, then try again`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return await fn();
  } finally {
    await fh.close(); // releases the lock
  }
}
