/**
 * Stage 6 of the reconcile, RunnerGroup status: conditions computed from what the reconcile saw, the rule for when to
 * write it, the write itself (a merge patch of the status subresource), and the counts and gauges after an apply.
 */
import type { CustomObjectsApi } from "../kube/api.ts";
import type { DemandSnapshot } from "../forge/demand_poller.ts";
import type { ForgeErrorKind } from "../forge/errors.ts";
import { describeForge } from "../forge/forge_client.ts";
import { apiMessage, apiStatus } from "../kube/client.ts";
import { apiGroup, apiVersion, type Condition, plural, type RunnerGroup, type RunnerGroupStatus } from "./schema.ts";
import type { WarmPool } from "./warm_schedule.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import type { logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import type { Plan } from "./planner.ts";

export const conditionTypes = {
  ready: "Ready",
  specValid: "SpecValid",
  credentialsAvailable: "CredentialsAvailable",
  forgeReachable: "ForgeReachable",
} as const;

/** What one reconcile learned, in the terms of the conditions. */
export interface Observations {
  spec: { ok: true } | { ok: false; reason: "InvalidSpec" | "InvalidLabels" | "InvalidTemplate"; message: string };
  credentials?:
    | { ok: true }
    | { ok: false; reason: "SecretNotFound" | "KeyNotFound" | "RegistrationTokenRefused"; message: string };
  forge?:
    | { ok: true; message: string }
    | { ok: false; reason: ForgeErrorKind | "Pending"; message: string };
  /** The group is paused (`maxActiveRunners: 0`). */
  paused?: boolean;
}

type ConditionInput = Omit<Condition, "lastTransitionTime" | "observedGeneration">;

/** Builds the conditions, keeping `lastTransitionTime` of each condition whose status did not change. */
export function computeConditions(
  observed: Observations,
  previous: readonly Condition[] | undefined,
  generation: number | undefined,
  now: Date,
): Condition[] {
  const wanted: ConditionInput[] = [];
  const { spec, credentials, forge } = observed;
  wanted.push(
    spec.ok
      ? { type: conditionTypes.specValid, status: "True", reason: "Valid", message: "The spec is valid" }
      : { type: conditionTypes.specValid, status: "False", reason: spec.reason, message: spec.message },
  );
  if (credentials) {
    wanted.push(
      credentials.ok
        ? {
          type: conditionTypes.credentialsAvailable,
          status: "True",
          reason: "Found",
          message: "Both token Secrets and keys exist",
        }
        : {
          type: conditionTypes.credentialsAvailable,
          status: "False",
          reason: credentials.reason,
          message: credentials.message,
        },
    );
  }
  // Before the first answer for the group's forge target in this process, ForgeReachable stays as it was observed for
  // this generation: an operator restart, a leader failover or a rotated API token (a new target) does not turn the
  // condition and Ready to Unknown and back, nor costs a status write per group. A new generation starts as Pending.
  const kept = forge && !forge.ok && forge.reason === "Pending" && generation !== undefined
    ? previous?.find((old) =>
      old.type === conditionTypes.forgeReachable && old.observedGeneration === generation && old.reason !== "Pending"
    )
    : undefined;
  if (kept) {
    wanted.push({ type: kept.type, status: kept.status, reason: kept.reason, message: kept.message });
  } else if (forge) {
    wanted.push(
      forge.ok
        ? { type: conditionTypes.forgeReachable, status: "True", reason: "Reachable", message: forge.message }
        : {
          type: conditionTypes.forgeReachable,
          status: forge.reason === "Pending" ? "Unknown" : "False",
          reason: forge.reason,
          message: forge.message,
        },
    );
  }
  const failing = wanted.find((condition) => condition.status !== "True");
  const complete = credentials !== undefined && forge !== undefined;
  wanted.unshift(
    failing
      ? {
        type: conditionTypes.ready,
        status: failing.status === "Unknown" ? "Unknown" : "False",
        reason: failing.reason,
        message: `${failing.type}: ${failing.message}`,
      }
      : complete && observed.paused
      ? {
        // False: a paused group starts no runner, so its jobs wait; the reason tells it apart from a failure.
        type: conditionTypes.ready,
        status: "False",
        reason: "Paused",
        message: "The group is paused (maxActiveRunners is 0): no runner is started; queuedJobs counts the jobs it " +
          "would run",
      }
      : complete
      ? { type: conditionTypes.ready, status: "True", reason: "Ready", message: "Runners are started for queued jobs" }
      : { type: conditionTypes.ready, status: "Unknown", reason: "Pending", message: "Not checked yet" },
  );
  return wanted.map((condition) => {
    const before = previous?.find((old) => old.type === condition.type);
    const lastTransitionTime = before && before.status === condition.status
      ? before.lastTransitionTime
      : now.toISOString();
    return {
      ...condition,
      lastTransitionTime,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
    };
  });
}

