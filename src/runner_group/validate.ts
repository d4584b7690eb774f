/**
 * Stage 1 of the reconcile: is the group's spec one the operator can act on? Pure: the spec is parsed with the same
 * schema the CRD is generated from (for what the API server cannot check), the runner labels by the forge's rules,
 * and the warm pool schedules' cron expressions and time zones by the cron library.
 */
import { effectiveRunnerLabels, InvalidLabelError, type RunnerLabel } from "../forge/labels.ts";
import {
  describeSpecIssues,
  parseRunnerGroupSpec,
  type RunnerGroup,
  type RunnerGroupSpec,
  specFieldPath,
} from "./schema.ts";
import { warmPoolScheduleIssues } from "./warm_schedule.ts";

export type ValidatedGroup =
  | { ok: true; spec: RunnerGroupSpec; labels: RunnerLabel[] }
  | { ok: false; reason: "InvalidSpec" | "InvalidLabels"; message: string };

/** Validates a group's spec and parses its runner labels. */
export function validateGroup(group: Pick<RunnerGroup, "spec">): ValidatedGroup {
  const parsed = parseRunnerGroupSpec(group.spec);
  if (!parsed.success) return { ok: false, reason: "InvalidSpec", message: describeSpecIssues(parsed.error) };
  const spec = parsed.data;
  const scheduleIssues = describeScheduleIssues(spec);
  if (scheduleIssues !== undefined) return { ok: false, reason: "InvalidSpec", message: scheduleIssues };
  try {
    return { ok: true, spec, labels: effectiveRunnerLabels(spec.labels ?? [], spec.defaultLabels ?? true) };
  } catch (error) {
    if (!(error instanceof InvalidLabelError)) throw error;
    return { ok: false, reason: "InvalidLabels", message: error.message };
  }
}

/** What is wrong with the spec's warm pool schedules, one problem per field; undefined when nothing is. */
export function describeScheduleIssues(spec: RunnerGroupSpec): string | undefined {
  const issues = warmPoolScheduleIssues(spec.warmPoolSchedules ?? []);
  if (issues.length === 0) return undefined;
  return issues.map((issue) => `${specFieldPath(["warmPoolSchedules", ...issue.path])}: ${issue.message}`).join("; ");
}
