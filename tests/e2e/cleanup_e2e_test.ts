/**
 * No ghost runners, a warm pool, and a shard: against a real Gitea and a real cluster.
 *
 * - A warm pool (`minIdleRunners: 1`) keeps one registered idle runner; it takes the next job at once and is topped
 *   up again; lowering the pool to 0 removes the idle runner and its registration.
 * - A run is cancelled (with the web UI's cancel action) while one runner pod is still starting (Pending) and another
 *   runner is registered but idle: both runner Jobs are removed, and the registered one's registration too, with an
 *   event and a metric each; the starting pod never runs a runner.
 * - A runner whose job another runner took (one outside the operator) is removed with its registration.
 * - A registration named like the group's runners whose runner Job is gone (a pod that died right after registering)
 *   is deleted from Gitea; a registration with another name is left alone.
 * - `--group-selector tier=ci`: a group without that label is not reconciled, and its queued job gets no runner, not
 *   even from a group of this shard with a broader scope that could run it (the other group owns the job).
 */
import assert from "node:assert/strict";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { type GiteaJob, ownPathWorkflow, runTestRunner, simpleJob } from "../harness/gitea.ts";
import {
  createRunnerGroup,
  type Environment,
  getRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { startDelayAnnotation } from "../harness/kubelet.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { eventReasons, groupNameLabel, isActiveJob, registrationNames, runnerJobsOf } from "../harness/queries.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "cleanup";
const repoScope = { kind: "repo", owner: "acme", repo: "app" } as const;
const groupLabel = groupNameLabel;

/** A workflow of quick jobs (name -> runs-on) in `.gitea/workflows/<file>`, started only by a change to that file. */
function workflow(file: string, jobs: Record<string, string>): string {
  const body = Object.entries(jobs).map(([name, runsOn]) => simpleJob(name, runsOn, 0)).join("");
  return ownPathWorkflow(`.gitea/workflows/${file}`, body);
}

async function jobsNamed(env: Environment, names: string[]): Promise<GiteaJob[]> {
  const page = await env.gitea.listJobs(repoScope, { limit: 50 });
  return page.jobs.filter((job) => names.includes(job.name));
}

function metricValue(text: string, name: string, group: string): number {
  const line = text.split("\n").find((row) => row.startsWith(`${name}{`) && row.includes(`runnergroup="${group}"`));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

Deno.test({
  name: "no ghost runners: cancelled runs and orphan registrations are cleaned up; warm pool; group selector",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    const detail = async (): Promise<string> =>
      `operator log:\n${await operator?.logTail(40)}\nrunner Jobs: ${
        (await runnerJobsOf(env, namespace)).map((job) => job.metadata?.name).join(", ")
      }`;
    // Never more active runner Jobs than a group's limit, checked all along.
    const limits: Record<string, number> = { starting: 2, idle: 2, pool: 2 };
    const overLimit: string[] = [];
    let monitoring = true;
    const monitor = (async () => {
      while (monitoring) {
        const active = (await runnerJobsOf(env, namespace).catch(() => [])).filter(isActiveJob);
        for (const [group, limit] of Object.entries(limits)) {
          const count = active.filter((job) => job.metadata?.labels?.[groupLabel] === group).length;
          if (count > limit) overLimit.push(`${group}: ${count}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    try {
      const { gitea, custom } = env;
      await setUpRepository(env, { org: "acme", repo: "app", namespace });
      const base = repoGroupSpec(env, { org: "acme", repo: "app" });
      const ci = { tier: "ci" };
      // Runner pods of "starting" stay Pending for 10 minutes, like pods whose image is being pulled.
      await createRunnerGroup(custom, namespace, "starting", {
        ...base,
        labels: ["slow-start"],
        template: { podAnnotations: { [startDelayAnnotation]: "600" } },
      }, ci);
      // Runners of "idle" register, then wait 10 minutes before asking for a task.
      await createRunnerGroup(custom, namespace, "idle", {
        ...base,
        labels: ["slow-fetch"],
        template: { env: [{ name: "TEST_RUNNER_FETCH_DELAY", value: "10m" }] },
      }, ci);
      await createRunnerGroup(custom, namespace, "pool", { ...base, labels: ["pool"], minIdleRunners: 1 }, ci);
      await createRunnerGroup(custom, namespace, "other", { ...base, labels: ["sharded"] }, { tier: "batch" });
      // In this shard, and able to run "other"'s jobs too, but with a broader scope: "other" owns them.
      const { repo: _repo, ...orgScope } = base;
      await createRunnerGroup(custom, namespace, "orgwide", { ...orgScope, scope: "org", labels: ["sharded"] }, ci);

      operator = await startOperator({
        kubeconfigPath: env.cluster.kubeconfigPath,
        dir: env.dir,
        args: [
          "--namespaces",
          namespace,
          "--group-selector",
          "tier=ci",
          "--poll-interval",
          "2s",
          "--resync-interval",
          "10s",
          "--idle-runner-grace",
          "5s",
        ],
      });
      const port = await operator.port();
      for (const group of ["starting", "idle", "pool", "orgwide"]) await waitForFirstPoll(custom, namespace, group);

      await t.step("the warm pool keeps one registered idle runner", async () => {
        await eventually("runner pool-warm-0 registered in Gitea", async () => {
          return (await registrationNames(env)).includes("pool-warm-0");
        }, { timeoutMs: 60_000, detail });
        const jobs = (await runnerJobsOf(env, namespace, "pool")).filter(isActiveJob);
        assert.deepEqual(jobs.map((job) => job.metadata?.name), ["pool-warm-0"]);
        assert.equal(jobs[0].metadata?.labels?.["gitea.bpg.pw/warm"], "true");
        await eventually("status.idleRunners 1", async () => {
          const group = await getRunnerGroup(custom, namespace, "pool");
          return (group.status as { idleRunners?: number } | undefined)?.idleRunners === 1;
        }, { timeoutMs: 30_000, detail });
      });

      await t.step("the warm runner takes the next job at once, and the pool is topped up", async () => {
        await gitea.pushWorkflow(
          "acme",
          "app",
          ".gitea/workflows/pool.yaml",
          workflow("pool.yaml", { pooled: "pool" }),
        );
        const done = await eventually("job pooled to succeed", async () => {
          const [job] = await jobsNamed(env, ["pooled"]);
          return job?.status === "completed" ? job : undefined;
        }, { timeoutMs: 120_000, detail });
        assert.equal(done.conclusion, "success");
        // Gitea hands the job to whichever warm runner asks first: warm-0, or warm-1 that replaced it in the pool.
        assert.match(done.runner_name, /^pool-warm-\d+$/, "a warm-pool runner ran it");
        const forJob = (await runnerJobsOf(env, namespace, "pool")).filter((job) =>
          job.metadata?.labels?.["gitea.bpg.pw/job-id"] !== undefined
        );
        assert.deepEqual(forJob.map((job) => job.metadata?.name), [], "the job got no runner Job of its own");
        await eventually("a new idle warm runner registered", async () => {
          const active = (await runnerJobsOf(env, namespace, "pool")).filter(isActiveJob).map((job) =>
            job.metadata?.name
          );
          return active.length === 1 && active[0] !== done.runner_name &&
            (await registrationNames(env)).includes(active[0]!);
        }, { timeoutMs: 60_000, detail });
        // No overshoot: two warm runners in all, the one that ran the job and its replacement (finished Jobs stay).
        const all = (await runnerJobsOf(env, namespace, "pool")).map((job) => job.metadata?.name).sort();
        assert.deepEqual(all, ["pool-warm-0", "pool-warm-1"]);
      });

      let cancelled: GiteaJob[] = [];
      await t.step("a cancelled run leaves no starting pod and no idle registered runner behind", async () => {
        await gitea.pushWorkflow(
          "acme",
          "app",
          ".gitea/workflows/cancel.yaml",
          workflow("cancel.yaml", { slow: "slow-start", held: "slow-fetch", sharded: "sharded" }),
        );
        const jobs = await eventually("the three jobs queued", async () => {
          const found = await jobsNamed(env, ["slow", "held", "sharded"]);
          return found.length === 3 ? found : undefined;
        }, { timeoutMs: 60_000 });
        const id = (name: string): number => jobs.find((job) => job.name === name)!.id;
        const startingJob = `starting-${id("slow")}`;
        const idleJob = `idle-${id("held")}`;
        await eventually(`runner Jobs ${startingJob} and ${idleJob}, and ${idleJob} registered`, async () => {
          const names = (await runnerJobsOf(env, namespace)).map((job) => job.metadata?.name);
          return names.includes(startingJob) && names.includes(idleJob) &&
            (await registrationNames(env)).includes(idleJob);
        }, { timeoutMs: 90_000, detail });
        // The Job controller creates the starting Job's pod on its own time: wait for it, then it must be Pending.
        const phases = await eventually("the starting runner Job's pod", async () => {
          const pods = await env.core.listNamespacedPod({ namespace, labelSelector: `${groupLabel}=starting` });
          return pods.items.length > 0 ? pods.items.map((pod) => pod.status?.phase) : undefined;
        }, { timeoutMs: 30_000, detail });
        assert.deepEqual(phases, ["Pending"], "the starting pod is Pending");

        await gitea.cancelRun("acme", "app", jobs[0].run_id);
        cancelled = await eventually("the run's jobs cancelled", async () => {
          const found = await jobsNamed(env, ["slow", "held", "sharded"]);
          return found.every((job) => job.status === "completed") ? found : undefined;
        }, { timeoutMs: 30_000 });
        assert.deepEqual(cancelled.map((job) => job.conclusion), ["cancelled", "cancelled", "cancelled"]);

        await eventually("both runner Jobs and their pods gone", async () => {
          const names = (await runnerJobsOf(env, namespace)).map((job) => job.metadata?.name);
          const pods = await env.core.listNamespacedPod({ namespace });
          const podGroups = pods.items.map((pod) => pod.metadata?.labels?.[groupLabel]);
          return !names.includes(startingJob) && !names.includes(idleJob) && !podGroups.includes("starting") &&
            !podGroups.includes("idle");
        }, { timeoutMs: 60_000, detail });
        // The registration is deleted after the runner Job, and the Events are written in the background: both are
        // waited for a few seconds after the runner Jobs are gone, not read at once.
        await eventually(`registration ${idleJob} gone from Gitea`, async () => {
          return !(await registrationNames(env)).includes(idleJob);
        }, { timeoutMs: 15_000, detail });
        assert.equal(
          env.kubelet.started.filter((pod) => pod.runnerGroup === "starting").length,
          0,
          "the starting pod never ran a runner",
        );
        for (const group of ["starting", "idle"]) {
          await eventually(`event IdleRunnerRemoved on ${group}`, async () => {
            return (await eventReasons(env, namespace, group)).includes("IdleRunnerRemoved");
          }, { timeoutMs: 15_000, detail });
        }
      });

      await t.step("a runner whose job another runner took is removed with its registration", async () => {
        await gitea.pushWorkflow(
          "acme",
          "app",
          ".gitea/workflows/taken.yaml",
          workflow("taken.yaml", { taken: "slow-fetch" }),
        );
        const [queued] = await eventually("job taken queued", async () => {
          const found = await jobsNamed(env, ["taken"]);
          return found.length === 1 ? found : undefined;
        }, { timeoutMs: 60_000 });
        const runnerJob = `idle-${queued.id}`;
        await eventually(`runner Job ${runnerJob} registered`, async () => {
          const names = (await runnerJobsOf(env, namespace, "idle")).map((job) => job.metadata?.name);
          return names.includes(runnerJob) && (await registrationNames(env)).includes(runnerJob);
        }, { timeoutMs: 60_000, detail });
        // A runner outside the operator's reach takes the job first (runner Job idle-<id> waits before it asks).
        const outsider = runTestRunner(env.tools.testRunner, {
          GITEA_INSTANCE_URL: gitea.url,
          GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken(repoScope),
          GITEA_RUNNER_NAME: "outsider",
          GITEA_RUNNER_LABELS: "slow-fetch",
          GITEA_RUNNER_EPHEMERAL: "true",
        });
        const timer = setTimeout(() => outsider.kill("SIGKILL"), 60_000);
        const exit = await outsider.exited.finally(() => clearTimeout(timer));
        assert.equal(exit.code, 0, exit.output);
        const [done] = await jobsNamed(env, ["taken"]);
        assert.deepEqual([done.status, done.conclusion, done.runner_name], ["completed", "success", "outsider"]);
        await eventually(`runner Job ${runnerJob} and its registration removed`, async () => {
          const names = (await runnerJobsOf(env, namespace, "idle")).map((job) => job.metadata?.name);
          return !names.includes(runnerJob) && !(await registrationNames(env)).includes(runnerJob);
        }, { timeoutMs: 60_000, detail });
      });

      await t.step(
        "an offline registration of a gone runner Job is deleted; other registrations are kept",
        async () => {
          const token = await gitea.registrationToken(repoScope);
          for (const name of ["idle-999999", "hand-made-runner"]) {
            const runner = runTestRunner(env.tools.testRunner, {
              GITEA_INSTANCE_URL: gitea.url,
              GITEA_RUNNER_REGISTRATION_TOKEN: token,
              GITEA_RUNNER_NAME: name,
              GITEA_RUNNER_LABELS: "slow-fetch",
              GITEA_RUNNER_EPHEMERAL: "true",
              TEST_RUNNER_REGISTER_ONLY: "true",
            });
            const exit = await runner.exited;
            assert.equal(exit.code, 0, exit.output);
          }
          assert.ok((await registrationNames(env)).includes("idle-999999"));
          await eventually("registration idle-999999 deleted", async () => {
            return !(await registrationNames(env)).includes("idle-999999");
          }, { timeoutMs: 60_000, detail });
          assert.ok(
            (await registrationNames(env)).includes("hand-made-runner"),
            "a registration of another name stays",
          );
          await eventually("event RunnerRegistrationRemoved on idle", async () => {
            return (await eventReasons(env, namespace, "idle")).includes("RunnerRegistrationRemoved");
          }, { timeoutMs: 15_000, detail });
        },
      );

      await t.step(
        "the group outside the selector was never reconciled; its job got no runner from this shard",
        async () => {
          const other = await getRunnerGroup(custom, namespace, "other");
          assert.equal(other.status, undefined, "no status written for group other");
          assert.deepEqual((await runnerJobsOf(env, namespace, "other")).map((job) => job.metadata?.name), []);
          // The shard sees every group for the one-owner rule: "orgwide" could run the job, but "other" owns it.
          assert.deepEqual((await runnerJobsOf(env, namespace, "orgwide")).map((job) => job.metadata?.name), []);
          assert.ok(cancelled.some((job) => job.name === "sharded"), "its job was queued during the step before");
        },
      );

      await t.step("metrics count the removals", async () => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        assert.equal(metricValue(text, "gitea_runner_operator_idle_runners_removed_total", "starting"), 1);
        assert.equal(metricValue(text, "gitea_runner_operator_idle_runners_removed_total", "idle"), 2);
        assert.equal(metricValue(text, "gitea_runner_operator_runner_registrations_removed_total", "idle"), 1);
        assert.equal(metricValue(text, "gitea_runner_operator_idle_runners", "pool"), 1);
      });

      await t.step("lowering minIdleRunners to 0 removes the idle warm runner and its registration", async () => {
        await custom.patchNamespacedCustomObject(
          {
            group: "gitea.bpg.pw",
            version: "v1alpha1",
            namespace,
            plural: "runnergroups",
            name: "pool",
            body: { spec: { minIdleRunners: 0 } },
          },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        );
        await eventually("no active pool runner and no pool registration", async () => {
          const active = (await runnerJobsOf(env, namespace, "pool")).filter(isActiveJob);
          const names = await registrationNames(env);
          return active.length === 0 && !names.some((name) => name.startsWith("pool-warm-"));
        }, { timeoutMs: 60_000, detail });
      });

      assert.deepEqual(overLimit, [], "a group had more active runner Jobs than its maxActiveRunners");
      assert.equal(await operator.stop("SIGTERM"), 0);
    } finally {
      monitoring = false;
      await monitor;
      if (operator?.running()) await operator.stop("SIGKILL");
      await env.dispose();
    }
  },
});
