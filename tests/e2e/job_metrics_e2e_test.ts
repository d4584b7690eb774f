/**
 * Job metrics, runner history and a paused group, against a real Gitea and a real cluster:
 *
 * - Three real jobs of known results (two successes, one `exit 1`): `/metrics` counts exactly 3 started, 2 successes
 *   and 1 failure, the queue-, run- and runner-start-time histograms have 3 observations each with plausible sums,
 *   runner seconds are counted for the repository, and the finished jobs cost at most one read each.
 * - `status.recentRunners` shows each runner Job with the job it ran and that job's result, after the Jobs are
 *   garbage-collected (ttlSecondsAfterFinished) and after an operator restart.
 * - A paused group (`maxActiveRunners: 0`) shows the job it would run in `status.queuedJobs` and the queued-jobs
 *   metric, starts no runner, and its Ready condition says Paused; once resumed, it runs the job.
 */
import assert from "node:assert/strict";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { failingJob, type GiteaJob, ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import {
  createRunnerGroup,
  type Environment,
  getRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { runnerJobsOf } from "../harness/queries.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "jm";
const repoScope = { kind: "repo", owner: "acme", repo: "metrics" } as const;
/** How long each job's step sleeps: the run-time histogram's sum is at least their total. */
const sleeps = { "ok-1": 3, "ok-2": 4, "bad": 2 } as const;

interface RecentRunner {
  runnerJob: string;
  createdAt: string;
  endedAt: string;
  reason: string;
  forgeJobId?: number;
  repository?: string;
  jobName?: string;
  result?: string;
  queuedAt?: string;
  startedAt?: string;
  finishedAt?: string;
  message?: string;
}

async function jobsNamed(env: Environment, names: readonly string[]): Promise<GiteaJob[]> {
  const page = await env.gitea.listJobs(repoScope, { limit: 50 });
  return page.jobs.filter((job) => names.includes(job.name));
}

async function groupStatus(env: Environment, name: string): Promise<{
  queuedJobs?: number;
  recentRunners?: RecentRunner[];
  conditions?: { type: string; status: string; reason: string; message: string }[];
}> {
  return (await getRunnerGroup(env.custom, namespace, name)).status ?? {};
}

/** The value of one series of a scrape, by its exact name and labels as prom-client writes them. */
function seriesValue(text: string, series: string): number | undefined {
  const line = text.split("\n").find((row) => row.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test({
  name: "job metrics and runner history from real jobs; a paused group shows what it would run",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    const detail = async (): Promise<string> => `operator log:\n${await operator?.logTail(40)}`;
    const scrape = async (): Promise<string> =>
      await (await fetch(`http://127.0.0.1:${await operator!.port()}/metrics`)).text();
    const start = (name: string): Promise<OperatorProcess> =>
      startOperator({
        kubeconfigPath: env.cluster.kubeconfigPath,
        dir: env.dir,
        name,
        args: ["--namespaces", namespace, "--poll-interval", "2s", "--resync-interval", "10s"],
      });
    try {
      const { gitea, custom } = env;
      await setUpRepository(env, { org: "acme", repo: "metrics", namespace });
      const base = repoGroupSpec(env, { org: "acme", repo: "metrics" });
      await createRunnerGroup(custom, namespace, "jobs", {
        ...base,
        labels: ["jm"],
        maxActiveRunners: 3,
        // Finished runner Jobs are deleted 5 s after they end: the history must outlive them.
        ttlSecondsAfterFinished: 5,
        history: { recentRunners: 5 },
      });
      await createRunnerGroup(custom, namespace, "paused", { ...base, labels: ["jm-paused"], maxActiveRunners: 0 });
      // A history longer than 50 entries is refused at admission, naming the field.
      const refused = await createRunnerGroup(custom, namespace, "too-long", {
        ...base,
        labels: ["jm"],
        maxActiveRunners: 1,
        history: { recentRunners: 51 },
      }).then(() => undefined, (error: { code?: number; body?: unknown }) => error);
      assert.equal(refused?.code, 422);
      assert.match(String(refused?.body), /spec\.history\.recentRunners/);
      operator = await start("operator");
      await waitForFirstPoll(custom, namespace, "jobs");
      await waitForFirstPoll(custom, namespace, "paused");

      const names = Object.keys(sleeps) as (keyof typeof sleeps)[];
      let finished: GiteaJob[] = [];
      await t.step("three real jobs run: two succeed, one fails", async () => {
        await gitea.pushWorkflow(
          "acme",
          "metrics",
          ".gitea/workflows/three.yaml",
          ownPathWorkflow(
            ".gitea/workflows/three.yaml",
            simpleJob("ok-1", "jm", sleeps["ok-1"]) + simpleJob("ok-2", "jm", sleeps["ok-2"]) +
              failingJob("bad", "jm", sleeps.bad),
          ),
        );
        finished = await eventually("all three jobs completed", async () => {
          const jobs = await jobsNamed(env, names);
          return jobs.length === 3 && jobs.every((job) => job.status === "completed") ? jobs : undefined;
        }, { timeoutMs: 120_000, detail });
        const conclusion = (name: string) => finished.find((job) => job.name === name)?.conclusion;
        assert.deepEqual(names.map(conclusion), ["success", "success", "failure"]);
      });

      await t.step(
        "metrics: exact job counters, histogram counts and plausible sums, a read per job at most",
        async () => {
          const group = 'namespace="jm",runnergroup="jobs"';
          const completed = (result: string) =>
            `gitea_runner_operator_jobs_completed_total{${group},repository="acme/metrics",result="${result}"}`;
          const text = await eventually("the operator counted three completed jobs", async () => {
            const text = await scrape();
            return (seriesValue(text, completed("success")) ?? 0) + (seriesValue(text, completed("failure")) ?? 0) >= 3
              ? text
              : undefined;
          }, { timeoutMs: 30_000, detail });
          const value = (series: string): number | undefined => seriesValue(text, series);
          assert.equal(value(`gitea_runner_operator_jobs_started_total{${group},repository="acme/metrics"}`), 3);
          assert.equal(value(completed("success")), 2);
          assert.equal(value(completed("failure")), 1);
          const sleptSeconds = sleeps["ok-1"] + sleeps["ok-2"] + sleeps.bad;
          for (const histogram of ["job_queue_duration_seconds", "job_run_duration_seconds"]) {
            assert.equal(value(`gitea_runner_operator_${histogram}_count{${group}}`), 3, histogram);
          }
          const queueSum = value(`gitea_runner_operator_job_queue_duration_seconds_sum{${group}}`)!;
          const runSum = value(`gitea_runner_operator_job_run_duration_seconds_sum{${group}}`)!;
          // Gitea's times have one-second resolution, so the sums are whole seconds.
          assert.ok(queueSum >= 0 && queueSum < 3 * 60, `queue time sum ${queueSum} s`);
          assert.ok(runSum >= sleptSeconds && runSum < sleptSeconds + 3 * 30, `run time sum ${runSum} s`);
          assert.equal(value(`gitea_runner_operator_runner_start_duration_seconds_count{${group}}`), 3);
          const runnerSeconds = value(`gitea_runner_operator_runner_seconds_total{${group},repository="acme/metrics"}`);
          assert.equal(runnerSeconds, runSum, "runner seconds are the jobs' run times, for the repository");
          assert.equal(value(`gitea_runner_operator_spawn_latency_seconds_count{${group}}`), 3);
          const requests = (endpoint: string): number =>
            value(`gitea_runner_operator_forge_requests_total{endpoint="${endpoint}",code="2xx"}`) ?? 0;
          // One read per finished job at most; jobs of the run that left the lists together share one.
          const jobReads = requests("/repos/{owner}/{repo}/actions/jobs/{id}");
          const runReads = requests("/repos/{owner}/{repo}/actions/runs/{run}/jobs");
          const reads = jobReads + runReads;
          assert.ok(reads >= 1 && reads <= 3, `${jobReads} job reads and ${runReads} run reads for 3 finished jobs`);
          // The cost of the job metrics beside every other forge request of this process, for the record.
          const all = text.split("\n").filter((row) => row.startsWith("gitea_runner_operator_forge_requests_total{"))
            .reduce((sum, row) => sum + Number(row.slice(row.lastIndexOf(" ") + 1)), 0);
          // deno-lint-ignore no-console
          console.error(
            `[job_metrics_e2e_test] forge requests so far: ${all}, of which ${jobReads} job reads and ${runReads} ` +
              `run-jobs reads; ${requests("/repos/{owner}/{repo}/actions/jobs")} job-list polls`,
          );
        },
      );

      await t.step("status.recentRunners tells each job's runner and result after the Jobs are deleted", async () => {
        await eventually("the runner Jobs garbage-collected", async () => {
          return (await runnerJobsOf(env, namespace, "jobs")).length === 0;
        }, { timeoutMs: 60_000, detail });
        const recent = await eventually("three entries in status.recentRunners", async () => {
          const entries = (await groupStatus(env, "jobs")).recentRunners ?? [];
          return entries.length === 3 && entries.every((entry) => entry.result !== undefined) ? entries : undefined;
        }, { timeoutMs: 30_000, detail });
        for (const job of finished) {
          const entry = recent.find((candidate) => candidate.forgeJobId === job.id);
          assert.ok(entry, `an entry for job ${job.id} (${job.name}): ${JSON.stringify(recent)}`);
          assert.equal(entry.runnerJob, job.runner_name, "the runner Job that ran it");
          assert.equal(entry.jobName, job.name);
          assert.equal(entry.repository, "acme/metrics");
          assert.equal(entry.result, job.conclusion);
          assert.equal(entry.reason, "Completed");
          for (const time of [entry.queuedAt, entry.startedAt, entry.finishedAt, entry.createdAt, entry.endedAt]) {
            assert.ok(time && !Number.isNaN(Date.parse(time)), `times of ${job.name}: ${JSON.stringify(entry)}`);
          }
          assert.ok(
            Date.parse(entry.finishedAt!) - Date.parse(entry.startedAt!) >=
              sleeps[job.name as keyof typeof sleeps] * 1000,
          );
        }
        const ended = recent.map((entry) => Date.parse(entry.endedAt));
        assert.deepEqual(ended, [...ended].sort((a, b) => b - a), "newest first");
      });

      await t.step("the history survives an operator restart", async () => {
        const before = (await groupStatus(env, "jobs")).recentRunners;
        assert.equal(await operator!.stop("SIGTERM"), 0);
        operator = await start("operator-2");
        // The new process has reconciled the group once it exposes the group's gauges.
        await eventually("the restarted operator reconciled the group", async () => {
          return seriesValue(await scrape(), 'gitea_runner_operator_queued_jobs{namespace="jm",runnergroup="jobs"}') ===
            0;
        }, { timeoutMs: 30_000, detail });
        // Another reconcile or two (resync 10 s) must keep it as it was.
        await new Promise((resolve) => setTimeout(resolve, 12_000));
        assert.deepEqual((await groupStatus(env, "jobs")).recentRunners, before);
      });

      await t.step("a paused group shows the job it would run, starts no runner, and says Paused", async () => {
        await gitea.pushWorkflow(
          "acme",
          "metrics",
          ".gitea/workflows/paused.yaml",
          ownPathWorkflow(".gitea/workflows/paused.yaml", simpleJob("waits", "jm-paused", 0)),
        );
        const status = await eventually("status.queuedJobs 1 on the paused group", async () => {
          const status = await groupStatus(env, "paused");
          return status.queuedJobs === 1 ? status : undefined;
        }, { timeoutMs: 30_000, detail });
        const ready = status.conditions?.find((condition) => condition.type === "Ready");
        assert.deepEqual([ready?.status, ready?.reason], ["False", "Paused"]);
        assert.match(ready!.message, /paused/);
        assert.equal(
          seriesValue(await scrape(), 'gitea_runner_operator_queued_jobs{namespace="jm",runnergroup="paused"}'),
          1,
        );
        assert.deepEqual(await runnerJobsOf(env, namespace, "paused"), [], "no runner Job while paused");
        const [waiting] = await jobsNamed(env, ["waits"]);
        assert.equal(waiting.status, "queued");

        await custom.patchNamespacedCustomObject(
          {
            group: "gitea.bpg.pw",
            version: "v1alpha1",
            namespace,
            plural: "runnergroups",
            name: "paused",
            body: { spec: { maxActiveRunners: 1 } },
          },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        );
        await eventually("the resumed group runs the job", async () => {
          const [job] = await jobsNamed(env, ["waits"]);
          return job?.conclusion === "success";
        }, { timeoutMs: 90_000, detail });
        await eventually("Ready True again", async () => {
          const ready = (await groupStatus(env, "paused")).conditions?.find((condition) => condition.type === "Ready");
          return ready?.status === "True" && ready.reason === "Ready";
        }, { timeoutMs: 30_000, detail });
      });
    } finally {
      if (operator?.running()) await operator.stop("SIGTERM");
      await env.dispose();
    }
  },
});
