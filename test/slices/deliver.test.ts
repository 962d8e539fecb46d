// Slice delivery on a real kernel (issue 6, delivery half): a /112 slice put
// into a pod's network namespace, found from the pod UID alone.
//
// - Discovery through /proc: "pod" processes in kubelet-like cgroups
//   (systemd and cgroupfs layouts), a hostNetwork pod, an unknown pod.
// - End to end in the reference topology: the router namespace plays the
//   node, running our 6bed4 router; the "pod" is a namespace behind a veth
//   made by the slice agent (run-slices.js, a fresh process per run like an
//   agent restart). isp pings the slice natively, a 6bed4 peer behind the NAT
//   through the tunnel; re-delivery changes nothing (ip -j before and after);
//   release removes the veth, the route and the pod's rule.
// - A pod with its own IPv6 default route (dual-stack CNI): replies from the
//   slice still leave through the slice's veth.
// - A real Docker container labelled like a Kubernetes pod: found through the
//   Docker API, given its slice from the router namespace (never the root
//   namespace's routing); deleting the container removes veth and route.
//
// Root only (skips with the reason otherwise). The Docker case also skips
// with SIXBED4_SKIP_DOCKER=1 or without a docker binary; when dockerd cannot
// be started it fails under CI (CI=true) and outside it asks for
// SIXBED4_SKIP_DOCKER=1. It starts dockerd lazily (test/docker/dockerd.sh),
// as the last test; the last test file using a dockerd the tests started
// stops it (test/helpers/docker.ts).
import test, { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { execCommand, runCommand } from '../../agent/host/command.js';
import { ipJsonIn } from '../../agent/host/ip.js';
import { findSystemTool } from '../../agent/host/tools.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { Proc } from '../../lab/proc.js';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { buildTopology, requireRootReason, TOPO, type Topology } from '../../lab/topology.js';
import { ProcLocator } from '../../agent/slices/podns.js';
import { parseSlice } from '../../agent/slices/slice.js';
import { BASE_IMAGE_SH, DOCKER, ensureDocker, netnsHolders, releaseDocker, waitForScripts } from '../helpers/docker.js';
import { FakePodCgroup, runSlices, snapshot, waitInNetns, type ReconcileOut } from './fakepod.js';

const rootReason =
  requireRootReason() ?? (findSystemTool('nsenter') ? null : 'missing command nsenter (install util-linux)');
const cgroupReason = rootReason ? null : await FakePodCgroup.unavailable();
const title = (s: string, reason: string | null = rootReason) => (reason ? `${s} [skipped: ${reason}]` : s);
const serial = (reason: string | null) => (reason ? test.serial.skip : test.serial);

const SLICE = parseSlice('2001:db8:9:10:1:1:0:0/112');
const ADDR = '2001:db8:9:10:1:1:0:1';
const nsPath = (ns: Netns) => `/run/netns/${ns.name}`;

/** A "pod": a namespace with a process in a kubelet-like cgroup of the pod's UID. */
async function startPod(t: ExecutionContext, tag: string, layout: 'systemd' | 'cgroupfs' = 'systemd') {
  const uid = randomUUID();
  const ns = await Netns.create(uniqueName(tag));
  t.teardown(() => ns.destroy());
  const holder = ns.spawn(['sleep', 'infinity']);
  await waitInNetns(holder.pid!, nsPath(ns));
  const cg = await FakePodCgroup.create(layout, uid, ns.name);
  // Registered after ns.destroy, so it runs first (teardowns run last-in first-out).
  t.teardown(async () => {
    await holder.stop('SIGKILL');
    await cg.destroy();
  });
  await cg.add(holder.pid!);
  return { uid, ns, holder, cg };
}

async function topology(t: ExecutionContext, tag: string, nat: boolean): Promise<Topology> {
  const topo = await buildTopology({ tag, nat });
  t.teardown(() => topo.destroy());
  return topo;
}

const want = (uid: string) => ({ slice: SLICE.text, podUid: uid, podName: 'web-0', namespace: 'demo' });

serial(rootReason ?? cgroupReason)(
  title(
    'discovery through /proc: systemd and cgroupfs cgroups, a hostNetwork pod, an unknown pod',
    rootReason ?? cgroupReason,
  ),
  async (t) => {
    const a = await startPod(t, 'slcd', 'cgroupfs');
    const b = await startPod(t, 'slcd', 'systemd');
    t.log(
      `cgroups: ${a.cg.leaf.replace(/\/c{64}$/, '/…')} and ${b.cg.leaf.replace(/\/cri-containerd-c{64}\.scope$/, '/…')}`,
    );
    // A pod whose process stays in this (the "node's") namespace.
    const hostUid = randomUUID();
    const hostProc = new Proc(['sleep', 'infinity']);
    const hostPid = hostProc.pid;
    if (hostPid === undefined) throw new Error('cannot start sleep');
    const hostCg = await FakePodCgroup.create('systemd', hostUid, `${a.ns.name}-h`);
    t.teardown(async () => {
      await hostProc.stop('SIGKILL');
      await hostCg.destroy();
    });
    await hostCg.add(hostPid);

    const locator = new ProcLocator();
    for (const pod of [a, b]) {
      const r = await locator.find(pod.uid.toUpperCase());
      if (r.kind !== 'found') {
        t.fail(`${pod.uid}: ${r.kind}: ${r.reason}`);
        continue;
      }
      t.is(r.netns.pid, pod.holder.pid ?? -1);
      t.is(r.netns.source, 'proc');
      t.is(r.netns.id.ino, (await stat(nsPath(pod.ns))).ino, "the pod's own namespace");
      t.is((await stat(r.netns.path)).ino, r.netns.id.ino, 'the handle path names it');
      // The handle works where iproute2 and nsenter need it.
      const links = await ipJsonIn<{ ifname: string }[]>({ path: r.netns.path }, ['link', 'show']);
      t.deepEqual(
        links.map((l) => l.ifname),
        ['lo'],
      );
      await r.netns.close();
    }
    const h = await locator.find(hostUid);
    t.is(h.kind, 'hostNetwork', JSON.stringify(h));
    const n = await locator.find(randomUUID());
    t.is(n.kind, 'notFound');
    t.regex((n as { reason: string }).reason, /no running process of pod .* found by cgroup/);
  },
);

serial(rootReason ?? cgroupReason)(
  title(
    'end to end: a slice in a pod behind the router; isp natively and a NATed 6bed4 peer through the tunnel reach it; re-delivery changes nothing; release removes all',
    rootReason ?? cgroupReason,
  ),
  async (t) => {
    t.timeout(120_000);
    const topo = await topology(t, 'slce', true);
    const pod = await startPod(t, 'slce');
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4]);

    // 1. Delivery: two passes in one agent process (the second only checks).
    const first = await runSlices<ReconcileOut>(topo.router, 'reconcile', {
      passes: [[want(pod.uid)], [want(pod.uid)]],
      docker: false,
      prefix: TOPO.prefix,
    });
    t.log(
      first.log
        .trim()
        .split('\n')
        .filter((l) => / (ip|nsenter) /.test(l))
        .map((l) => l.replace(/^\S+ \S+ \[slices\] /, ''))
        .join('\n'),
    );
    const [p1, p2] = first.out.passes;
    t.like(p1!.statuses[0], {
      slice: SLICE.text,
      hostIf: SLICE.hostIf,
      state: 'delivered',
      outcome: 'created',
      via: 'proc',
      address: ADDR,
    });
    t.like(p2!.statuses[0], { state: 'delivered', outcome: 'unchanged' });
    t.deepEqual(first.out.proxy, [`add ${ADDR}`], 'the neighbour proxy hears of the address once');

    const podAddrs = await pod.ns.json<{ ifname: string; addr_info: { local: string; prefixlen: number }[] }[]>([
      '-6',
      'addr',
      'show',
      'dev',
      'eth6',
    ]);
    t.true(
      podAddrs[0]!.addr_info.some((a) => a.local === ADDR && a.prefixlen === 112),
      JSON.stringify(podAddrs),
    );
    const route = await topo.router.json<{ dst: string; dev: string }[]>(['-6', 'route', 'show', 'exact', SLICE.text]);
    t.deepEqual(
      route.map((r) => [r.dst, r.dev]),
      [[SLICE.text, SLICE.hostIf]],
    );

    // 2. Native IPv6: the ISP reaches the pod, and the pod the ISP.
    const fromIsp = await ping6(topo.isp, ADDR, { count: 3 });
    t.is(fromIsp.received, 3, fromIsp.output);
    const toIsp = await ping6(pod.ns, TOPO.ispV6, { count: 2 });
    t.is(toIsp.received, 2, toIsp.output);

    // 3. Through the tunnel: a peer behind the NAT, all IPv6 through its 6bed4 tunnel.
    const peer = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    t.log(`peer A: ${peer.address}`);
    const fromPeer = await ping6(topo.peers.A, ADDR, { count: 3 });
    t.is(fromPeer.received, 3, fromPeer.output);

    // 4. Agent restart: a new process re-delivers and touches nothing.
    const before = await snapshot(topo.router, SLICE.hostIf, pod.ns);
    const again = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[want(pod.uid)]], docker: false });
    t.like(again.out.passes[0]!.statuses[0], { state: 'delivered', outcome: 'unchanged' });
    t.notRegex(again.log, / (ip|nsenter) .*(add|replace|del|set) /, 'no command that changes anything');
    t.deepEqual(await snapshot(topo.router, SLICE.hostIf, pod.ns), before);

    // 5. Release: the slice is no longer wanted here.
    const rel = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[]], docker: false });
    t.like(rel.out.passes[0]!.statuses[0], {
      slice: SLICE.text,
      state: 'released',
      reason: 'no longer allocated to this node',
    });
    t.deepEqual(await topo.router.json(['-6', 'route', 'show', 'exact', SLICE.text]), []);
    t.false(
      (await topo.router.json<{ ifname: string }[]>(['link', 'show'])).some((l) => l.ifname === SLICE.hostIf),
      'host end gone',
    );
    t.deepEqual(
      (await pod.ns.json<{ ifname: string }[]>(['link', 'show'])).map((l) => l.ifname),
      ['lo'],
      'pod end gone',
    );
    t.false(
      (await pod.ns.json<{ priority: number }[]>(['-6', 'rule', 'show'])).some((r) => r.priority === 25790),
      'pod rule gone',
    );
    const gone = await ping6(topo.isp, ADDR, { count: 1, timeoutS: 1 });
    t.is(gone.received, 0);
  },
);

