// Type guards for data parsed from JSON or YAML (API objects, config files, CNI requests) before its fields are read.

/** A plain object (not null, not an array): what a JSON object parses to. */
export const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
