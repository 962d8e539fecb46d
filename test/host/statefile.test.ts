// The state file and the plan under attack: planted symlinks, hostile
// contents, concurrent runs, and shell metacharacters in printed commands.
import test from 'ava';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink, writeFile, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSavedState, withStateLock, writeSavedState } from '../../agent/host/statefile.js';
import { commandLine, renderPlan, shellQuote } from '../../agent/host/steps.js';
import type { SavedState } from '../../agent/host/snapshot.js';

const GOOD: SavedState = {
  version: 1,
  savedAt: '2026-01-01T00:00:00.000Z',
  uplink: 'eth0',
  prefix: '2001:db8:9:10::/64',
  tunnel: '6bed4',
  dummy: 'dumbo0',
  addresses: [{ address: '2001:db8:9:10::11', dev: 'eth0', prefixLen: 64, flags: ['nodad'] }],
  conf: { all: { forwarding: '0' }, eth0: { forwarding: '0', accept_ra: '2' } },
  dummyExists: false,
  tunnelRoute: false,
  added: { dummy: false, tunnelRoute: false },
  managed: ['2001:db8:9:10::11'],
};

async function tmp(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('writing never follows a planted symlink, at the temporary name or at the state file itself', async (t) => {
  const dir = await tmp(t);
  const victim = join(dir, 'victim');
  await writeFile(victim, 'precious\n');
  const path = join(dir, 'host-eth0.json');
  // The temporary name the old code used (predictable from the pid), and the state file itself.
  await symlink(victim, `${path}.tmp-${process.pid}`);
  await writeSavedState(path, GOOD);
  t.is(await readFile(victim, 'utf8'), 'precious\n');
  await rm(path);
  await symlink(victim, path);
  await writeSavedState(path, GOOD);
  t.is(await readFile(victim, 'utf8'), 'precious\n');
  t.false((await lstat(path)).isSymbolicLink(), 'the symlink itself was replaced');
  t.deepEqual(await readSavedState(path), GOOD);
});

test('reading refuses a symlinked state file', async (t) => {
  const dir = await tmp(t);
  const real = join(dir, 'elsewhere.json');
  await writeFile(real, JSON.stringify(GOOD));
  await symlink(real, join(dir, 'host-eth0.json'));
  await t.throwsAsync(readSavedState(join(dir, 'host-eth0.json')), { message: /symbolic link/ });
});

test('every field is validated before it can become an ip or sysctl argument', async (t) => {
  const dir = await tmp(t);
  const path = join(dir, 's.json');
  const hostile: [string, unknown][] = [
    ['uplink', 'eth0 down'],
    ['dummy', '-all'],
    ['prefix', '2001:db8:9:10::/48'],
    ['addresses', [{ ...GOOD.addresses[0], address: '2001:db8:9:10::11 dev lo' }]],
    ['addresses', [{ ...GOOD.addresses[0], address: '2001:db8:ffff::1' }]],
    ['addresses', [{ ...GOOD.addresses[0], dev: 'wan0' }]],
    ['addresses', [{ ...GOOD.addresses[0], prefixLen: '64 scope host' }]],
    ['addresses', [{ ...GOOD.addresses[0], flags: ['nodad', 'permanent; reboot'] }]],
    ['conf', { 'eth0/../../kernel': { forwarding: '1' } }],
    ['conf', { all: { forwarding: '1\n' } }],
    ['conf', { all: { disable_ipv6: '1' } }],
    ['managed', ['::1']],
    ['added', { dummy: 'yes', tunnelRoute: false }],
  ];
  for (const [field, value] of hostile) {
    await writeFile(path, JSON.stringify({ ...GOOD, [field]: value }));
    await t.throwsAsync(
      readSavedState(path),
      { message: /not a sixbed4 host state/ },
      `${field}: ${JSON.stringify(value)}`,
    );
  }
  await writeFile(path, JSON.stringify(GOOD));
  t.deepEqual(await readSavedState(path), GOOD);
});

test('apply and revert runs on one state file take turns (flock), never interleave', async (t) => {
  const dir = await tmp(t);
  const path = join(dir, 'host-eth0.json');
  const events: string[] = [];
  const run = (name: string) =>
    withStateLock(path, async () => {
      events.push(`${name} start`);
      await new Promise((r) => setTimeout(r, 150));
      events.push(`${name} end`);
    });
  let waited = 0;
  const a = run('a');
  while (!events.includes('a start')) await new Promise((r) => setTimeout(r, 5));
  await Promise.all([
    a,
    withStateLock(
      path,
      async () => {
        events.push('b start');
        events.push('b end');
      },
      () => {
        waited++;
      },
    ),
  ]);
  t.deepEqual(events, ['a start', 'a end', 'b start', 'b end']);
  t.is(waited, 1, 'the second said it was waiting');
  // A holder that does not finish in time: the waiter gives up with a clear message.
  const c = run('c');
  while (!events.includes('c start')) await new Promise((r) => setTimeout(r, 5));
  await t.throwsAsync(
    withStateLock(path, async () => undefined, undefined, 50),
    { message: /another sixbed4 host apply or revert holds/ },
  );
  await c;
});

test('the printed plan quotes every word for a POSIX shell', (t) => {
  t.is(
    commandLine({ kind: 'ip', args: ['-6', 'addr', 'add', '2001:db8:9:10::11/128', 'dev', 'eth0'] }),
    'ip -6 addr add 2001:db8:9:10::11/128 dev eth0',
  );
  t.is(commandLine({ kind: 'ip', args: ['link', 'del', "x'; reboot; '"] }), `ip link del 'x'\\''; reboot; '\\'''`);
  const text = renderPlan(
    { steps: [{ action: { kind: 'ip', args: ['link', 'show'] }, reason: 'why\nreboot' }], notes: [] },
    'h',
  );
  t.false(text.split('\n').includes('reboot'), 'a newline in a reason does not end the comment');
  // Whatever the word, the shell hands the command exactly that word.
  fc.assert(
    fc.property(
      fc.array(
        fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((s) => !s.includes('\0')),
        { minLength: 1, maxLength: 4 },
      ),
      (words) => {
        const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${words.map(shellQuote).join(' ')}`]);
        return out.toString('utf8') === words.map((w) => `${w}\0`).join('');
      },
    ),
    { numRuns: 60 },
  );
  t.pass();
});