serial(rootReason ?? cgroupReason)(
  title(
    "a pod with its own IPv6 default route (dual-stack CNI) keeps it, and replies from the slice still leave through the slice's veth",
    rootReason ?? cgroupReason,
  ),
  async (t) => {
    t.timeout(60_000);
    const topo = await topology(t, 'slcs', false);
    const pod = await startPod(t, 'slcs');
    // The CNI's interface: a default route via a gateway that never answers.
    await pod.ns.ipBatch([
      'link add eth0 type veth peer name cni0',
      'link set dev eth0 up',
      'link set dev cni0 up',
      'addr add 2001:db8:cafe::2/64 dev eth0 nodad',
      'route add default via 2001:db8:cafe::1 dev eth0',
    ]);
    const r = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[want(pod.uid)]], docker: false });
    t.like(r.out.passes[0]!.statuses[0], { state: 'delivered', outcome: 'created' });
    const defaults = await pod.ns.json<{ gateway: string; dev: string }[]>(['-6', 'route', 'show', 'default']);
    t.deepEqual(
      defaults.map((d) => [d.gateway, d.dev]),
      [['2001:db8:cafe::1', 'eth0']],
      "the CNI's default route is untouched",
    );
    const fromIsp = await ping6(topo.isp, ADDR, { count: 3 });
    t.is(fromIsp.received, 3, fromIsp.output);
    const bound = await pod.ns.exec(['ping', '-6', '-n', '-c', '2', '-i', '0.2', '-W', '2', '-I', ADDR, TOPO.ispV6], {
      timeoutMs: 20_000,
    });
    t.is(bound.code, 0, `the pod, from its slice address, reaches isp: ${bound.stdout}${bound.stderr}`);

    const rel = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[]], docker: false });
    t.like(rel.out.passes[0]!.statuses[0], { state: 'released' });
    t.false(
      (await pod.ns.json<{ priority: number }[]>(['-6', 'rule', 'show'])).some((x) => x.priority === 25790),
      'pod rule gone',
    );
    t.deepEqual(
      (await pod.ns.json<{ gateway: string }[]>(['-6', 'route', 'show', 'default'])).map((d) => d.gateway),
      ['2001:db8:cafe::1'],
    );
  },
);

