/**
 * Stage 1 of the reconcile: is the group's spec one the operator can act on? Pure: the spec is parsed with the same
 * schema the CRD is generated from (for what the API server cannot check) and the runner labels are parsed by the
 * forge's rules.
 */
import { effectiveRunnerLabels, InvalidLabelError, type RunnerLabel } from "../forge/labels.ts";
import { describeSpecIssues, parseRunnerGroupSpec, type RunnerGroup, type RunnerGroupSpec } from "./schema.ts";

export type ValidatedGroup =
  | { ok: true; spec: RunnerGroupSpec; labels: RunnerLabel[] }
  | { ok: false; reason: "InvalidSpec" | "InvalidLabels"; message: string };

/** Validates a group's spec and parses its runner labels. */
export function validateGroup(group: Pick<RunnerGroup, "spec">): ValidatedGroup {
  const parsed = parseRunnerGroupSpec(group.spec);
  if (!parsed.success) return { ok: false, reason: "InvalidSpec", message: describeSpecIssues(parsed.error) };
  const spec = parsed.data;
  try {
    return { ok: true, spec, labels: effectiveRunnerLabels(spec.labels ?? [], spec.defaultLabels ?? true) };
  } catch (error) {
    if (!(error instanceof InvalidLabelError)) throw error;
    return { ok: false, reason: "InvalidLabels", message: error.message };
  }
}
