/** Runner Jobs of Forgejo groups: the Forgejo runner, its two ways to connect, and the credentials Secret. */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import type { QueuedJob } from "../../src/forge/forge_client.ts";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import {
  buildRunnerCredentialsSecret,
  defaultForgejoRunnerImage,
  jobOwnerReference,
  runnerCredentialsSecretName,
} from "../../src/runner_group/forgejo_runner.ts";
import { planRunnerJobs } from "../../src/runner_group/planner.ts";
import { buildRunnerJob, defaultRunnerImage, groupOwnerReference } from "../../src/runner_group/runner_job.ts";
import { parseRunnerGroupSpec, type RunnerGroupSpec } from "../../src/runner_group/schema.ts";

const job: QueuedJob = {
  id: 77,
  runId: 0,
  name: "build",
  runsOn: ["linux"],
  owner: "acme",
  repo: "app",
  createdAt: "",
  htmlUrl: "",
  handle: "33ba7d51-59c6-44f8-9d2b-1b94f4033973",
};

function spec(extra: Record<string, unknown> = {}): RunnerGroupSpec {
  const parsed = parseRunnerGroupSpec({
    scope: "org",
    org: "acme",
    giteaURL: "https://forgejo.example.com",
    labels: ["linux:host", "node:docker://node:22"],
    defaultLabels: false,
    maxActiveRunners: 2,
    authToken: { name: "forgejo", key: "api" },
    ...extra,
  });
  if (!parsed.success) throw parsed.error;
  return parsed.data;
}

function build(options: { credentials?: boolean; groupSpec?: RunnerGroupSpec } = {}): V1Job {
  const groupSpec = options.groupSpec ?? spec();
  return buildRunnerJob({
    group: { name: "fj", namespace: "ci", uid: "uid-1", spec: groupSpec },
    forge: "https://forgejo.example.com",
    labels: effectiveRunnerLabels(groupSpec.labels ?? [], false),
    for: { job, attempt: 0 },
    defaultImage: defaultRunnerImage,
    registrationToken: { name: "fj-registration-token", key: "token" },
    runner: "forgejo",
    ...(options.credentials ? { runnerCredentials: { secretName: runnerCredentialsSecretName("fj-77") } } : {}),
  });
}

Deno.test("Forgejo < 15: the pinned Forgejo runner registers with the shared token from its Secret, then runs one job", () => {
  const built = build();
  const container = built.spec!.template.spec!.containers[0];
  assert.equal(container.image, defaultForgejoRunnerImage);
  assert.match(container.image!, /^code\.forgejo\.org\/forgejo\/runner:\d+\.\d+\.\d+$/);
  assert.deepEqual(container.command?.slice(0, 2), ["/bin/sh", "-c"]);
  assert.equal(
    container.command![2],
    'forgejo-runner register --no-interactive --instance "$FORGEJO_INSTANCE_URL" ' +
      '--token "$FORGEJO_RUNNER_REGISTRATION_TOKEN" --name "$FORGEJO_RUNNER_NAME" --labels "$FORGEJO_RUNNER_LABELS" ' +
      "&& exec forgejo-runner one-job --wait",
  );
  const env = Object.fromEntries(container.env!.map((e) => [e.name, e.value ?? e.valueFrom]));
  assert.deepEqual(env, {
    FORGEJO_INSTANCE_URL: "https://forgejo.example.com",
    FORGEJO_RUNNER_NAME: "fj-77",
    FORGEJO_RUNNER_LABELS: "linux:host,node:docker://node:22",
    FORGEJO_RUNNER_REGISTRATION_TOKEN: { secretKeyRef: { name: "fj-registration-token", key: "token" } },
  });
  assert.deepEqual(container.securityContext, { allowPrivilegeEscalation: false }, "no Docker daemon: not privileged");
  assert.equal(built.metadata!.annotations!["gitea.bpg.pw/run-id"], undefined, "Forgejo names no run");
});

