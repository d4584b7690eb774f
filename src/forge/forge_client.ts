/**
 * What the operator needs of a forge, whichever it is: Gitea (>= 1.26) or Forgejo (>= 11). The kind and version are
 * detected once per forge (see {@linkcode detectForge}); what a version can do is decided from them in one place
 * ({@linkcode forgeFeatures}), so callers branch on a feature, never on a version number.
 */
import { ForgeError } from "./errors.ts";
import type { ForgeHttp } from "./forge_http.ts";
import { z } from "zod";

/** Where queued jobs are listed: one endpoint per scope. */
export type JobsEndpoint =
  | { scope: "global" }
  | { scope: "org"; org: string }
  | { scope: "user" }
  | { scope: "repo"; owner: string; repo: string };

/** A job waiting for a runner. */
export interface QueuedJob {
  id: number;
  /** The workflow run; 0 when the forge does not say (Forgejo's runner jobs list). */
  runId: number;
  name: string;
  /** The job's `runs-on` labels. */
  runsOn: string[];
  owner: string;
  repo: string;
  /** When the job was queued; empty when the forge does not say (Forgejo). */
  createdAt: string;
  htmlUrl: string;
  /** Forgejo >= 15: the opaque handle of this attempt of the job, which a runner can ask for. */
  handle?: string;
}

/** A job a runner is running, and that runner's name (empty when the forge does not say, as Forgejo). */
export interface RunningJob {
  id: number;
  runnerName: string;
  /** The job's workflow run; 0 where the forge does not say (Forgejo). */
  runId: number;
  name: string;
  owner: string;
  repo: string;
  /** When the job was queued (RFC 3339); "" where the forge does not say (Forgejo). */
  createdAt: string;
  /** When a runner took the job (RFC 3339); "" if the forge shows none. */
  startedAt: string;
}

/** The jobs of an endpoint that matter for planning runners. */
export interface OpenJobs {
  /** Jobs waiting for a runner, oldest first. Blocked jobs are not included. */
  queued: QueuedJob[];
  /** Jobs in progress, with the runner that took each. */
  running: RunningJob[];
}

/** A runner registration as the forge's runners API shows it. */
export interface RunnerRegistration {
  id: number;
  name: string;
  /** Whether the runner reached the forge recently (Gitea: within the last minute). */
  online: boolean;
  /** True while the runner has reported activity in the last seconds (running a task). */
  busy: boolean;
  disabled: boolean;
  ephemeral: boolean;
}

/** Credentials of one runner registered over the API (Forgejo >= 15): what a runner needs to connect. */
export interface RunnerCredentials {
  id: number;
  uuid: string;
  token: string;
}

export type ForgeKind = "gitea" | "forgejo";

/** A forge's kind and version, as detected. */
export interface ForgeVersion {
  kind: ForgeKind;
  /** The version as the forge reports it, e.g. "1.26.0" or "15.0.0+gitea-1.22.0". */
  version: string;
  major: number;
  minor: number;
  patch: number;
}

/** What a forge of a given kind and version can do. */
export interface ForgeFeatures {
  /** List and delete runner registrations: Gitea (>= 1.24), Forgejo >= 15. */
  runnersApi: boolean;
  /** Stop a registered runner from taking tasks without deleting it: Gitea only. */
  disableRunners: boolean;
  /** Register a runner over the API with its own credentials (Forgejo >= 15), so no shared token reaches a pod. */
  runnerRegistration: boolean;
  /** Jobs carry a handle a runner can ask for, binding the runner to exactly that job (Forgejo >= 15). */
  jobHandles: boolean;
  /** The jobs list shows nothing unless the runner labels are given (Forgejo < 14). */
  jobsNeedLabels: boolean;
  /** `workflow_job` webhooks, for push mode: Gitea only. */
  workflowJobWebhooks: boolean;
}

/** The oldest versions the operator serves, per forge kind. */
export const minimumVersions: Record<ForgeKind, { major: number; minor: number; why: string }> = {
  gitea: { major: 1, minor: 26, why: "jobs and runners API" },
  forgejo: { major: 11, minor: 0, why: "runner jobs API" },
};

export const forgeNames: Record<ForgeKind, string> = { gitea: "Gitea", forgejo: "Forgejo" };

/** How a forge is named in messages: "Forgejo 15.0.0". */
export function describeForge(forge: ForgeVersion): string {
  return `${forgeNames[forge.kind]} ${forge.version}`;
}

/** The features of a forge version. */
export function forgeFeatures(forge: ForgeVersion): ForgeFeatures {
  if (forge.kind === "gitea") {
    return {
      runnersApi: true,
      disableRunners: true,
      runnerRegistration: false,
      jobHandles: false,
      jobsNeedLabels: false,
      workflowJobWebhooks: true,
    };
  }
  // Forgejo v15.0.0 routers/api/v1/api.go: runner list, register (POST) and delete; v14.0.0 has none of them.
  // Forgejo v14.0.0 routers/api/v1/shared/runners.go lists every job when `labels` is absent; v11.0.0 splits the
  // absent parameter into [""], which no job's runs-on is a subset of.
  const v15 = forge.major >= 15;
  return {
    runnersApi: v15,
    disableRunners: false,
    runnerRegistration: v15,
    jobHandles: v15,
    jobsNeedLabels: forge.major < 14,
    workflowJobWebhooks: false,
  };
}

