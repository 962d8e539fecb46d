// /112 slices on a real node: kube-apiserver, etcd, kube-controller-manager and kube-scheduler, one node running
// containerd + runc + the CNI reference plugins (bridge) + kubelet in a network namespace of the lab topology
// (test/k8s/nodelab.ts), the chart installed by helm with agent.slices=true. The agent's init container installs
// sixbed4-cni into the node's CNI directories and chains it into the node's pod network list; from then on the
// runtime calls it for every pod sandbox.
//
// What a user sees: a pod that asks has its address before its container starts (the container's first act is to
// bind it, and it never restarts); the ISP reaches it on the port it opened and not on another; a pod that did not
// ask is untouched; deleting the pod takes the veth, routes and filter away and releases the slice; helm uninstall
// takes the plugin off the node.
//
// Needs root, the control-plane and node binaries and a Docker Engine (the images are built locally); skips with the
// reason otherwise (under CI a missing piece is a failure: CI is root and runs everything).
import test from 'ava';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import ipaddr from 'ipaddr.js';
import { Kube, paths } from '../../kube/client.js';
import { SLICES_PATH, type KubeObject, type SixBed4Prefix, type SixBed4Slice } from '../../kube/api.js';
import { ping6 } from '../../lab/sixbed4.js';
import { startControlPlane, type ControlPlane } from './controlplane.js';
import {
  KubeNode,
  NODE_API_SERVER_ARGS,
  NODE_AUTHORIZATION_MODE,
  NODE_CONTROLLERS,
  nodeSkipReason,
  nodeUsers,
} from './node.js';
import { buildNodeImages, type NodeImages } from './images.js';
import { releaseDocker } from '../helpers/docker.js';
import { API_SERVICE_IP, buildNodeLab, SERVICE_RANGE, type NodeLab } from './nodelab.js';
import { eventually } from '../helpers/wait.js';
import { helmFor, NS, RELEASE, REPO, safely } from '../helpers/cluster.js';

const run = promisify(execFile);
const isCI = process.env.CI === 'true' || process.env.CI === '1';
const why = process.env.SIXBED4_SKIP_DOCKER === '1' ? 'SIXBED4_SKIP_DOCKER=1' : nodeSkipReason();
if (why && isCI && process.getuid?.() === 0) throw new Error(`real-node slice tests cannot run under CI: ${why}`);
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);

const NODE = 'node-s';
/** crds/samples/slices-48.yaml's prefix: the test applies that sample and drives it to the state its comments promise. */
const SAMPLE_PREFIX = '2001:db8:9::/48';
const TAG = 'slices-test';

interface Pod extends KubeObject {
  spec: { nodeName?: string };
  status?: {
    phase?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { restartCount: number; ready: boolean }[];
  };
}
const s = {} as {
  dir: string;
  images: NodeImages;
  lab: NodeLab;
  cp: ControlPlane;
  admin: Kube;
  node: KubeNode;
  address: string;
  node64: string;
};

const helm = (args: string[]): Promise<string> => helmFor(s.cp, s.dir)(args);
const podReady = (p: Pod | undefined) =>
  p?.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
const pod = (ns: string, name: string) => s.admin.get<Pod>(paths.pod(ns, name));
const pods = async (ns: string, selector: string) =>
  (await s.admin.get<{ items: Pod[] }>(`/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent(selector)}`))
    ?.items ?? [];
const nodeNs = () => s.lab.nodes[0]!.ns;

