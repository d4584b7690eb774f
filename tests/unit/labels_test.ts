import assert from "node:assert/strict";
import {
  canRunJob,
  defaultRunnerLabels,
  effectiveRunnerLabels,
  formatRunnerLabel,
  InvalidLabelError,
  missingLabels,
  parseRunnerLabel,
} from "../../src/forge/labels.ts";

Deno.test("parseRunnerLabel reads name, schema and argument as the Gitea runner does", () => {
  assert.deepEqual(parseRunnerLabel("ubuntu-latest:docker://node:20-bookworm"), {
    name: "ubuntu-latest",
    schema: "docker",
    arg: "//node:20-bookworm",
  });
  assert.deepEqual(parseRunnerLabel("linux-arm64:host"), { name: "linux-arm64", schema: "host", arg: "" });
  assert.deepEqual(parseRunnerLabel("self-hosted"), { name: "self-hosted", schema: "host", arg: "" });
});

Deno.test("parseRunnerLabel rejects bad syntax with a message that quotes the label", () => {
  for (const bad of ["", ":docker://x", "a::b", "a:vm", "a b", "a,b", "x:docker", "x:docker:node", "x:host:arg"]) {
    assert.throws(() => parseRunnerLabel(bad), (error: unknown) => {
      assert.ok(error instanceof InvalidLabelError);
      assert.match(
        error.message,
        new RegExp(`^Cannot parse runner label "${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"`),
      );
      return true;
    }, `label ${JSON.stringify(bad)} should be rejected`);
  }
});

Deno.test("formatRunnerLabel round-trips", () => {
  for (const text of ["ubuntu-latest:docker://node:20", "linux:host"]) {
    assert.equal(formatRunnerLabel(parseRunnerLabel(text)), text);
  }
  assert.equal(formatRunnerLabel(parseRunnerLabel("plain")), "plain:host");
});

Deno.test("a job runs on a runner only when every runs-on label is a runner label name", () => {
  const runner = effectiveRunnerLabels(["linux:host", "gpu:docker://cuda:12"], false);
  assert.equal(canRunJob(runner, ["linux"]), true);
  assert.equal(canRunJob(runner, ["linux", "gpu"]), true);
  assert.equal(canRunJob(runner, ["linux", "arm64"]), false);
  assert.deepEqual(missingLabels(runner, ["linux", "arm64", "windows"]), ["arm64", "windows"]);
});

Deno.test("label matching is exact and case-sensitive, and ignores the schema suffix", () => {
  const runner = effectiveRunnerLabels(["Ubuntu-Latest:docker://node:20"], false);
  assert.equal(canRunJob(runner, ["Ubuntu-Latest"]), true);
  assert.equal(canRunJob(runner, ["ubuntu-latest"]), false);
  assert.equal(canRunJob(runner, ["Ubuntu-Latest:docker://node:20"]), false);
  assert.equal(canRunJob(runner, ["Ubuntu"]), false);
});

Deno.test("a job without runs-on labels matches any runner", () => {
  assert.equal(canRunJob(effectiveRunnerLabels(["x:host"], false), []), true);
  assert.equal(canRunJob([], []), true);
});

Deno.test("default labels are merged unless turned off, and a group label overrides a default of the same name", () => {
  const merged = effectiveRunnerLabels(["ubuntu-latest:docker://node:20", "custom"], true).map(formatRunnerLabel);
  assert.deepEqual(merged, [
    "ubuntu-latest:docker://node:20",
    "custom:host",
    ...defaultRunnerLabels.filter((label) => !label.startsWith("ubuntu-latest:")),
  ]);
  assert.equal(merged.filter((label) => label.startsWith("ubuntu-latest:")).length, 1);
  assert.deepEqual(effectiveRunnerLabels(["custom"], false).map(formatRunnerLabel), ["custom:host"]);
  assert.ok(defaultRunnerLabels.every((label) => !label.includes("node:16")), "defaults use current images");
});

Deno.test("a label name defined twice in a group is an error", () => {
  assert.throws(() => effectiveRunnerLabels(["a:host", "a:docker://x"], false), /defined twice/);
});
