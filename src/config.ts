/**
 * The only place that reads flags and environment variables. Each flag has an environment twin (`--poll-interval`
 * and `GRO_POLL_INTERVAL`); a flag wins over its twin. Everything is parsed once, with zod, into one typed config.
 * Each setting's meaning is written once, here: `--help` prints it, and a unit test checks the README's flag table
 * against it.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { parseDuration } from "./duration.ts";
import { defaultRunnerImage } from "./runner_group/runner_job.ts";

export { parseDuration } from "./duration.ts";

/** Raised for a bad command line; `main.ts` prints the message and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The commands, with what each does (for `--help`). */
export const commandDescriptions = {
  run: "watch RunnerGroups and start runner Jobs for queued Gitea jobs (default)",
  check: "check one RunnerGroup (-f group.yaml or --group ns/name): spec, tokens, forge, and why each queued job " +
    "would or would not get a runner from it; exit code 0 when the group can work",
  crds: "print the RunnerGroup CustomResourceDefinition as YAML",
  version: "print the version",
} as const;
export type Command = keyof typeof commandDescriptions;
export const commands = Object.keys(commandDescriptions) as Command[];

const duration = (min: number, max: number) =>
  z.string().transform((text, context) => {
    const ms = parseDuration(text);
    if (ms === undefined || ms < min || ms > max) {
      context.addIssue({
        code: "custom",
        message: `expected a duration such as 10s, 2m or 1h30m, from ${min / 1000}s to ${max / 1000}s`,
      });
      return z.NEVER;
    }
    return ms;
  });

const integer = (min: number, max: number) =>
  z.string().regex(/^\d+$/, `expected a whole number from ${min} to ${max}`).transform(Number).pipe(
    z.number().min(min, `expected a whole number from ${min} to ${max}`).max(
      max,
      `expected a whole number from ${min} to ${max}`,
    ),
  );

// A Kubernetes label selector: terms separated by commas, each `key`, `!key`, `key=value`, `key==value`,
// `key!=value`, `key in (v1,v2)` or `key notin (v1,v2)`.
const labelKey = String.raw`(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?`;
const labelValue = String.raw`(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?`;
const selectorTerm = String.raw`(?:!?\s*${labelKey}|${labelKey}\s*(?:==?|!=)\s*${labelValue}|` +
  String.raw`${labelKey}\s+(?:in|notin)\s*\(\s*${labelValue}(?:\s*,\s*${labelValue})*\s*\))`;
const labelSelectorPattern = new RegExp(String.raw`^\s*${selectorTerm}(?:\s*,\s*${selectorTerm})*\s*$`);

/**
 * One setting. Texts meant for people (`description`, `shownDefault`) are Markdown with only `code` spans, so the
 * README shows them as they are and `--help` without the backticks.
 */
interface SettingDefinition {
  flag: string;
  short?: string;
  env: string;
  /** The text used when neither the flag nor its variable is set. */
  default: string;
  /** The default as people should read it, where the text above says too little (as an empty one does). */
  shownDefault?: string;
  /** What the setting does, in one sentence or two. */
  description: string;
  schema: z.ZodType;
}

