/**
 * Runner Jobs: the pure builder of the Kubernetes Job that runs one ephemeral runner (Gitea's, or Forgejo's for a
 * Forgejo group, see forgejo_runner.ts) for one queued job, and the reader that turns an existing Job back into what
 * the planner needs.
 */
import { createHash } from "node:crypto";
import type { V1Job, V1JobSpec, V1OwnerReference } from "@kubernetes/client-node";
import type { ForgeKind, QueuedJob } from "../forge/forge_client.ts";
import { formatRunnerLabel, type RunnerLabel } from "../forge/labels.ts";
import { defaultForgejoRunnerImage, forgejoRunnerContainer, type RunnerContainerSetup } from "./forgejo_runner.ts";
import type { RunnerJobRecord } from "./planner.ts";
import { buildRunnerPodTemplate } from "./pod_template.ts";
import { apiGroup, apiVersion, kind, type RunnerGroupSpec } from "./schema.ts";

/** A pinned Gitea runner image with a rootless Docker daemon inside (needs a privileged container). */
export const defaultRunnerImage = "docker.gitea.com/act_runner:0.2.13-dind-rootless";
export const defaultTtlSecondsAfterFinished = 300;
export const managedBy = "gitea-runner-operator";

export const labelKeys = {
  managedBy: "app.kubernetes.io/managed-by",
  component: "app.kubernetes.io/component",
  groupName: `${apiGroup}/runnergroup-name`,
  groupUid: `${apiGroup}/runnergroup-uid`,
  jobId: `${apiGroup}/job-id`,
  /** "true" on warm-pool runners, which are started for no job in particular. */
  warm: `${apiGroup}/warm`,
  attempt: `${apiGroup}/attempt`,
  forge: `${apiGroup}/forge`,
} as const;

export const annotationKeys = {
  runId: `${apiGroup}/run-id`,
  repository: `${apiGroup}/repository`,
  jobName: `${apiGroup}/job-name`,
  runsOn: `${apiGroup}/runs-on`,
  runnerLabels: `${apiGroup}/runner-labels`,
  jobUrl: `${apiGroup}/job-url`,
} as const;

/** The Secret in which the operator keeps a group's registration token when the group names none. */
export function managedRegistrationSecret(groupName: string): { name: string; key: string } {
  const suffix = "-registration-token";
  const name = groupName.length + suffix.length <= 253
    ? `${groupName}${suffix}`
    : `${groupName.slice(0, 253 - suffix.length - 9)}-${shortHash(groupName)}${suffix}`;
  return { name, key: "token" };
}

