/**
 * Full pod templates end to end, against a real Gitea and a real control plane, with the operator running as its
 * ServiceAccount bound to manifests/base's ClusterRole:
 *
 * - A group whose template has pull secrets, fsGroup, an init container and a native sidecar: SpecValid True, and its
 *   runner Job carries them all (and the default autoscaler annotations, one of them overridden); the job succeeds.
 * - A group whose template the API server rejects (a container without image): SpecValid False with reason
 *   InvalidTemplate and the API server's message, an InvalidTemplate event, and no runner Job while a job waits;
 *   once the spec is fixed, the job gets its runner and succeeds.
 */
import assert from "node:assert/strict";
import type { V1Pod } from "@kubernetes/client-node";
import { defaultRunnerImage } from "../../src/runner_group/runner_job.ts";
import { type GiteaJob, ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
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
import { assertNoRbacRefusal, operatorKubeconfig } from "../harness/operator_identity.ts";
import { runnerJobsOf } from "../harness/queries.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "tmpl";
const repoScope = { kind: "repo", owner: "acme", repo: "tmpl" } as const;
const resource = { group: "gitea.bpg.pw", version: "v1alpha1", namespace, plural: "runnergroups" } as const;

async function jobNamed(env: Environment, name: string): Promise<GiteaJob | undefined> {
  return (await env.gitea.listJobs(repoScope, { limit: 50 })).jobs.find((job) => job.name === name);
}

const condition = async (env: Environment, group: string, type: string) =>
  (await getRunnerGroup(env.custom, namespace, group)).status?.conditions?.find((c) => c.type === type);

Deno.test({
  name: "pod templates: a full template reaches the runner Job; an invalid one blocks runners until fixed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    const detail = async (): Promise<string> => `operator log:\n${await operator?.logTail(40)}`;
    try {
      const { gitea, custom, core } = env;
      await setUpRepository(env, { org: "acme", repo: "tmpl", namespace });
      const push = (file: string, name: string, label: string): Promise<void> =>
        gitea.pushWorkflow(
          "acme",
          "tmpl",
          `.gitea/workflows/${file}`,
          ownPathWorkflow(`.gitea/workflows/${file}`, simpleJob(name, label, 0)),
        );
      const base = repoGroupSpec(env, { org: "acme", repo: "tmpl" });
      operator = await startOperator({
        kubeconfigPath: await operatorKubeconfig(env),
        dir: env.dir,
        args: ["--poll-interval", "2s"],
      });

      await t.step("pull secrets, fsGroup, an init container and a sidecar end up in the runner Job", async () => {
        await createRunnerGroup(custom, namespace, "full", {
          ...base,
          labels: ["full"],
          template: {
            metadata: { annotations: { "karpenter.sh/do-not-disrupt": "45m" }, labels: { team: "platform" } },
            spec: {
              imagePullSecrets: [{ name: "registry-credentials" }],
              securityContext: { fsGroup: 2000 },
              initContainers: [
                { name: "prepare", image: "busybox:1.37", command: ["sh", "-c", "true"] },
                { name: "docker", image: "docker:28-dind", restartPolicy: "Always" },
              ],
              containers: [{ name: "runner", env: [{ name: "DOCKER_HOST", value: "tcp://127.0.0.1:2375" }] }],
            },
          },
        });
        await waitForFirstPoll(custom, namespace, "full");
        assert.equal((await condition(env, "full", "SpecValid"))?.status, "True");
        await push("full.yaml", "full-job", "full");
        const [job] = await eventually("a runner Job of full", async () => {
          const jobs = await runnerJobsOf(env, namespace, "full");
          return jobs.length > 0 ? jobs : undefined;
        }, { timeoutMs: 30_000, detail });
        const pod = job.spec!.template.spec!;
        assert.deepEqual(pod.imagePullSecrets?.map((secret) => secret.name), ["registry-credentials"]);
        assert.equal(pod.securityContext?.fsGroup, 2000);
        assert.deepEqual(pod.initContainers?.map((c) => [c.name, c.restartPolicy ?? null]), [
          ["prepare", null],
          ["docker", "Always"],
        ]);
        assert.deepEqual(pod.containers.map((c) => c.name), ["runner"]);
        const runnerEnv = pod.containers[0].env!.map((variable) => variable.name);
        assert.ok(runnerEnv.includes("GITEA_RUNNER_REGISTRATION_TOKEN") && runnerEnv.includes("DOCKER_HOST"));
        assert.equal(pod.restartPolicy, "Never");
        // The pod the Job controller made carries the annotations a node autoscaler reads; the template's value wins.
        const runnerPod: V1Pod = await eventually("the runner pod", async () => {
          const pods = await core.listNamespacedPod({ namespace, labelSelector: `job-name=${job.metadata!.name}` });
          return pods.items[0];
        }, { timeoutMs: 20_000 });
        assert.equal(runnerPod.metadata!.annotations!["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
        assert.equal(runnerPod.metadata!.annotations!["karpenter.sh/do-not-disrupt"], "45m");
        assert.equal(runnerPod.metadata!.labels!.team, "platform");
        await eventually(
          "full-job succeeded",
          async () => (await jobNamed(env, "full-job"))?.conclusion === "success",
          {
            timeoutMs: 90_000,
            detail,
          },
        );
      });

      await t.step("a template the API server rejects is reported in status and starts no runner", async () => {
        await createRunnerGroup(custom, namespace, "broken", {
          ...base,
          labels: ["broken"],
          template: { spec: { containers: [{ name: "log-shipper" }] } },
        });
        const invalid = await eventually("SpecValid False (InvalidTemplate)", async () => {
          const found = await condition(env, "broken", "SpecValid");
          return found?.reason === "InvalidTemplate" ? found : undefined;
        }, { timeoutMs: 30_000, detail });
        assert.equal(invalid.status, "False");
        assert.match(
          invalid.message,
          /^The API server rejects runner Jobs built from spec\.template: Job\.batch "broken-0" is invalid: .*spec\.template\.spec\.containers\[1\]\.image: Required value/,
        );
        const ready = await condition(env, "broken", "Ready");
        assert.deepEqual([ready?.status, ready?.reason], ["False", "InvalidTemplate"]);
        await push("broken.yaml", "broken-job", "broken");
        // The forge is asked meanwhile (the group still polls): the job is seen queued, and gets no runner.
        await eventually("broken-job queued in Gitea", async () => (await jobNamed(env, "broken-job"))?.status, {
          timeoutMs: 30_000,
        });
        await eventually("ForgeReachable True for broken", async () => {
          return (await condition(env, "broken", "ForgeReachable"))?.status === "True";
        }, { timeoutMs: 30_000, detail });
        await new Promise((resolve) => setTimeout(resolve, 6_000));
        assert.deepEqual((await runnerJobsOf(env, namespace, "broken")).map((job) => job.metadata!.name), []);
        assert.equal((await jobNamed(env, "broken-job"))?.status, "queued");
        const events = await core.listNamespacedEvent({ namespace });
        assert.ok(
          events.items.some((event) => event.involvedObject.name === "broken" && event.reason === "InvalidTemplate"),
          "an InvalidTemplate event",
        );

        // Fix it: the new generation is checked again, and the waiting job gets its runner.
        const group = await custom.getNamespacedCustomObject({ ...resource, name: "broken" }) as {
          spec: { template: { spec: { containers: Record<string, unknown>[] } } };
        };
        group.spec.template.spec.containers[0].image = "fluent-bit:4";
        await custom.replaceNamespacedCustomObject({ ...resource, name: "broken", body: group });
        await eventually("SpecValid True for broken", async () => {
          return (await condition(env, "broken", "SpecValid"))?.status === "True";
        }, { timeoutMs: 30_000, detail });
        await eventually("broken-job succeeded", async () => {
          return (await jobNamed(env, "broken-job"))?.conclusion === "success";
        }, { timeoutMs: 90_000, detail });
        const [runner] = await runnerJobsOf(env, namespace, "broken");
        assert.deepEqual(runner.spec!.template.spec!.containers.map((c) => [c.name, c.image]), [
          ["runner", defaultRunnerImage],
          ["log-shipper", "fluent-bit:4"],
        ]);
      });

      assert.equal(await operator.stop("SIGTERM"), 0);
      await assertNoRbacRefusal(operator);
    } finally {
      if (operator?.running()) await operator.stop("SIGKILL");
      await env.dispose();
    }
  },
});
