// `sixbed4 operator` on the command line: help, and one-line errors with exit
// code 2 for what the user got wrong (no cluster needed).
import test from 'ava';
import { execFile } from 'node:child_process';
import { operatorArgv } from '../helpers/cluster.js';

function sixbed4(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...operatorArgv(), ...args],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' }, timeout: 20_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

test('--help prints the usage and exits 0', async (t) => {
  const r = await sixbed4(['--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /usage: sixbed4 operator/);
  t.regex(r.stdout, /--leader-elect/);
});

test('mistakes are one line on stderr and exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--agent-daemonset', 'Bad_Name'], /^sixbed4: --agent-daemonset 'Bad_Name' is not a DaemonSet name/],
    [['--image', 'x'], /^sixbed4: Unknown option '--image' \(see sixbed4 operator --help\)/],
    [['--bogus'], /^sixbed4: Unknown option '--bogus' \(see sixbed4 operator --help\)/],
    [['--kubeconfig', '/nonexistent/kubeconfig'], /^sixbed4: cannot load the kubeconfig \/nonexistent\/kubeconfig: /],
    [['--lease-duration', 'soon'], /^sixbed4: --lease-duration 'soon' is not a positive number of seconds/],
    [
      ['--leader-elect', '--lease-duration', '2', '--renew-deadline', '5'],
      /^sixbed4: leader election needs --retry-period < --renew-deadline < --lease-duration/,
    ],
    [['--namespace', 'Not_A_Namespace'], /^sixbed4: --namespace 'Not_A_Namespace' is not a namespace name/],
    [['--log-format', 'xml'], /^sixbed4: --log-format xml: use text, json or auto/],
  ];
  for (const [args, re] of cases) {
    const r = await sixbed4(args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, re, args.join(' '));
    t.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});
