/**
 * The RunnerGroup resource: one zod schema that validates objects at run time and generates the CRD's OpenAPI schema
 * (see `crd.ts`), so the two cannot drift apart.
 */
import { z } from "zod";
import { durationPattern, parseDuration } from "../duration.ts";

export const apiGroup = "gitea.bpg.pw";
export const apiVersion = "v1alpha1";
export const kind = "RunnerGroup";
export const plural = "runnergroups";

/** Environment variables the operator sets in the runner container; a template may not override them. */
export const reservedEnvNames = [
  "GITEA_INSTANCE_URL",
  "GITEA_RUNNER_REGISTRATION_TOKEN",
  "GITEA_RUNNER_EPHEMERAL",
  "GITEA_RUNNER_NAME",
  "GITEA_RUNNER_LABELS",
] as const;

const openObject = (description: string) =>
  z.record(z.string(), z.unknown()).describe(description).meta({ "x-kubernetes-preserve-unknown-fields": true });
const openList = (description: string) =>
  z.array(z.record(z.string(), z.unknown()).meta({ "x-kubernetes-preserve-unknown-fields": true })).describe(
    description,
  );

/**
 * A core/v1 SecretKeySelector, as the Go operator's CRD had it, except that `name` is required: its default "" named no
 * Secret. What `optional` means differs per token (see token_selector.ts).
 */
const secretKeySelector = (optional: string) =>
  z.object({
    name: z.string().min(1).max(253).describe("Name of a Secret in the RunnerGroup's namespace."),
    key: z.string().min(1).max(253).describe("Key in that Secret."),
    optional: z.boolean().optional().describe(optional),
  }).describe("Reference to one key of a Secret in the RunnerGroup's namespace.");
export const secretKeySelectorSchema = secretKeySelector("Whether the Secret or its key may be missing.");

const envVarSchema = z.object({
  name: z.string().min(1).max(256).describe("Environment variable name."),
  value: z.string().optional().describe("Literal value."),
  valueFrom: openObject("Source of the value, as in a core/v1 EnvVar (secretKeyRef, configMapKeyRef, ...).")
    .optional(),
}).meta({
  "x-kubernetes-validations": [{
    rule: `!(self.name in ${JSON.stringify(reservedEnvNames)})`,
    message: `env may not set ${reservedEnvNames.join(", ")}: the operator sets them`,
  }],
});

/**
 * `template.spec`: a core/v1 PodSpec, kept as written (`x-kubernetes-preserve-unknown-fields`); the API server checks
 * it when runner Jobs are created (first in a dry run, see template_check.ts). Declared here are only the fields the
 * runner pod builder reads, so that a wrong shape of those is refused at admission.
 */
const podSpecSchema = z.looseObject({
  containers: z.array(
    z.looseObject({
      name: z.string().min(1).describe("Container name; the container named runner is the runner's."),
      env: z.array(z.looseObject({ name: z.string().min(1) })).optional(),
      volumeMounts: z.array(z.looseObject({})).optional(),
    }),
  ).optional().describe(
    "Containers of runner pods. The operator adds a container named runner first unless one is given here.",
  ),
  nodeSelector: z.record(z.string(), z.string()).optional(),
  tolerations: z.array(z.looseObject({})).optional(),
  volumes: z.array(z.looseObject({ name: z.string().min(1) })).optional(),
}).describe(
  "Pod spec of runner pods (core/v1 PodSpec), validated by the API server. The operator keeps the runner " +
    "container's name, registration environment and the pod's restartPolicy (Never); shorthand fields of template " +
    "win over the same fields here.",
).meta({ "x-kubernetes-preserve-unknown-fields": true });

