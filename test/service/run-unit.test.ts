// The single-host service (agent/service/run.ts) with its parts handed in: the real config files and checks, a fake
// host and router that record what is asked of them. What happens in which order on start, reload and stop, and what
// a failure leaves behind, without root. The real thing end to end: reload.test.ts, cli.test.ts (root).
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../lib/log.js';
import { loadServiceConfig } from '../../agent/service/config.js';
import type { LiveReconfig, RouterConfig } from '../../agent/router/router.js';
import { SingleHostService, type ServiceParts, type ServiceRouter } from '../../agent/service/run.js';

const log = createLogger({ component: 'test', format: 'json' });
log.silent = true;
const BASE = 'prefix: 2001:db8:9:10::/64\nlisten: {address: 198.51.100.1}\n';

interface Rig {
  parts: ServiceParts;
  events: string[];
  file: string;
  write(yaml: string): void;
  failApply?: boolean;
  failRouter?: boolean;
  stateThere?: boolean;
}

function rig(t: { teardown(f: () => void): void }, yaml = BASE): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'sixbed4-service-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'router.yaml');
  const events: string[] = [];
  const r: Rig = {
    events,
    file,
    write: (y) => writeFileSync(file, y),
    parts: {
      loadConfig: loadServiceConfig,
      privileged: () => true,
      statePath: async () => join(dir, 'state.json'),
      exists: async () => !!r.stateThere,
      applyHost: async (host) => {
        events.push(`apply ${host.localAddresses.map((a) => a.text).join(',')}`);
        if (r.failApply) throw new Error('ip: RTNETLINK answers: File exists');
        return { plan: { uplink: 'eth0', steps: ['one step'] } };
      },
      revertHost: async () => {
        events.push('revert');
        return { plan: { steps: ['one step'] } };
      },
      startRouter: async (cfg: RouterConfig) => {
        events.push(`router start ${cfg.metrics ?? '-'}`);
        if (r.failRouter) throw new Error('tunnel 6bed4 is busy');
        const router: ServiceRouter = {
          config: cfg,
          reconfigure: async (change: LiveReconfig) => {
            events.push(`reconfigure ${JSON.stringify(change, (k, v: unknown) => (k === 'bytes' ? undefined : v))}`);
          },
          stop: async () => {
            events.push('router stop');
          },
        };
        return router;
      },
      notify: (fields) => {
        events.push(`notify ${Object.keys(fields).join(',')}`);
      },
    },
  };
  r.write(yaml);
  return r;
}

test('start: host, then router, then READY; stop: STOPPING, router, then the host reverted', async (t) => {
  const r = rig(t);
  const s = await SingleHostService.start(r.file, { keepHost: false, log }, r.parts);
  await s.stop();
  await s.stop();
  t.deepEqual(r.events, [
    'apply ',
    'router start 127.0.0.1:9475',
    'notify READY,STATUS,MAINPID',
    'notify STOPPING',
    'router stop',
    'revert',
  ]);
});

test('--keep-host: the stop leaves the host configured', async (t) => {
  const r = rig(t);
  const s = await SingleHostService.start(r.file, { keepHost: true, log }, r.parts);
  await s.stop();
  t.false(r.events.includes('revert'));
});

test('a router that cannot start: the host goes back, unless it was configured before this run', async (t) => {
  const r = rig(t);
  r.failRouter = true;
  await t.throwsAsync(SingleHostService.start(r.file, { keepHost: false, log }, r.parts), {
    message: 'tunnel 6bed4 is busy',
  });
  t.deepEqual(r.events, ['apply ', 'router start 127.0.0.1:9475', 'revert']);
  const kept = rig(t);
  kept.failRouter = true;
  kept.stateThere = true;
  await t.throwsAsync(SingleHostService.start(kept.file, { keepHost: false, log }, kept.parts));
  t.false(kept.events.includes('revert'), 'a state file from an earlier run: its host stays');
});

test('not privileged: refused before anything is touched', async (t) => {
  const r = rig(t);
  r.parts.privileged = () => false;
  await t.throwsAsync(SingleHostService.start(r.file, { keepHost: false, log }, r.parts), {
    message: /run it as root/,
  });
  t.deepEqual(r.events, []);
});

test('reload: routes go to the running router; the same file changes nothing; a restart-only field changes nothing', async (t) => {
  const r = rig(t);
  const s = await SingleHostService.start(r.file, { keepHost: false, log }, r.parts);
  r.events.length = 0;
  t.deepEqual(await s.reload(), { result: 'unchanged' });
  r.write(`${BASE}routes: ["2001:db8:aaaa::/48"]\n`);
  const applied = await s.reload();
  t.like(applied, { result: 'applied', changed: ['routes [] -> [2001:db8:aaaa::/48]'] });
  t.deepEqual(s.config.spec.routes, ['2001:db8:aaaa::/48']);
  r.write('prefix: 2001:db8:9:10::/64\nlisten: {address: 198.51.100.2}\n');
  t.like(await s.reload(), { result: 'restart-needed', fields: ['listen.address 198.51.100.1 -> 198.51.100.2'] });
  t.deepEqual(s.config.spec.routes, ['2001:db8:aaaa::/48'], 'the running configuration stays');
  t.deepEqual(
    r.events.filter((e) => !e.startsWith('notify')),
    ['reconfigure {"routes":[{"length":48,"text":"2001:db8:aaaa::/48"}]}'],
  );
  t.deepEqual(
    r.events.filter((e) => e.startsWith('notify')),
    Array(3).fill(['notify RELOADING,MONOTONIC_USEC', 'notify READY,STATUS']).flat(),
  );
});

test('reload: a file that does not check out is refused; the running configuration stays', async (t) => {
  const r = rig(t);
  const s = await SingleHostService.start(r.file, { keepHost: false, log }, r.parts);
  r.write('prefix: 2001:db8:9:10::/48\nlisten: {address: 198.51.100.1}\n');
  const out = await s.reload();
  t.is(out.result, 'refused');
  t.is(s.config.spec.prefix.text, '2001:db8:9:10::/64');
});

test('reload: metrics moved, then the host refuses the new local addresses: the metrics go back, nothing else changes', async (t) => {
  const r = rig(t);
  const s = await SingleHostService.start(r.file, { keepHost: false, log }, r.parts);
  r.events.length = 0;
  r.write(`${BASE}metricsAddress: 127.0.0.2\nlocalAddresses: ["::11"]\n`);
  r.failApply = true;
  const out = await s.reload();
  t.like(out, { result: 'refused', error: 'ip: RTNETLINK answers: File exists' });
  t.deepEqual(
    r.events.filter((e) => !e.startsWith('notify')),
    ['reconfigure {"metrics":"127.0.0.2:9475"}', 'apply 2001:db8:9:10::11', 'reconfigure {"metrics":"127.0.0.1:9475"}'],
  );
  t.is(s.config.metrics, '127.0.0.1:9475');
});

test('reloads run one at a time; one asked for once the stop began is refused', async (t) => {
  const r = rig(t);
  const s = await SingleHostService.start(r.file, { keepHost: false, log }, r.parts);
  r.events.length = 0;
  t.deepEqual(await Promise.all([s.reload(), s.reload()]), [{ result: 'unchanged' }, { result: 'unchanged' }]);
  t.deepEqual(r.events, [
    'notify RELOADING,MONOTONIC_USEC',
    'notify READY,STATUS',
    'notify RELOADING,MONOTONIC_USEC',
    'notify READY,STATUS',
  ]);
  const stopping = s.stop();
  const late = s.reload();
  await stopping;
  t.deepEqual(await late, { result: 'refused', error: 'the router is stopping' });
});
