/**
 * Safe node scale-down, end to end against a real Gitea and a real control plane (Job controller and pod garbage
 * collector of Kubernetes v1.35), with the operator as its ServiceAccount bound to manifests/base's ClusterRole and
 * `--runner-retry-limit 1`, so that an eviction counted as a failure would leave its job without a runner:
 *
 * - A runner pod evicted through the Eviction API before its runner took the job (the pod is held Pending by the
 *   stand-in kubelet's start delay): the Job fails with reason PodFailurePolicy, a RunnerEvicted event and the
 *   evictions counter report it, runner_jobs_failed_total does not, and the job, still queued, gets a replacement
 *   runner that runs it.
 * - A runner whose Node is deleted while it runs a job (on a second fake Node with a stand-in kubelet of its own):
 *   the pod garbage collector fails the pod with DisruptionTarget (DeletionByPodGC), the Job fails, the eviction is
 *   reported, and the job, no longer queued, gets no new runner.
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { createFakeNode } from "../harness/fake_node.ts";
import { type GiteaJob, ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import {
  createRunnerGroup,
  type Environment,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { type RunnerKubelet, startDelayAnnotation, startRunnerKubelet } from "../harness/kubelet.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { assertNoRbacRefusal, operatorKubeconfig } from "../harness/operator_identity.ts";
import { runnerJobsOf } from "../harness/queries.ts";
import { eventually } from "../harness/wait.ts";
import { join } from "node:path";

const namespace = "evict";
const repoScope = { kind: "repo", owner: "acme", repo: "evict" } as const;
const spareNode = "harness-node-b";
const spareTaint = { key: "test.gitea-runner-operator/node-b", value: "true", effect: "NoSchedule" };

async function jobNamed(env: Environment, name: string): Promise<GiteaJob | undefined> {
  return (await env.gitea.listJobs(repoScope, { limit: 50 })).jobs.find((job) => job.name === name);
}

const failedCondition = (job: V1Job): { reason?: string; message?: string } | undefined =>
  job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");

async function groupEvents(env: Environment, group: string): Promise<{ reason: string; message: string }[]> {
  const events = await env.core.listNamespacedEvent({ namespace });
  return events.items.filter((event) => event.involvedObject.name === group)
    .map((event) => ({ reason: event.reason ?? "", message: event.message ?? "" }));
}

/** The value of one series on /metrics; 0 when absent (a counter never incremented has no series). */
function metricValue(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((row) => row.startsWith(`${name}{${labels}} `));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

Deno.test({
  name: "evicted runners: reported, not counted as failures, and replaced while their job is still queued",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    let spareKubelet: RunnerKubelet | undefined;
    const detail = async (): Promise<string> => `operator log:\n${await operator?.logTail(40)}`;
    try {
      const { gitea, custom, core } = env;
      await setUpRepository(env, { org: "acme", repo: "evict", namespace });
      const push = (file: string, name: string, label: string, seconds: number): Promise<void> =>
        gitea.pushWorkflow(
          "acme",
          "evict",
          `.gitea/workflows/${file}`,
          ownPathWorkflow(`.gitea/workflows/${file}`, simpleJob(name, label, seconds)),
        );
      const base = repoGroupSpec(env, { org: "acme", repo: "evict" });
      operator = await startOperator({
        kubeconfigPath: await operatorKubeconfig(env),
        dir: env.dir,
        args: ["--poll-interval", "2s", "--runner-retry-limit", "1"],
      });
      const metrics = async (): Promise<string> =>
        await (await fetch(`http://127.0.0.1:${await operator!.port()}/metrics`)).text();

      await t.step("evicted before it took its job: reported, and the job gets a replacement runner", async () => {
        await createRunnerGroup(custom, namespace, "early", {
          ...base,
          labels: ["early"],
          // The stand-in kubelet holds the pod Pending this long, as an image pull would: time to evict it.
          template: { metadata: { annotations: { [startDelayAnnotation]: "12" } } },
        });
        await waitForFirstPoll(custom, namespace, "early");
        await push("early.yaml", "early-job", "early", 0);
        const [first] = await eventually("a runner Job of early", async () => {
          const jobs = await runnerJobsOf(env, namespace, "early");
          return jobs.length > 0 ? jobs : undefined;
        }, { timeoutMs: 30_000, detail });
        const pod = await eventually("its pod", async () => {
          const pods = await core.listNamespacedPod({ namespace, labelSelector: `job-name=${first.metadata!.name}` });
          return pods.items[0];
        }, { timeoutMs: 20_000 });
        assert.equal(pod.status?.phase ?? "Pending", "Pending");
        // What `kubectl drain` and the cluster autoscaler do: the Eviction API (no PodDisruptionBudget here).
        await core.createNamespacedPodEviction({
          name: pod.metadata!.name!,
          namespace,
          body: { metadata: { name: pod.metadata!.name!, namespace } },
        });
        const failed = await eventually("the runner Job failed", async () => {
          const job = await env.batch.readNamespacedJob({ name: first.metadata!.name!, namespace });
          return failedCondition(job);
        }, { timeoutMs: 30_000, detail });
        assert.equal(failed.reason, "PodFailurePolicy");
        assert.match(failed.message ?? "", /has condition DisruptionTarget matching FailJob rule at index 0/);

        const replacement = `${first.metadata!.name}-1`;
        await eventually(`the replacement ${replacement}`, async () => {
          return (await runnerJobsOf(env, namespace, "early")).some((job) => job.metadata!.name === replacement);
        }, { timeoutMs: 40_000, detail });
        await eventually("early-job succeeded", async () => {
          return (await jobNamed(env, "early-job"))?.conclusion === "success";
        }, { timeoutMs: 90_000, detail });
        const events = await groupEvents(env, "early");
        const evicted = events.filter((event) => event.reason === "RunnerEvicted");
        assert.equal(evicted.length, 1, JSON.stringify(events));
        assert.match(evicted[0].message, new RegExp(`^Runner Job ${first.metadata!.name} for job \\d+ lost its pod`));
        assert.ok(events.some((event) => event.reason === "RunnerJobReplaced"), JSON.stringify(events));
        assert.ok(!events.some((event) => event.reason === "RunnerJobFailed"), "no give-up at retry limit 1");
        const text = await metrics();
        const labels = `namespace="${namespace}",runnergroup="early"`;
        assert.equal(metricValue(text, "gitea_runner_operator_runner_evictions_total", labels), 1);
        assert.equal(metricValue(text, "gitea_runner_operator_runner_jobs_failed_total", labels), 0);
        assert.equal(metricValue(text, "gitea_runner_operator_runner_jobs_replaced_total", labels), 1);
      });

      await t.step(
        "its Node gone while it runs a job: reported; the job, no longer queued, gets no runner",
        async () => {
          // A second Node, tainted so that only this group's runners go there, with its own stand-in kubelet.
          await createFakeNode(core, spareNode, { taints: [spareTaint] });
          spareKubelet = await startRunnerKubelet({
            kubeConfig: env.cluster.kubeConfig,
            runnerBinary: env.tools.testRunner,
            nodeName: spareNode,
            dir: join(env.dir, "runners-node-b"),
          });
          await createRunnerGroup(custom, namespace, "lost", {
            ...base,
            labels: ["lost"],
            template: {
              spec: {
                nodeSelector: { "kubernetes.io/hostname": spareNode },
                tolerations: [{ ...spareTaint, operator: "Equal" }],
              },
            },
          });
          await waitForFirstPoll(custom, namespace, "lost");
          await push("lost.yaml", "lost-job", "lost", 300);
          const running = await eventually("lost-job in progress", async () => {
            const job = await jobNamed(env, "lost-job");
            return job?.status === "in_progress" ? job : undefined;
          }, { timeoutMs: 60_000, detail });
          const [runner] = await runnerJobsOf(env, namespace, "lost");
          assert.equal(running.runner_name, runner.metadata!.name);
          assert.ok(spareKubelet.started.some((pod) => pod.name.startsWith(runner.metadata!.name!)), "ran on node-b");

          // The machine is gone: its Node object is deleted (as a cloud provider's node controller does). After its
          // quarantine (40 s), the pod garbage collector fails the pod with DisruptionTarget and removes it.
          await core.deleteNode({ name: spareNode });
          const failed = await eventually("the runner Job failed", async () => {
            const job = await env.batch.readNamespacedJob({ name: runner.metadata!.name!, namespace });
            return failedCondition(job);
          }, { timeoutMs: 120_000, detail });
          assert.equal(failed.reason, "PodFailurePolicy");
          await eventually("a RunnerEvicted event for lost", async () => {
            return (await groupEvents(env, "lost")).some((event) => event.reason === "RunnerEvicted");
          }, { timeoutMs: 20_000, detail });
          const text = await metrics();
          const labels = `namespace="${namespace}",runnergroup="lost"`;
          assert.equal(metricValue(text, "gitea_runner_operator_runner_evictions_total", labels), 1);
          assert.equal(metricValue(text, "gitea_runner_operator_runner_jobs_failed_total", labels), 0);
          // The job was taken before the loss, so the forge shows it running or ended, never queued again: no
          // replacement, however many polls pass.
          await new Promise((resolve) => setTimeout(resolve, 15_000));
          assert.deepEqual((await runnerJobsOf(env, namespace, "lost")).map((job) => job.metadata!.name), [
            runner.metadata!.name,
          ]);
          assert.notEqual((await jobNamed(env, "lost-job"))?.status, "queued");
        },
      );

      assert.equal(await operator.stop("SIGTERM"), 0);
      await assertNoRbacRefusal(operator);
    } finally {
      if (operator?.running()) await operator.stop("SIGKILL");
      await spareKubelet?.stop();
      await env.dispose();
    }
  },
});