export const runnerTemplateSchema = z.object({
  image: z.string().min(1).optional().describe(
    "Runner image. Defaults to the operator's pinned Gitea runner image (see --runner-image).",
  ),
  imagePullPolicy: z.enum(["Always", "IfNotPresent", "Never"]).optional().describe(
    "Pull policy of the runner image. Defaults to IfNotPresent.",
  ),
  privileged: z.boolean().optional().describe(
    "Run the runner container privileged. Defaults to true, which the Docker-in-Docker images need; set false " +
      "with an image that needs no Docker daemon.",
  ),
  resources: openObject("Resource requests and limits of the runner container (core/v1 ResourceRequirements).")
    .optional(),
  nodeSelector: z.record(z.string(), z.string()).optional().describe("Node selector of runner pods."),
  tolerations: openList("Tolerations of runner pods (core/v1 Toleration).").optional(),
  affinity: openObject("Affinity of runner pods (core/v1 Affinity).").optional(),
  serviceAccountName: z.string().min(1).optional().describe(
    "Service account of runner pods. Its token is not mounted unless automountServiceAccountToken is true.",
  ),
  automountServiceAccountToken: z.boolean().optional().describe("Mount the service account token. Default false."),
  volumes: openList("Extra volumes of runner pods (core/v1 Volume).").optional(),
  volumeMounts: openList("Extra volume mounts of the runner container (core/v1 VolumeMount).").optional(),
  env: z.array(envVarSchema).max(100).optional().describe("Extra environment variables of the runner container."),
  podLabels: z.record(z.string(), z.string()).optional().describe("Extra labels of runner pods."),
  podAnnotations: z.record(z.string(), z.string()).optional().describe("Extra annotations of runner pods."),
  priorityClassName: z.string().min(1).optional().describe("Priority class of runner pods."),
  runtimeClassName: z.string().min(1).optional().describe("Runtime class of runner pods (e.g. a sandboxed runtime)."),
  metadata: z.object({
    labels: z.record(z.string(), z.string()).optional().describe("Labels of runner pods."),
    annotations: z.record(z.string(), z.string()).optional().describe(
      "Annotations of runner pods; a key set here replaces the operator's default of that key.",
    ),
  }).optional().describe("Metadata of runner pods, as in a pod template; podLabels and podAnnotations win."),
  spec: podSpecSchema.optional(),
}).describe(
  "Runner pod settings: a pod template (metadata, spec) and shorthand fields. The operator keeps the runner's " +
    "identity and credentials; the rest is yours.",
);

/**
 * Bounds of a warm pool window's duration: a shorter window ends before its runners are up; a longer one is a
 * permanent pool, which spec.minIdleRunners says more plainly.
 */
export const warmPoolWindowBounds = { min: "10s", max: "744h" } as const;

// Shapes the API server can check (RE2): 5 fields, or 6 with seconds first, of cron characters, or a nickname; an IANA
// time zone name. What they let through (a minute of 61, an unknown zone) is reported in status (see validate.ts).
const cronField = "[0-9A-Za-z*?,/#+-]+";
const cronShape = new RegExp(
  String.raw`^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|${cronField}( +${cronField}){4,5})$`,
);
const timeZoneShape = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/;
const windowBoundsMs = { min: parseDuration(warmPoolWindowBounds.min)!, max: parseDuration(warmPoolWindowBounds.max)! };

export const warmPoolScheduleSchema = z.object({
  cron: z.string().max(128).regex(cronShape, "expected a cron expression of 5 fields, or 6 with seconds first")
    .describe(
      "When a window opens: a cron expression (minute hour day-of-month month day-of-week, or seconds first " +
        'and then those five), e.g. "0 8 * * 1-5", or @daily, @weekly, ...',
    ),
  duration: z.string().max(32).regex(
    new RegExp(durationPattern),
    "expected a duration such as 8h, 90m or 1h30m",
  ).refine((text) => {
    const ms = parseDuration(text);
    return ms !== undefined && ms >= windowBoundsMs.min && ms <= windowBoundsMs.max;
  }, `expected a duration from ${warmPoolWindowBounds.min} to ${warmPoolWindowBounds.max}`).describe(
    "How long each window stays open, in elapsed time: a duration such as 8h, 90m or 1h30m " +
      `(Go's format, units h, m, s, ms), from ${warmPoolWindowBounds.min} to ${warmPoolWindowBounds.max}.`,
  ),
  minIdleRunners: z.int().min(1).max(10000).describe(
    "Warm pool while the window is open; the largest of the open windows and spec.minIdleRunners applies, " +
      "within maxActiveRunners.",
  ),
  timeZone: z.string().max(64).regex(timeZoneShape, "expected an IANA time zone name such as Europe/Berlin")
    .optional().describe("IANA time zone of the cron expression, e.g. Europe/Berlin. Default UTC."),
}).meta({
  "x-kubernetes-validations": [{
    rule: `duration(self.duration) >= duration('${warmPoolWindowBounds.min}') && ` +
      `duration(self.duration) <= duration('${warmPoolWindowBounds.max}')`,
    message: `duration must be from ${warmPoolWindowBounds.min} to ${warmPoolWindowBounds.max}`,
    fieldPath: ".duration",
  }],
});
/** status.recentRunners: entries kept by default, and at most (each is a few hundred bytes of the group object). */
export const defaultRecentRunners = 10;
export const maxRecentRunners = 50;

