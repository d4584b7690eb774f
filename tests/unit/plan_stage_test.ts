import assert from "node:assert/strict";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import type { GroupDemand } from "../../src/runner_group/demand.ts";
import { GroupMemories, type GroupMemory } from "../../src/runner_group/group_memory.ts";
import { planGroup, type PlanStageInput } from "../../src/runner_group/plan_stage.ts";
import type { Plan, RunnerJobRecord } from "../../src/runner_group/planner.ts";
import type { RunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { queuedJob } from "./fixtures.ts";

const spec = { maxActiveRunners: 5 } as RunnerGroupSpec;
const labels = effectiveRunnerLabels(["linux:host"], false);
const record = (id: number): RunnerJobRecord => ({ name: `g-${id}`, forgeJobId: id, attempt: 0, state: "active" });

/** An answer from the forge: queued job ids, and the runners it shows running a job. */
function demandOf(queued: number[], busy: string[], at: number): GroupDemand {
  const jobs = queued.map((id) => queuedJob(id, { runsOn: ["linux"] }));
  const busyRunners = new Set(busy);
  return {
    targetKey: "t",
    forge: "http://forge",
    snapshot: { jobs, busyRunners, running: [], fetchedAt: at, checkedAt: at },
    usable: true,
    busyRunners,
    records: [record(1)],
    activeElsewhere: new Set(),
    namesInUse: new Set(["g-1"]),
    evictions: [],
  };
}

/** Runner g-1 runs its job 1 (first answer), then job 1 is done and job 2 is queued (second answer). */
function planTwice(
  forge: Pick<PlanStageInput, "forgejo" | "jobHandles">,
): { first: Plan; second: Plan; memory: GroupMemory } {
  const memory = new GroupMemories().of("ns/g");
  const input = (demand: GroupDemand, now: number): PlanStageInput => ({
    groupKey: "ns/g",
    spec,
    labels,
    memory,
    demand,
    warmPool: { size: 0 },
    // The group runs every job of acme/app on its forge.
    coverages: [{
      key: "ns/g",
      forge: "http://forge",
      scope: "repo",
      owner: "acme",
      repo: "app",
      labels,
      paused: false,
    }],
    ...forge,
    idleGraceMs: 120_000,
    retry: { limit: 3, baseDelayMs: 10_000, maxDelayMs: 300_000 },
    settleMs: 0,
    now,
  });
  const first = planGroup(input(demandOf([], ["g-1"], 1_000), 1_000));
  const second = planGroup(input(demandOf([2], [], 2_000), 2_000));
  return { first, second, memory };
}

Deno.test("plan stage: on Gitea, a runner seen running a job and then not is finishing, and a new job gets a runner", () => {
  const { first, second, memory } = planTwice({ forgejo: false, jobHandles: false });
  assert.deepEqual(first.idle, []);
  assert.deepEqual(second.idle, [], "g-1 ran its job and winds down");
  assert.deepEqual(second.create.map((planned) => planned.job.id), [2]);
  assert.equal(memory.idleSince.size, 0);
});

Deno.test("plan stage: before Forgejo 15 a busy job does not tell its runner, so that runner stays idle", () => {
  const { second, memory } = planTwice({ forgejo: true, jobHandles: false });
  assert.deepEqual(second.idle, ["g-1"], "g-1 may be waiting still: it covers job 2");
  assert.deepEqual(second.create, []);
  assert.equal(memory.lastBusy.size, 0, "nothing remembered");
  assert.deepEqual([...memory.idleSince.keys()], ["g-1"]);
});

Deno.test("plan stage: on Forgejo 15 (runners bound to their job) a runner that ran its job is finishing", () => {
  const { second } = planTwice({ forgejo: true, jobHandles: true });
  assert.deepEqual(second.idle, []);
  assert.deepEqual(second.create.map((planned) => planned.job.id), [2]);
});