/** Makes the group the controlling owner, so that deleting it deletes what the operator made for it. */
export function groupOwnerReference(group: { name: string; uid: string }): V1OwnerReference {
  return {
    apiVersion: `${apiGroup}/${apiVersion}`,
    kind,
    name: group.name,
    uid: group.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The label selector that finds every runner Job this operator made. */
export const runnerJobSelector = `${labelKeys.managedBy}=${managedBy},${labelKeys.component}=runner`;

/**
 * Hashes already made, by text: every runner Job's labels carry its forge's hash, and node:crypto's sha256 cost 7-10
 * us per call over the first 500 calls of a fresh Deno 2.9.6 process (2-3 us later). The texts are forge URLs and
 * group names, so the memo stays small; it is emptied if it ever grows past 1,024.
 */
const hashes = new Map<string, string>();

function shortHash(text: string, length = 8): string {
  let hash = hashes.get(text);
  if (hash === undefined) {
    if (hashes.size >= 1_024) hashes.clear();
    hash = createHash("sha256").update(text).digest("hex");
    hashes.set(text, hash);
  }
  return hash.slice(0, length);
}

/** Label values are at most 63 characters; longer names are cut and suffixed with a hash of the whole. */
export function labelValue(text: string): string {
  if (text.length <= 63) return text;
  return `${text.slice(0, 54).replace(/[^A-Za-z0-9]+$/, "")}-${shortHash(text)}`;
}

/** Identifies a Gitea instance in a label, so job ids of two instances never collide. */
export function forgeLabel(forge: string): string {
  return shortHash(forge, 12);
}

/**
 * The runner Job's name: the group's name and the forge job id, plus the attempt for replacements. The same inputs
 * always give the same name, so a second create is `AlreadyExists`, never a duplicate. Names stay within 63
 * characters (the Job controller copies them into a pod label).
 */
export function runnerJobName(groupName: string, forgeJobId: number, attempt: number): string {
  return withGroupPrefix(groupName, attempt === 0 ? `-${forgeJobId}` : `-${forgeJobId}-${attempt}`);
}

/** The name of the warm-pool runner Job in `slot` (0, 1, ...): one name per slot, so a second create conflicts. */
export function warmRunnerJobName(groupName: string, slot: number): string {
  return withGroupPrefix(groupName, `-warm-${slot}`);
}

/**
 * Whether `name` is a runner name this group's Jobs use (runner registrations carry the Job's name). Decided by
 * rebuilding the name, so groups whose names share a prefix never claim each other's runners.
 */
export function isGroupRunnerName(groupName: string, name: string): boolean {
  const warm = /-warm-(\d{1,6})$/.exec(name);
  if (warm) return warmRunnerJobName(groupName, Number(warm[1])) === name;
  const first = /-(\d{1,18})$/.exec(name);
  if (first && runnerJobName(groupName, Number(first[1]), 0) === name) return true;
  const retried = /-(\d{1,18})-(\d{1,3})$/.exec(name);
  return retried !== null && Number(retried[2]) > 0 &&
    runnerJobName(groupName, Number(retried[1]), Number(retried[2])) === name;
}

function withGroupPrefix(groupName: string, suffix: string): string {
  const room = 63 - suffix.length;
  let prefix = groupName.toLowerCase().replace(/[^a-z0-9-]+/g, "-");
  if (prefix.length > room || prefix !== groupName) {
    // Keep names of distinct groups distinct after cutting or rewriting them.
    const hash = shortHash(groupName, 5);
    prefix = `${prefix.slice(0, room - hash.length - 1).replace(/-+$/, "")}-${hash}`;
  }
  prefix = prefix.replace(/^-+/, "") || "runner";
  return `${prefix}${suffix}`;
}

export interface RunnerJobInput {
  group: { name: string; namespace: string; uid: string; spec: RunnerGroupSpec };
  forge: string;
  labels: readonly RunnerLabel[];
  /** The queued job the runner is started for, or a warm-pool slot. */
  for: { job: QueuedJob; attempt: number } | { warmSlot: number };
  defaultImage: string;
  /** Where runner pods find the registration token: the group's own Secret key, or the one the operator keeps. */
  registrationToken: { name: string; key: string };
  /** Which forge's runner the pod runs. Default "gitea". */
  runner?: ForgeKind;
  /**
   * Forgejo >= 15: the Secret with this runner's own uuid and token (see forgejo_runner.ts), used instead of the
   * registration token.
   */
  runnerCredentials?: { secretName: string };
}

/** Builds the Job. Registration tokens are referenced through `secretKeyRef`, never copied into the spec. */
export function buildRunnerJob(input: RunnerJobInput): V1Job {
  const { group } = input;
  const job = "job" in input.for ? input.for.job : undefined;
  const spec = group.spec;
  const template = spec.template ?? {};
  const name = "job" in input.for
    ? runnerJobName(group.name, input.for.job.id, input.for.attempt)
    : warmRunnerJobName(group.name, input.for.warmSlot);
  const runnerLabels = input.labels.map(formatRunnerLabel).join(",");

  const identity: Record<string, string> = {
    [labelKeys.managedBy]: managedBy,
    [labelKeys.component]: "runner",
    [labelKeys.groupName]: labelValue(group.name),
    [labelKeys.groupUid]: group.uid,
    ...("job" in input.for
      ? { [labelKeys.jobId]: String(input.for.job.id), [labelKeys.attempt]: String(input.for.attempt) }
      : { [labelKeys.warm]: "true" }),
    [labelKeys.forge]: forgeLabel(input.forge),
  };
  const annotations: Record<string, string> = {
    ...(job
      ? {
        ...(job.runId ? { [annotationKeys.runId]: String(job.runId) } : {}),
        [annotationKeys.repository]: `${job.owner}/${job.repo}`,
        [annotationKeys.jobName]: job.name,
        [annotationKeys.runsOn]: JSON.stringify(job.runsOn),
        ...(job.htmlUrl ? { [annotationKeys.jobUrl]: job.htmlUrl } : {}),
      }
      : {}),
    [annotationKeys.runnerLabels]: runnerLabels,
  };

  const forgejo = input.runner === "forgejo";
  const setup: RunnerContainerSetup = forgejo
    ? forgejoRunnerContainer({
      instanceUrl: spec.giteaURL,
      name,
      labels: input.labels,
      registration: input.runnerCredentials
        ? { credentialsSecret: input.runnerCredentials.secretName, ...(job?.handle ? { handle: job.handle } : {}) }
        : { sharedToken: input.registrationToken },
    })
    : {
      env: [
        { name: "GITEA_INSTANCE_URL", value: spec.giteaURL },
        {
          name: "GITEA_RUNNER_REGISTRATION_TOKEN",
          valueFrom: { secretKeyRef: { name: input.registrationToken.name, key: input.registrationToken.key } },
        },
        { name: "GITEA_RUNNER_EPHEMERAL", value: "true" },
        { name: "GITEA_RUNNER_NAME", value: name },
        { name: "GITEA_RUNNER_LABELS", value: runnerLabels },
      ],
      volumeMounts: [],
      volumes: [],
    };
  const podTemplate = buildRunnerPodTemplate({
    template,
    setup,
    defaultImage: forgejo ? defaultForgejoRunnerImage : input.defaultImage,
    // Gitea's default image runs Docker inside and needs a privileged container; Forgejo's runner image has no daemon.
    privilegedByDefault: !forgejo,
    identityLabels: identity,
    annotations,
  });

  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace: group.namespace,
      labels: identity,
      annotations,
      ownerReferences: [groupOwnerReference(group)],
    },
    spec: {
      backoffLimit: 0,
      podFailurePolicy: disruptedPodFailsJob,
      ttlSecondsAfterFinished: spec.ttlSecondsAfterFinished ?? defaultTtlSecondsAfterFinished,
      ...(spec.activeDeadlineSeconds !== undefined ? { activeDeadlineSeconds: spec.activeDeadlineSeconds } : {}),
      template: podTemplate,
    },
  };
}

