/**
 * Stage 3 of the reconcile, gathered from the caches: the group's own runner Jobs, and the forge jobs that another
 * group's unfinished runner Job on the same forge already covers.
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import type { DemandPollers } from "../../src/forge/demand_poller.ts";
import { gatherDemand } from "../../src/runner_group/demand.ts";
import { buildRunnerJob, pruneRunnerJob } from "../../src/runner_group/runner_job.ts";
import type { RunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { queuedJob } from "./fixtures.ts";

const spec = (giteaURL: string): RunnerGroupSpec => ({
  scope: "repo",
  org: "acme",
  repo: "app",
  giteaURL,
  labels: ["linux"],
  maxActiveRunners: 5,
  authToken: { name: "tokens", key: "api" },
});

/** A cached runner Job of group `group` for forge job `id`, running or finished. */
function runnerJob(group: string, forge: string, id: number, state: "active" | "succeeded"): V1Job {
  const job = buildRunnerJob({
    group: { name: group, namespace: "ci", uid: `uid-${group}`, spec: spec(forge) },
    forge,
    labels: [],
    for: { job: queuedJob(id), attempt: 0 },
    defaultImage: "runner:test",
    registrationToken: { name: "token", key: "token" },
  });
  job.metadata!.uid = `job-${group}-${id}`;
  // A Job is finished once it has the Complete (or Failed) condition, as the Job controller writes it.
  job.status = state === "active" ? { active: 1 } : {
    succeeded: 1,
    conditions: [{ type: "Complete", status: "True", lastTransitionTime: "2026-01-01T00:01:00Z" as unknown as Date }],
  };
  return pruneRunnerJob(job);
}

Deno.test("another group's unfinished runner Job on the same forge covers its job; other forges and finished Jobs do not", () => {
  const gitea = "https://git.example.com";
  const pollers = { subscribe: () => "target", snapshot: () => undefined } as unknown as DemandPollers;
  const demand = gatherDemand({
    groupKey: "ci/mine",
    namespace: "ci",
    uid: "uid-mine",
    spec: spec(gitea),
    labels: [],
    apiToken: "api-token",
    pollers,
    runnerJobs: [
      runnerJob("mine", gitea, 1, "active"),
      runnerJob("other", gitea, 2, "active"),
      runnerJob("other", gitea, 3, "succeeded"),
      runnerJob("other", "https://elsewhere.example.com", 4, "active"),
    ],
    now: Date.parse("2026-01-01T00:02:00Z"),
  });
  assert.deepEqual([...demand.activeElsewhere], [2]);
  assert.deepEqual(demand.records.map((record) => record.forgeJobId), [1]);
  assert.deepEqual([...demand.namesInUse].sort(), ["mine-1", "other-2", "other-3", "other-4"]);
});