serial(rootReason ?? cgroupReason)(
  title(
    'a slice that moves to another pod; a missing route is put back alone; a foreign eth6 and a hostNetwork pod are refused with reasons',
    rootReason ?? cgroupReason,
  ),
  async (t) => {
    t.timeout(60_000);
    const topo = await topology(t, 'slcm', false);
    const [pod1, pod2, pod3] = [await startPod(t, 'slcm'), await startPod(t, 'slcm'), await startPod(t, 'slcm')];
    const first = await runSlices<ReconcileOut>(topo.router, 'reconcile', {
      passes: [[want(pod1.uid)]],
      docker: false,
    });
    t.like(first.out.passes[0]!.statuses[0], { state: 'delivered', outcome: 'created' });

    // pod3 already has an eth6 of its own; a hostNetwork pod runs in the node's namespace.
    await pod3.ns.ip(['link', 'add', 'eth6', 'type', 'veth', 'peer', 'name', 'x0']);
    const S2 = parseSlice('2001:db8:9:10:1:2::/112');
    const S3 = parseSlice('2001:db8:9:10:1:3::/112');
    const hostUid = randomUUID();
    const hostProc = topo.router.spawn(['sleep', 'infinity']);
    await waitInNetns(hostProc.pid!, nsPath(topo.router));
    const hostCg = await FakePodCgroup.create('cgroupfs', hostUid, `${topo.router.name}-h`);
    t.teardown(async () => {
      await hostProc.stop('SIGKILL');
      await hostCg.destroy();
    });
    await hostCg.add(hostProc.pid!);

    const moved = await runSlices<ReconcileOut>(topo.router, 'reconcile', {
      passes: [[want(pod2.uid), { slice: S2.text, podUid: pod3.uid }, { slice: S3.text, podUid: hostUid }]],
      docker: false,
    });
    const st = moved.out.passes[0]!.statuses;
    t.like(
      st.find((s) => s.state === 'released'),
      { slice: SLICE.text, reason: `slice moved from pod ${pod1.uid} to ${pod2.uid}` },
    );
    t.like(
      st.find((s) => s.slice === SLICE.text && s.state !== 'released'),
      { state: 'delivered', outcome: 'created' },
    );
    t.like(
      st.find((s) => s.slice === S2.text),
      { state: 'failed' },
    );
    t.regex(st.find((s) => s.slice === S2.text)!.reason!, /already has an interface named eth6 that is not sixbed4's/);
    t.like(
      st.find((s) => s.slice === S3.text),
      { state: 'hostNetwork' },
    );
    t.deepEqual(
      (await pod1.ns.json<{ ifname: string }[]>(['link', 'show'])).map((l) => l.ifname),
      ['lo'],
      'the old pod lost its end',
    );
    t.false(
      (await pod1.ns.json<{ priority: number }[]>(['-6', 'rule', 'show'])).some((r) => r.priority === 25790),
      'and its rule',
    );
    const links = (await topo.router.json<{ ifname: string }[]>(['link', 'show'])).map((l) => l.ifname);
    t.true(links.includes(SLICE.hostIf));
    t.false(links.includes(S2.hostIf), 'nothing left of the refused delivery');
    t.false(links.includes(S3.hostIf));
    const ping = await ping6(topo.isp, ADDR, { count: 2 });
    t.is(ping.received, 2, ping.output);

    // Someone deletes the node's route: the next pass puts back that and only that.
    await topo.router.ip(['-6', 'route', 'del', SLICE.text]);
    const repaired = await runSlices<ReconcileOut>(topo.router, 'reconcile', {
      passes: [[want(pod2.uid)]],
      docker: false,
    });
    t.like(repaired.out.passes[0]!.statuses[0], { state: 'delivered', outcome: 'repaired' });
    t.deepEqual(
      repaired.log
        .split('\n')
        .filter((l) => / ip /.test(l) && !/ repaired: /.test(l))
        .map((l) => /\] (ip [^=]*?) \w+=/.exec(l)?.[1]),
      [`ip -6 route replace ${SLICE.text} dev ${SLICE.hostIf}`],
    );
    const again = await ping6(topo.isp, ADDR, { count: 2 });
    t.is(again.received, 2, again.output);
  },
);

