// What `sixbed4 version` prints and what the agent and the operator log when they start: the build (lib/build-info.ts)
// and whether the native addon loads, which only the agent's side can tell.
import { buildInfo } from '../lib/build-info.js';

export interface NativeStatus {
  loaded: boolean;
  /** why it did not load */
  error?: string;
}

/** Tries to load the native addon; never throws (a missing or broken addon is reported, not fatal). */
export async function nativeStatus(): Promise<NativeStatus> {
  try {
    (await import('../agent/io/native.js')).loadNative();
    return { loaded: true };
  } catch (err) {
    return { loaded: false, error: (err as Error).message };
  }
}

/** The lines `sixbed4 version` prints. */
export async function versionText(): Promise<string> {
  const b = buildInfo();
  const n = await nativeStatus();
  return `sixbed4 ${b.version}\nrevision: ${b.revision}\nnode: ${b.node}\nnative addon: ${n.loaded ? 'loaded' : `not loaded (${n.error})`}\n`;
}

/** What the agent and the operator log when they start. */
export async function startFields(): Promise<Record<string, string | boolean>> {
  const n = await nativeStatus();
  return { ...buildInfo(), nativeAddon: n.loaded };
}
