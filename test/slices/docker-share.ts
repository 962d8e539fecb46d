// Sharing one Docker Engine with other test files (test/docker/image.test.ts
// may run at the same time in another ava worker, and test/docker/dockerd.sh
// keeps no count of its users): start dockerd only when no other dockerd.sh is
// starting one, build the base image only when no other base-image.sh is
// building it, and stop a daemon this file started only after it has been
// quiet — no container, no docker client, no image script — for a while.
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export const DOCKERD_SH = /(^|\/)dockerd\.sh$/;
export const BASE_IMAGE_SH = /(^|\/)base-image\.sh$/;
const ANY_SCRIPT = /(^|\/)(dockerd|base-image|build-image)\.sh$/;

/** Other processes running a script whose path matches re ("pid path"). */
async function scriptsRunning(re: RegExp): Promise<string[]> {
  return (await processes()).filter((p) => p.argv.slice(0, 3).some((a) => re.test(a))).map((p) => `${p.pid} ${p.argv.slice(0, 3).join(' ')}`);
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
