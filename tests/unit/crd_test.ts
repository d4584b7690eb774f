import assert from "node:assert/strict";
import YAML from "yaml";
import { buildRunnerGroupCrd } from "../../src/runner_group/crd.ts";

const committed = new URL("../../crds/runnergroups.gitea.bpg.pw.yaml", import.meta.url);
const chartCopy = new URL(
  "../../manifests/helm/gitea-runner-operator/crds/runnergroups.gitea.bpg.pw.yaml",
  import.meta.url,
);

Deno.test("the committed CRD is generated from the zod schema (run `deno task crds` after changing it)", async () => {
  const onDisk = YAML.parse(await Deno.readTextFile(committed));
  assert.deepEqual(onDisk, buildRunnerGroupCrd());
});

Deno.test("the Helm chart's CRD is a copy of the committed one (run `deno task crds`, which writes both)", async () => {
  const same = await Deno.readTextFile(chartCopy) === await Deno.readTextFile(committed);
  assert.ok(same, `${chartCopy.pathname} differs from ${committed.pathname}`);
});

Deno.test("the CRD schema is structural: no empty additionalProperties, no unsafe integer bounds", () => {
  const text = JSON.stringify(buildRunnerGroupCrd());
  assert.ok(!text.includes('"additionalProperties":{}'));
  assert.ok(!text.includes(String(Number.MAX_SAFE_INTEGER)));
  const versions = (buildRunnerGroupCrd().spec as { versions: { schema: { openAPIV3Schema: unknown } }[] }).versions;
  const spec = (versions[0].schema.openAPIV3Schema as { properties: { spec: { required: string[] } } }).properties.spec;
  assert.deepEqual(
    [...spec.required].sort(),
    ["authToken", "giteaURL", "maxActiveRunners", "scope"],
  );
});
