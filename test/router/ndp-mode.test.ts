// `sixbed4 router --ndp-proxy-mode`: the CamelCase names of the SixBed4Prefix's
// ndpProxy (Always, WhenOnLink) and the earlier on / auto mean the same (#16).
import test from 'ava';
import { routerConfig } from '../../agent/router/router.js';

const mode = (m?: string) =>
  routerConfig({
    prefix: '2001:db8:9:10::/64',
    listen: '198.51.100.1',
    ndpProxy: { uplink: 'eth0', ...(m ? { mode: m } : {}) },
  }).ndpProxy!.mode;

test('--ndp-proxy-mode takes Always and WhenOnLink, and still on and auto', (t) => {
  t.is(mode(), 'on', 'Always by default');
  t.is(mode('Always'), 'on');
  t.is(mode('WhenOnLink'), 'auto');
  t.is(mode('on'), 'on');
  t.is(mode('auto'), 'auto');
});

test('--ndp-proxy-mode refuses anything else, naming the new spellings', (t) => {
  for (const m of ['Disabled', 'off', 'always', 'yes']) {
    t.throws(() => mode(m), { name: 'InputError', message: `--ndp-proxy-mode ${m}: use Always or WhenOnLink` }, m);
  }
});
