import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import type { QueuedJob } from "../../src/forge/gitea_client.ts";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { runnerJobEnd } from "../../src/runner_group/job_history.ts";
import {
  buildRunnerJob,
  defaultRunnerImage,
  describeRunnerJob,
  forgeLabel,
  isGroupRunnerName,
  labelKeys,
  managedRegistrationSecret,
  pruneRunnerJob,
  runnerJobEviction,
  runnerJobName,
  warmRunnerJobName,
} from "../../src/runner_group/runner_job.ts";
import { parseRunnerGroupSpec, type RunnerGroupSpec } from "../../src/runner_group/schema.ts";

const secretValue = "s3cr3t-registration-token-value";
const job: QueuedJob = {
  id: 4242,
  runId: 17,
  name: "build (linux, 1)",
  runsOn: ["linux"],
  owner: "acme",
  repo: "app",
  createdAt: "2026-01-01T00:00:00Z",
  htmlUrl: "https://git.example.com/acme/app/actions/runs/17/jobs/4242",
};

function spec(extra: Record<string, unknown> = {}): RunnerGroupSpec {
  const parsed = parseRunnerGroupSpec({
    scope: "repo",
    org: "acme",
    repo: "app",
    giteaURL: "https://git.example.com",
    labels: ["linux:docker://node:20"],
    maxActiveRunners: 2,
    registrationToken: { name: "gitea-tokens", key: "registration" },
    authToken: { name: "gitea-tokens", key: "api" },
    ...extra,
  });
  if (!parsed.success) throw parsed.error;
  return parsed.data;
}

function build(groupSpec = spec(), attempt = 0, name = "ci-runners"): V1Job {
  return buildRunnerJob({
    group: { name, namespace: "ci", uid: "0c6a3e7e-1111-2222-3333-444455556666", spec: groupSpec },
    registrationToken: groupSpec.registrationToken ?? managedRegistrationSecret(name),
    forge: "https://git.example.com",
    labels: effectiveRunnerLabels(groupSpec.labels ?? [], groupSpec.defaultLabels ?? true),
    for: { job, attempt },
    defaultImage: defaultRunnerImage,
  });
}