const scopes = ["global", "org", "user", "repo"] as const;
export type RunnerGroupScope = typeof scopes[number];

export const runnerGroupSpecSchema = z.object({
  scope: z.enum(scopes).describe(
    "Which queued jobs the group serves: global (all repositories, admin token), org, user, or repo.",
  ),
  org: z.string().min(1).max(255).optional().describe(
    "Organization; required for scope org, and the owner for " +
      "scope repo when the repository belongs to an organization.",
  ),
  user: z.string().min(1).max(255).optional().describe(
    "User; required for scope user, and the owner for scope repo when the repository belongs to a user.",
  ),
  repo: z.string().min(1).max(255).optional().describe("Repository name; required for scope repo."),
  giteaURL: z.string().max(2048).regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/).describe(
    "Base URL of the Gitea instance, as runners reach it, e.g. https://gitea.example.com.",
  ),
  labels: z.array(z.string().min(1).max(512)).max(64).optional().describe(
    "Runner labels, name[:schema[:arg]] as the Gitea runner takes them, e.g. ubuntu-latest:docker://node:20. " +
      "A job runs here when each of its runs-on labels is a label name of the group.",
  ),
  defaultLabels: z.boolean().optional().describe(
    "Merge the Gitea runner's default labels (ubuntu-latest, ubuntu-24.04, ubuntu-22.04) into labels; a label of " +
      "the group overrides a default of the same name. Default true.",
  ),
  maxActiveRunners: z.int().min(0).max(10000).describe(
    "Most runner Jobs of this group that may be active at once; 0 pauses the group.",
  ),
  minIdleRunners: z.int().min(0).max(10000).optional().describe(
    "Warm pool: registered, idle, ephemeral runners kept ready for the next job, within maxActiveRunners. Default 0.",
  ),
  warmPoolSchedules: z.array(warmPoolScheduleSchema).max(20).optional().describe(
    "Windows in which the warm pool is larger, e.g. during working hours: each opens at its cron expression's " +
      "times and lasts its duration.",
  ),
  registrationToken: secretKeySelector(
    "When true and the Secret or its key is missing, the operator obtains the token with authToken and keeps it " +
      "in the Secret <group name>-registration-token, as when registrationToken is omitted. Default false.",
  ).optional().describe(
    "Secret key holding the runner registration token of the scope (referenced by runner pods, never copied). " +
      "When omitted, the operator obtains one with authToken and keeps it in the Secret " +
      "<group name>-registration-token, owned by the group.",
  ),
  authToken: secretKeySelector(
    "Accepted for compatibility; changes nothing: without an API token no job can be seen, so a missing Secret or " +
      "key is reported in status and no runner starts.",
  ).describe(
    "Secret key holding a Gitea API token that can list the scope's Actions jobs.",
  ),
  template: runnerTemplateSchema.optional(),
  ttlSecondsAfterFinished: z.int().min(0).max(604800).optional().describe(
    "Delete finished runner Jobs after this many seconds. Default 300.",
  ),
  activeDeadlineSeconds: z.int().min(1).max(604800).optional().describe(
    "Fail a runner Job that runs longer than this many seconds. Default none.",
  ),
  history: z.object({
    recentRunners: z.int().min(0).max(maxRecentRunners).optional().describe(
      `How many finished runner Jobs status.recentRunners keeps, newest first (0 to ${maxRecentRunners}; 0 keeps ` +
        `none). Default ${defaultRecentRunners}.`,
    ),
  }).optional().describe("What the group's status remembers of its finished runners."),
}).meta({
  "x-kubernetes-validations": [
    { rule: "self.scope != 'org' || has(self.org)", message: "scope org needs spec.org", fieldPath: ".org" },
    { rule: "self.scope != 'user' || has(self.user)", message: "scope user needs spec.user", fieldPath: ".user" },
    { rule: "self.scope != 'repo' || has(self.repo)", message: "scope repo needs spec.repo", fieldPath: ".repo" },
    {
      rule: "self.scope != 'repo' || has(self.org) != has(self.user)",
      message: "scope repo needs exactly one owner: spec.org or spec.user",
    },
    {
      rule: "self.scope == 'repo' || !has(self.repo)",
      message: "spec.repo is only valid with scope repo",
      fieldPath: ".repo",
    },
  ],
});

