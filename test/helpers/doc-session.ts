// Runs a documentation page's terminal sessions as written and compares what they print with what the page shows,
// so the walk-through a user copies cannot drift from what works (#16).
//
// A session is a ```console block right after a marker line `<!-- session: NAME -->`. Lines starting with `$ ` are
// commands (a heredoc's lines follow up to its terminator); the lines after a command, up to the next `$ `, are what
// it prints (stdout and stderr together). The comparison is on meaning, not layout:
// - runs of spaces are one space (kubectl pads columns to their content);
// - ages (`42s`, `3m12s`, `2d`) are equal to each other, and so are timestamps (`2026-11-28T09:45:26Z`);
// - a line `...` stands for any number of lines (an excerpt of a long output);
// - a command may fail only if the page shows its message (a refused object is part of the walk-through).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface DocCommand {
  script: string;
  expected: string[];
}

/** The commands of session `name` in the page at `file`, in order; throws when the page has no such session. */
export function readSession(file: string, name: string): DocCommand[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const at = lines.findIndex((l) => l.trim() === `<!-- session: ${name} -->`);
  if (at < 0) throw new Error(`${file} has no session "${name}"`);
  if (lines[at + 1]?.trim() !== '```console')
    throw new Error(`${file}: session "${name}" must be followed by a \`\`\`console block`);
  const body: string[] = [];
  for (let i = at + 2; i < lines.length && lines[i]!.trim() !== '```'; i++) body.push(lines[i]!);
  const cmds: DocCommand[] = [];
  for (let i = 0; i < body.length;) {
    const line = body[i]!;
    if (!line.startsWith('$ '))
      throw new Error(`${file}: session "${name}" has output before its first command: ${line}`);
    const script = [line.slice(2)];
    const heredoc = /<<-?'?(\w+)'?/.exec(line)?.[1];
    i++;
    if (heredoc) {
      while (i < body.length && body[i]!.trim() !== heredoc) script.push(body[i++]!);
      script.push(body[i++] ?? heredoc);
    }
    const expected: string[] = [];
    while (i < body.length && !body[i]!.startsWith('$ ')) expected.push(body[i++]!);
    while (expected.length && expected.at(-1)!.trim() === '') expected.pop();
    cmds.push({ script: script.join('\n'), expected });
  }
  return cmds;
}

const AGE = /^\d+[smhd](\d+[smh])?$/;
const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
/** A line as compared: words split on runs of spaces, ages made equal, and so are timestamps. */
const norm = (line: string) =>
  line
    .trim()
    .split(/\s+/)
    .map((w) => (AGE.test(w) ? '<age>' : TIME.test(w) ? '<time>' : w))
    .join(' ');

/** Why `actual` is not what `expected` shows (null when it is): in order, `...` skipping any lines. */
export function mismatch(expected: readonly string[], actual: string): string | null {
  const got = actual.split('\n').map(norm);
  while (got.length && got.at(-1) === '') got.pop();
  const want = expected.map(norm);
  // Chunks of consecutive lines between the `...` lines, each found in order after the last.
  const chunks: string[][] = [[]];
  for (const w of want)
    if (w === '...') chunks.push([]);
    else chunks.at(-1)!.push(w);
  const openStart = want[0] === '...',
    openEnd = want.at(-1) === '...';
  let pos = 0;
  for (let c = 0; c < chunks.length; c++) {
    const chunk = chunks[c]!;
    if (!chunk.length) continue;
    const anchoredStart = c === 0 && !openStart;
    const anchoredEnd = c === chunks.length - 1 && !openEnd;
    let found = -1;
    for (let i = pos; i + chunk.length <= got.length; i++) {
      if (anchoredStart && i !== 0) break;
      if (chunk.every((w, k) => w === got[i + k])) {
        found = i;
        if (!anchoredEnd || i + chunk.length === got.length) break;
        found = -1;
      }
    }
    if (found < 0)
      return `expected${anchoredStart ? ' at the start' : ''}${anchoredEnd ? ' at the end' : ''}:\n  ${chunk.join('\n  ')}\nafter line ${pos} of the output`;
    pos = found + chunk.length;
  }
  if (!want.length && got.length) return 'the page shows no output';
  return null;
}

export interface SessionRun {
  script: string;
  output: string;
  code: number;
}

/**
 * Runs each command of a session with bash in `cwd` and `env` (one bash per command, as a user types them) and
 * throws with the command, what it printed and what the page shows at the first difference.
 */
export async function runSession(
  cmds: readonly DocCommand[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<SessionRun[]> {
  const runs: SessionRun[] = [];
  for (const c of cmds) {
    const r = await new Promise<SessionRun>((resolve) => {
      // 2>&1 inside the shell keeps stdout and stderr in the order the user's terminal shows them.
      execFile(
        'bash',
        ['-c', `{ ${c.script}\n} 2>&1`],
        { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 360_000, maxBuffer: 8 << 20 },
        (err, stdout) =>
          resolve({ script: c.script, output: stdout, code: err ? (typeof err.code === 'number' ? err.code : 1) : 0 }),
      );
    });
    runs.push(r);
    const why = mismatch(c.expected, r.output);
    const failedUnshown = r.code !== 0 && !c.expected.some((l) => l.trim() !== '' && l.trim() !== '...');
    if (why || failedUnshown) {
      throw new Error(
        `$ ${c.script}\nexit ${r.code}; printed:\n${r.output}\nthe page shows:\n${c.expected.join('\n')}\n${why ?? 'it failed, and the page shows no message'}`,
      );
    }
  }
  return runs;
}
