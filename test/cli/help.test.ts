// `sixbed4 COMMAND --help` prints that command's help only, and a flag mistake names that help (cli/command.ts).
// No root: nothing starts.
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const MAIN = fileURLToPath(new URL('../../cli/main.js', import.meta.url));

async function sixbed4(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [MAIN, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test("sixbed4 peer --help prints the peer's flags and none of the router's", async (t) => {
  const r = await sixbed4(['peer', '--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /^usage: sixbed4 peer \[flags\]\n/);
  t.regex(r.stdout, /--router IPV4\[:PORT\]/);
  t.regex(r.stdout, /--log-format text\|json\|auto/);
  t.notRegex(r.stdout, /--prefix P|--kubeconfig|install\|uninstall/);
});

for (const [command, own, other] of [
  ['router', /--listen IPV4/, /--keepalive S/],
  ['lab', /--keep S/, /--router IPV4/],
  ['agent', /--node NAME/, /--leader-elect/],
  ['operator', /--leader-elect/, /--node NAME/],
  ['cni', /--cni-bin-dir/, /--listen IPV4/],
  ['host', /plan\|apply\|revert/, /--keepalive S/],
] as const) {
  test(`sixbed4 ${command} --help prints its own help, exit 0`, async (t) => {
    const r = await sixbed4([command, '--help']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`^usage: sixbed4 ${command}`));
    t.regex(r.stdout, own);
    t.notRegex(r.stdout, other);
  });

  test(`sixbed4 ${command} with an unknown flag: one line naming its help, exit 2`, async (t) => {
    const r = await sixbed4(command === 'cni' ? ['cni', 'install', '--bogus'] : [command, '--bogus']);
    t.is(r.code, 2);
    t.is(r.stderr, `sixbed4: Unknown option '--bogus' (see sixbed4 ${command} --help)\n`);
  });
}

test('sixbed4 --help lists every command, each with its flags', async (t) => {
  const r = await sixbed4(['--help']);
  t.is(r.code, 0);
  for (const c of ['router', 'peer', 'lab', 'host', 'operator', 'agent', 'cni', 'status', 'version']) {
    t.regex(r.stdout, new RegExp(`^  ${c} +\\S`, 'm'), c);
  }
  t.regex(r.stdout, /--router IPV4\[:PORT\]/);
  t.regex(r.stdout, /--listen IPV4/);
});

test('a --log-format that is none of text, json, auto is refused by every command that logs, before it starts', async (t) => {
  for (const args of [
    ['router'],
    ['peer'],
    ['lab'],
    ['operator'],
    ['host', 'plan'],
    ['agent', '--node', 'n', '--namespace', 'ns'],
  ]) {
    const r = await sixbed4([...args, '--log-format', 'xml']);
    t.is(r.code, 2, args[0]);
    t.is(r.stderr, 'sixbed4: --log-format xml: use text, json or auto\n', args[0]);
  }
});

test('sixbed4 router --fast-path-xdp: auto or off, in its help; another word refused before anything starts, exit 2', async (t) => {
  const help = await sixbed4(['router', '--help']);
  t.regex(help.stdout, /--fast-path-xdp auto\|off +with the fast path, decapsulate peers' datagrams at the uplink\n/);
  const r = await sixbed4(['router', '-L', '2001:db8:9:10::/64', '-l', '198.51.100.1', '--fast-path-xdp', 'on']);
  t.is(r.code, 2);
  t.is(r.stderr, 'sixbed4: --fast-path-xdp on: use auto or off\n');
});