async function dump(): Promise<string> {
  const out = [await s.node.logs(20), await s.node.podLogs('agent', 30), await s.node.podLogs('web', 10)];
  try {
    out.push(
      (
        await run(join(s.cp.binDir, 'kubectl'), [
          '--kubeconfig',
          s.cp.kubeconfigPath,
          'get',
          'pods,ds,sixbed4prefixes,sixbed4slices',
          '-A',
          '-o',
          'wide',
        ])
      ).stdout,
    );
    out.push(
      (await run(join(s.cp.binDir, 'kubectl'), ['--kubeconfig', s.cp.kubeconfigPath, 'get', 'events', '-A'])).stdout
        .split('\n')
        .slice(-25)
        .join('\n'),
    );
  } catch {
    /* best effort */
  }
  return out.join('\n');
}

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-snode-'));
  s.images = await buildNodeImages(TAG, s.dir);
  s.lab = await buildNodeLab('sn', [NODE]);
  s.cp = await startControlPlane({
    controllerManager: true,
    controllers: NODE_CONTROLLERS,
    scheduler: true,
    serviceClusterIpRange: SERVICE_RANGE,
    users: nodeUsers([NODE]),
    authorizationMode: NODE_AUTHORIZATION_MODE,
    apiServerArgs: NODE_API_SERVER_ARGS,
  });
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  const n = s.lab.nodes[0]!;
  s.node = await KubeNode.start({
    name: NODE,
    ns: n.ns,
    nodeIp: n.v4,
    podCidr: n.podCidr,
    cp: s.cp,
    apiServiceIp: API_SERVICE_IP,
    imageArchive: s.images.archive,
    sandboxImage: s.images.sandbox,
    dir: s.dir,
    labels: { 'sixbed4.io/router': 'true' },
  });
});

test.after.always(async () => {
  if (why) return;
  await safely(() => s.admin.delete(paths.namespace('shop')));
  await safely(() => s.admin.delete(paths.prefix('edge')));
  await safely(() => helm(['uninstall', RELEASE, '--namespace', NS, '--wait', '--timeout', '60s']));
  await safely(() => s.node?.stop());
  await safely(() => s.cp?.stop());
  await safely(() => s.lab?.destroy());
  if (s.dir) await safely(() => rm(s.dir, { recursive: true, force: true }));
  if (s.images) await safely(() => releaseDocker());
});

