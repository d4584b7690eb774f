/**
 * A runner that ran its job and has not exited yet is not idle, end to end against a real Gitea and a real control
 * plane: the stand-in kubelet keeps each runner pod Running 25 s after its runner exited (as a sidecar or a slow
 * shutdown would), and a `needs` chain queues its second job the moment the first ends. That job gets a runner of its
 * own while the first runner's pod still winds down, rather than once that pod has ended (which an operator counting
 * the winding-down runner as idle would wait for: it would take it for a runner about to take the job).
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { type GiteaJob, ownPathWorkflow } from "../harness/gitea.ts";
import {
  createRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { endDelayAnnotation } from "../harness/kubelet.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { operatorKubeconfig } from "../harness/operator_identity.ts";
import { runnerJobsOf } from "../harness/queries.ts";
import { runnerJobEnd } from "../../src/runner_group/job_history.ts";
import { labelKeys } from "../../src/runner_group/runner_job.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "finishing";
const endDelaySeconds = 25;

const createdAt = (job: V1Job): number => new Date(job.metadata!.creationTimestamp!).getTime();

Deno.test({
  name: "a job queued while a finished runner's pod winds down gets its own runner at once",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    const detail = async (): Promise<string> => `operator log:\n${await operator?.logTail(40)}`;
    try {
      const { gitea, custom } = env;
      await setUpRepository(env, { org: "acme", repo: "chain", namespace });
      await createRunnerGroup(
        custom,
        namespace,
        "chain",
        repoGroupSpec(env, { org: "acme", repo: "chain" }, {
          labels: ["chain"],
          template: { podAnnotations: { [endDelayAnnotation]: String(endDelaySeconds) } },
        }),
      );
      operator = await startOperator({
        kubeconfigPath: await operatorKubeconfig(env),
        dir: env.dir,
        args: ["--poll-interval", "1s"],
      });
      await waitForFirstPoll(custom, namespace, "chain");
      // build runs long enough for a 1 s poll to see its runner busy, even with a few polls late on a loaded
      // machine; report is queued when build ends.
      const path = ".gitea/workflows/chain.yaml";
      await gitea.pushWorkflow(
        "acme",
        "chain",
        path,
        ownPathWorkflow(
          path,
          "  build:\n    runs-on: chain\n    steps:\n      - run: sleep 8\n" +
            "  report:\n    needs: build\n    runs-on: chain\n    steps:\n      - run: echo report\n",
        ),
      );
      const jobs = await eventually("build and report to succeed", async () => {
        const list = (await gitea.listJobs({ kind: "repo", owner: "acme", repo: "chain" }, { limit: 50 })).jobs;
        const named = (name: string): GiteaJob | undefined => list.find((job) => job.name === name);
        return named("build")?.conclusion === "success" && named("report")?.conclusion === "success"
          ? { build: named("build")!, report: named("report")! }
          : undefined;
      }, { timeoutMs: 120_000, detail });

      const runnerJobs = await runnerJobsOf(env, namespace, "chain");
      const forJob = (job: GiteaJob): V1Job[] =>
        runnerJobs.filter((runner) => runner.metadata!.labels![labelKeys.jobId] === String(job.id));
      assert.equal(forJob(jobs.build).length, 1, "one runner Job for build");
      assert.equal(forJob(jobs.report).length, 1, "one runner Job for report");
      const [buildRunner] = forJob(jobs.build);
      const [reportRunner] = forJob(jobs.report);
      assert.equal(jobs.report.runner_name, reportRunner.metadata!.name, "report ran on its own runner");
      // The build runner's pod ends endDelaySeconds after its runner exited; report's runner came before that.
      const buildEnded = runnerJobEnd(buildRunner, Date.now())?.at;
      assert.ok(
        buildEnded === undefined || createdAt(reportRunner) < buildEnded,
        `report's runner Job should come while build's pod winds down: created ${
          new Date(createdAt(reportRunner)).toISOString()
        }, build's runner Job ended ${
          buildEnded === undefined ? "not yet" : new Date(buildEnded).toISOString()
        }\n${await detail()}`,
      );
    } finally {
      if (operator?.running()) await operator.stop("SIGKILL");
      await env.dispose();
    }
  },
});