/**
 * What the Job informer keeps of a runner Job: the fields read by {@linkcode describeRunnerJob}, the reconcile
 * (labels, namespace, name), the manager (owner references, uid, failed condition), the runner history (creation time,
 * the operator's annotations, the end condition's reason and message) and the informer itself (resourceVersion). The
 * pod template, other annotations and managedFields are most of a Job and nobody reads them from the cache. A reader of another field must add it here (tests/unit/runner_job_test.ts compares the readers' answers on
 * pruned and full Jobs).
 */
export function pruneRunnerJob(job: V1Job): V1Job {
  const conditions = job.status?.conditions;
  const pruned = pick(job, ["apiVersion", "kind"]);
  pruned.metadata = pick(job.metadata ?? {}, [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "ownerReferences",
  ]);
  // The operator's own annotations (the forge job's repository and name, for the runner history); no others.
  const annotations = Object.entries(job.metadata?.annotations ?? {}).filter(([key]) => key.startsWith(`${apiGroup}/`));
  if (annotations.length > 0) pruned.metadata.annotations = Object.fromEntries(annotations);
  if (conditions) {
    pruned.status = {
      conditions: conditions.map((condition) =>
        pick(condition, ["type", "status", "lastTransitionTime", "reason", "message"])
      ),
    };
  }
  return pruned;
}

/** The given properties of an object that are set; a new object, so that V8 keeps it compact. */
function pick<T extends object, K extends keyof T>(source: T, keys: K[]): T {
  const result = {} as T;
  for (const key of keys) if (source[key] !== undefined) result[key] = source[key];
  return result;
}