/**
 * Whether a new status is worth a write: anything but `lastCheckTime` changed, or the stored `lastCheckTime` is
 * older than `staleAfterMs` (so the column stays meaningful without a write per poll).
 */
export function statusNeedsWrite(
  current: RunnerGroupStatus | undefined,
  next: RunnerGroupStatus,
  staleAfterMs: number,
): boolean {
  const withoutTime = (status: RunnerGroupStatus | undefined): string => {
    const { lastCheckTime: _ignored, ...rest } = status ?? {};
    return canonicalJson(rest);
  };
  if (withoutTime(current) !== withoutTime(next)) return true;
  if (next.lastCheckTime === undefined) return false;
  if (current?.lastCheckTime === undefined) return true;
  return Date.parse(next.lastCheckTime) - Date.parse(current.lastCheckTime) >= staleAfterMs;
}

/** JSON with object keys sorted at every depth, so objects read back from the API server compare equal. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** The ForgeReachable observation of a demand snapshot. */
export function forgeObservation(snapshot: DemandSnapshot | undefined): Observations["forge"] {
  if (!snapshot) return { ok: false, reason: "Pending", message: "Waiting for the first answer from the forge" };
  if (snapshot.error) return { ok: false, reason: snapshot.error.kind, message: snapshot.error.message };
  // The forge's kind and version, as detected: "Forgejo 15.0.0+gitea-1.22.0 answered".
  const forge = snapshot.forge ? describeForge(snapshot.forge) : `Gitea ${snapshot.version ?? "(unknown version)"}`;
  return { ok: true, message: `${forge} answered` };
}

/** The status of a warm pool (see `warm_schedule.ts`). */
export function warmPoolStatus(pool: WarmPool): NonNullable<RunnerGroupStatus["warmPool"]> {
  if (pool.nextChangeAt === undefined) return { size: pool.size };
  return { size: pool.size, nextChangeTime: new Date(pool.nextChangeAt).toISOString(), nextSize: pool.nextSize };
}

/** The counts of a status; those not given keep their current values. */
export type StatusCounts = Pick<
  RunnerGroupStatus,
  "activeRunners" | "queuedJobs" | "idleRunners" | "lastCheckTime" | "warmPool" | "recentRunners"
>;

/**
 * Writes the group's status when it changed (see statusNeedsWrite); a group deleted meanwhile is not an error.
 * Returns the group as the API server answered the write (for the cache: see `SupervisedInformer.assumeWritten`), or
 * undefined when nothing was written or the answer is not a RunnerGroup of that name.
 */
export async function writeStatus(
  custom: CustomObjectsApi,
  group: RunnerGroup,
  observations: Observations,
  counts: StatusCounts,
  now: number,
  staleAfterMs: number,
): Promise<RunnerGroup | undefined> {
  const current = group.status;
  const recentRunners = counts.recentRunners ?? current?.recentRunners ?? [];
  const next: RunnerGroupStatus = {
    activeRunners: counts.activeRunners ?? current?.activeRunners ?? 0,
    queuedJobs: counts.queuedJobs ?? current?.queuedJobs ?? 0,
    idleRunners: counts.idleRunners ?? current?.idleRunners ?? 0,
    ...(counts.lastCheckTime ?? current?.lastCheckTime
      ? { lastCheckTime: counts.lastCheckTime ?? current?.lastCheckTime }
      : {}),
    ...(counts.warmPool ?? current?.warmPool ? { warmPool: counts.warmPool ?? current?.warmPool } : {}),
    ...(group.metadata.generation !== undefined ? { observedGeneration: group.metadata.generation } : {}),
    // Written once there is history (an empty list only to clear one), so groups without any keep their status.
    ...(recentRunners.length > 0 || current?.recentRunners !== undefined ? { recentRunners } : {}),
    conditions: computeConditions(observations, current?.conditions, group.metadata.generation, new Date(now)),
  };
  if (!statusNeedsWrite(current, next, staleAfterMs)) return undefined;
  let written: unknown;
  try {
    written = await custom.patchNamespacedCustomObjectStatus(
      {
        group: apiGroup,
        version: apiVersion,
        namespace: group.metadata.namespace,
        plural,
        name: group.metadata.name,
        body: { status: next },
      },
    );
  } catch (error) {
    if (apiStatus(error) === 404) return undefined; // deleted meanwhile
    throw new Error(
      `Cannot write the status of ${group.metadata.namespace}/${group.metadata.name}: ${apiMessage(error)}`,
      { cause: error },
    );
  }
  return sameGroup(written, group) ? written : undefined;
}