/** Every setting: flag name, environment twin, default, meaning, and the schema of its text. */
const settings = {
  kubeconfig: {
    flag: "kubeconfig",
    env: "GRO_KUBECONFIG",
    default: "",
    shownDefault: "`KUBECONFIG`, else in-cluster, else `~/.kube/config`",
    description: "Cluster to connect to (a cluster with `insecure-skip-tls-verify` is refused: give its CA).",
    schema: z.string(),
  },
  file: {
    flag: "file",
    short: "f",
    env: "GRO_FILE",
    default: "",
    shownDefault: "none",
    description: "`check` only: a YAML file with the RunnerGroup (and, optionally, its Secrets).",
    schema: z.string(),
  },
  group: {
    flag: "group",
    env: "GRO_GROUP",
    default: "",
    shownDefault: "none",
    description: "`check` only: `namespace/name` of a RunnerGroup in the cluster.",
    schema: z.string().regex(/^$|^[a-z0-9-]+\/[a-z0-9.-]+$/, "expected namespace/name"),
  },
  namespaces: {
    flag: "namespaces",
    env: "GRO_NAMESPACES",
    default: "",
    shownDefault: "all",
    description: "Comma-separated namespaces to watch.",
    schema: z.string().transform((text) => text.split(",").map((item) => item.trim()).filter(Boolean)).pipe(
      z.array(z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "expected namespace names separated by commas")),
    ),
  },
  groupSelector: {
    flag: "group-selector",
    env: "GRO_GROUP_SELECTOR",
    default: "",
    shownDefault: "all",
    description: "Label selector on RunnerGroups (`tier=ci`, `shard in (a,b)`): this instance reconciles only those.",
    schema: z.string().trim().refine(
      (text) => text === "" || labelSelectorPattern.test(text),
      "expected a label selector such as tier=ci,team in (a,b),!legacy",
    ),
  },
  healthPort: {
    flag: "health-port",
    env: "GRO_HEALTH_PORT",
    default: "8081",
    description: "Port of `/healthz`, `/readyz` (ready once the informer caches synced), `/metrics` and " +
      "`/webhooks/gitea`.",
    schema: integer(0, 65535),
  },
  workers: {
    flag: "workers",
    env: "GRO_WORKERS",
    // A reconcile that creates runner Jobs keeps its worker until every group's creates are done (the creates-first
    // wait in apply.ts), so with fewer workers than groups that see jobs at once, the rest wait for a worker and their
    // runner Jobs come in waves. With 20 groups and a backlog of 5 jobs each, 32 workers made 163-203 runner Jobs/s
    // while busy against 99-139 with 8 (eight rounds each, tests/bench/NOTES.md).
    default: "32",
    description:
      "Reconcile workers (1–256): groups are reconciled in parallel, one group never by two workers. Set it " +
      "to at least the number of groups that may see queued jobs at the same moment.",
    schema: integer(1, 256),
  },
  createConcurrency: {
    flag: "create-concurrency",
    env: "GRO_CREATE_CONCURRENCY",
    default: "8",
    description: "Runner Job creates in flight at once, all groups together (1–100); a burst of queued jobs is " +
      "created in parallel, never beyond `maxActiveRunners`.",
    schema: integer(1, 100),
  },
  pollInterval: {
    flag: "poll-interval",
    env: "GRO_POLL_INTERVAL",
    default: "10s",
    description: "How often each forge target is asked for jobs.",
    schema: duration(1000, 3_600_000),
  },
  resyncInterval: {
    flag: "resync-interval",
    env: "GRO_RESYNC_INTERVAL",
    default: "60s",
    description: "Every group is reconciled at least this often.",
    schema: duration(5000, 86_400_000),
  },
  forgeTimeout: {
    flag: "forge-timeout",
    env: "GRO_FORGE_TIMEOUT",
    default: "10s",
    description: "Timeout of one Gitea API request.",
    schema: duration(100, 300_000),
  },
  runnerImage: {
    flag: "runner-image",
    env: "GRO_RUNNER_IMAGE",
    default: defaultRunnerImage,
    description: "Default runner image; `nightly` and `latest` tags are refused.",
    schema: z.string().regex(/^[^\s]+$/, "expected an image reference without spaces").refine(
      (image) => !/:(nightly|latest)(-|$)/.test(image),
      "expected a pinned image tag, not nightly or latest",
    ),
  },
  webhookSecret: {
    flag: "webhook-secret",
    env: "GRO_WEBHOOK_SECRET",
    default: "",
    shownDefault: "off",
    description: "`namespace/name:key` of the Secret holding the Gitea webhook secret; turns on push mode.",
    schema: z.string().regex(
      /^$|^[a-z0-9-]+\/[a-z0-9.-]+:[-._a-zA-Z0-9]+$/,
      "expected namespace/name:key of the Secret holding the webhook secret",
    ),
  },
  leaderElect: {
    flag: "leader-elect",
    env: "GRO_LEADER_ELECT",
    default: "false",
    description: "Leader election on a Lease: only the leader polls and creates runner Jobs (`true` in " +
      "`manifests/base`).",
    schema: z.enum(["true", "false"], "expected true or false").transform((text) => text === "true"),
  },
  leaderElectionNamespace: {
    flag: "leader-election-namespace",
    env: "GRO_LEADER_ELECTION_NAMESPACE",
    default: "",
    shownDefault: "the pod's namespace, else `default`",
    description: "Where the Lease lives.",
    schema: z.string().regex(/^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "expected a namespace name"),
  },
  leaderElectionId: {
    flag: "leader-election-id",
    env: "GRO_LEADER_ELECTION_ID",
    default: "",
    shownDefault: "`gitea-runner-operator`, or `gitea-runner-operator-<hash>` for a shard",
    description: "Name of the Lease. A shard (`--namespaces` or `--group-selector` set) gets a name hashed from " +
      "both, so shards elect leaders separately.",
    schema: z.string().regex(/^$|^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, "expected a Lease name (DNS subdomain)"),
  },
  idleRunnerGrace: {
    flag: "idle-runner-grace",
    env: "GRO_IDLE_RUNNER_GRACE",
    default: "2m",
    description: "How long a runner Job may stay idle beyond the warm pool (counted from when the pool shrank, if " +
      "later) before it is removed, how long an offline registration of a gone runner Job stays before it is " +
      "deleted, and how long a runner that ran its job may take to exit before it counts as idle.",
    schema: duration(1000, 3_600_000),
  },
  deletionTimeout: {
    flag: "deletion-timeout",
    env: "GRO_DELETION_TIMEOUT",
    default: "10m",
    description: "How long a deleted group waits for its busy runners to finish (and for an unreachable forge) " +
      "before they are removed and the group released.",
    schema: duration(0, 86_400_000),
  },
  leaseDuration: {
    flag: "lease-duration",
    env: "GRO_LEASE_DURATION",
    default: "15s",
    description: "How long a Lease lasts without renewal: a standby takes over at most this long after the leader " +
      "dies.",
    schema: duration(3000, 300_000),
  },
  jobMetricsWorkflowLabel: {
    flag: "job-metrics-workflow-label",
    env: "GRO_JOB_METRICS_WORKFLOW_LABEL",
    default: "false",
    description: "Label the job counters with the workflow file too (one more read per workflow run; one series " +
      "per workflow).",
    schema: z.enum(["true", "false"], "expected true or false").transform((text) => text === "true"),
  },
  runnerRetryLimit: {
    flag: "runner-retry-limit",
    env: "GRO_RUNNER_RETRY_LIMIT",
    default: "3",
    description: "Failed runner Jobs after which a still-queued job gets no further runner.",
    schema: integer(1, 20),
  },
  logLevel: {
    flag: "log-level",
    env: "GRO_LOG_LEVEL",
    default: "info",
    description: "Least severe log level written: `debug`, `info`, `warning` or `error`.",
    schema: z.enum(["debug", "info", "warning", "error"], "expected one of debug, info, warning, error"),
  },
  logFormat: {
    flag: "log-format",
    env: "GRO_LOG_FORMAT",
    default: "json",
    description: "Log format: `json` lines or `text`, on stderr.",
    schema: z.enum(["json", "text"], "expected json or text"),
  },
} as const satisfies Record<string, SettingDefinition>;