// ---------------------------------------------------------------------------
// Docker

const SCRIPTS = fileURLToPath(new URL('../../../test/docker', import.meta.url));
const BASE_IMAGE = process.env.BASE_IMAGE ?? 'sixbed4-base:bookworm';
const isCI = process.env.CI === 'true' || process.env.CI === '1';
const dockerReason =
  rootReason ??
  (process.env.SIXBED4_SKIP_DOCKER === '1'
    ? 'SIXBED4_SKIP_DOCKER=1'
    : findSystemTool('dockerd') || findSystemTool('apt-get')
      ? null
      : 'no dockerd and no apt-get to install docker.io');
let usedDocker = false;
const ourContainers = new Set<string>();

test.after.always(async () => {
  if (ourContainers.size)
    await execCommand([DOCKER, 'rm', '-f', ...ourContainers], { timeoutMs: 30_000 }).catch(() => undefined);
  if (usedDocker) await releaseDocker();
});

/** Starts dockerd if needed and makes the base image; throws with the reason otherwise. */
async function prepareDocker(): Promise<void> {
  usedDocker = true;
  const r = await ensureDocker();
  if (r.code !== 0) {
    throw new Error(
      `no Docker Engine: test/docker/dockerd.sh failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-1500)}` +
        (isCI ? '' : '\n(set SIXBED4_SKIP_DOCKER=1 to skip the Docker case on this machine)'),
    );
  }
  // base-image.sh is quick when the image is current; a cold build (debootstrap) takes minutes.
  // A cold build by another test file (image.test.ts) makes the same image: wait for it rather than debootstrap twice.
  await waitForScripts(BASE_IMAGE_SH, 19 * 60_000);
  const b = await execCommand(['bash', `${SCRIPTS}/base-image.sh`], { timeoutMs: 19 * 60_000 });
  if (b.code !== 0) throw new Error(`test/docker/base-image.sh failed (${b.code}): ${b.stderr.slice(-3000)}`);
}

