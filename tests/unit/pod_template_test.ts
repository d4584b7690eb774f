/**
 * The merge rules of `spec.template` (src/runner_group/pod_template.ts): a full pod spec kept as written, shorthand
 * fields winning over it, and what the operator keeps, through the runner Job builder the operator uses.
 */
import assert from "node:assert/strict";
import type { V1Container, V1Job, V1PodSpec } from "@kubernetes/client-node";
import type { QueuedJob } from "../../src/forge/forge_client.ts";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { defaultRunnerPodAnnotations } from "../../src/runner_group/pod_template.ts";
import { buildRunnerJob, defaultRunnerImage, labelKeys } from "../../src/runner_group/runner_job.ts";
import { describeSpecIssues, parseRunnerGroupSpec, type RunnerGroupSpec } from "../../src/runner_group/schema.ts";

const job: QueuedJob = {
  id: 7,
  runId: 3,
  name: "build",
  runsOn: ["linux"],
  owner: "acme",
  repo: "app",
  createdAt: "2026-01-01T00:00:00Z",
  htmlUrl: "",
};

function spec(template: Record<string, unknown>): RunnerGroupSpec {
  const parsed = parseRunnerGroupSpec({
    scope: "repo",
    org: "acme",
    repo: "app",
    giteaURL: "https://git.example.com",
    labels: ["linux:host"],
    maxActiveRunners: 2,
    authToken: { name: "tokens", key: "api" },
    registrationToken: { name: "tokens", key: "registration" },
    template,
  });
  if (!parsed.success) throw new Error(describeSpecIssues(parsed.error));
  return parsed.data;
}

function build(template: Record<string, unknown>, runner: "gitea" | "forgejo" = "gitea"): V1Job {
  const groupSpec = spec(template);
  return buildRunnerJob({
    group: { name: "ci", namespace: "team", uid: "uid-1", spec: groupSpec },
    forge: "https://git.example.com",
    labels: effectiveRunnerLabels(groupSpec.labels ?? [], false),
    for: { job, attempt: 0 },
    defaultImage: defaultRunnerImage,
    registrationToken: { name: "tokens", key: "registration" },
    runner,
    ...(runner === "forgejo" ? { runnerCredentials: { secretName: "ci-7-runner" } } : {}),
  });
}

const podSpec = (built: V1Job): V1PodSpec => built.spec!.template.spec!;
const container = (built: V1Job, name: string): V1Container => {
  const found = podSpec(built).containers.find((candidate) => candidate.name === name);
  assert.ok(found, `container ${name}`);
  return found;
};

Deno.test("a full pod spec is kept as written: pull secrets, fsGroup, init and sidecar containers, DNS, spread", () => {
  const full = {
    imagePullSecrets: [{ name: "registry" }],
    securityContext: { fsGroup: 1000, runAsNonRoot: true },
    initContainers: [
      { name: "prepare", image: "busybox:1.37", command: ["sh", "-c", "true"] },
      { name: "docker", image: "docker:28-dind", restartPolicy: "Always", securityContext: { privileged: true } },
    ],
    containers: [{ name: "log-shipper", image: "fluent-bit:4" }],
    dnsConfig: { options: [{ name: "ndots", value: "2" }] },
    hostAliases: [{ ip: "10.0.0.5", hostnames: ["git.internal"] }],
    topologySpreadConstraints: [{
      maxSkew: 1,
      topologyKey: "kubernetes.io/hostname",
      whenUnsatisfiable: "DoNotSchedule",
    }],
    runtimeClassName: "kata",
    enableServiceLinks: false,
  };
  const built = build({ spec: full });
  const pod = podSpec(built);
  for (const [field, value] of Object.entries(full)) {
    if (field === "containers") continue;
    assert.deepEqual(pod[field as keyof V1PodSpec], value, field);
  }
  // The runner is added first (so `kubectl logs` shows it), the template's container after it, untouched.
  assert.deepEqual(pod.containers.map((c) => c.name), ["runner", "log-shipper"]);
  assert.deepEqual(pod.containers[1], full.containers[0]);
  assert.equal(pod.containers[0].image, defaultRunnerImage);
  assert.equal(pod.restartPolicy, "Never");
  assert.equal(pod.automountServiceAccountToken, false);
});