type Settings = typeof settings;
export type Config = { [K in keyof Settings]: z.output<Settings[K]["schema"]> } & { command: Command };

/** The environment variables the operator reads: the twins, plus the standard ones of the Kubernetes client. */
export const environmentVariables: readonly string[] = [
  ...Object.values(settings).map((setting) => setting.env),
  "KUBECONFIG",
  "HOME",
  "KUBERNETES_SERVICE_HOST",
  "KUBERNETES_SERVICE_PORT",
];

/** A flag as the README's table and `--help` show it (Markdown with `code` spans only). */
export interface FlagReference {
  /** The flag, with its short form first when it has one: "`-f`, `--file`". */
  flag: string;
  variable: string;
  default: string;
  meaning: string;
}

/** Every flag, in the order `--help` lists them. */
export function flagReference(): FlagReference[] {
  return Object.values(settings).map((setting: SettingDefinition) => ({
    flag: [...(setting.short ? [`\`-${setting.short}\``] : []), `\`--${setting.flag}\``].join(", "),
    variable: `\`${setting.env}\``,
    default: setting.shownDefault ?? `\`${setting.default}\``,
    meaning: setting.description,
  }));
}

const helpWidth = 120;

/** Wraps `text` at spaces into lines of at most `helpWidth` columns, each starting with `indent`. */
function wrap(text: string, indent: string): string[] {
  const lines: string[] = [];
  let line = indent;
  for (const word of text.split(/\s+/)) {
    if (line !== indent && line.length + 1 + word.length > helpWidth) {
      lines.push(line);
      line = indent;
    }
    line += line === indent ? word : ` ${word}`;
  }
  lines.push(line);
  return lines;
}

