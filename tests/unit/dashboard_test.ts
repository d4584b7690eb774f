/**
 * The Grafana dashboard queries the operator's metrics by name: a renamed metric or label would leave a panel empty
 * without any error, so the names in every panel expression are checked against the registry of `src/metrics.ts`.
 */
import assert from "node:assert/strict";
import { OperatorMetrics } from "../../src/metrics.ts";

const dashboardFile = new URL("../../manifests/grafana/gitea-runner-operator-dashboard.json", import.meta.url);
const chartCopy = new URL(
  "../../manifests/helm/gitea-runner-operator/dashboards/gitea-runner-operator-dashboard.json",
  import.meta.url,
);
const prefix = "gitea_runner_operator_";

interface Target {
  expr: string;
}
interface Panel {
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  datasource?: { type: string; uid: string };
}
interface Dashboard {
  panels: Panel[];
  templating: { list: Variable[] };
}

/** What the registry exposes: each series name (histograms add _bucket, _sum, _count) and its metric's labels. */
function exposedSeries(): Map<string, readonly string[]> {
  const series = new Map<string, readonly string[]>();
  for (const metric of new OperatorMetrics().registry.getMetricsAsArray()) {
    // prom-client keeps the type ("counter", "gauge", "histogram") and label names on the metric object.
    const { type, labelNames = [] } = metric as unknown as { type: string; labelNames?: readonly string[] };
    const names = type === "histogram"
      ? [`${metric.name}_bucket`, `${metric.name}_sum`, `${metric.name}_count`]
      : [metric.name];
    for (const name of names) {
      series.set(name, type === "histogram" && name.endsWith("_bucket") ? [...labelNames, "le"] : labelNames);
    }
  }
  return series;
}

function panelsOf(panels: Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...panelsOf(panel.panels ?? [])]);
}

/** Every `name{selector}` or bare `name` of the operator in a PromQL expression, with the labels its selector uses. */
function seriesReferences(expr: string): { name: string; labels: string[] }[] {
  const references = [];
  for (const match of expr.matchAll(new RegExp(`\\b(${prefix}[a-zA-Z0-9_:]*)(\\{([^}]*)\\})?`, "g"))) {
    const labels = [...(match[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)].map((label) => label[1]);
    references.push({ name: match[1], labels });
  }
  return references;
}

function variableQuery(variable: Variable): string {
  return typeof variable.query === "string" ? variable.query : variable.query.query;
}

const dashboard = JSON.parse(await Deno.readTextFile(dashboardFile)) as Dashboard;
const queryPanels = panelsOf(dashboard.panels).filter((panel) => panel.type !== "row");

Deno.test("every dashboard expression names series and labels that src/metrics.ts exposes", () => {
  const series = exposedSeries();
  assert.ok(queryPanels.length >= 10, `expected the dashboard's panels, found ${queryPanels.length}`);
  const expressions = [
    ...queryPanels.flatMap((panel) =>
      (panel.targets ?? []).map((target) => ({ where: panel.title, expr: target.expr }))
    ),
    ...dashboard.templating.list.filter((variable) => variable.type === "query")
      .map((variable) => ({ where: `variable ${variable.name}`, expr: variableQuery(variable) })),
  ];
  for (const { where, expr } of expressions) {
    const references = seriesReferences(expr);
    assert.ok(references.length > 0, `${where}: "${expr}" names no ${prefix}* metric`);
    for (const { name, labels } of references) {
      const known = series.get(name);
      assert.ok(known, `${where}: "${expr}" uses ${name}, which src/metrics.ts does not expose`);
      for (const label of labels) {
        assert.ok(known.includes(label), `${where}: ${name} has no label "${label}" (it has: ${known.join(", ")})`);
      }
    }
  }
});

Deno.test("every metric of src/metrics.ts is shown on the dashboard", () => {
  const used = new Set(
    queryPanels.flatMap((panel) => (panel.targets ?? []).flatMap((target) => seriesReferences(target.expr)))
      .map((reference) => reference.name.replace(/_(bucket|sum|count)$/, "")),
  );
  const missing = new OperatorMetrics().registry.getMetricsAsArray().map((metric) => metric.name)
    .filter((name) => !used.has(name));
  assert.deepEqual(missing, [], "metrics without a panel");
});

Deno.test("every panel queries the dashboard's Prometheus data source variable", () => {
  const datasource = dashboard.templating.list.find((variable) => variable.name === "datasource");
  assert.equal(datasource?.type, "datasource");
  assert.equal(datasource?.query, "prometheus");
  for (const panel of queryPanels) {
    assert.deepEqual(panel.datasource, { type: "prometheus", uid: "${datasource}" }, panel.title);
    assert.ok((panel.targets ?? []).length > 0, `${panel.title} has no query`);
  }
});

Deno.test("the Helm chart ships the same dashboard", async () => {
  const same = await Deno.readTextFile(chartCopy) === await Deno.readTextFile(dashboardFile);
  assert.ok(same, `${chartCopy.pathname} differs from ${dashboardFile.pathname}: copy it`);
});