Deno.test("the template's container named runner is the runner's base, merged in place", () => {
  const built = build({
    spec: {
      containers: [
        { name: "docker", image: "docker:28-dind" },
        {
          name: "runner",
          image: "registry.example.com/runner:1",
          imagePullPolicy: "Always",
          ports: [{ containerPort: 9090 }],
          resources: { limits: { cpu: "2" } },
          env: [{ name: "DOCKER_HOST", value: "tcp://localhost:2375" }, { name: "SHARED", value: "spec" }],
          volumeMounts: [{ name: "work", mountPath: "/work" }],
        },
      ],
      volumes: [{ name: "work", emptyDir: {} }],
    },
  });
  const pod = podSpec(built);
  assert.deepEqual(pod.containers.map((c) => c.name), ["docker", "runner"]);
  const runner = container(built, "runner");
  assert.equal(runner.image, "registry.example.com/runner:1");
  assert.equal(runner.imagePullPolicy, "Always");
  assert.deepEqual(runner.ports, [{ containerPort: 9090 }]);
  assert.deepEqual(runner.resources, { limits: { cpu: "2" } });
  assert.deepEqual(runner.volumeMounts, [{ name: "work", mountPath: "/work" }]);
  const names = runner.env!.map((variable) => variable.name);
  // The operator's registration variables first, then the template's.
  assert.deepEqual(names.slice(0, 5), [
    "GITEA_INSTANCE_URL",
    "GITEA_RUNNER_REGISTRATION_TOKEN",
    "GITEA_RUNNER_EPHEMERAL",
    "GITEA_RUNNER_NAME",
    "GITEA_RUNNER_LABELS",
  ]);
  assert.deepEqual(names.slice(5), ["DOCKER_HOST", "SHARED"]);
  assert.deepEqual(pod.volumes, [{ name: "work", emptyDir: {} }]);
});

Deno.test("a shorthand field wins over the same field of template.spec; lists are joined and maps merged", () => {
  const built = build({
    image: "shorthand/runner:2",
    imagePullPolicy: "Never",
    resources: { requests: { memory: "1Gi" } },
    env: [{ name: "SHARED", value: "shorthand" }, { name: "ONLY_SHORTHAND", value: "1" }],
    volumeMounts: [{ name: "cache", mountPath: "/cache" }],
    nodeSelector: { pool: "ci", zone: "b" },
    tolerations: [{ key: "ci", operator: "Exists" }],
    volumes: [{ name: "cache", emptyDir: {} }],
    serviceAccountName: "shorthand-sa",
    automountServiceAccountToken: false,
    priorityClassName: "ci-high",
    runtimeClassName: "gvisor",
    affinity: { nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] } },
    podLabels: { team: "shorthand", only: "shorthand" },
    podAnnotations: { note: "shorthand" },
    metadata: { labels: { team: "template", extra: "template" }, annotations: { note: "template", other: "t" } },
    spec: {
      containers: [{
        name: "runner",
        image: "spec/runner:1",
        imagePullPolicy: "Always",
        resources: { requests: { cpu: "1" } },
        env: [{ name: "SHARED", value: "spec" }, { name: "ONLY_SPEC", value: "1" }],
        volumeMounts: [{ name: "work", mountPath: "/work" }],
      }],
      nodeSelector: { pool: "general", disk: "ssd" },
      tolerations: [{ key: "spot", operator: "Exists" }],
      volumes: [{ name: "work", emptyDir: {} }],
      serviceAccountName: "spec-sa",
      automountServiceAccountToken: true,
      priorityClassName: "spec-priority",
      runtimeClassName: "kata",
      affinity: { podAntiAffinity: {} },
    },
  });
  const pod = podSpec(built);
  const runner = container(built, "runner");
  assert.equal(runner.image, "shorthand/runner:2");
  assert.equal(runner.imagePullPolicy, "Never");
  assert.deepEqual(runner.resources, { requests: { memory: "1Gi" } });
  const userEnv = runner.env!.filter((variable) => !variable.name.startsWith("GITEA_"));
  assert.deepEqual(userEnv, [
    { name: "ONLY_SPEC", value: "1" },
    { name: "SHARED", value: "shorthand" },
    { name: "ONLY_SHORTHAND", value: "1" },
  ]);
  assert.deepEqual(runner.volumeMounts, [{ name: "work", mountPath: "/work" }, { name: "cache", mountPath: "/cache" }]);
  assert.deepEqual(pod.nodeSelector, { pool: "ci", disk: "ssd", zone: "b" });
  assert.deepEqual(pod.tolerations, [{ key: "spot", operator: "Exists" }, { key: "ci", operator: "Exists" }]);
  assert.deepEqual(pod.volumes, [{ name: "work", emptyDir: {} }, { name: "cache", emptyDir: {} }]);
  assert.equal(pod.serviceAccountName, "shorthand-sa");
  assert.equal(pod.automountServiceAccountToken, false);
  assert.equal(pod.priorityClassName, "ci-high");
  assert.equal(pod.runtimeClassName, "gvisor");
  assert.deepEqual(pod.affinity, { nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] } });
  const metadata = built.spec!.template.metadata!;
  assert.equal(metadata.labels!.team, "shorthand");
  assert.equal(metadata.labels!.only, "shorthand");
  assert.equal(metadata.labels!.extra, "template");
  assert.equal(metadata.annotations!.note, "shorthand");
  assert.equal(metadata.annotations!.other, "t");
});