export function usage(): string {
  const plain = (markdown: string): string => markdown.replaceAll("`", "");
  const commandColumn = Math.max(...commands.map((command) => command.length)) + 2;
  const lines = [
    `Usage: gitea-runner-operator [${commands.join("|")}] [flags]`,
    "",
    "Commands:",
    ...commands.flatMap((command) => {
      const [first, ...rest] = wrap(commandDescriptions[command], " ".repeat(2 + commandColumn));
      return [`  ${command.padEnd(commandColumn)}${first.trimStart()}`, ...rest];
    }),
    "",
    "Flags (each also read from its environment variable; a flag wins over its variable):",
    "  -h, --help",
    "      Print this help and exit.",
  ];
  for (const flag of flagReference()) {
    lines.push(`  ${plain(flag.flag)} (${plain(flag.variable)})`);
    lines.push(...wrap(`${plain(flag.meaning)} Default: ${plain(flag.default)}.`, "      "));
  }
  return lines.join("\n");
}

/** Parses the command line and environment; throws {@linkcode UsageError} with a one-line message. */
export function parseConfig(args: readonly string[], env: (name: string) => string | undefined): Config {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: Object.fromEntries(
        Object.values(settings).map((setting) => [
          setting.flag,
          { type: "string" as const, ...("short" in setting ? { short: setting.short } : {}) },
        ]),
      ),
    });
  } catch (error) {
    throw new UsageError(`${error instanceof Error ? error.message : String(error)} (see --help)`);
  }
  const [command = "run", ...extra] = parsed.positionals;
  if (!(commands as readonly string[]).includes(command)) {
    throw new UsageError(`Unknown command "${command}": expected one of ${commands.join(", ")}`);
  }
  if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}"`);

  const config: Record<string, unknown> = { command };
  for (const [key, setting] of Object.entries(settings)) {
    const flagValue = parsed.values[setting.flag];
    const text = typeof flagValue === "string" ? flagValue : env(setting.env) ?? setting.default;
    const result = (setting.schema as z.ZodType).safeParse(text);
    if (!result.success) {
      throw new UsageError(
        `Invalid value ${JSON.stringify(text)} for --${setting.flag} (${setting.env}): ${
          result.error.issues[0].message
        }`,
      );
    }
    config[key] = result.data;
  }
  if (config.kubeconfig === "") config.kubeconfig = env("KUBECONFIG") ?? "";
  if (command === "check" && (config.file === "") === (config.group === "")) {
    throw new UsageError("check needs exactly one of -f/--file (GRO_FILE) or --group (GRO_GROUP) namespace/name");
  }
  return config as Config;
}