/**
 * The runner Job's pod failure policy: a pod with the `DisruptionTarget` condition (evicted through the Eviction API,
 * preempted by the scheduler, evicted by the kubelet under node pressure or by the taint manager, or removed by the
 * pod garbage collector because its node is gone) fails the Job at once with the reason `PodFailurePolicy`, which
 * this rule alone produces, so the operator tells an evicted runner from a failed one by the Job's `Failed`
 * condition (Kubernetes v1.35 `pkg/controller/job`: `FailureTarget`, then `Failed`, both with that reason and the
 * message "Pod NS/NAME has condition DisruptionTarget matching FailJob rule at index 0").
 *
 * Not `Ignore`, which would make the Job controller start a new pod for the same runner Job: the evicted runner's
 * registration is spent, and a job it had taken is not handed to another runner (Gitea 1.27 fails such a task as a
 * zombie after ZOMBIE_TASK_TIMEOUT, 10 minutes by default, `services/actions/clear_tasks.go`), so a new pod would only
 * help when the job is still queued, which the planner sees and covers with a new runner Job under its retry rules.
 * `Ignore` would also leave no trace on the Job (an ignored pod is not counted in `status.failed`) and retry without
 * the operator's backoff, and on Forgejo 15 the new pod would reuse a registration bound to a job it can no longer
 * take.
 */
export const disruptedPodFailsJob: V1JobSpec["podFailurePolicy"] = {
  rules: [{ action: "FailJob", onPodConditions: [{ type: "DisruptionTarget", status: "True" }] }],
};

/** The `Failed` condition reason the Job controller gives a Job that {@linkcode disruptedPodFailsJob} failed. */
export const evictedJobReason = "PodFailurePolicy";

/**
 * Whether a runner Job failed because its pod was disrupted (evicted, preempted, or its node went away), with the
 * Job controller's message. A runner that exits cleanly when told to stop ends Succeeded, and its Job Complete:
 * that one is not seen as evicted (its job, if still queued, gets a runner anyway, as after any runner that ended
 * without taking its job).
 */
export function runnerJobEviction(job: V1Job): { message: string } | undefined {
  const failed = (job.status?.conditions ?? []).find((c) => c.type === "Failed" && c.status === "True");
  if (failed?.reason !== evictedJobReason) return undefined;
  return { message: failed.message ?? "" };
}

/** Reads an existing runner Job back; undefined when it is not one of ours or is malformed. */
export function describeRunnerJob(job: V1Job, now: number): RunnerJobRecord | undefined {
  const labels = job.metadata?.labels ?? {};
  const warm = labels[labelKeys.warm] === "true";
  const forgeJobId = warm ? undefined : Number(labels[labelKeys.jobId]);
  const attempt = warm ? 0 : Number(labels[labelKeys.attempt] ?? "0");
  if (!job.metadata?.name || !Number.isSafeInteger(attempt)) return undefined;
  if (forgeJobId !== undefined && !Number.isSafeInteger(forgeJobId)) return undefined;
  const conditions = job.status?.conditions ?? [];
  const finished = (type: string): { at: number } | undefined => {
    const condition = conditions.find((c) => c.type === type && c.status === "True");
    if (!condition) return undefined;
    const at = condition.lastTransitionTime ? new Date(condition.lastTransitionTime).getTime() : now;
    return { at: Number.isNaN(at) ? now : at };
  };
  const failed = finished("Failed");
  if (failed) {
    return {
      name: job.metadata.name,
      forgeJobId,
      attempt,
      state: "failed",
      finishedAt: failed.at,
      ...(runnerJobEviction(job) ? { evicted: true } : {}),
    };
  }
  const complete = finished("Complete");
  if (complete) return { name: job.metadata.name, forgeJobId, attempt, state: "succeeded", finishedAt: complete.at };
  // A Job being deleted no longer holds capacity: its pod is going away.
  if (job.metadata.deletionTimestamp) {
    return { name: job.metadata.name, forgeJobId, attempt, state: "failed", finishedAt: now };
  }
  return { name: job.metadata.name, forgeJobId, attempt, state: "active" };
}
