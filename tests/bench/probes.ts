/**
 * What the benchmark reads about the operator from outside: its process (resident memory and CPU time from Linux's
 * /proc), its Prometheus metrics, its structured log, and its Kubernetes API requests from the API server's audit log.
 */

/** Resident memory of a process in MiB (`VmRSS` of /proc/<pid>/status). */
export function residentMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`Cannot read the resident memory of process ${pid}: no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) / 1024;
}

let clockTicks: number | undefined;

/** User plus system CPU seconds a process has used (/proc/<pid>/stat, fields 14 and 15). */
export function cpuSeconds(pid: number): number {
  if (clockTicks === undefined) {
    const output = new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped", stderr: "null" }).outputSync();
    clockTicks = Number(new TextDecoder().decode(output.stdout).trim()) || 100;
  }
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** The sum of every series of a counter (or gauge) in Prometheus text format, optionally only matching labels. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue;
    // Label values may hold braces themselves (endpoint templates such as /repos/{owner}/{repo}/actions/jobs).
    const labelText = rest[0] === "{" ? rest.slice(1, rest.lastIndexOf("}")) : "";
    const matches = Object.entries(labels).every(([key, value]) => labelText.includes(`${key}="${value}"`));
    if (matches) sum += Number(rest.slice(rest.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** The sums of a counter's series by the value of one label: `{ "/a": 3, "/b": 4 }` for label `endpoint`. */
export function metricByLabel(text: string, name: string, label: string): Record<string, number> {
  const sums: Record<string, number> = {};
  const pattern = new RegExp(`${label}="([^"]*)"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const value = pattern.exec(line.slice(0, line.lastIndexOf("}")))?.[1];
    if (value === undefined) continue;
    sums[value] = (sums[value] ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sums;
}

/** The operator's `/metrics` text. */
export async function scrapeMetrics(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!response.ok) throw new Error(`Cannot scrape the operator's metrics on port ${port}: HTTP ${response.status}`);
  return await response.text();
}

/** A line of the operator's JSON log. */
export type LogLine = Record<string, unknown>;

/** When a log line was written (ms since epoch), from LogTape's `@timestamp`. */
export function logTime(line: LogLine): number {
  const at = Date.parse(String(line["@timestamp"] ?? ""));
  if (Number.isNaN(at)) throw new Error(`Cannot read the time of log line ${JSON.stringify(line).slice(0, 200)}`);
  return at;
}

/**
 * An audit policy that records the metadata of every request by `user` and nothing else, so the audit log costs the
 * API server almost nothing for the rest of the cluster. kube-apiserver's own `apiserver_request_total` has no user
 * or user-agent label (v1.35.4: verb, group, version, resource, subresource, scope, component, code, dry_run), so it
 * cannot tell the operator's requests from the controllers'; the audit log can.
 */
export function auditPolicy(user: string): string {
  return JSON.stringify({
    apiVersion: "audit.k8s.io/v1",
    kind: "Policy",
    omitStages: ["RequestReceived"],
    rules: [{ level: "Metadata", users: [user] }, { level: "None" }],
  });
}

export interface AuditedRequests {
  total: number;
  /** `verb resource[/subresource]` -> requests. */
  byKind: Record<string, number>;
}

/** The requests of `user` received in [from, to) (ms since epoch), from the audit log file at `path`. */
export async function auditedRequests(path: string, user: string, from: number, to: number): Promise<AuditedRequests> {
  return countAuditedRequests(await Deno.readTextFile(path), user, from, to);
}

/** The same, from the audit log's text (JSON lines, one per request stage). */
export function countAuditedRequests(text: string, user: string, from: number, to: number): AuditedRequests {
  const seen = new Set<string>();
  const byKind: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const event = JSON.parse(line) as {
      auditID: string;
      verb: string;
      user?: { username?: string };
      objectRef?: { resource?: string; subresource?: string };
      requestURI: string;
      requestReceivedTimestamp: string;
    };
    if (event.user?.username !== user || seen.has(event.auditID)) continue;
    const at = Date.parse(event.requestReceivedTimestamp);
    if (at < from || at >= to) continue;
    seen.add(event.auditID);
    const resource = event.objectRef?.resource
      ? `${event.objectRef.resource}${event.objectRef.subresource ? `/${event.objectRef.subresource}` : ""}`
      : event.requestURI.split("?")[0];
    const kind = `${event.verb} ${resource}`;
    byKind[kind] = (byKind[kind] ?? 0) + 1;
  }
  return { total: seen.size, byKind };
}