Deno.test("template.spec alone sets what the shorthand would: service account, token mount, node selector", () => {
  const pod = podSpec(build({
    spec: {
      serviceAccountName: "sa",
      automountServiceAccountToken: true,
      nodeSelector: { pool: "ci" },
      tolerations: [{ key: "ci", operator: "Exists", effect: "NoSchedule" }],
    },
  }));
  assert.equal(pod.serviceAccountName, "sa");
  assert.equal(pod.automountServiceAccountToken, true);
  assert.deepEqual(pod.nodeSelector, { pool: "ci" });
  assert.deepEqual(pod.tolerations, [{ key: "ci", operator: "Exists", effect: "NoSchedule" }]);
});

Deno.test("the operator keeps the restart policy, the identity labels, the job annotations and its variables", () => {
  const built = build({
    metadata: {
      labels: { [labelKeys.groupName]: "someone-else", [labelKeys.jobId]: "1" },
      annotations: { "gitea.bpg.pw/repository": "evil/repo" },
    },
    podLabels: { [labelKeys.managedBy]: "me" },
    spec: {
      restartPolicy: "Always",
      containers: [{ name: "runner", env: [{ name: "DEBUG", value: "1" }] }],
    },
  });
  const pod = podSpec(built);
  assert.equal(pod.restartPolicy, "Never");
  const labels = built.spec!.template.metadata!.labels!;
  assert.equal(labels[labelKeys.groupName], "ci");
  assert.equal(labels[labelKeys.jobId], "7");
  assert.equal(labels[labelKeys.managedBy], "gitea-runner-operator");
  assert.equal(built.spec!.template.metadata!.annotations!["gitea.bpg.pw/repository"], "acme/app");
});

Deno.test("a reserved variable in the template's runner container is refused, naming the field", () => {
  const parsed = parseRunnerGroupSpec({
    scope: "repo",
    org: "acme",
    repo: "app",
    giteaURL: "https://git.example.com",
    maxActiveRunners: 1,
    authToken: { name: "tokens", key: "api" },
    template: {
      spec: {
        containers: [
          { name: "sidecar", image: "x", env: [{ name: "GITEA_RUNNER_REGISTRATION_TOKEN", value: "fine here" }] },
          {
            name: "runner",
            env: [{ name: "OK", value: "1" }, { name: "GITEA_RUNNER_REGISTRATION_TOKEN", value: "x" }],
          },
        ],
      },
    },
  });
  assert.equal(parsed.success, false);
  assert.equal(
    !parsed.success && describeSpecIssues(parsed.error),
    "spec.template.spec.containers[1].env[1].name: env may not set GITEA_RUNNER_REGISTRATION_TOKEN: the operator sets it",
  );
});