/** Whether an answer of the API server is the object of `group` (same namespace, name and uid) with a resourceVersion. */
function sameGroup(answer: unknown, group: RunnerGroup): answer is RunnerGroup {
  const metadata = (answer as { metadata?: Partial<RunnerGroup["metadata"]> } | null)?.metadata;
  return metadata?.namespace === group.metadata.namespace && metadata?.name === group.metadata.name &&
    metadata?.uid === group.metadata.uid && typeof metadata?.resourceVersion === "string";
}

/**
 * Stage 6 after an apply: the group's status (written when it changed), its gauges and a debug line of what the
 * reconcile did. Without a usable answer from the forge, the last known queued and idle counts stay.
 */
export async function reportReconciled(input: {
  write: (observations: Observations, counts: StatusCounts) => Promise<void>;
  events: EventRecorder;
  metrics?: OperatorMetrics;
  target: EventTarget;
  log: ReturnType<typeof logger>;
  group: { namespace: string; name: string };
  snapshot: DemandSnapshot | undefined;
  usable: boolean;
  paused: boolean;
  plan: Pick<Plan, "active" | "idle" | "createWarm" | "queued" | "waitingForCapacity">;
  applied: { created: number; removed: number };
  /** Why the registration token was found refused, when it was. */
  tokenRefused?: string;
  recentRunners: NonNullable<RunnerGroupStatus["recentRunners"]>;
  warmPool: WarmPool;
  /** The group's runner Jobs in the cache, for the log. */
  runnerJobs: number;
}): Promise<void> {
  const { snapshot, plan, applied: { created, removed }, usable, metrics } = input;
  if (snapshot?.error) {
    void input.events.record(input.target, "Warning", `Forge${snapshot.error.kind}`, snapshot.error.message);
  }
  const active = plan.active + created - removed;
  const idleNow = Math.max(0, plan.idle.length - removed + plan.createWarm);
  const credentials: Observations["credentials"] = input.tokenRefused !== undefined
    ? { ok: false, reason: "RegistrationTokenRefused", message: input.tokenRefused }
    : { ok: true };
  await input.write({ spec: { ok: true }, credentials, forge: forgeObservation(snapshot), paused: input.paused }, {
    activeRunners: active,
    recentRunners: input.recentRunners,
    ...(usable ? { queuedJobs: plan.queued, idleRunners: idleNow } : {}),
    ...(snapshot && snapshot.checkedAt > 0 ? { lastCheckTime: new Date(snapshot.checkedAt).toISOString() } : {}),
    warmPool: warmPoolStatus(input.warmPool),
  });
  const labels = { namespace: input.group.namespace, runnergroup: input.group.name };
  metrics?.activeRunners.set(labels, active);
  if (usable) {
    metrics?.queuedJobs.set(labels, plan.queued);
    metrics?.idleRunners.set(labels, idleNow);
  }
  input.log.debug(
    "Reconciled: {active} active, {queued} queued, {idle} idle, {created} created, {removed} removed, " +
      "{waiting} waiting for capacity",
    {
      active,
      queued: plan.queued,
      idle: idleNow,
      created,
      removed,
      waiting: plan.waitingForCapacity,
      runnerJobs: input.runnerJobs,
    },
  );
}
