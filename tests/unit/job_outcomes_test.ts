/**
 * The step after apply, over several reconciles: forge answers and runner Jobs in, one read per finished job, metrics
 * and status.recentRunners out.
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import type { DemandSnapshot } from "../../src/forge/demand_poller.ts";
import { ForgeError } from "../../src/forge/errors.ts";
import type { JobDetail, QueuedJob, RunningJob } from "../../src/forge/gitea_client.ts";
import { logger } from "../../src/log.ts";
import { OperatorMetrics } from "../../src/metrics.ts";
import { recordJobMetrics } from "../../src/runner_group/apply.ts";
import { type ForgeReads, JobOutcomes, readJobs } from "../../src/runner_group/job_outcomes.ts";
import type { RecentRunner } from "../../src/runner_group/schema.ts";

const t0 = Date.parse("2026-01-01T10:00:00Z");
const at = (second: number): string => new Date(t0 + second * 1000).toISOString();
const uid = "group-uid";

const base = (id: number) => ({ id, runId: 100 + id, name: `job-${id}`, owner: "acme", repo: "app" });
const queued = (id: number): QueuedJob => ({ ...base(id), runsOn: ["linux"], createdAt: at(0), htmlUrl: "" });
const running = (id: number, runner: string, started: number): RunningJob => ({
  ...base(id),
  runnerName: runner,
  createdAt: at(0),
  startedAt: at(started),
});

function runnerJob(name: string, created: number, completeAt?: number): V1Job {
  return {
    metadata: {
      name,
      uid: `uid-${name}`,
      creationTimestamp: new Date(t0 + created * 1000),
      labels: { "gitea.bpg.pw/runnergroup-uid": uid, "gitea.bpg.pw/job-id": name.split("-")[1] },
    },
    status: completeAt === undefined
      ? {}
      : { conditions: [{ type: "Complete", status: "True", lastTransitionTime: new Date(t0 + completeAt * 1000) }] },
  };
}

/** A fake forge: the outcome of each job, and the reads made. */
function forge(outcomes: Record<number, JobDetail | "missing" | "down">): { reads: string[]; client: ForgeReads } {
  const reads: string[] = [];
  return {
    reads,
    client: {
      getJob: (_owner: string, _repo: string, id: number): Promise<JobDetail> => {
        reads.push(`job ${id}`);
        const outcome = outcomes[id];
        if (outcome === "missing") return Promise.reject(new ForgeError("NotFound", `job ${id} not found`));
        if (outcome === "down" || !outcome) return Promise.reject(new ForgeError("Unreachable", "down"));
        return Promise.resolve(outcome);
      },
      listCompletedRunJobs: (_owner: string, _repo: string, runId: number): Promise<JobDetail[]> => {
        reads.push(`run-jobs ${runId}`);
        if (runId === 404) return Promise.reject(new ForgeError("NotFound", `run ${runId} not found`));
        return Promise.resolve(
          Object.values(outcomes).filter((outcome): outcome is JobDetail =>
            typeof outcome === "object" && outcome.runId === runId && outcome.status === "completed"
          ),
        );
      },
      getRunWorkflow: (_owner: string, _repo: string, runId: number): Promise<string> => {
        reads.push(`run ${runId}`);
        return Promise.resolve(runId === 101 ? "build.yaml" : "test.yaml");
      },
    },
  };
}

const done = (id: number, runner: string, conclusion: string, started: number, completed: number): JobDetail => ({
  ...running(id, runner, started),
  status: "completed",
  conclusion,
  completedAt: at(completed),
});

function snapshot(second: number, jobs: { queued?: QueuedJob[]; running?: RunningJob[] }): DemandSnapshot {
  return {
    jobs: jobs.queued ?? [],
    running: jobs.running ?? [],
    busyRunners: new Set((jobs.running ?? []).map((job) => job.runnerName)),
    fetchedAt: t0 + second * 1000,
    checkedAt: t0 + second * 1000,
  };
}

