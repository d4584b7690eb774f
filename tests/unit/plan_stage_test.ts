import assert from "node:assert/strict";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import type { GroupDemand } from "../../src/runner_group/demand.ts";
import { GroupMemories, type GroupMemory } from "../../src/runner_group/group_memory.ts";
import type { GroupCoverage } from "../../src/runner_group/ownership.ts";
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

/** The coverage of a group that runs every job of acme/app on its forge. */
const coverage: GroupCoverage = {
  key: "ns/g",
  forge: "http://forge",
  scope: "repo",
  owner: "acme",
  repo: "app",
  labels,
  paused: false,
};

function stageInput(
  memory: GroupMemory,
  demand: GroupDemand,
  now: number,
  extra: Partial<PlanStageInput> = {},
): PlanStageInput {
  return {
    groupKey: "ns/g",
    spec,
    labels,
    memory,
    demand,
    warmPool: { size: 0 },
    coverages: [coverage],
    forgejo: false,
    jobHandles: false,
    idleGraceMs: 120_000,
    retry: { limit: 3, baseDelayMs: 10_000, maxDelayMs: 300_000 },
    settleMs: 0,
    now,
    ...extra,
  };
}

/** Runner g-1 runs its job 1 (first answer), then job 1 is done and job 2 is queued (second answer). */
function planTwice(
  forge: Pick<PlanStageInput, "forgejo" | "jobHandles">,
): { first: Plan; second: Plan; memory: GroupMemory } {
  const memory = new GroupMemories().of("ns/g");
  const first = planGroup(stageInput(memory, demandOf([], ["g-1"], 1_000), 1_000, forge));
  const second = planGroup(stageInput(memory, demandOf([2], [], 2_000), 2_000, forge));
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

Deno.test("plan stage: a paused group (maxActiveRunners 0) starts nothing and counts the jobs it would run", () => {
  const memory = new GroupMemories().of("ns/g");
  const demand = demandOf([2, 3], [], 1_000);
  const paused = planGroup(
    stageInput(memory, demand, 1_000, {
      spec: { maxActiveRunners: 0 } as RunnerGroupSpec,
      coverages: [{ ...coverage, paused: true }],
    }),
  );
  assert.deepEqual(paused.create, []);
  assert.equal(paused.queued, 2, "jobs 2 and 3 are the group's, were it running");
  const running = planGroup(stageInput(new GroupMemories().of("ns/g"), demand, 1_000));
  // Running, it counts the same jobs and starts a runner for one of them: idle runner g-1 takes the other.
  assert.equal(running.queued, 2);
  assert.equal(running.create.length, 1);
});
