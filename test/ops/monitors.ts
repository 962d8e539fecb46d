// What prometheus-operator makes of a PodMonitor or a ServiceMonitor: the Prometheus scrape configuration of its
// endpoints, written after pkg/prometheus/promcfg.go of prometheus-operator v0.85.0 (generatePodMonitorConfig,
// generateServiceMonitorConfig with serviceDiscoveryRole EndpointSlice), for the fields the chart's monitors use:
// the selector's matchLabels, namespaceSelector.matchNames, path, interval, relabelings, port. The test runs the
// result in a real Prometheus whose Kubernetes service discovery watches the test's API server.

interface Relabeling {
  sourceLabels?: string[];
  separator?: string;
  targetLabel?: string;
  regex?: string;
  modulus?: number;
  replacement?: string;
  action?: string;
}
interface MonitorEndpoint {
  path?: string;
  interval?: string;
  port?: string;
  relabelings?: Relabeling[];
}
export interface Monitor {
  kind: 'PodMonitor' | 'ServiceMonitor';
  metadata: { name: string; namespace: string };
  spec: {
    selector: { matchLabels?: Record<string, string> };
    namespaceSelector?: { matchNames?: string[] };
    podMetricsEndpoints?: MonitorEndpoint[];
    endpoints?: MonitorEndpoint[];
  };
}

/** Prometheus' label name rules: what is not [a-zA-Z0-9_] becomes _. */
const sanitize = (s: string) => s.replace(/[^a-zA-Z0-9_]/g, '_');

/** A monitor's relabeling in Prometheus' words (the CRD's camelCase keys, the action lower-cased). */
function relabelConfig(r: Relabeling): Record<string, unknown> {
  return {
    ...(r.sourceLabels ? { source_labels: r.sourceLabels } : {}),
    ...(r.separator !== undefined ? { separator: r.separator } : {}),
    ...(r.targetLabel ? { target_label: r.targetLabel } : {}),
    ...(r.regex !== undefined ? { regex: r.regex } : {}),
    ...(r.modulus !== undefined ? { modulus: r.modulus } : {}),
    ...(r.replacement !== undefined ? { replacement: r.replacement } : {}),
    ...(r.action ? { action: r.action.toLowerCase() } : {}),
  };
}

/** The scrape configurations (one per endpoint) prometheus-operator generates for m; sd: extra kubernetes_sd_configs fields (kubeconfig_file). */
export function scrapeConfigs(m: Monitor, sd: Record<string, unknown>): Record<string, unknown>[] {
  const ns = m.metadata.namespace;
  const pod = m.kind === 'PodMonitor';
  const role = pod ? 'pod' : 'endpointslice';
  const meta = pod ? '__meta_kubernetes_pod' : '__meta_kubernetes_service';
  return (pod ? m.spec.podMetricsEndpoints : m.spec.endpoints)!.map((ep, i) => {
    const relabel: Record<string, unknown>[] = [{ source_labels: ['job'], target_label: '__tmp_prometheus_job_name' }];
    if (pod)
      relabel.push({ action: 'drop', source_labels: ['__meta_kubernetes_pod_phase'], regex: '(Failed|Succeeded)' });
    for (const [k, v] of Object.entries(m.spec.selector.matchLabels ?? {})) {
      relabel.push({
        action: 'keep',
        source_labels: [`${meta}_label_${sanitize(k)}`, `${meta}_labelpresent_${sanitize(k)}`],
        regex: `(${v});true`,
      });
    }
    if (!pod && ep.port)
      relabel.push({ action: 'keep', source_labels: ['__meta_kubernetes_endpointslice_port_name'], regex: ep.port });
    if (!pod) {
      // the endpoint's pod, when it has one
      relabel.push({
        source_labels: [
          '__meta_kubernetes_endpointslice_address_target_kind',
          '__meta_kubernetes_endpointslice_address_target_name',
        ],
        separator: ';',
        regex: 'Node;(.*)',
        replacement: '${1}',
        target_label: 'node',
      });
      relabel.push({
        source_labels: [
          '__meta_kubernetes_endpointslice_address_target_kind',
          '__meta_kubernetes_endpointslice_address_target_name',
        ],
        separator: ';',
        regex: 'Pod;(.*)',
        replacement: '${1}',
        target_label: 'pod',
      });
    }
    relabel.push({ source_labels: ['__meta_kubernetes_namespace'], target_label: 'namespace' });
    if (!pod) relabel.push({ source_labels: ['__meta_kubernetes_service_name'], target_label: 'service' });
    if (!pod) relabel.push({ source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' });
    relabel.push({ source_labels: ['__meta_kubernetes_pod_container_name'], target_label: 'container' });
    if (pod) relabel.push({ source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' });
    if (!pod)
      relabel.push({ action: 'drop', source_labels: ['__meta_kubernetes_pod_phase'], regex: '(Failed|Succeeded)' });
    relabel.push(
      pod
        ? { target_label: 'job', replacement: `${ns}/${m.metadata.name}` }
        : { source_labels: ['__meta_kubernetes_service_name'], target_label: 'job', replacement: '${1}' },
    );
    if (ep.port) relabel.push({ target_label: 'endpoint', replacement: ep.port });
    relabel.push(...(ep.relabelings ?? []).map(relabelConfig));
    // one shard: what appendShardingRelabelingWithAddress adds
    relabel.push({ source_labels: ['__address__'], target_label: '__tmp_hash', modulus: 1, action: 'hashmod' });
    relabel.push({ source_labels: ['__tmp_hash'], regex: '0', action: 'keep' });
    return {
      job_name: `${pod ? 'podMonitor' : 'serviceMonitor'}/${ns}/${m.metadata.name}/${i}`,
      honor_labels: false,
      kubernetes_sd_configs: [{ role, ...sd, namespaces: { names: m.spec.namespaceSelector?.matchNames ?? [ns] } }],
      ...(ep.path ? { metrics_path: ep.path } : {}),
      ...(ep.interval ? { scrape_interval: ep.interval } : {}),
      relabel_configs: relabel,
    };
  });
}
