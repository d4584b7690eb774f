import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { OperatorMetrics } from "../../src/metrics.ts";

Deno.test("healthz always answers; readyz answers 503 until ready", async () => {
  let ready = false;
  const app = createApp({ ready: () => ({ ready, reason: ready ? "ok" : "informers not synced" }) });
  assert.equal((await app.request("/healthz")).status, 200);
  const notReady = await app.request("/readyz");
  assert.equal(notReady.status, 503);
  assert.equal(await notReady.text(), "informers not synced");
  ready = true;
  assert.equal((await app.request("/readyz")).status, 200);
  assert.equal((await app.request("/metrics")).status, 404, "no metrics route without a source");
});

Deno.test("metrics are served in Prometheus text format with bounded labels", async () => {
  const metrics = new OperatorMetrics();
  metrics.runnerJobsCreated.inc({ namespace: "ci", runnergroup: "app" });
  metrics.forgeRequests.inc({ endpoint: "/repos/{owner}/{repo}/actions/jobs", code: "2xx" });
  metrics.activeRunners.set({ namespace: "ci", runnergroup: "app" }, 2);
  const app = createApp({ ready: () => ({ ready: true, reason: "ok" }) }, {
    metrics: async () => ({ text: await metrics.render(), contentType: metrics.contentType }),
  });
  const response = await app.request("/metrics");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  assert.match(text, /^gitea_runner_operator_runner_jobs_created_total\{namespace="ci",runnergroup="app"\} 1$/m);
  assert.match(
    text,
    /^gitea_runner_operator_forge_requests_total\{endpoint="\/repos\/\{owner\}\/\{repo\}\/actions\/jobs",code="2xx"\} 1$/m,
  );
  metrics.forgetGroup("ci", "app");
  assert.doesNotMatch(await metrics.render(), /active_runners\{namespace="ci"/);
});

Deno.test("the README lists exactly the metrics the code defines, with their labels", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("## Metrics"), readme.indexOf("\n## ", readme.indexOf("## Metrics") + 1));
  // | `name` | type | labels | meaning |, where labels in parentheses are there only with an option.
  const rows = [...section.matchAll(/^\| `(gitea_runner_operator_[a-z_]+)`\s*\|[^|]*\|([^|]*)\|/gm)];
  const documented = new Map(rows.map((row) => {
    const required = row[2].replace(/\([^)]*\)/g, "").split(",").map((label) => label.trim()).filter(Boolean);
    const optional = [...row[2].matchAll(/\(([^)]*)\)/g)].flatMap((group) => group[1].split(","))
      .map((label) => label.trim()).filter(Boolean);
    return [row[1], { required: required.sort(), all: [...required, ...optional].sort() }];
  }));
  const labelsOf = (metrics: OperatorMetrics): Map<string, string[]> =>
    new Map(
      metrics.registry.getMetricsAsArray().map((metric) => {
        const { labelNames = [] } = metric as unknown as { labelNames?: readonly string[] };
        return [metric.name, [...labelNames].sort()];
      }),
    );
  const plain = labelsOf(new OperatorMetrics());
  const withWorkflow = labelsOf(new OperatorMetrics({ jobWorkflowLabel: true }));
  assert.deepEqual([...documented.keys()].sort(), [...plain.keys()].sort());
  for (const [name, labels] of documented) {
    assert.deepEqual(labels.required, plain.get(name), `labels of ${name}`);
    assert.deepEqual(labels.all, withWorkflow.get(name), `labels of ${name} with --job-metrics-workflow-label`);
  }
});
