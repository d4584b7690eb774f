/**
 * Full pod templates against a real kube-apiserver (v1.35): the CRD keeps `spec.template.spec` as written and refuses
 * a wrong shape of the fields the builder reads; the dry run of template_check.ts returns the API server's own message
 * for an invalid template and stores nothing; a Job built from a valid template keeps every field on its way through
 * the client and the API server.
 */
import assert from "node:assert/strict";
import { BatchV1Api, CoreV1Api, CustomObjectsApi, type V1Job, type V1PodSpec } from "@kubernetes/client-node";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { loadKubeConfig, makeClients } from "../../src/kube/client.ts";
import { defaultRunnerImage } from "../../src/runner_group/runner_job.ts";
import { describeSpecIssues, parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { dryRunCreate, TemplateCheck, templateCheckJob } from "../../src/runner_group/template_check.ts";
import { startCluster } from "../harness/cluster.ts";
import { installCrd } from "../harness/environment.ts";

const namespace = "templates";

const groupSpec = (template: Record<string, unknown>): Record<string, unknown> => ({
  scope: "repo",
  org: "acme",
  repo: "app",
  giteaURL: "https://git.example.com",
  labels: ["linux:host"],
  maxActiveRunners: 2,
  registrationToken: { name: "tokens", key: "registration" },
  authToken: { name: "tokens", key: "api" },
  template,
});

/** A runner Job as the operator builds it for the dry run, from a spec with this template. */
function checkJob(name: string, template: Record<string, unknown>): V1Job {
  const parsed = parseRunnerGroupSpec(groupSpec(template));
  if (!parsed.success) throw new Error(describeSpecIssues(parsed.error));
  return templateCheckJob({
    group: { name, namespace, uid: "8c0f7d3a-0000-4000-8000-000000000001", spec: parsed.data },
    forge: "https://git.example.com",
    labels: effectiveRunnerLabels(["linux:host"], false),
    defaultImage: defaultRunnerImage,
    registrationToken: { name: "tokens", key: "registration" },
  });
}

/** What the issue asks a runner to be able to have: a private image, fsGroup, an init container and a sidecar. */
const fullTemplate = {
  metadata: { annotations: { "karpenter.sh/do-not-disrupt": "true" } },
  spec: {
    imagePullSecrets: [{ name: "registry-credentials" }],
    securityContext: { fsGroup: 2000 },
    initContainers: [
      { name: "prepare", image: "busybox:1.37", command: ["sh", "-c", "mkdir -p /work/cache"] },
      // A native sidecar: an init container that keeps running beside the runner (restartPolicy Always).
      { name: "docker", image: "docker:28-dind", restartPolicy: "Always", securityContext: { privileged: true } },
    ],
    containers: [{
      name: "runner",
      image: "registry.example.com/ci/runner:1",
      env: [{ name: "DOCKER_HOST", value: "tcp://127.0.0.1:2375" }],
    }],
    dnsConfig: { options: [{ name: "ndots", value: "2" }] },
    hostAliases: [{ ip: "10.0.0.5", hostnames: ["git.internal"] }],
    topologySpreadConstraints: [{
      maxSkew: 1,
      topologyKey: "kubernetes.io/hostname",
      whenUnsatisfiable: "ScheduleAnyway",
    }],
  },
};

Deno.test({
  name: "full pod templates against a real API server",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const cluster = await startCluster();
    const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
    // The dry runs go through the operator's own client, as in the operator.
    const operatorBatch = makeClients(await loadKubeConfig(cluster.kubeconfigPath, () => undefined)).batch;
    const jobsStored = async (): Promise<string[]> =>
      (await batch.listNamespacedJob({ namespace })).items.map((job) => job.metadata!.name!);
    try {
      await installCrd(cluster);
      await core.createNamespace({ body: { metadata: { name: namespace } } });

      await t.step("the CRD keeps template.spec as written and refuses a container without a name", async () => {
        const resource = { group: "gitea.bpg.pw", version: "v1alpha1", namespace, plural: "runnergroups" };
        const created = await custom.createNamespacedCustomObject({
          ...resource,
          body: {
            apiVersion: "gitea.bpg.pw/v1alpha1",
            kind: "RunnerGroup",
            metadata: { name: "full" },
            spec: groupSpec(fullTemplate),
          },
        }) as { spec: { template: unknown } };
        assert.deepEqual(created.spec.template, fullTemplate);
        await assert.rejects(
          custom.createNamespacedCustomObject({
            ...resource,
            body: {
              apiVersion: "gitea.bpg.pw/v1alpha1",
              kind: "RunnerGroup",
              metadata: { name: "nameless" },
              spec: groupSpec({ spec: { containers: [{ image: "x" }] } }),
            },
          }),
          (error: { body?: string }) =>
            /spec\.template\.spec\.containers\[0\]\.name: Required value/.test(String(error.body)),
        );
      });

      await t.step("a valid template passes the dry run and nothing is stored", async () => {
        assert.deepEqual(await dryRunCreate(operatorBatch, checkJob("full", fullTemplate)), { ok: true });
        assert.deepEqual(await jobsStored(), []);
      });

      await t.step("an invalid template gets the API server's message", async () => {
        const noImage = await dryRunCreate(
          operatorBatch,
          checkJob("no-image", { spec: { containers: [{ name: "log-shipper" }] } }),
        );
        assert.equal(noImage.ok, false);
        assert.match(
          !noImage.ok ? noImage.message : "",
          /^The API server rejects runner Jobs built from spec\.template: Job\.batch "no-image-0" is invalid: .*spec\.template\.spec\.containers\[1\]\.image: Required value/,
        );
        // Kubernetes v1.35 takes Always, Never and OnFailure for an init container (ContainerRestartRules, beta and
        // on by default since 1.35; before, only Always).
        const badSidecar = await dryRunCreate(
          operatorBatch,
          checkJob("bad-sidecar", {
            spec: { initContainers: [{ name: "docker", image: "docker:28", restartPolicy: "Sometimes" }] },
          }),
        );
        assert.equal(badSidecar.ok, false);
        assert.match(
          !badSidecar.ok ? badSidecar.message : "",
          /spec\.template\.spec\.initContainers\[0\]\.restartPolicy: Unsupported value: "Sometimes"/,
        );
        const badRuntime = await dryRunCreate(
          operatorBatch,
          checkJob("bad-class", { spec: { runtimeClassName: "Kata VM" } }),
        );
        assert.match(!badRuntime.ok ? badRuntime.message : "", /spec\.template\.spec\.runtimeClassName/);
        assert.deepEqual(await jobsStored(), []);
      });

      await t.step("a taken name still means the Job is valid: the API server checks names last", async () => {
        const job = checkJob("taken", {});
        await batch.createNamespacedJob({ namespace, body: job });
        assert.deepEqual(await dryRunCreate(operatorBatch, job), { ok: true });
        const invalid = checkJob("taken", { spec: { containers: [{ name: "x" }] } });
        assert.equal(
          (await dryRunCreate(operatorBatch, invalid)).ok,
          false,
          "validation comes before the name conflict",
        );
        await batch.deleteNamespacedJob({ name: job.metadata!.name!, namespace, propagationPolicy: "Background" });
      });

      await t.step("the check asks once per version of the group's spec", async () => {
        let asked = 0;
        const counting = {
          createNamespacedJob: (param: Parameters<typeof operatorBatch.createNamespacedJob>[0]) => {
            asked++;
            return operatorBatch.createNamespacedJob(param);
          },
        } as typeof operatorBatch;
        const check = new TemplateCheck(counting);
        const bad = checkJob("cached", { spec: { containers: [{ name: "x" }] } });
        const first = await check.check("templates/cached", "uid/1/gitea/false", bad);
        const again = await check.check("templates/cached", "uid/1/gitea/false", bad);
        assert.equal(asked, 1);
        assert.deepEqual(again, first);
        assert.deepEqual(await check.check("templates/cached", "uid/2/gitea/false", checkJob("cached", {})), {
          ok: true,
        });
        assert.equal(asked, 2);
      });

      await t.step("a runner Job built from the full template keeps every field through the client", async () => {
        const job = checkJob("kept", fullTemplate);
        const created = await batch.createNamespacedJob({ namespace, body: job });
        // Plain JSON: the client answers with its model classes.
        const pod = JSON.parse(JSON.stringify(created.spec!.template.spec!)) as V1PodSpec;
        assert.deepEqual(pod.imagePullSecrets, [{ name: "registry-credentials" }]);
        assert.equal(pod.securityContext?.fsGroup, 2000);
        assert.deepEqual(pod.initContainers?.map((c) => [c.name, c.restartPolicy]), [
          ["prepare", undefined],
          ["docker", "Always"],
        ]);
        assert.deepEqual(pod.dnsConfig?.options, [{ name: "ndots", value: "2" }]);
        assert.deepEqual(pod.hostAliases, [{ ip: "10.0.0.5", hostnames: ["git.internal"] }]);
        assert.equal(pod.topologySpreadConstraints?.[0].topologyKey, "kubernetes.io/hostname");
        assert.equal(pod.containers[0].name, "runner");
        assert.equal(pod.containers[0].image, "registry.example.com/ci/runner:1");
        assert.equal(pod.restartPolicy, "Never");
        assert.deepEqual(created.spec!.podFailurePolicy?.rules.map((rule) => rule.action), ["FailJob"]);
        assert.equal(
          created.spec!.template.metadata!.annotations!["cluster-autoscaler.kubernetes.io/safe-to-evict"],
          "false",
        );
      });
    } finally {
      await cluster.dispose();
    }
  },
});
