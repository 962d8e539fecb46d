// Sharing one Docker Engine between test files (test/docker, test/slices and test/k8s may run at the same time in
// other ava workers, and test/docker/dockerd.sh keeps no count of its users): start dockerd only when no other
// dockerd.sh is starting one, build the base image only when no other base-image.sh is building it, and stop a
// daemon the tests started when the last file using it lets go and Docker has been quiet — no container, no docker
// client, no image script — for a while. A daemon the tests did not start (.ci/run's, a person's) is never stopped;
// one they started never outlives `npm test` (SIXBED4_KEEP_DOCKERD=1 keeps it).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { execCommand, type CommandResult } from '../../agent/host/command.js';

export const DOCKERD_SH = /(^|\/)dockerd\.sh$/;
export const BASE_IMAGE_SH = /(^|\/)base-image\.sh$/;
const ANY_SCRIPT = /(^|\/)(dockerd|base-image|build-image)\.sh$/;

/** Other processes running a script whose path matches re ("pid path"). */
async function scriptsRunning(re: RegExp): Promise<string[]> {
  return (await processes())
    .filter((p) => p.argv.slice(0, 3).some((a) => re.test(a)))
    .map((p) => `${p.pid} ${p.argv.slice(0, 3).join(' ')}`);
}

/** Other processes using Docker now: docker clients and the image scripts. */
async function dockerUsers(): Promise<string[]> {
  return (await processes())
    .filter((p) => p.argv[0]!.split('/').pop() === 'docker' || p.argv.slice(0, 3).some((a) => ANY_SCRIPT.test(a)))
    .map((p) => `${p.pid} ${p.argv.slice(0, 3).join(' ')}`);
}

async function processes(): Promise<{ pid: number; argv: string[] }[]> {
  const out: { pid: number; argv: string[] }[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const argv = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (argv.length > 0) out.push({ pid: Number(name), argv });
  }
  return out;
}

/** Waits until no other process runs a matching script (or the timeout passes); returns those still running. */
export async function waitForScripts(re: RegExp, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const running = await scriptsRunning(re);
    if (running.length === 0 || Date.now() > deadline) return running;
    await sleep(500);
  }
}

/** True when nothing used Docker for quietMs in a row; listContainers gives every container's id (null: cannot tell). */
export async function dockerQuiet(listContainers: () => Promise<string[] | null>, quietMs = 3000): Promise<boolean> {
  const until = Date.now() + quietMs;
  while (Date.now() < until) {
    const containers = await listContainers();
    if (containers === null || containers.length > 0) return false;
    if ((await dockerUsers()).length > 0) return false;
    await sleep(200);
  }
  return true;
}

const SCRIPTS = fileURLToPath(new URL('../../../test/docker', import.meta.url));
export const DOCKER = process.env.SIXBED4_DOCKER_CLI ?? (existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker');
/** The pid of a dockerd the tests started (dockerd.sh said "started PID"), and one file per test process using it. */
const STARTED_FILE = '/tmp/sixbed4-test-dockerd.pid';
const USERS_DIR = '/tmp/sixbed4-test-docker-users';

const alive = (pid: number): boolean => existsSync(`/proc/${pid}`);

/**
 * Makes a Docker Engine answer (test/docker/dockerd.sh: installs docker.io when missing, starts dockerd when nothing
 * answers) and counts this process among its users until releaseDocker(). Returns dockerd.sh's result.
 */
export async function ensureDocker(): Promise<CommandResult> {
  // Registered first: a file letting go at this moment then sees this one and leaves the daemon running.
  mkdirSync(USERS_DIR, { recursive: true });
  writeFileSync(`${USERS_DIR}/${process.pid}`, '');
  // Two dockerd.sh starting a daemon at once: the second daemon fails on the first's pid file.
  await waitForScripts(DOCKERD_SH, 150_000);
  let r = await execCommand(['bash', `${SCRIPTS}/dockerd.sh`], { timeoutMs: 150_000 });
  if (r.code !== 0) {
    // Another test file may have been starting its own dockerd at that moment.
    await sleep(2000);
    r = await execCommand(['bash', `${SCRIPTS}/dockerd.sh`], { timeoutMs: 150_000 });
  }
  const m = /^started (\d+)/m.exec(r.stdout);
  if (m) writeFileSync(STARTED_FILE, `${m[1]}\n`);
  return r;
}

/**
 * This process no longer uses Docker. The last user stops a dockerd the tests started, once Docker is quiet (a
 * container or client of someone else's keeps it running).
 */
export async function releaseDocker(): Promise<void> {
  rmSync(`${USERS_DIR}/${process.pid}`, { force: true });
  const others = (existsSync(USERS_DIR) ? readdirSync(USERS_DIR) : []).map(Number).filter((pid) => pid !== process.pid);
  for (const pid of others.filter((p) => !alive(p))) rmSync(`${USERS_DIR}/${pid}`, { force: true });
  if (others.some(alive) || process.env.SIXBED4_KEEP_DOCKERD === '1' || !existsSync(STARTED_FILE)) return;
  const pid = Number(readFileSync(STARTED_FILE, 'utf8').trim());
  const list = async () => {
    const r = await execCommand([DOCKER, 'ps', '-aq'], { timeoutMs: 15_000 }).catch(() => null);
    return r && r.code === 0 ? r.stdout.split('\n').filter(Boolean) : null;
  };
  if (!(await dockerQuiet(list))) return;
  await execCommand(['bash', `${SCRIPTS}/dockerd.sh`, 'stop', String(pid)], { timeoutMs: 30_000 });
  rmSync(STARTED_FILE, { force: true });
}

/**
 * What keeps network namespace `ino` alive: processes in it, holding an fd to it, or holding a mount of it in their
 * mount namespace ("pid comm: how"). For a failure message: a namespace that outlives its container names its holder.
 */
export async function netnsHolders(ino: number): Promise<string[]> {
  const tag = `net:[${ino}]`;
  const out: string[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const comm = (await readFile(`/proc/${name}/comm`, 'utf8').catch(() => '?')).trim();
    const how: string[] = [];
    if ((await readlinkOrEmpty(`/proc/${name}/ns/net`)) === tag) how.push('runs in it');
    if ((await readFile(`/proc/${name}/mountinfo`, 'utf8').catch(() => '')).includes(tag))
      how.push('a mount of it in its mount namespace');
    for (const fd of await readdir(`/proc/${name}/fd`).catch(() => [] as string[])) {
      if ((await readlinkOrEmpty(`/proc/${name}/fd/${fd}`)) === tag) how.push(`fd ${fd}`);
    }
    if (how.length) out.push(`${name} ${comm}: ${how.join(', ')}`);
  }
  return out;
}

const readlinkOrEmpty = (path: string): Promise<string> => readlink(path).catch(() => '');
