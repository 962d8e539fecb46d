// The shipped systemd units as the tests use them: where they are, their
// ExecStart/ExecReload lines, and those lines made runnable here (sixbed4 is the
// compiled CLI under this Node.js; the fixed config path is the test's file).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CLI } from '../../lab/sixbed4.js';

export const UNIT_DIR = fileURLToPath(new URL('../../../systemd/', import.meta.url));
export const ROUTER_UNIT = `${UNIT_DIR}sixbed4-router.service`;
export const PEER_UNIT = `${UNIT_DIR}sixbed4-peer@.service`;
/** The drop-in for a peer instance with --lan. */
export const PEER_LAN_DROPIN = `${UNIT_DIR}peer-lan.conf`;

/** The value of the one `Key=` line of a unit (first match). */
export function unitValue(unit: string, key: string): string {
  const m = new RegExp(`^${key}=(.*)$`, 'm').exec(readFileSync(unit, 'utf8'));
  if (!m) throw new Error(`${unit} has no ${key}=`);
  return m[1]!;
}

/**
 * A unit's command line as argv, the way systemd splits it (white space; no quoting is used in ours), with
 * specifiers (%i), ${VAR} (one word) and $VAR (split into words) from env expanded.
 */
export function commandLine(line: string, opts: { instance?: string; env?: Record<string, string> } = {}): string[] {
  const env = opts.env ?? {};
  const words: string[] = [];
  for (const w of line
    .replace(/%i/g, opts.instance ?? '')
    .split(/\s+/)
    .filter(Boolean)) {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(w);
    if (whole) {
      words.push(...(env[whole[1]!] ?? '').split(/\s+/).filter(Boolean));
      continue;
    }
    words.push(w.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, k: string) => env[k] ?? ''));
  }
  return words;
}

/** The unit's sixbed4 command run by this Node.js from the build, its fixed config path replaced by the test's. */
export function runnable(argv: string[], replace: Record<string, string> = {}): string[] {
  if (argv[0] !== 'sixbed4') throw new Error(`ExecStart runs ${argv[0]}, not sixbed4`);
  return [process.execPath, CLI, ...argv.slice(1).map((a) => replace[a] ?? a)];
}
