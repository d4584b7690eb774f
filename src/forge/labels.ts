/**
 * Runner labels as Gitea understands them: `name[:schema[:arg]]`, e.g. `ubuntu-latest:docker://node:20`.
 *
 * Gitea stores only the label *names* a runner declares and lets a runner take a job when every `runs-on` label of
 * the job is one of those names, compared exactly (case-sensitive). A job without `runs-on` labels can run anywhere.
 */

/** A parsed runner label. */
export interface RunnerLabel {
  name: string;
  schema: "docker" | "host";
  /** What follows the schema, e.g. `//node:20` for docker; empty for host. */
  arg: string;
}

const labelNamePattern = /^[^\s,:]+$/;

/** Raised when a label does not follow `name[:schema[:arg]]`. */
export class InvalidLabelError extends Error {
  constructor(readonly label: string, reason: string) {
    super(`Cannot parse runner label "${label}": ${reason}`);
    this.name = "InvalidLabelError";
  }
}

/** Parses one runner label; throws {@linkcode InvalidLabelError} with the reason. */
export function parseRunnerLabel(label: string): RunnerLabel {
  const first = label.indexOf(":");
  const name = first < 0 ? label : label.slice(0, first);
  if (!labelNamePattern.test(name)) {
    throw new InvalidLabelError(label, "the name must be non-empty, without spaces, commas or colons");
  }
  if (first < 0) return { name, schema: "host", arg: "" };
  const rest = label.slice(first + 1);
  const second = rest.indexOf(":");
  const schema = second < 0 ? rest : rest.slice(0, second);
  const arg = second < 0 ? "" : rest.slice(second + 1);
  if (schema !== "docker" && schema !== "host") {
    throw new InvalidLabelError(label, `unknown schema "${schema}", expected "docker" or "host"`);
  }
  if (schema === "docker" && !/^\/\/\S+$/.test(arg)) {
    throw new InvalidLabelError(label, `the docker schema needs an image, as in "${name}:docker://node:20"`);
  }
  if (schema === "host" && arg !== "") {
    throw new InvalidLabelError(label, "the host schema takes no argument");
  }
  return { name, schema, arg };
}

/** Formats a label back to its `name:schema:arg` text. */
export function formatRunnerLabel(label: RunnerLabel): string {
  if (label.schema === "host" && label.arg === "") return `${label.name}:host`;
  return label.arg === "" ? `${label.name}:${label.schema}` : `${label.name}:${label.schema}:${label.arg}`;
}

/**
 * The labels the Gitea runner uses when it is given none, with current runner images
 * (docker.gitea.com/runner-images), not the long-unmaintained node:16 images.
 */
export const defaultRunnerLabels: readonly string[] = Object.freeze([
  "ubuntu-latest:docker://docker.gitea.com/runner-images:ubuntu-latest",
  "ubuntu-24.04:docker://docker.gitea.com/runner-images:ubuntu-24.04",
  "ubuntu-22.04:docker://docker.gitea.com/runner-images:ubuntu-22.04",
]);

/**
 * The labels a runner of a group registers with: the group's own labels, then each default whose name the group does
 * not define itself (a group label overrides the default of the same name). Throws on the first invalid label.
 */
export function effectiveRunnerLabels(groupLabels: readonly string[], includeDefaults: boolean): RunnerLabel[] {
  const parsed = groupLabels.map(parseRunnerLabel);
  const seen = new Set<string>();
  for (const label of parsed) {
    if (seen.has(label.name)) throw new InvalidLabelError(formatRunnerLabel(label), "the name is defined twice");
    seen.add(label.name);
  }
  if (!includeDefaults) return parsed;
  const defaults = defaultRunnerLabels.map(parseRunnerLabel).filter((label) => !seen.has(label.name));
  return [...parsed, ...defaults];
}

/** Whether a runner with these labels may take a job with these `runs-on` labels, by Gitea's rule. */
export function canRunJob(runnerLabels: readonly RunnerLabel[], jobRunsOn: readonly string[]): boolean {
  const names = new Set(runnerLabels.map((label) => label.name));
  return jobRunsOn.every((label) => names.has(label));
}

/** The `runs-on` labels of a job that a runner with these labels lacks (empty when it can run the job). */
export function missingLabels(runnerLabels: readonly RunnerLabel[], jobRunsOn: readonly string[]): string[] {
  const names = new Set(runnerLabels.map((label) => label.name));
  return jobRunsOn.filter((label) => !names.has(label));
}