Deno.test("the runner Job's name is deterministic, DNS-safe and at most 63 characters", () => {
  assert.equal(runnerJobName("ci-runners", 4242, 0), "ci-runners-4242");
  assert.equal(runnerJobName("ci-runners", 4242, 2), "ci-runners-4242-2");
  assert.equal(runnerJobName("ci-runners", 4242, 0), build().metadata?.name);
  const long = "a".repeat(200);
  for (const name of [long, "Team.Runners", "x".repeat(58), "-weird--"]) {
    const result = runnerJobName(name, 1234567, 3);
    assert.ok(result.length <= 63, `${result} is too long`);
    assert.match(result, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    assert.equal(result, runnerJobName(name, 1234567, 3));
  }
  assert.notEqual(runnerJobName(long, 1, 0), runnerJobName(`${long}b`, 1, 0), "cut names stay distinct");
  assert.notEqual(runnerJobName("team.runners", 1, 0), runnerJobName("team-runners", 1, 0));
});

Deno.test("names and labels carry sha256 prefixes of their texts, the same for each length asked, call after call", () => {
  // Expected values: sha256 of the text, hex, cut (computed outside the project).
  for (let call = 0; call < 2; call++) {
    assert.equal(runnerJobName("Team.Runners", 1, 0), "team-runners-62756-1");
    assert.equal(forgeLabel("Team.Runners"), "627564445229");
    assert.equal(forgeLabel("https://gitea.example.com"), "8e0360d53bd4");
  }
});

Deno.test("the registration token is referenced through secretKeyRef, never written as a value", () => {
  const built = build();
  const text = JSON.stringify(built);
  assert.ok(!text.includes(secretValue));
  const env = built.spec!.template.spec!.containers[0].env!;
  const token = env.find((e) => e.name === "GITEA_RUNNER_REGISTRATION_TOKEN")!;
  assert.equal(token.value, undefined);
  assert.deepEqual(token.valueFrom, { secretKeyRef: { name: "gitea-tokens", key: "registration" } });
  for (const e of env) {
    if (e.value !== undefined) assert.ok(!/token/i.test(e.name) || e.name === "GITEA_RUNNER_NAME", e.name);
  }
});

Deno.test("the runner Job carries identity, owner reference, ephemeral runner env and never-retry policy", () => {
  const built = build();
  const meta = built.metadata!;
  assert.equal(meta.labels![labelKeys.jobId], "4242");
  assert.equal(meta.labels![labelKeys.groupName], "ci-runners");
  assert.equal(meta.labels!["app.kubernetes.io/managed-by"], "gitea-runner-operator");
  assert.deepEqual(built.spec!.template.metadata!.labels, meta.labels);
  assert.equal(meta.annotations!["gitea.bpg.pw/run-id"], "17");
  assert.equal(meta.annotations!["gitea.bpg.pw/repository"], "acme/app");
  assert.deepEqual(JSON.parse(meta.annotations!["gitea.bpg.pw/runs-on"]), ["linux"]);
  assert.deepEqual(meta.ownerReferences, [{
    apiVersion: "gitea.bpg.pw/v1alpha1",
    kind: "RunnerGroup",
    name: "ci-runners",
    uid: "0c6a3e7e-1111-2222-3333-444455556666",
    controller: true,
    blockOwnerDeletion: true,
  }]);
  assert.equal(built.spec!.backoffLimit, 0);
  assert.equal(built.spec!.template.spec!.restartPolicy, "Never");
  const container = built.spec!.template.spec!.containers[0];
  const env = Object.fromEntries(container.env!.filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));
  assert.equal(env.GITEA_INSTANCE_URL, "https://git.example.com");
  assert.equal(env.GITEA_RUNNER_EPHEMERAL, "true");
  assert.equal(env.GITEA_RUNNER_NAME, "ci-runners-4242");
  assert.match(env.GITEA_RUNNER_LABELS ?? "", /^linux:docker:\/\/node:20,ubuntu-latest:docker:\/\//);
  assert.equal(container.image, defaultRunnerImage);
  assert.doesNotMatch(container.image!, /nightly|latest/);
  assert.equal(container.imagePullPolicy, "IfNotPresent");
  assert.equal(container.securityContext?.privileged, true, "Docker-in-Docker needs a privileged container");
  assert.equal(built.spec!.template.spec!.automountServiceAccountToken, false);
});

Deno.test("a user template keeps image, resources and scheduling; the operator keeps identity and credentials", () => {
  const built = build(spec({
    ttlSecondsAfterFinished: 60,
    activeDeadlineSeconds: 3600,
    template: {
      image: "registry.example.com/runner:1.2.3",
      privileged: false,
      resources: { requests: { cpu: "2" } },
      nodeSelector: { pool: "ci" },
      tolerations: [{ key: "ci", operator: "Exists" }],
      serviceAccountName: "runner",
      volumes: [{ name: "cache", emptyDir: {} }],
      volumeMounts: [{ name: "cache", mountPath: "/cache" }],
      env: [{ name: "HTTP_PROXY", value: "http://proxy:3128" }],
      podLabels: { team: "platform", [labelKeys.jobId]: "spoofed" },
    },
  }));
  const pod = built.spec!.template;
  const container = pod.spec!.containers[0];
  assert.equal(container.image, "registry.example.com/runner:1.2.3");
  assert.deepEqual(container.resources, { requests: { cpu: "2" } });
  assert.deepEqual(container.securityContext, { allowPrivilegeEscalation: false });
  assert.deepEqual(pod.spec!.nodeSelector, { pool: "ci" });
  assert.equal(pod.spec!.serviceAccountName, "runner");
  assert.deepEqual(pod.spec!.volumes, [{ name: "cache", emptyDir: {} }]);
  assert.deepEqual(container.volumeMounts, [{ name: "cache", mountPath: "/cache" }]);
  assert.equal(pod.metadata!.labels!.team, "platform");
  assert.equal(pod.metadata!.labels![labelKeys.jobId], "4242", "identity labels win over template labels");
  assert.equal(container.env!.at(-1)!.name, "HTTP_PROXY");
  assert.equal(built.spec!.ttlSecondsAfterFinished, 60);
  assert.equal(built.spec!.activeDeadlineSeconds, 3600);
});

Deno.test("a template may not set the operator's environment variables", () => {
  const parsed = parseRunnerGroupSpec({
    ...spec(),
    template: { env: [{ name: "GITEA_RUNNER_REGISTRATION_TOKEN", value: "x" }] },
  });
  assert.equal(parsed.success, false);
  assert.match(JSON.stringify(parsed.error?.issues), /GITEA_RUNNER_REGISTRATION_TOKEN/);
});

Deno.test("describeRunnerJob reads state, attempt and finish time back", () => {
  const base = build(spec(), 2);
  assert.deepEqual(describeRunnerJob(base, 5), {
    name: "ci-runners-4242-2",
    forgeJobId: 4242,
    attempt: 2,
    state: "active",
  });
  const failed = {
    ...base,
    status: { conditions: [{ type: "Failed", status: "True", lastTransitionTime: new Date(1000) }] },
  } as V1Job;
  assert.deepEqual(describeRunnerJob(failed, 5)?.state, "failed");
  assert.equal(describeRunnerJob(failed, 5)?.finishedAt, 1000);
  const complete = {
    ...base,
    status: { conditions: [{ type: "Complete", status: "True", lastTransitionTime: "1970-01-01T00:00:02Z" }] },
  } as unknown as V1Job;
  assert.equal(describeRunnerJob(complete, 5)?.state, "succeeded");
  assert.equal(describeRunnerJob(complete, 5)?.finishedAt, 2000);
  assert.equal(describeRunnerJob({ metadata: { name: "x", labels: {} } }, 5), undefined);
});

Deno.test("a disrupted runner pod fails its Job at once, and such a Job reads back as evicted", () => {
  const base = build(spec());
  // The only rule of the policy: PodFailurePolicy as the Job's reason then means "its pod was disrupted".
  assert.deepEqual(base.spec!.podFailurePolicy, {
    rules: [{ action: "FailJob", onPodConditions: [{ type: "DisruptionTarget", status: "True" }] }],
  });
  assert.equal(base.spec!.backoffLimit, 0);
  const failedWith = (reason: string, message: string): V1Job => ({
    ...base,
    status: {
      conditions: [
        { type: "FailureTarget", status: "True", reason, message },
        { type: "Failed", status: "True", reason, message, lastTransitionTime: new Date(3000) },
      ],
    },
  });
  // The Job controller's words (Kubernetes v1.35 pkg/controller/job/pod_failure_policy.go).
  const evicted = failedWith(
    "PodFailurePolicy",
    "Pod ci/ci-runners-4242-abcde has condition DisruptionTarget matching FailJob rule at index 0",
  );
  assert.deepEqual(runnerJobEviction(evicted), {
    message: "Pod ci/ci-runners-4242-abcde has condition DisruptionTarget matching FailJob rule at index 0",
  });
  assert.deepEqual(describeRunnerJob(evicted, 5), {
    name: "ci-runners-4242",
    forgeJobId: 4242,
    attempt: 0,
    state: "failed",
    finishedAt: 3000,
    evicted: true,
  });
  for (const reason of ["BackoffLimitExceeded", "DeadlineExceeded"]) {
    const failed = failedWith(reason, "Job has reached the specified backoff limit");
    assert.equal(runnerJobEviction(failed), undefined, reason);
    assert.equal(describeRunnerJob(failed, 5)?.evicted, undefined, reason);
  }
  assert.equal(runnerJobEviction(base), undefined, "a running Job");
});

Deno.test("without spec.registrationToken, runner pods reference the Secret the operator keeps", () => {
  const { registrationToken: _omitted, ...rest } = spec();
  const built = build(rest as RunnerGroupSpec);
  const env = built.spec!.template.spec!.containers[0].env!;
  assert.deepEqual(env.find((e) => e.name === "GITEA_RUNNER_REGISTRATION_TOKEN")?.valueFrom, {
    secretKeyRef: { name: "ci-runners-registration-token", key: "token" },
  });
  const long = managedRegistrationSecret("g".repeat(250));
  assert.ok(long.name.length <= 253 && long.name.endsWith("-registration-token"));
});

Deno.test("a warm-pool runner Job has a slot name, no job id, and reads back as a runner for no job", () => {
  const groupSpec = spec();
  const warmJob = buildRunnerJob({
    group: { name: "ci-runners", namespace: "ci", uid: "0c6a3e7e-1111-2222-3333-444455556666", spec: groupSpec },
    registrationToken: { name: "gitea-tokens", key: "registration" },
    forge: "https://git.example.com",
    labels: effectiveRunnerLabels(groupSpec.labels ?? [], true),
    for: { warmSlot: 2 },
    defaultImage: defaultRunnerImage,
  });
  assert.equal(warmJob.metadata?.name, "ci-runners-warm-2");
  assert.equal(warmJob.metadata?.labels?.[labelKeys.warm], "true");
  assert.equal(warmJob.metadata?.labels?.[labelKeys.jobId], undefined);
  const env = warmJob.spec?.template.spec?.containers[0].env ?? [];
  assert.equal(env.find((e) => e.name === "GITEA_RUNNER_NAME")?.value, "ci-runners-warm-2");
  assert.ok(env.find((e) => e.name === "GITEA_RUNNER_REGISTRATION_TOKEN")?.valueFrom?.secretKeyRef);
  const record = describeRunnerJob(warmJob, 0);
  assert.deepEqual(record, { name: "ci-runners-warm-2", forgeJobId: undefined, attempt: 0, state: "active" });
});

Deno.test("a group claims exactly the runner names its Jobs use, not those of a group sharing its prefix", () => {
  assert.ok(isGroupRunnerName("ci", "ci-42"));
  assert.ok(isGroupRunnerName("ci", "ci-42-1"));
  assert.ok(isGroupRunnerName("ci", "ci-warm-0"));
  assert.ok(!isGroupRunnerName("ci", "ci-42-0"), "attempt 0 has no suffix");
  assert.ok(!isGroupRunnerName("ci", "ci-1-5-2"));
  assert.ok(!isGroupRunnerName("ci", "my-laptop"));
  // "ci-1-5" is both job 1, attempt 5, of group "ci" and job 5 of group "ci-1": names cannot tell these apart, so
  // the registration sweep also requires the registration to be offline and no runner Job of that name to exist.
  assert.ok(isGroupRunnerName("ci", "ci-1-5") && isGroupRunnerName("ci-1", "ci-1-5"));
  assert.ok(!isGroupRunnerName("ci", "ci-1-warm-3"));
  assert.ok(isGroupRunnerName("ci-1", "ci-1-warm-3"));
  const long = "a".repeat(100);
  assert.ok(isGroupRunnerName(long, runnerJobName(long, 123456, 2)));
  assert.ok(isGroupRunnerName(long, warmRunnerJobName(long, 7)));
  assert.ok(!isGroupRunnerName("b".repeat(100), runnerJobName(long, 123456, 2)));
});

/** A runner Job as the API server returns it: server-set metadata, managedFields and a status in the given state. */
function asServerReturnsIt(job: V1Job, state: "active" | "failed" | "complete" | "deleting"): V1Job {
  const wire = JSON.parse(JSON.stringify(job));
  Object.assign(wire.metadata, {
    uid: "7f0c4a2e-aaaa-bbbb-cccc-ddddeeeeffff",
    resourceVersion: "12345",
    generation: 1,
    creationTimestamp: "2026-01-01T00:00:01Z",
    managedFields: [
      { manager: "gitea-runner-operator", operation: "Update", apiVersion: "batch/v1", fieldsType: "FieldsV1" },
      { manager: "kube-controller-manager", operation: "Update", subresource: "status", fieldsV1: { "f:status": {} } },
    ],
    ...(state === "deleting" ? { deletionTimestamp: "2026-01-01T00:01:00Z" } : {}),
  });
  const finished = (type: string): Record<string, unknown> => ({
    type,
    status: "True",
    lastProbeTime: "2026-01-01T00:00:09Z",
    lastTransitionTime: "2026-01-01T00:00:09Z",
    reason: type === "Failed" ? "BackoffLimitExceeded" : "CompletionsReached",
    message: "Reached the expected number of succeeded pods",
  });
  wire.status = {
    startTime: "2026-01-01T00:00:02Z",
    active: state === "active" ? 1 : 0,
    ready: 0,
    terminating: 0,
    uncountedTerminatedPods: {},
    ...(state === "failed" ? { failed: 1, conditions: [finished("FailureTarget"), finished("Failed")] } : {}),
    ...(state === "complete"
      ? { succeeded: 1, conditions: [finished("SuccessCriteriaMet"), finished("Complete")] }
      : {}),
  };
  return wire;
}

Deno.test("the cached runner Job keeps what its readers read, and drops the pod template and managedFields", () => {
  for (const state of ["active", "failed", "complete", "deleting"] as const) {
    const full = asServerReturnsIt(build(spec(), 1), state);
    const pruned = pruneRunnerJob(full);
    // describeRunnerJob (reconcile, planner) answers the same.
    assert.deepEqual(describeRunnerJob(pruned, 5), describeRunnerJob(full, 5), state);
    // The reconcile's and manager's readers: identity labels, owner, uid, failure condition, namespace and name.
    assert.deepEqual(pruned.metadata?.labels, full.metadata?.labels);
    assert.deepEqual(pruned.metadata?.ownerReferences, full.metadata?.ownerReferences);
    assert.equal(pruned.metadata?.uid, full.metadata?.uid);
    assert.equal(pruned.metadata?.namespace, "ci");
    assert.equal(pruned.metadata?.resourceVersion, "12345");
    const failed = (job: V1Job): boolean =>
      (job.status?.conditions ?? []).some((c) => c.type === "Failed" && c.status === "True");
    assert.equal(failed(pruned), failed(full), state);

    // The runner history's readers: how the Job ended, when it was made, the operator's own annotations.
    assert.deepEqual(runnerJobEnd(pruned, 5), runnerJobEnd(full, 5), state);
    assert.equal(pruned.metadata?.creationTimestamp, full.metadata?.creationTimestamp);
    const own = Object.entries(full.metadata?.annotations ?? {}).filter(([key]) => key.startsWith("gitea.bpg.pw/"));
    assert.ok(own.length > 0);
    assert.deepEqual(pruned.metadata?.annotations, Object.fromEntries(own));

    assert.equal(pruned.spec, undefined);
    assert.equal(pruned.metadata?.managedFields, undefined);
    const size = (job: V1Job): number => JSON.stringify(job).length;
    assert.ok(size(pruned) * 2 < size(full), `${state}: ${size(pruned)} bytes kept of ${size(full)}`);
  }
});
