/**
 * Whether the API server accepts a group's runner Jobs, asked before any is created: a server-side dry run
 * (`dryRun=All`: admission and validation run, nothing is stored) of a runner Job built from the spec. The pod
 * template is a user's core/v1 PodSpec that only the API server can check in full (a container without an image, a
 * sidecar whose restartPolicy is not Always, a wrong volume source, ...), so an error shows in `SpecValid` at once
 * instead of as failed creates when the first job is queued. Asked once per spec generation and runner kind, the
 * answer kept: one request per spec change, not per reconcile.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { BatchV1Api } from "../kube/api.ts";
import type { ForgeKind, QueuedJob } from "../forge/forge_client.ts";
import type { RunnerLabel } from "../forge/labels.ts";
import { apiMessage, apiStatus } from "../kube/client.ts";
import { runnerCredentialsSecretName } from "./forgejo_runner.ts";
import { buildRunnerJob, type RunnerJobInput, runnerJobName } from "./runner_job.ts";
import type { RunnerGroup, RunnerGroupSpec } from "./schema.ts";

export type TemplateCheckResult = { ok: true } | { ok: false; reason: "InvalidTemplate"; message: string };

/** The dry runs' answers, one per group. */
export class TemplateCheck {
  readonly #batch: BatchV1Api;
  readonly #answers = new Map<string, { version: string; result: TemplateCheckResult }>();

  constructor(batch: BatchV1Api) {
    this.#batch = batch;
  }

  /**
   * The answer for `job`, built from the group's spec as it is at `version` (its uid, generation and runner kind):
   * the kept one when the version did not change, else a new dry run.
   */
  async check(groupKey: string, version: string, job: V1Job): Promise<TemplateCheckResult> {
    const kept = this.#answers.get(groupKey);
    if (kept?.version === version) return kept.result;
    const result = await dryRunCreate(this.#batch, job);
    this.#answers.set(groupKey, { version, result });
    return result;
  }

  /**
   * The answer for a group's runner Jobs as `spec` builds them, for the forge's runner (a Gitea runner's Job until the
   * forge is known); asked again when the group's generation or the runner kind changes.
   */
  checkGroup(input: GroupCheckInput & { key: string }): Promise<TemplateCheckResult> {
    const { metadata } = input.group;
    const runner = input.runnerKind ?? "gitea";
    return this.check(
      input.key,
      `${metadata.uid}/${metadata.generation}/${runner}/${input.ownRegistration}`,
      groupCheckJob(input),
    );
  }

  forget(groupKey: string): void {
    this.#answers.delete(groupKey);
  }
}

/** What a group's dry-run Job is built from. */
export interface GroupCheckInput {
  group: Pick<RunnerGroup, "metadata">;
  spec: RunnerGroupSpec;
  labels: readonly RunnerLabel[];
  forge: string;
  runnerKind?: ForgeKind;
  /** Whether each runner registers on its own (Forgejo >= 15). */
  ownRegistration: boolean;
  runnerImage: string;
  registrationToken: { name: string; key: string };
}

/** The runner Job a group's spec builds for its forge's runner (a Gitea runner's when the forge is not known yet). */
export function groupCheckJob(input: GroupCheckInput): V1Job {
  const { metadata } = input.group;
  return templateCheckJob({
    group: { name: metadata.name, namespace: metadata.namespace, uid: metadata.uid, spec: input.spec },
    forge: input.forge,
    labels: input.labels,
    defaultImage: input.runnerImage,
    registrationToken: input.registrationToken,
    runner: input.runnerKind ?? "gitea",
    ...(input.ownRegistration
      ? { runnerCredentials: { secretName: runnerCredentialsSecretName(runnerJobName(metadata.name, 0, 0)) } }
      : {}),
  });
}

/**
 * Creates `job` in a dry run. What the API server calls invalid (422, or 400 for a body it cannot decode, unknown
 * fields included under strict field validation) is the template's fault and is returned; any other refusal (403
 * from RBAC, a quota or an admission policy; 5xx; the network) is thrown, as a real create would fail, and the
 * reconcile retries it with backoff.
 */
export async function dryRunCreate(batch: BatchV1Api, job: V1Job): Promise<TemplateCheckResult> {
  const namespace = job.metadata?.namespace ?? "";
  try {
    await batch.createNamespacedJob({ namespace, body: job, dryRun: "All", fieldValidation: "Strict" });
    return { ok: true };
  } catch (error) {
    const status = apiStatus(error);
    // The name is taken: the API server checks that after admission and validation, so the Job itself is accepted.
    if (status === 409) return { ok: true };
    if (status === 422 || status === 400) {
      return {
        ok: false,
        reason: "InvalidTemplate",
        message: `The API server rejects runner Jobs built from spec.template: ${apiMessage(error)}`,
      };
    }
    throw new Error(
      `Cannot check the runner Job template of ${namespace} with a dry run: ${apiMessage(error)}`,
      { cause: error },
    );
  }
}

/**
 * A runner Job as the group would create it for a queued job (forge job id 0, which no forge hands out), to be
 * created in a dry run: the same builder, so the check sees exactly the pod the group's runners get.
 */
export function templateCheckJob(input: Omit<RunnerJobInput, "for">): V1Job {
  const sample: QueuedJob = {
    id: 0,
    runId: 0,
    name: "template-check",
    runsOn: [],
    owner: "template",
    repo: "check",
    createdAt: "",
    htmlUrl: "",
    ...(input.runnerCredentials ? { handle: "template-check" } : {}),
  };
  return buildRunnerJob({ ...input, for: { job: sample, attempt: 0 } });
}
