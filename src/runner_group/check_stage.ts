/**
 * The check stage, between demand and plan: what must hold before a group's runner Jobs are planned, each asked of its
 * API once per change or interval, not per reconcile.
 *
 * - The API server's verdict on the runner Jobs this spec builds: a dry run per spec generation (template_check.ts).
 *   A refused template stops the reconcile; only a new spec can change the verdict.
 * - The shared registration token is still the forge's (credentials.ts `RegistrationTokenCheck`): a token reset in the
 *   forge shows as failing runners, or in a periodic check.
 * - A warm pool the forge cannot serve (Forgejo) is reported and ignored by the plan.
 */
import type { BatchV1Api } from "../kube/api.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import type { RunnerLabel } from "../forge/labels.ts";
import type { ForgeKind } from "../forge/forge_client.ts";
import { type Credentials, type CredentialsOptions, RegistrationTokenCheck, type TokenCheck } from "./credentials.ts";
import type { GroupDemand } from "./demand.ts";
import type { RunnerGroup, RunnerGroupSpec } from "./schema.ts";
import { TemplateCheck } from "./template_check.ts";

export type CheckResult =
  | { ok: true; tokenCheck: TokenCheck }
  | { ok: false; reason: "InvalidTemplate"; message: string };

export interface CheckInput {
  key: string;
  group: RunnerGroup;
  spec: RunnerGroupSpec;
  labels: readonly RunnerLabel[];
  credentials: Extract<Credentials, { ok: true }>;
  demand: GroupDemand;
  /** Which forge's runner the pods run (from the poller's detection); Gitea's until it is known. */
  runnerKind?: ForgeKind;
  /** Whether each runner registers on its own (Forgejo >= 15). */
  ownRegistration: boolean;
  runnerImage: string;
  target: EventTarget;
  now: number;
}

export class GroupChecks {
  /** The API server's verdict on each group's runner Jobs, from a dry run per spec generation. */
  readonly #template: TemplateCheck;
  readonly #token: RegistrationTokenCheck;

  constructor(batch: BatchV1Api, credentials: CredentialsOptions, readonly events: EventRecorder) {
    this.#template = new TemplateCheck(batch);
    this.#token = new RegistrationTokenCheck(credentials);
  }

  async check(input: CheckInput): Promise<CheckResult> {
    const { key, group, spec, demand, credentials, target, now } = input;
    const template = await this.#template.checkGroup({
      key,
      group,
      spec,
      labels: input.labels,
      forge: demand.forge,
      runnerKind: input.runnerKind,
      ownRegistration: input.ownRegistration,
      runnerImage: input.runnerImage,
      registrationToken: credentials.registrationSecret,
    });
    if (!template.ok) {
      void this.events.record(target, "Warning", template.reason, template.message);
      return template;
    }

    if (input.runnerKind === "forgejo" && (spec.minIdleRunners ?? 0) > 0) {
      void this.events.record(
        target,
        "Warning",
        "WarmPoolUnsupported",
        `minIdleRunners ${spec.minIdleRunners} is ignored: the warm pool needs Gitea (a Forgejo runner started for ` +
          "no job cannot be told idle from busy)",
      );
    }
    // An evicted runner says nothing about the token.
    const lastFailureAt = Math.max(
      ...demand.records.filter((record) => record.state === "failed" && !record.evicted)
        .map((record) => record.finishedAt ?? now),
      -Infinity,
    );
    const tokenCheck = await this.#token.check({
      groupKey: key,
      group,
      spec,
      credentials,
      targetKey: demand.targetKey,
      lastFailureAt,
      target,
      now,
    });
    return { ok: true, tokenCheck };
  }

  forget(key: string): void {
    this.#template.forget(key);
    this.#token.forget(key);
  }
}
