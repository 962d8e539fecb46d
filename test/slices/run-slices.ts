// The slice half of the node agent as a process, for tests that run it inside
// a namespace playing the node (the lead wires reconcileSlices into the
// agent; until then this is its only process). Each run is a fresh process,
// which is what an agent restart looks like.
//
//   run-slices.js find JSON       {"podUid": "..."}                 -> {"kind", "pid", "ino", "source", "reason"}
//   run-slices.js reconcile JSON  {"passes": [[DesiredSlice...], ...], "prefix"?: "...", "docker"?: bool}
//                                 -> {"passes": [{"plan", "statuses"}], "proxy": ["add ADDR", "remove ADDR", ...]}
// Logs go to stderr.
import { createLogger } from '../../lib/log.js';
import { formatIPv6, parsePrefix64 } from '../../lib/ip.js';
import { SliceDeliverer, type NeighbourProxy } from '../../agent/slices/deliver.js';
import { defaultLocator, DockerLocator, firstLocator, ProcLocator, type PodLocator } from '../../agent/slices/podns.js';
import { reconcileSlices, type DesiredSlice } from '../../agent/slices/reconcile.js';

const [command, json] = process.argv.slice(2);
const input = JSON.parse(json ?? '{}') as {
  podUid?: string;
  passes?: DesiredSlice[][];
  prefix?: string;
  docker?: boolean;
};
const log = createLogger({ component: 'slices', format: 'text', level: process.env.SIXBED4_LOG_LEVEL ?? 'info' });

// Docker only when asked: a test that means the /proc path must not pass by the other one.
const locator = (): PodLocator =>
  input.docker
    ? firstLocator([new ProcLocator(), new DockerLocator()])
    : input.docker === false
      ? new ProcLocator()
      : defaultLocator();

if (command === 'find') {
  const r = await locator().find(input.podUid!);
  if (r.kind === 'found') {
    process.stdout.write(
      JSON.stringify({ kind: r.kind, pid: r.netns.pid, ino: r.netns.id.ino, source: r.netns.source }) + '\n',
    );
    await r.netns.close();
  } else {
    process.stdout.write(JSON.stringify(r) + '\n');
  }
} else if (command === 'reconcile') {
  const calls: string[] = [];
  const proxy: NeighbourProxy = {
    add: (a) => calls.push(`add ${formatIPv6(a)}`),
    remove: (a) => calls.push(`remove ${formatIPv6(a)}`),
  };
  const deliverer = new SliceDeliverer({ log, proxy });
  const passes = [];
  for (const desired of input.passes ?? [[]]) {
    passes.push(
      await reconcileSlices(desired, {
        deliverer,
        locator: locator(),
        log,
        ...(input.prefix ? { prefix: parsePrefix64(input.prefix) } : {}),
      }),
    );
  }
  // Slices are plain data but carry byte arrays; print their text only.
  process.stdout.write(
    JSON.stringify({ passes, proxy: calls }, (k, v: unknown) =>
      k === 'slice' && v && typeof v === 'object' && 'text' in v ? (v as { text: string }).text : v,
    ) + '\n',
  );
} else {
  process.stderr.write(`usage: run-slices.js find|reconcile JSON\n`);
  process.exit(2);
}