serial(
  title(
    'helm install with slices, kubectl apply of crds/samples/slices-48.yaml: the node serves a /64 of the /48 with ::11 on its uplink; the init container puts sixbed4-cni on the node and chains it into the pod network list',
  ),
  async (t) => {
    await helm([
      'install',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--create-namespace',
      '--set',
      `image.repository=${s.images.repository}`,
      '--set',
      `image.tag=${s.images.tag}`,
      '--set',
      'image.pullPolicy=Never',
      '--set',
      `agent.stateDir=${join(s.dir, 'agent-state')}`,
      '--set',
      'agent.slices=true',
      '--set',
      `cni.binDir=${s.node.cniBinDir}`,
      '--set',
      `cni.confDir=${s.node.cniConfDir}`,
      '--set',
      `cni.netnsDir=${s.node.netnsDir}`,
      '--set',
      `cni.socket=${join(s.dir, 'run', 'cni.sock')}`,
    ]);
    // The sample, as its comments tell a user to apply it, through the real kubectl: a /48 with slices on.
    await run(join(s.cp.binDir, 'kubectl'), [
      '--kubeconfig',
      s.cp.kubeconfigPath,
      'apply',
      '-f',
      join(REPO, 'crds', 'samples', 'slices-48.yaml'),
    ]);
    const p = await eventually(
      'the agent Pod Ready and the prefix Ready',
      async () => {
        const x = await s.admin.get<SixBed4Prefix>(paths.prefix('edge'));
        return (await pods(NS, 'app.kubernetes.io/component=agent')).some(podReady) &&
          x?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
          ? x
          : undefined;
      },
      240_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    t.is(p.spec.prefix, SAMPLE_PREFIX);
    s.node64 = p.status!.nodes!.find((e) => e.name === NODE)!.prefix!;
    t.true(
      s.node64.startsWith('2001:db8:9:') && s.node64.endsWith('::/64'),
      `the node serves a /64 of the /48 (${s.node64})`,
    );
    await s.lab.routeAtIsp(s.node64, s.lab.nodes[0]!);
    // The sample's promise for the hosts' own addresses: ::11 of the node's /64 on its uplink, as a /128.
    const own = ipaddr.IPv6.parse(s.node64.replace(/\/64$/, '11')).toString();
    const uplink = await nodeNs().json<{ addr_info: { local: string; prefixlen: number }[] }[]>([
      '-6',
      'addr',
      'show',
      'dev',
      'eth0',
    ]);
    t.true(
      uplink[0]!.addr_info.some((a) => a.local === own && a.prefixlen === 128),
      `${own}/128 on the node's uplink`,
    );
    t.true(existsSync(join(s.node.cniBinDir, 'sixbed4-cni')), "the plugin in the node's CNI bin directory");
    const list = JSON.parse(await readFile(join(s.node.cniConfDir, '10-pods.conflist'), 'utf8')) as {
      plugins: { type: string }[];
    };
    t.deepEqual(
      list.plugins.map((p) => p.type),
      ['bridge', 'sixbed4-cni'],
      "chained after the node's bridge",
    );
  },
);

serial(
  title(
    'a pod that asks has its slice address before its container starts (it binds it first thing, and never restarts); the ISP reaches the opened port only',
  ),
  async (t) => {
    await s.admin.create(paths.namespaces, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { 'sixbed4.io/prefix': 'edge' } },
    });
    const range = await eventually(
      "the namespace's range",
      async () =>
        (await s.admin.get<KubeObject>(paths.namespace('shop')))?.metadata.annotations?.['sixbed4.io/slice-range'],
      60_000,
      300,
    );
    const word = /^2001:db8:9:\*:([0-9a-f]+):\*:0:0\/112$/.exec(range)?.[1];
    t.truthy(word && word !== '0', `the namespace holds one word A of the /48, never 0 (${range})`);
    // The container's first act: find its slice address on eth6 and listen on it; without one it exits (a restart).
    const app =
      `const a=Object.values(require('os').networkInterfaces().eth6??{}).find(x=>x.family==='IPv6'&&!x.address.startsWith('fe80'));` +
      `if(!a){console.error('no slice address on eth6');process.exit(1)}` +
      `const n=require('net');for(const p of [443,8080])n.createServer(c=>c.end('hi from '+a.address)).listen(p,a.address,()=>console.log('listening',a.address,p))`;
    const podSpec = (name: string, annotations: Record<string, string>) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, annotations, labels: { app: name } },
      spec: {
        nodeName: NODE,
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        terminationGracePeriodSeconds: 1,
        containers: [
          {
            name: 'app',
            image: `${s.images.repository}:${s.images.tag}`,
            imagePullPolicy: 'Never',
            command: ['node', '-e', app],
          },
        ],
      },
    });
    await s.admin.create(
      paths.pods('shop'),
      podSpec('web', { 'sixbed4.io/slice': 'true', 'sixbed4.io/allow-inbound': 'tcp/443' }),
    );
    await s.admin.create(paths.pods('shop'), {
      ...podSpec('plain', {}),
      spec: {
        ...podSpec('plain', {}).spec,
        containers: [{ ...podSpec('plain', {}).spec.containers[0]!, command: ['sleep', 'infinity'] }],
      },
    });
    const web = await eventually(
      'the pod that asks Running and Ready',
      async () => {
        const p = await pod('shop', 'web');
        return podReady(p) ? p : undefined;
      },
      180_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    t.is(web.status!.containerStatuses![0]!.restartCount, 0, 'the container found its address on its first start');
    const slice = (await s.admin.list<SixBed4Slice>(SLICES_PATH)).items.find(
      (x) => x.spec.pod.uid === web.metadata.uid,
    );
    t.is(slice?.spec.node, NODE);
    s.address = slice!.spec.address;
    // The sample's promise: a /112 of the node's /64 in the namespace's word, and the pod annotated with it.
    const [net, addr] = [ipaddr.IPv6.parse(s.node64.split('/')[0]!).parts, ipaddr.IPv6.parse(s.address).parts];
    t.deepEqual(
      [...addr.slice(0, 5), addr[6]],
      [...net.slice(0, 4), parseInt(word!, 16), 0],
      `${s.address}: the node's /64, the namespace's word, port word 0`,
    );
    t.true(slice!.spec.slice.endsWith('/112'));
    const annotated = await eventually(
      'the pod annotated with its slice',
      async () => {
        const a = (await pod('shop', 'web'))?.metadata.annotations ?? {};
        return a['sixbed4.io/address'] && a['sixbed4.io/assigned-slice'] ? a : undefined;
      },
      60_000,
      300,
    );
    t.is(annotated['sixbed4.io/address'], s.address);
    t.is(annotated['sixbed4.io/assigned-slice'], slice!.spec.slice);
    const hello = await s.lab.isp.run([
      process.execPath,
      '-e',
      `require('net').connect({host:process.argv[1],port:443},function(){this.on('data',d=>{console.log(String(d));this.destroy()})}).on('error',e=>console.log(e.code))`,
      s.address,
    ]);
    t.is(hello.trim(), `hi from ${s.address}`, 'the ISP reaches the pod on its opened port');
    const closed = await s.lab.isp.run([
      process.execPath,
      '-e',
      `require('net').connect({host:process.argv[1],port:8080}).on('connect',function(){console.log('connected');this.destroy()}).on('error',e=>console.log(e.code))`,
      s.address,
    ]);
    t.is(closed.trim(), 'ECONNREFUSED', 'another port is refused at the node (the pod listens there too)');
    const ping = await ping6(s.lab.isp, s.address);
    t.is(ping.received, ping.sent, ping.output);
    // The pod that did not ask: running, no eth6, no slice.
    const plain = await eventually(
      'the pod that did not ask Running',
      async () => {
        const p = await pod('shop', 'plain');
        return podReady(p) ? p : undefined;
      },
      120_000,
      500,
    );
    t.falsy((await s.admin.list<SixBed4Slice>(SLICES_PATH)).items.find((x) => x.spec.pod.uid === plain.metadata.uid));
    const hostLinks = (await nodeNs().json<{ ifname: string }[]>(['link', 'show']))
      .map((l) => l.ifname)
      .filter((x) => x.startsWith('s4'));
    t.is(hostLinks.length, 1, "one slice link on the node: the asking pod's");
  },
);