Deno.test("three jobs of known results: exact counters, histogram counts and sums, one read per finished job", async () => {
  const metrics = new OperatorMetrics();
  const outcomes = new JobOutcomes({ workflowLabel: false, settleMs: 3000 });
  const { client, reads } = forge({
    1: done(1, "g-1", "success", 4, 14),
    2: done(2, "g-2", "success", 5, 25),
    3: done(3, "g-3", "failure", 6, 9),
  });
  let status: RecentRunner[] = [];
  const step = async (second: number, snap: DemandSnapshot, jobs: V1Job[]): Promise<void> => {
    const result = await outcomes.observe({
      key: "ci/g",
      group: { metadata: { name: "g", namespace: "ci", uid }, status: { recentRunners: status } },
      spec: {},
      demand: { forge: "https://git.example.com", snapshot: snap, usable: true },
      owned: new Set(snap.jobs.map((job) => job.id)),
      runnerJobs: jobs,
      removed: [],
      client,
      log: logger("test"),
      now: t0 + second * 1000,
    });
    recordJobMetrics(metrics, { namespace: "ci", name: "g" }, result.events, result.workflowOf);
    status = result.recentRunners;
  };
  const runners = (complete: Record<string, number> = {}) =>
    ["g-1", "g-2", "g-3"].map((name) => runnerJob(name, 1, complete[name]));
  await step(2, snapshot(2, { queued: [queued(1), queued(2), queued(3)] }), runners());
  await step(
    7,
    snapshot(7, { running: [running(1, "g-1", 4), running(2, "g-2", 5), running(3, "g-3", 6)] }),
    runners(),
  );
  assert.deepEqual(reads, [], "starts are learned from the jobs list alone");
  await step(12, snapshot(12, { running: [running(1, "g-1", 4), running(2, "g-2", 5)] }), runners({ "g-3": 10 }));
  await step(20, snapshot(20, { running: [running(2, "g-2", 5)] }), runners({ "g-1": 15, "g-3": 10 }));
  await step(30, snapshot(30, {}), runners({ "g-1": 15, "g-2": 26, "g-3": 10 }));
  await step(40, snapshot(40, {}), runners({ "g-1": 15, "g-2": 26, "g-3": 10 }));
  assert.deepEqual(reads, ["job 3", "job 1", "job 2"], "one read per finished job, each once");

  const text = await metrics.render();
  /** The value of one series, by its exact name and labels as exposed. */
  const value = (series: string): number | undefined => {
    const line = text.split("\n").find((row) => row.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  const group = 'namespace="ci",runnergroup="g"';
  assert.equal(value(`gitea_runner_operator_jobs_started_total{${group},repository="acme/app"}`), 3);
  assert.equal(value(`gitea_runner_operator_jobs_completed_total{${group},repository="acme/app",result="success"}`), 2);
  assert.equal(value(`gitea_runner_operator_jobs_completed_total{${group},repository="acme/app",result="failure"}`), 1);
  assert.equal(value(`gitea_runner_operator_job_queue_duration_seconds_count{${group}}`), 3);
  assert.equal(value(`gitea_runner_operator_job_queue_duration_seconds_sum{${group}}`), 4 + 5 + 6);
  assert.equal(value(`gitea_runner_operator_job_run_duration_seconds_count{${group}}`), 3);
  assert.equal(value(`gitea_runner_operator_job_run_duration_seconds_sum{${group}}`), 10 + 20 + 3);
  // The runner Jobs were created 1 s after the jobs were queued, and took them 3, 4 and 5 s later.
  assert.equal(value(`gitea_runner_operator_runner_start_duration_seconds_sum{${group}}`), 3 + 4 + 5);
  assert.equal(value(`gitea_runner_operator_runner_seconds_total{${group},repository="acme/app"}`), 33);

  assert.deepEqual(status.map((entry) => [entry.runnerJob, entry.forgeJobId, entry.result, entry.reason]), [
    ["g-2", 2, "success", "Completed"],
    ["g-1", 1, "success", "Completed"],
    ["g-3", 3, "failure", "Completed"],
  ]);
  // The Jobs are garbage-collected: the history stays, and nothing is read again.
  await step(400, snapshot(400, {}), []);
  assert.equal(status.length, 3);
  assert.equal(reads.length, 3);
});

Deno.test("with the workflow label, each run's workflow file is read once", async () => {
  const metrics = new OperatorMetrics({ jobWorkflowLabel: true });
  const outcomes = new JobOutcomes({ workflowLabel: true, settleMs: 3000 });
  const { client, reads } = forge({ 1: done(1, "g-1", "success", 4, 14) });
  const step = async (second: number, snap: DemandSnapshot): Promise<void> => {
    const result = await outcomes.observe({
      key: "ci/g",
      group: { metadata: { name: "g", namespace: "ci", uid } },
      spec: { history: { recentRunners: 0 } },
      demand: { forge: "https://git.example.com", snapshot: snap, usable: true },
      owned: new Set(),
      runnerJobs: [runnerJob("g-1", 1)],
      removed: [],
      client,
      log: logger("test"),
      now: t0 + second * 1000,
    });
    recordJobMetrics(metrics, { namespace: "ci", name: "g" }, result.events, result.workflowOf);
    assert.deepEqual(result.recentRunners, [], "history off");
  };
  await step(2, snapshot(2, { queued: [queued(1)] }));
  await step(7, snapshot(7, { running: [running(1, "g-1", 4)] }));
  await step(20, snapshot(20, {}));
  assert.deepEqual(reads, ["run 101", "job 1"]);
  const text = await metrics.render();
  const series = (name: string) => text.split("\n").filter((row) => row.startsWith(`gitea_runner_operator_${name}{`));
  assert.deepEqual(series("jobs_started_total"), [
    'gitea_runner_operator_jobs_started_total{namespace="ci",runnergroup="g",repository="acme/app",workflow="build.yaml"} 1',
  ]);
  const [completed] = series("jobs_completed_total");
  assert.match(completed, /workflow="build\.yaml"/);
  assert.match(completed, /result="success"/);
  assert.match(completed, /\} 1$/);
});

Deno.test("no reads while the forge is failing; a job the forge lost is dropped", async () => {
  const outcomes = new JobOutcomes({ workflowLabel: false, settleMs: 3000 });
  const { client, reads } = forge({ 1: "missing", 2: "down" });
  const step = (second: number, snap: DemandSnapshot, usable = true) =>
    outcomes.observe({
      key: "ci/g",
      group: { metadata: { name: "g", namespace: "ci", uid } },
      spec: {},
      demand: { forge: "https://git.example.com", snapshot: snap, usable },
      owned: new Set(snap.jobs.map((job) => job.id)),
      runnerJobs: [runnerJob("g-1", 1), runnerJob("g-2", 1)],
      removed: [],
      client,
      log: logger("test"),
      now: t0 + second * 1000,
    });
  await step(2, snapshot(2, { running: [running(1, "g-1", 1), running(2, "g-2", 1)] }));
  await step(10, snapshot(10, {}), false);
  assert.deepEqual(reads, []);
  await step(20, snapshot(20, {}));
  await step(30, snapshot(30, {}));
  await step(40, snapshot(40, {}));
  await step(50, snapshot(50, {}));
  assert.deepEqual(reads, ["job 1", "job 2", "job 2", "job 2"], "404 once; a failing read three times, then given up");
});

Deno.test("jobs of one run that left together are read in one request; others, and jobs it lacks, one by one", async () => {
  const inRun = (id: number, runId: number, conclusion = "success"): JobDetail => ({
    ...done(id, `g-${id}`, conclusion, 1, 2),
    runId,
  });
  const { client, reads } = forge({
    1: inRun(1, 200),
    2: inRun(2, 200, "failure"),
    3: inRun(3, 200),
    // Job 4 is of run 200 too, but its run's list does not show it (a later page): read by itself.
    4: { ...inRun(4, 201), runId: 200 },
    5: inRun(5, 300),
    6: "missing",
    7: "down",
  });
  const leaving = (id: number, runId: number) => ({ id, runId, owner: "acme", repo: "app" });
  const answers = await readJobs([
    leaving(1, 200),
    leaving(2, 200),
    leaving(3, 200),
    leaving(5, 300),
    leaving(6, 600),
    leaving(7, 700),
    leaving(8, 404),
    leaving(9, 404),
  ], {
    ...client,
    listCompletedRunJobs: (owner, repo, runId) =>
      client.listCompletedRunJobs(owner, repo, runId).then((jobs) => jobs.filter((job) => job.id !== 4)),
  });
  assert.deepEqual(reads.sort(), ["job 5", "job 6", "job 7", "run-jobs 200", "run-jobs 404"].sort());
  assert.deepEqual([1, 2, 3, 5].map((id) => (answers.get(id) as JobDetail).conclusion), [
    "success",
    "failure",
    "success",
    "success",
  ]);
  assert.equal(answers.get(6), undefined, "404: gone");
  assert.ok(answers.has(6));
  assert.ok(answers.get(7) instanceof Error, "a failed read is an error, tried again later");
  assert.deepEqual(
    [answers.has(8), answers.get(8), answers.get(9)],
    [true, undefined, undefined],
    "a run gone: all gone",
  );

  const { client: second, reads: secondReads } = forge({ 4: { ...inRun(4, 201), runId: 200 } });
  const lacking = await readJobs([leaving(4, 200), leaving(10, 200)], {
    ...second,
    listCompletedRunJobs: () => Promise.resolve([]),
  });
  assert.deepEqual(secondReads, ["job 4", "job 10"], "jobs the run's list lacks are read one by one");
  assert.equal((lacking.get(4) as JobDetail).id, 4);
});