/** The client every part of the operator talks to a forge through. */
export interface ForgeClient {
  readonly forge: ForgeVersion;
  readonly features: ForgeFeatures;
  /** The login of the token's user. */
  currentUser(): Promise<{ login: string; isAdmin: boolean }>;
  /**
   * The queued and running jobs of an endpoint. `labels` are the runner label names the caller can serve; a forge
   * that needs them to list anything (see {@linkcode ForgeFeatures.jobsNeedLabels}) lists only jobs they match.
   */
  listOpenJobs(endpoint: JobsEndpoint, options?: { labels?: readonly string[] }): Promise<OpenJobs>;
  /** The shared runner registration token of the endpoint's scope. */
  createRegistrationToken(endpoint: JobsEndpoint): Promise<string>;
  /** Every runner registered in the scope (needs {@linkcode ForgeFeatures.runnersApi}). */
  listRunners(endpoint: JobsEndpoint): Promise<RunnerRegistration[]>;
  /** Needs {@linkcode ForgeFeatures.disableRunners}. */
  setRunnerDisabled(endpoint: JobsEndpoint, id: number, disabled: boolean): Promise<RunnerRegistration>;
  /** Removes a registration; one that is gone already is not an error (needs the runners API). */
  deleteRunner(endpoint: JobsEndpoint, id: number): Promise<void>;
  /** Registers an ephemeral runner in the scope (needs {@linkcode ForgeFeatures.runnerRegistration}). */
  registerRunner(endpoint: JobsEndpoint, runner: { name: string; description: string }): Promise<RunnerCredentials>;
}

/** Raised by a client asked for what its forge version cannot do; callers check `features` first. */
export function unsupported(forge: ForgeVersion, what: string, needs: string): ForgeError {
  return new ForgeError("UnsupportedVersion", `${describeForge(forge)} cannot ${what}: that needs ${needs}`);
}

/**
 * Parses a version string: "1.26.0", "v1.26.0+dev-12-g1234", "15.0.0+gitea-1.22.0". Forgejo reports its own version
 * with the Gitea API level it is compatible with after the "+" (Forgejo v15.0.0 Makefile, GITEA_COMPATIBILITY).
 */
export function parseForgeVersion(kind: ForgeKind, version: string): ForgeVersion {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version.trim());
  if (!match) throw new ForgeError("InvalidResponse", `Cannot parse the ${forgeNames[kind]} version "${version}"`);
  return { kind, version: version.trim(), major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]) };
}

/** Throws `UnsupportedVersion`, naming the minimum, for a forge version the operator cannot serve. */
export function checkSupported(forge: ForgeVersion): ForgeVersion {
  const minimum = minimumVersions[forge.kind];
  if (forge.major < minimum.major || (forge.major === minimum.major && forge.minor < minimum.minor)) {
    const name = forgeNames[forge.kind];
    const needs = forge.kind === "gitea" ? `${minimum.major}.${minimum.minor}` : `${minimum.major}`;
    throw new ForgeError(
      "UnsupportedVersion",
      `${describeForge(forge)} is not supported: the operator needs ${name} >= ${needs} (${minimum.why})`,
    );
  }
  return forge;
}

const versionSchema = z.object({ version: z.string() });
const forgejoVersionSchema = z.object({ version: z.string().optional() });

/**
 * Finds out which forge answers at a base URL, and its version. Forgejo answers `GET /api/forgejo/v1/version`
 * (routers/api/forgejo/v1/api.go, v11.0.0 to v15.0.0); Gitea has no such route (404). Forgejo also answers
 * `/api/v1/version`, with its own version and "+gitea-1.22.0" appended: never a Gitea version, so such an answer is
 * taken as Forgejo's even when the Forgejo route is hidden (by a proxy, say).
 */
export async function detectForge(http: ForgeHttp): Promise<ForgeVersion> {
  try {
    const { value } = await http.call({
      path: "/api/forgejo/v1/version",
      template: "/api/forgejo/v1/version",
      what: "Get the Forgejo version",
      schema: forgejoVersionSchema,
    });
    if (value.version) return parseForgeVersion("forgejo", value.version);
  } catch (error) {
    if (!(error instanceof ForgeError) || error.kind !== "NotFound") throw error;
  }
  const { value } = await http.call({
    path: "/api/v1/version",
    template: "/version",
    what: "Get the forge version",
    schema: versionSchema,
  });
  return parseForgeVersion(/\+gitea-/.test(value.version) ? "forgejo" : "gitea", value.version);
}

/**
 * Remembers each forge's detected version for a while, so that pollers, reconciles and cleanup ask once per forge,
 * not once each. A failure is not remembered, and `forget` makes the next caller ask again (after a forge outage, an
 * upgrade may have changed the version).
 */
export class ForgeDetector {
  readonly #known = new Map<string, { at: number; version: Promise<ForgeVersion> }>();

  constructor(readonly options: { ttlMs?: number; now?: () => number } = {}) {}

  /** The kind and version of the forge at `http`'s base URL. */
  detect(http: ForgeHttp): Promise<ForgeVersion> {
    const now = this.options.now?.() ?? Date.now();
    const known = this.#known.get(http.baseUrl);
    if (known && now - known.at < (this.options.ttlMs ?? 600_000)) return known.version;
    const version = detectForge(http);
    this.#known.set(http.baseUrl, { at: now, version });
    version.catch(() => {
      if (this.#known.get(http.baseUrl)?.version === version) this.#known.delete(http.baseUrl);
    });
    return version;
  }

  forget(baseUrl: string): void {
    this.#known.delete(baseUrl.replace(/\/+$/, ""));
  }
}