serial(title('deleting the pod takes its veth, route and filter off the node and releases its slice'), async (t) => {
  await s.admin.delete(paths.pod('shop', 'web'));
  await eventually(
    'the slice released',
    async () => (await s.admin.list<SixBed4Slice>(SLICES_PATH)).items.length === 0,
    120_000,
    500,
  ).catch(async (e: Error) => {
    throw new Error(`${e.message}\n${await dump()}`);
  });
  await eventually(
    'no slice link on the node',
    async () => !(await nodeNs().json<{ ifname: string }[]>(['link', 'show'])).some((l) => l.ifname.startsWith('s4')),
    60_000,
    500,
  );
  const routes = await nodeNs().json<{ dst: string }[]>(['-6', 'route', 'show']);
  t.false(
    routes.some((r) => r.dst.endsWith('/112')),
    'no /112 route left',
  );
  t.notRegex(await nodeNs().run(['nft', 'list', 'ruleset']), /slice_s4/, 'no slice left in the inbound filter');
});

serial(
  title('helm uninstall: the agent takes sixbed4-cni off the node; pods that did not ask keep running'),
  async (t) => {
    await s.admin.delete(paths.prefix('edge'));
    await eventually('the prefix gone', async () => !(await s.admin.get(paths.prefix('edge'))), 120_000, 500);
    await helm(['uninstall', RELEASE, '--namespace', NS, '--wait', '--timeout', '120s']);
    await eventually(
      'no agent Pod',
      async () => (await pods(NS, 'app.kubernetes.io/component=agent')).length === 0,
      120_000,
      500,
    );
    await eventually(
      'the plugin off the node',
      async () => !existsSync(join(s.node.cniBinDir, 'sixbed4-cni')),
      30_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    const list = JSON.parse(await readFile(join(s.node.cniConfDir, '10-pods.conflist'), 'utf8')) as {
      plugins: { type: string }[];
    };
    t.deepEqual(
      list.plugins.map((p) => p.type),
      ['bridge'],
      "the node's list as it was",
    );
    t.deepEqual(
      (await readdir(s.node.cniBinDir)).filter((f) => !f.startsWith('.')),
      [],
    );
    t.true(podReady(await pod('shop', 'plain')), 'the pod that did not ask still runs');
    t.notRegex(await nodeNs().run(['nft', 'list', 'tables']), /sixbed4_slices/, 'no inbound filter table left');
  },
);
