import { execa } from 'execa';

// Prometheus' text format read by the Prometheus project's own parser: the Python
// client's (Debian: python3-prometheus-client), which refuses what Prometheus would
// refuse. It names a counter's family without `_total`, as the data model does; its
// samples keep the full names.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const PARSE = `
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value if math.isfinite(s.value) else str(s.value)} for s in f.samples]})
json.dump(out, sys.stdout)
`;

export async function parsePrometheus(text: string): Promise<Family[]> {
  const r = await execa('/usr/bin/python3', ['-c', PARSE], { input: text });
  return JSON.parse(r.stdout) as Family[];
}

/** The value of the sample of this name whose labels include these. */
export function sampleValue(families: Family[], sample: string, labels: Record<string, string> = {}): number {
  for (const f of families) {
    for (const s of f.samples) {
      if (s.name === sample && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return Number.NaN;
}