Deno.test("a Forgejo runner keeps its command, arguments, token file and variables over the template's", () => {
  const built = build({
    spec: {
      containers: [{
        name: "runner",
        command: ["/bin/evil"],
        args: ["--steal"],
        env: [{ name: "FORGEJO_RUNNER_UUID", value: "forged" }, { name: "KEEP", value: "1" }],
        volumeMounts: [{ name: "work", mountPath: "/work" }],
      }],
      volumes: [{ name: "work", emptyDir: {} }],
    },
  }, "forgejo");
  const runner = container(built, "runner");
  assert.deepEqual(runner.command, ["forgejo-runner"]);
  assert.equal(runner.args![0], "one-job");
  const uuid = runner.env!.filter((variable) => variable.name === "FORGEJO_RUNNER_UUID");
  assert.deepEqual(uuid, [{
    name: "FORGEJO_RUNNER_UUID",
    valueFrom: { secretKeyRef: { name: "ci-7-runner", key: "uuid" } },
  }]);
  assert.ok(runner.env!.some((variable) => variable.name === "KEEP"));
  assert.deepEqual(runner.volumeMounts!.map((mount) => mount.name), ["forgejo-runner-token", "work"]);
  assert.deepEqual(podSpec(built).volumes!.map((volume) => volume.name), ["forgejo-runner-token", "work"]);
  // Forgejo's runner image has no Docker daemon: not privileged unless asked.
  assert.deepEqual(runner.securityContext, { allowPrivilegeEscalation: false });
});

Deno.test("the runner container's security context: the default, the template's own, and template.privileged over it", () => {
  assert.deepEqual(container(build({}), "runner").securityContext, { privileged: true });
  assert.deepEqual(container(build({ privileged: false }), "runner").securityContext, {
    allowPrivilegeEscalation: false,
  });
  const own = { runAsUser: 1000, privileged: false, allowPrivilegeEscalation: false };
  assert.deepEqual(
    container(build({ spec: { containers: [{ name: "runner", securityContext: own }] } }), "runner").securityContext,
    own,
  );
  assert.deepEqual(
    container(
      build({ privileged: true, spec: { containers: [{ name: "runner", securityContext: { runAsUser: 0 } }] } }),
      "runner",
    )
      .securityContext,
    { runAsUser: 0, privileged: true },
  );
  assert.deepEqual(
    container(
      build({ privileged: false, spec: { containers: [{ name: "runner", securityContext: { runAsUser: 5 } }] } }),
      "runner",
    )
      .securityContext,
    { runAsUser: 5, privileged: false, allowPrivilegeEscalation: false },
  );
});

Deno.test("runner pods carry the autoscaler annotations by default; a template annotation of the same key wins", () => {
  const annotations = (built: V1Job): Record<string, string> => built.spec!.template.metadata!.annotations!;
  const plain = annotations(build({}));
  assert.equal(plain["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
  assert.equal(plain["karpenter.sh/do-not-disrupt"], "true");
  assert.deepEqual(Object.keys(defaultRunnerPodAnnotations).sort(), [
    "cluster-autoscaler.kubernetes.io/safe-to-evict",
    "karpenter.sh/do-not-disrupt",
  ]);
  const viaMetadata = annotations(build({ metadata: { annotations: { "karpenter.sh/do-not-disrupt": "30m" } } }));
  assert.equal(viaMetadata["karpenter.sh/do-not-disrupt"], "30m");
  assert.equal(viaMetadata["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
  const viaShorthand = annotations(
    build({ podAnnotations: { "cluster-autoscaler.kubernetes.io/safe-to-evict": "true" } }),
  );
  assert.equal(viaShorthand["cluster-autoscaler.kubernetes.io/safe-to-evict"], "true");
  // On the pod only: the Job itself is not evicted, and its annotations describe the job.
  assert.equal(build({}).metadata!.annotations!["karpenter.sh/do-not-disrupt"], undefined);
});