serial(dockerReason)(
  title(
    'a Docker container labelled like a Kubernetes pod gets its slice from the router namespace; isp reaches it; deleting the container removes veth and route',
    dockerReason,
  ),
  async (t) => {
    t.timeout(25 * 60_000, 'starting dockerd, maybe a cold base image build (not counted in the test time)');
    await prepareDocker();
    t.timeout(120_000);
    const topo = await topology(t, 'slck', false);
    const uid = randomUUID();
    const name = uniqueName('slck');
    ourContainers.add(name);
    t.teardown(async () => {
      await execCommand([DOCKER, 'rm', '-f', name], { timeoutMs: 30_000 });
      ourContainers.delete(name);
    });
    await runCommand(
      [
        DOCKER,
        'run',
        '-d',
        '--name',
        name,
        '--network',
        'none',
        '--label',
        `io.kubernetes.pod.uid=${uid}`,
        '--label',
        'io.kubernetes.pod.name=web-0',
        '--label',
        'io.kubernetes.pod.namespace=demo',
        '--label',
        'io.kubernetes.container.name=POD',
        '--entrypoint',
        'sleep',
        BASE_IMAGE,
        'infinity',
      ],
      { timeoutMs: 60_000 },
    );
    const pid = Number((await runCommand([DOCKER, 'inspect', '-f', '{{.State.Pid}}', name])).trim());
    t.true(pid > 0);

    // Not a kubelet cgroup, so /proc does not know it; the Docker API does.
    const viaProc = await runSlices<{ kind: string }>(topo.router, 'find', { podUid: uid, docker: false });
    t.is(viaProc.out.kind, 'notFound');
    const found = await runSlices<{ kind: string; pid: number; source: string }>(topo.router, 'find', {
      podUid: uid,
      docker: true,
    });
    t.deepEqual(found.out, { ...found.out, kind: 'found', pid, source: 'docker' });

    const r = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[{ ...want(uid) }]], docker: true });
    t.like(r.out.passes[0]!.statuses[0], { state: 'delivered', outcome: 'created', via: 'docker' });
    // What the container itself sees.
    const inside = await runCommand([DOCKER, 'exec', name, 'ip', '-j', '-6', 'addr', 'show', 'dev', 'eth6']);
    t.true(
      (JSON.parse(inside) as { addr_info: { local: string }[] }[])[0]!.addr_info.some((a) => a.local === ADDR),
      inside,
    );
    const fromIsp = await ping6(topo.isp, ADDR, { count: 3 });
    t.is(fromIsp.received, 3, fromIsp.output);

    // Re-delivery leaves the container's network as it is.
    const podView = { json: <T>(args: string[]) => ipJsonIn<T>({ path: `/proc/${pid}/ns/net` }, args) };
    const before = await snapshot(topo.router, SLICE.hostIf, podView);
    const again = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[want(uid)]], docker: true });
    t.like(again.out.passes[0]!.statuses[0], { state: 'delivered', outcome: 'unchanged' });
    t.deepEqual(await snapshot(topo.router, SLICE.hostIf, podView), before);

    // The pod is deleted: its namespace goes, and the kernel takes the veth and the route with it. Whatever still holds
    // the namespace then (a process in it, an fd, a copy of Docker's bind mount in another mount namespace: see
    // test/docker/dockerd.sh) would leak the veth on a node too; the failure names it.
    const podNetns = (await stat(`/proc/${pid}/ns/net`)).ino;
    await runCommand([DOCKER, 'rm', '-f', name], { timeoutMs: 30_000 });
    ourContainers.delete(name);
    const deadline = Date.now() + 10_000;
    while (
      (await topo.router.json<{ ifname: string }[]>(['link', 'show'])).some((l) => l.ifname === SLICE.hostIf) &&
      Date.now() < deadline
    )
      await sleep(50);
    const hostEndLeft = (await topo.router.json<{ ifname: string }[]>(['link', 'show'])).some(
      (l) => l.ifname === SLICE.hostIf,
    );
    t.false(
      hostEndLeft,
      `host end gone with the pod${hostEndLeft ? `; net:[${podNetns}] held by: ${(await netnsHolders(podNetns)).join('; ') || 'nothing found'}` : ''}`,
    );
    t.deepEqual(await topo.router.json(['-6', 'route', 'show', 'exact', SLICE.text]), [], 'route gone with it');
    // Until the allocation lets go of it, the slice waits for a pod to put it in.
    const after = await runSlices<ReconcileOut>(topo.router, 'reconcile', { passes: [[want(uid)]], docker: true });
    t.like(after.out.passes[0]!.statuses[0], { state: 'pending' });
    t.regex(
      after.out.passes[0]!.statuses[0]!.reason ?? '',
      /no running process of pod .* found by (cgroup|Docker label)/,
    );
    t.deepEqual(after.out.proxy, []);
  },
);