Deno.test("Forgejo 15: the runner's own uuid and token come from its Secret, the handle binds it to its job", () => {
  const built = build({ credentials: true });
  const pod = built.spec!.template.spec!;
  const container = pod.containers[0];
  assert.deepEqual(container.command, ["forgejo-runner"]);
  assert.deepEqual(container.args, [
    "one-job",
    "--url",
    "$(FORGEJO_INSTANCE_URL)",
    "--uuid",
    "$(FORGEJO_RUNNER_UUID)",
    "--token-url",
    "file:/var/run/forgejo-runner/token",
    "--handle",
    "$(FORGEJO_RUNNER_HANDLE)",
    "--label",
    "linux:host",
    "--label",
    "node:docker://node:22",
    "--wait",
  ]);
  const env = Object.fromEntries(container.env!.map((e) => [e.name, e.value ?? e.valueFrom]));
  assert.deepEqual(env.FORGEJO_RUNNER_UUID, { secretKeyRef: { name: "fj-77-runner", key: "uuid" } });
  assert.equal(env.FORGEJO_RUNNER_HANDLE, job.handle);
  assert.equal(env.FORGEJO_RUNNER_REGISTRATION_TOKEN, undefined, "no shared registration token reaches the pod");
  assert.deepEqual(container.volumeMounts, [
    { name: "forgejo-runner-token", mountPath: "/var/run/forgejo-runner", readOnly: true },
  ]);
  assert.deepEqual(pod.volumes, [{
    name: "forgejo-runner-token",
    secret: { secretName: "fj-77-runner", items: [{ key: "token", path: "token" }] },
  }]);
  for (const variable of container.env!) {
    assert.ok(!/TOKEN|UUID/.test(variable.name) || variable.value === undefined, `${variable.name} is a literal`);
  }
});

Deno.test("a Forgejo group's template: its volumes and env come after the operator's, which it cannot override", () => {
  const built = build({
    credentials: true,
    groupSpec: spec({
      template: {
        volumes: [{ name: "cache", emptyDir: {} }],
        volumeMounts: [{ name: "cache", mountPath: "/cache" }],
        env: [{ name: "FORGEJO_RUNNER_HANDLE", value: "another job" }, { name: "HTTP_PROXY", value: "http://p:3128" }],
        privileged: true,
      },
    }),
  });
  const pod = built.spec!.template.spec!;
  const container = pod.containers[0];
  assert.deepEqual(pod.volumes!.map((volume) => volume.name), ["forgejo-runner-token", "cache"]);
  assert.deepEqual(container.volumeMounts!.map((mount) => mount.name), ["forgejo-runner-token", "cache"]);
  assert.deepEqual(container.env!.filter((e) => e.name === "FORGEJO_RUNNER_HANDLE").map((e) => e.value), [job.handle]);
  assert.equal(container.env!.at(-1)!.name, "HTTP_PROXY");
  assert.equal(container.securityContext?.privileged, true);
});

Deno.test("the credentials Secret holds uuid and token, starts owned by the group and can be handed to the Job", () => {
  const owner = groupOwnerReference({ name: "fj", uid: "uid-1" });
  const secret = buildRunnerCredentialsSecret({
    namespace: "ci",
    jobName: "fj-77",
    labels: { "app.kubernetes.io/managed-by": "gitea-runner-operator" },
    owner,
    credentials: { id: 5, uuid: "d4637a60-7fea-4075-a81c-7e4ae01bdf0d", token: "e1f3d26e0346" },
  });
  assert.equal(secret.metadata!.name, "fj-77-runner");
  assert.deepEqual(secret.stringData, { uuid: "d4637a60-7fea-4075-a81c-7e4ae01bdf0d", token: "e1f3d26e0346" });
  assert.equal(secret.metadata!.annotations!["gitea.bpg.pw/runner-id"], "5");
  assert.deepEqual(secret.metadata!.ownerReferences, [owner]);
  assert.deepEqual(jobOwnerReference({ name: "fj-77", uid: "job-uid" }), {
    apiVersion: "batch/v1",
    kind: "Job",
    name: "fj-77",
    uid: "job-uid",
    blockOwnerDeletion: false,
  });
});

Deno.test("runners bound to their job by its handle cover no other job: each job without a runner gets one", () => {
  const queued = (id: number): QueuedJob => ({ ...job, id, handle: `h-${id}` });
  const input = {
    groupKey: "ci/fj",
    maxActiveRunners: 10,
    labels: effectiveRunnerLabels(["linux:host"], false),
    // Runner fj-1's job was cancelled: it is idle, and can never take job 3 or 4.
    demand: { jobs: [queued(3), queued(4)], fetchedAt: 1000, busyRunners: new Set<string>() },
    ownerOf: () => "ci/fj",
    runnerJobs: [{ name: "fj-1", forgeJobId: 1, attempt: 0, state: "active" as const }],
    activeElsewhere: new Set<number>(),
    now: 1000,
    retry: { limit: 3, baseDelayMs: 10_000, maxDelayMs: 300_000 },
    settleMs: 3000,
    idleGraceMs: 0,
  };
  const anyJob = planRunnerJobs(input);
  assert.deepEqual(anyJob.create.map((c) => c.job.id), [4], "a Gitea runner takes any job: fj-1 covers job 3");
  const bound = planRunnerJobs({ ...input, idleRunnersTakeAnyJob: false });
  assert.deepEqual(bound.create.map((c) => c.job.id), [3, 4]);
  assert.deepEqual(bound.idle, ["fj-1"]);
  assert.deepEqual(bound.remove, ["fj-1"], "and the idle one is removed after the grace period");
});
