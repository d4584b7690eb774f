/**
 * The only place that reads flags and environment variables. Each flag has an environment twin (`--poll-interval`
 * and `GRO_POLL_INTERVAL`); a flag wins over its twin. Everything is parsed once, with zod, into one typed config.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { defaultRunnerImage } from "./runner_group/runner_job.ts";

/** Raised for a bad command line; `main.ts` prints the message and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export const commands = ["run", "check", "crds", "version"] as const;
export type Command = typeof commands[number];

/** Parses "500ms", "10s", "5m", "1h" into milliseconds. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!match) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as "ms" | "s" | "m" | "h"];
  return Math.round(Number(match[1]) * unit);
}

const duration = (min: number, max: number) =>
  z.string().transform((text, context) => {
    const ms = parseDuration(text);
    if (ms === undefined || ms < min || ms > max) {
      context.addIssue({
        code: "custom",
        message: `expected a duration such as 10s or 2m, from ${min / 1000}s to ${max / 1000}s`,
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

/** Every setting: flag name, environment twin, default, and the schema of its text. */
const settings = {
  kubeconfig: { flag: "kubeconfig", env: "GRO_KUBECONFIG", default: "", schema: z.string() },
  file: { flag: "file", short: "f", env: "GRO_FILE", default: "", schema: z.string() },
  group: {
    flag: "group",
    env: "GRO_GROUP",
    default: "",
    schema: z.string().regex(/^$|^[a-z0-9-]+\/[a-z0-9.-]+$/, "expected namespace/name"),
  },
  namespaces: {
    flag: "namespaces",
    env: "GRO_NAMESPACES",
    default: "",
    schema: z.string().transform((text) => text.split(",").map((item) => item.trim()).filter(Boolean)).pipe(
      z.array(z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "expected namespace names separated by commas")),
    ),
  },
  groupSelector: {
    flag: "group-selector",
    env: "GRO_GROUP_SELECTOR",
    default: "",
    schema: z.string().trim().refine(
      (text) => text === "" || labelSelectorPattern.test(text),
      "expected a label selector such as tier=ci,team in (a,b),!legacy",
    ),
  },
  healthPort: { flag: "health-port", env: "GRO_HEALTH_PORT", default: "8081", schema: integer(0, 65535) },
  workers: { flag: "workers", env: "GRO_WORKERS", default: "4", schema: integer(1, 64) },
  createConcurrency: {
    flag: "create-concurrency",
    env: "GRO_CREATE_CONCURRENCY",
    default: "8",
    schema: integer(1, 100),
  },
  pollInterval: { flag: "poll-interval", env: "GRO_POLL_INTERVAL", default: "10s", schema: duration(1000, 3_600_000) },
  resyncInterval: {
    flag: "resync-interval",
    env: "GRO_RESYNC_INTERVAL",
    default: "60s",
    schema: duration(5000, 86_400_000),
  },
  forgeTimeout: { flag: "forge-timeout", env: "GRO_FORGE_TIMEOUT", default: "10s", schema: duration(100, 300_000) },
  runnerImage: {
    flag: "runner-image",
    env: "GRO_RUNNER_IMAGE",
    default: defaultRunnerImage,
    schema: z.string().regex(/^[^\s]+$/, "expected an image reference without spaces").refine(
      (image) => !/:(nightly|latest)(-|$)/.test(image),
      "expected a pinned image tag, not nightly or latest",
    ),
  },
  webhookSecret: {
    flag: "webhook-secret",
    env: "GRO_WEBHOOK_SECRET",
    default: "",
    schema: z.string().regex(
      /^$|^[a-z0-9-]+\/[a-z0-9.-]+:[-._a-zA-Z0-9]+$/,
      "expected namespace/name:key of the Secret holding the webhook secret",
    ),
  },
  leaderElect: {
    flag: "leader-elect",
    env: "GRO_LEADER_ELECT",
    default: "false",
    schema: z.enum(["true", "false"], "expected true or false").transform((text) => text === "true"),
  },
  leaderElectionNamespace: {
    flag: "leader-election-namespace",
    env: "GRO_LEADER_ELECTION_NAMESPACE",
    default: "",
    schema: z.string().regex(/^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "expected a namespace name"),
  },
  leaderElectionId: {
    flag: "leader-election-id",
    env: "GRO_LEADER_ELECTION_ID",
    default: "",
    schema: z.string().regex(/^$|^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, "expected a Lease name (DNS subdomain)"),
  },
  idleRunnerGrace: {
    flag: "idle-runner-grace",
    env: "GRO_IDLE_RUNNER_GRACE",
    default: "2m",
    schema: duration(1000, 3_600_000),
  },
  deletionTimeout: {
    flag: "deletion-timeout",
    env: "GRO_DELETION_TIMEOUT",
    default: "10m",
    schema: duration(0, 86_400_000),
  },
  leaseDuration: {
    flag: "lease-duration",
    env: "GRO_LEASE_DURATION",
    default: "15s",
    schema: duration(3000, 300_000),
  },
  jobMetricsWorkflowLabel: {
    flag: "job-metrics-workflow-label",
    env: "GRO_JOB_METRICS_WORKFLOW_LABEL",
    default: "false",
    schema: z.enum(["true", "false"], "expected true or false").transform((text) => text === "true"),
  },
  runnerRetryLimit: { flag: "runner-retry-limit", env: "GRO_RUNNER_RETRY_LIMIT", default: "3", schema: integer(1, 20) },
  logLevel: {
    flag: "log-level",
    env: "GRO_LOG_LEVEL",
    default: "info",
    schema: z.enum(["debug", "info", "warning", "error"], "expected one of debug, info, warning, error"),
  },
  logFormat: {
    flag: "log-format",
    env: "GRO_LOG_FORMAT",
    default: "json",
    schema: z.enum(["json", "text"], "expected json or text"),
  },
} as const;

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

export function usage(): string {
  const lines = [
    "Usage: gitea-runner-operator [run|crds|version] [flags]",
    "",
    "Commands:",
    "  run       watch RunnerGroups and start runner Jobs for queued Gitea jobs (default)",
    "  check     check one RunnerGroup (-f group.yaml or --group ns/name): spec, tokens, forge, and why each",
    "            queued job would or would not get a runner from it; exit code 0 when the group can work",
    "  crds      print the RunnerGroup CustomResourceDefinition as YAML",
    "  version   print the version",
    "",
    "Flags (each also read from its environment variable):",
  ];
  for (const setting of Object.values(settings)) {
    lines.push(`  --${setting.flag.padEnd(20)} ${setting.env.padEnd(24)} default ${setting.default || '""'}`);
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