export type RunnerGroupSpec = z.infer<typeof runnerGroupSpecSchema>;
export type RunnerTemplate = z.infer<typeof runnerTemplateSchema>;
export type SecretKeySelector = z.infer<typeof secretKeySelectorSchema>;
export type WarmPoolSchedule = z.infer<typeof warmPoolScheduleSchema>;

/** A group with `maxActiveRunners: 0` is paused: it starts no runner, and the ownership rule passes it over. */
export function isPaused(spec: Pick<RunnerGroupSpec, "maxActiveRunners">): boolean {
  return spec.maxActiveRunners === 0;
}

export const conditionSchema = z.object({
  type: z.string().describe("Condition type."),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string().describe("CamelCase reason."),
  message: z.string().describe("Human-readable detail."),
  lastTransitionTime: z.string().describe("When the status last changed (RFC 3339)."),
  observedGeneration: z.int().optional(),
});
export type Condition = z.infer<typeof conditionSchema>;

export const recentRunnerSchema = z.object({
  runnerJob: z.string().describe("Name of the runner Job (and of the runner's registration in the forge)."),
  createdAt: z.string().describe("When the runner Job was created (RFC 3339)."),
  endedAt: z.string().describe("When the runner Job ended, or was removed (RFC 3339)."),
  reason: z.string().describe(
    "Why it ended: Completed, Failed, DeadlineExceeded (activeDeadlineSeconds), Evicted (its pod was evicted, " +
      "preempted or lost with its node), RemovedIdle (removed by the " +
      "operator: idle with no job for it), Deleted (deleted by someone else before it finished).",
  ),
  forgeJobId: z.int().optional().describe(
    "The forge job the runner ran; if it ran none, the job it was started for (none for a warm-pool runner).",
  ),
  repository: z.string().optional().describe("owner/repo of that job."),
  jobName: z.string().optional().describe("Name of that job."),
  result: z.string().optional().describe(
    "The job's conclusion in the forge (success, failure, cancelled, skipped); absent when the runner ran no job " +
      "the operator saw, or it was still running.",
  ),
  queuedAt: z.string().optional().describe("When the job was queued in the forge (RFC 3339)."),
  startedAt: z.string().optional().describe("When the runner took the job (RFC 3339)."),
  finishedAt: z.string().optional().describe("When the job finished (RFC 3339)."),
  message: z.string().optional().describe("What happened, in a sentence."),
});
export type RecentRunner = z.infer<typeof recentRunnerSchema>;

