// The peer's hook runner on real processes: arguments and environment as documented, one at a time in order, output
// logged line by line, a failing or missing hook logged and never thrown, a hook over its time limit killed with
// everything it started (the run could not end while a child of it held its output open).
import test from 'ava';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { checkHook, HookRunner } from '../../agent/peer/hooks.js';

interface Line {
  level: string;
  message: string;
  event?: string;
}

function capture() {
  const lines: Line[] = [];
  const stream = new Writable({
    objectMode: true,
    write(info: Line, _e, cb) {
      lines.push(info);
      cb();
    },
  });
  return {
    lines,
    log: winston.createLogger({ level: 'debug', transports: [new winston.transports.Stream({ stream })] }),
  };
}

async function script(dir: string, name: string, body: string, mode = 0o755): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, `#!/bin/sh\n${body}\n`);
  await chmod(p, mode);
  return p;
}

test('arguments and environment as documented, in the order queued; output logged by stream', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-hook-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const out = join(dir, 'events');
  const hook = await script(
    dir,
    'hook',
    `echo "$* | $SIXBED4_EVENT $SIXBED4_ADDRESS $SIXBED4_PREFIX $SIXBED4_ROUTE $SIXBED4_TUN $SIXBED4_ROUTER" >> ${out}\necho said $1\necho complained $1 >&2`,
  );
  const { lines, log } = capture();
  const r = new HookRunner(checkHook(hook), 5000, { SIXBED4_TUN: 'tun9', SIXBED4_ROUTER: '198.51.100.1:25790' }, log);
  void r.run('add', ['2001:db8:9:10::1', '2001:db8:9:10::/114'], {
    SIXBED4_ADDRESS: '2001:db8:9:10::1',
    SIXBED4_PREFIX: '2001:db8:9:10::/114',
  });
  void r.run('route-add', ['2001:db8:77::/48'], { SIXBED4_ROUTE: '2001:db8:77::/48' });
  await r.run('remove', ['2001:db8:9:10::1', '2001:db8:9:10::/114'], {
    SIXBED4_ADDRESS: '2001:db8:9:10::1',
    SIXBED4_PREFIX: '2001:db8:9:10::/114',
  });
  t.deepEqual((await readFile(out, 'utf8')).trim().split('\n'), [
    'add 2001:db8:9:10::1 2001:db8:9:10::/114 | add 2001:db8:9:10::1 2001:db8:9:10::/114  tun9 198.51.100.1:25790',
    'route-add 2001:db8:77::/48 | route-add   2001:db8:77::/48 tun9 198.51.100.1:25790',
    'remove 2001:db8:9:10::1 2001:db8:9:10::/114 | remove 2001:db8:9:10::1 2001:db8:9:10::/114  tun9 198.51.100.1:25790',
  ]);
  t.true(lines.some((l) => l.level === 'info' && l.message === 'hook: said add' && l.event === 'add'));
  t.true(lines.some((l) => l.level === 'warn' && l.message === 'hook: complained remove'));
});

test('a failing hook is logged and the next one still runs; a hook that cannot start is logged, not thrown', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-hook-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const hook = await script(dir, 'hook', `[ "$1" = add ] && exit 3\necho ran $1`);
  const { lines, log } = capture();
  const r = new HookRunner(hook, 5000, {}, log);
  void r.run('add', [], {});
  await r.run('remove', [], {});
  t.true(
    lines.some((l) => l.level === 'warn' && /^hook failed \(exit 3\); the peer goes on$/.test(l.message)),
    JSON.stringify(lines),
  );
  t.true(lines.some((l) => l.message === 'hook: ran remove'));
  const gone = new HookRunner(join(dir, 'deleted-since'), 5000, {}, log);
  await gone.run('add', [], {});
  t.true(lines.some((l) => l.level === 'error' && /^hook could not start: .*ENOENT/.test(l.message)));
});

test('a hook over its time limit is killed with what it started', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-hook-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // The sleep holds the hook's output open: the run ends only once the whole group is gone.
  const hook = await script(dir, 'hook', 'echo started\nsleep 600\necho never');
  const { lines, log } = capture();
  await new HookRunner(hook, 300, {}, log).run('add', [], {});
  t.true(lines.some((l) => l.message === 'hook: started'));
  t.false(lines.some((l) => l.message === 'hook: never'));
  t.true(
    lines.some((l) => l.level === 'warn' && /^hook killed after 300 ms/.test(l.message)),
    JSON.stringify(lines),
  );
});

test('--hook is checked at start: missing, not executable, a directory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-hook-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.throws(() => checkHook(join(dir, 'nope')), { message: /--hook .*nope: no such file/ });
  const plain = await script(dir, 'plain', 'true', 0o644);
  // Root too: access(X_OK) wants at least one execute bit.
  t.throws(() => checkHook(plain), { message: /is not executable \(chmod \+x/ });
  t.throws(() => checkHook(dir), { message: /is not a file/ });
  t.is(checkHook(await script(dir, 'ok', 'true')), join(dir, 'ok'));
});
