// The images a real node runs, made locally (no registry is reachable): the sixbed4 image from this checkout
// (test/docker/build-image.sh) and a sandbox ("pause") image, a `sleep infinity` on the same local base. Saved into
// one archive that each node's containerd imports.
import { join } from 'node:path';
import { execCommand, runCommand } from '../../agent/host/command.js';
import { repoRoot } from './controlplane.js';
import { ensureDocker } from '../helpers/docker.js';

export interface NodeImages {
  /** what pods name: repository and tag of the sixbed4 image */
  repository: string;
  tag: string;
  /** the sandbox image as containerd names it */
  sandbox: string;
  /** `docker save` archive of both */
  archive: string;
}

const DOCKER = '/usr/bin/docker';
const BASE_IMAGE = 'sixbed4-base:bookworm';

/** Builds (layer cache: seconds when nothing changed) and saves the images into dir/images.tar. */
export async function buildNodeImages(tag: string, dir: string): Promise<NodeImages> {
  const root = repoRoot();
  // Started (when none answers) and counted here, so that the last test file using it stops it again: build-image.sh
  // alone would start one and leave it running after the tests.
  const docker = await ensureDocker();
  if (docker.code !== 0)
    throw new Error(
      `no Docker Engine: test/docker/dockerd.sh failed: ${(docker.stderr || docker.stdout).slice(-1500)}`,
    );
  const built = await execCommand(['bash', join(root, 'test/docker/build-image.sh'), `sixbed4:${tag}`], {
    timeoutMs: 900_000,
  });
  if (built.code !== 0)
    throw new Error(`test/docker/build-image.sh sixbed4:${tag} failed:\n${built.stderr.slice(-3000)}`);
  // The classic builder, as the scripts use (no buildx here).
  await runCommand([DOCKER, 'build', '-q', '--network', 'none', '-t', `sixbed4-pause:${tag}`, '-'], {
    input: `FROM ${BASE_IMAGE}\nENTRYPOINT ["/bin/sleep", "infinity"]\n`,
    env: { DOCKER_BUILDKIT: '0' },
    timeoutMs: 120_000,
  });
  const archive = join(dir, 'images.tar');
  await runCommand([DOCKER, 'save', '-o', archive, `sixbed4:${tag}`, `sixbed4-pause:${tag}`], { timeoutMs: 300_000 });
  return { repository: 'sixbed4', tag, sandbox: `docker.io/library/sixbed4-pause:${tag}`, archive };
}

/** A second tag of the same image, saved alone (an upgrade that changes only the tag). */
export async function retagImage(from: string, to: string, dir: string): Promise<string> {
  await runCommand([DOCKER, 'tag', `sixbed4:${from}`, `sixbed4:${to}`]);
  const archive = join(dir, `image-${to}.tar`);
  await runCommand([DOCKER, 'save', '-o', archive, `sixbed4:${to}`], { timeoutMs: 300_000 });
  return archive;
}