export const runnerGroupStatusSchema = z.object({
  activeRunners: z.int().optional().describe("Runner Jobs of this group that have not finished."),
  queuedJobs: z.int().optional().describe("Queued jobs on the forge that this group runs."),
  idleRunners: z.int().optional().describe("Active runner Jobs without a job: the warm pool and spare runners."),
  lastCheckTime: z.string().optional().describe("When the forge was last asked for queued jobs (RFC 3339)."),
  warmPool: z.object({
    size: z.int().describe(
      "Idle runners kept ready now: the largest minIdleRunners of the spec and the open warmPoolSchedules " +
        "windows, within maxActiveRunners.",
    ),
    nextChangeTime: z.string().optional().describe(
      "When the size next changes (RFC 3339); absent when no schedule changes it.",
    ),
    nextSize: z.int().optional().describe("The size from nextChangeTime on."),
  }).optional().describe("The warm pool the group keeps now, and its next change."),
  observedGeneration: z.int().optional().describe("The spec generation this status describes."),
  recentRunners: z.array(recentRunnerSchema).max(maxRecentRunners).optional().describe(
    "The last finished runner Jobs of the group, newest first (spec.history.recentRunners of them), kept after the " +
      "Jobs themselves are deleted.",
  ),
  conditions: z.array(conditionSchema).optional().meta({
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
  }),
});
export type RunnerGroupStatus = z.infer<typeof runnerGroupStatusSchema>;

/** The object as the API server returns it; the spec is checked separately so a bad spec is a status, not a crash. */
export interface RunnerGroup {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    generation?: number;
    resourceVersion?: string;
    // A string when read from a watch (client-node types it as Date); read it with `new Date(...)`.
    deletionTimestamp?: Date;
    finalizers?: string[];
  };
  spec: unknown;
  status?: RunnerGroupStatus;
}

/** A field's path as the API server writes it: `spec.template.env[0].name`. */
export function specFieldPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (text, part) => typeof part === "number" ? `${text}[${part}]` : `${text}.${String(part)}`,
    "spec",
  );
}

/** Describes what is wrong with a spec in one line per problem, naming the field. */
export function describeSpecIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${specFieldPath(issue.path)}: ${issue.message}`).join("; ");
}

/**
 * The spec schema with the rules the CRD cannot say (the CEL rules are repeated here for clusters where the CRD is
 * older than the operator). Built once: zod 4 builds a schema's parser on its first parse, so a schema made per call
 * cost about 0.1-4 ms of CPU per parse (see parseRunnerGroupSpec).
 */
const checkedSpecSchema = runnerGroupSpecSchema.superRefine((value, context) => {
  const need = (field: "org" | "user" | "repo", when: boolean, message: string): void => {
    if (when && value[field] === undefined) context.addIssue({ code: "custom", path: [field], message });
  };
  need("org", value.scope === "org", "scope org needs spec.org");
  need("user", value.scope === "user", "scope user needs spec.user");
  need("repo", value.scope === "repo", "scope repo needs spec.repo");
  if (value.scope === "repo" && (value.org === undefined) === (value.user === undefined)) {
    context.addIssue({ code: "custom", path: ["org"], message: "scope repo needs exactly one owner: org or user" });
  }
  if (value.scope !== "repo" && value.repo !== undefined) {
    context.addIssue({ code: "custom", path: ["repo"], message: "spec.repo is only valid with scope repo" });
  }
  for (const [index, env] of (value.template?.env ?? []).entries()) {
    if ((reservedEnvNames as readonly string[]).includes(env.name)) {
      context.addIssue({
        code: "custom",
        path: ["template", "env", index, "name"],
        message: `env may not set ${env.name}: the operator sets it`,
      });
    }
  }
  // The same rule for the runner container of a full template (not a CEL rule: the lists are unbounded, which
  // would exceed the CRD's validation cost budget).
  for (const [index, container] of (value.template?.spec?.containers ?? []).entries()) {
    if (container.name !== "runner") continue;
    for (const [envIndex, env] of (container.env ?? []).entries()) {
      if ((reservedEnvNames as readonly string[]).includes(env.name)) {
        context.addIssue({
          code: "custom",
          path: ["template", "spec", "containers", index, "env", envIndex, "name"],
          message: `env may not set ${env.name}: the operator sets it`,
        });
      }
    }
  }
});

/**
 * Validates a spec beyond what the CRD can say. Runs in every reconcile (stage 1) and for every changed group in the
 * ownership rule, with the schema above built once.
 */
export function parseRunnerGroupSpec(spec: unknown): z.ZodSafeParseResult<RunnerGroupSpec> {
  return checkedSpecSchema.safeParse(spec);
}
