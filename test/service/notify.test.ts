// sd_notify from the native addon (agent/native/notify.c): one datagram on the AF_UNIX socket $NOTIFY_SOCKET
// names, read here by a socket of the test's own; and what happens without one, or with a bad one.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { notifySocket } from '../../agent/io/native.js';
import { sdNotify } from '../../agent/service/notify.js';
import { createLogger } from '../../lib/log.js';
import { notifyListener } from './notify-listener.js';

const log = createLogger({ component: 'test', level: 'error' });

test('a datagram per message, fields on lines, as systemd reads them', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-notify-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sock = join(dir, 'notify.sock');
  const listener = await notifyListener(sock);
  t.teardown(() => listener.stop());
  t.true(sdNotify({ READY: 1, STATUS: 'forwarding 2001:db8:9:10::/64' }, log, { NOTIFY_SOCKET: sock }));
  t.true(sdNotify({ STOPPING: 1 }, log, { NOTIFY_SOCKET: sock }));
  await listener.waitFor(/^notify STOPPING=1$/, 5000);
  t.deepEqual(
    listener
      .lines()
      .map((l) => l.text)
      .filter((l) => l.startsWith('notify')),
    ['notify READY=1|STATUS=forwarding 2001:db8:9:10::/64', 'notify STOPPING=1'],
  );
});

test('without NOTIFY_SOCKET nothing is sent; a socket nobody holds or a relative path is an error, not a crash', (t) => {
  t.false(sdNotify({ READY: 1 }, log, {}));
  t.false(sdNotify({ READY: 1 }, log, { NOTIFY_SOCKET: '/nonexistent/notify.sock' }), 'logged, and the router runs on');
  t.throws(() => notifySocket('/nonexistent/notify.sock', 'READY=1'), { code: 'ENOENT', message: /sendto/ });
  t.throws(() => notifySocket('relative.sock', 'READY=1'), {
    instanceOf: RangeError,
    message: /absolute path or start with @/,
  });
});
