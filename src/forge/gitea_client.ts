/**
 * A typed client for the parts of Gitea's REST API the operator uses (Gitea >= 1.26). Every response is validated
 * with zod, and every failure becomes a {@linkcode ForgeError} of one kind.
 */
import { z } from "zod";
import { ForgeError } from "./errors.ts";
import {
  type ForgeClient,
  type ForgeFeatures,
  forgeFeatures,
  type ForgeVersion,
  type JobsEndpoint,
  type OpenJobs,
  type QueuedJob,
  type RunnerCredentials,
  type RunnerRegistration,
  type RunningJob,
  unsupported,
} from "./forge_client.ts";
import { ForgeHttp, type ForgeHttpOptions, type Method } from "./forge_http.ts";

export type { JobsEndpoint, OpenJobs, QueuedJob, RunnerRegistration, RunningJob } from "./forge_client.ts";

/** Gitea answers at most 50 items a page by default (`[api] MAX_RESPONSE_ITEMS`). */
export const pageSize = 50;
/**
 * The oldest Gitea with every endpoint the client calls, read from `routers/api/v1/api.go` of each release: runner
 * lists, deletes and POST registration-token since 1.24.0, the jobs lists of all four scopes since 1.25.0, and
 * PATCH .../runners/{id} (disabling a runner before it is removed) only since 1.26.0 (absent from 1.25.0 to 1.25.4).
 */
export const minimumGiteaVersion = { major: 1, minor: 26 };

const jobSchema = z.object({
  id: z.number().int().positive(),
  run_id: z.number().int(),
  name: z.string(),
  labels: z.array(z.string()).nullable().transform((labels) => labels ?? []),
  status: z.string(),
  url: z.string(),
  html_url: z.string().optional().default(""),
  created_at: z.string(),
  runner_name: z.string().optional().default(""),
  started_at: z.string().optional().default(""),
  completed_at: z.string().optional().default(""),
  conclusion: z.string().optional().default(""),
});
const jobsPageSchema = z.object({ jobs: z.array(jobSchema).nullable(), total_count: z.number().int().min(0) });
const runnerSchema = z.object({
  id: z.number().int().positive(),
  name: z.string(),
  status: z.string(),
  busy: z.boolean(),
  disabled: z.boolean().optional().default(false),
  ephemeral: z.boolean().optional().default(false),
});
const runnersPageSchema = z.object({
  runners: z.array(runnerSchema).nullable().transform((runners) => runners ?? []),
  total_count: z.number().int().min(0),
});
const emptySchema = z.unknown();
const versionSchema = z.object({ version: z.string() });
const registrationTokenSchema = z.object({ token: z.string().min(1) });
const runSchema = z.object({ id: z.number().int(), path: z.string() });
const userSchema = z.object({ login: z.string(), is_admin: z.boolean().optional() });

/** One job as `GET /repos/{owner}/{repo}/actions/jobs/{id}` shows it, with its outcome once completed. */
export interface JobDetail extends RunningJob {
  /** `queued`, `waiting`, `in_progress` or `completed`. */
  status: string;
  /** Once completed: `success`, `failure`, `cancelled` or `skipped`; else "". */
  conclusion: string;
  /** When the job finished (RFC 3339); "" before. */
  completedAt: string;
}

const repoFromJobUrl = /\/repos\/([^/]+)\/([^/]+)\/actions\/jobs\/\d+$/;

/** Gitea shows an unset time as the Unix epoch (Gitea 1.26 `convert.ToActionWorkflowJob`): that is no time. */
const setTime = (time: string): string => {
  const at = Date.parse(time);
  return Number.isNaN(at) || at <= 0 ? "" : time;
};

/** The repository of a job, from its API URL. */
function jobRepository(entry: z.infer<typeof jobSchema>, what: string): { owner: string; repo: string } {
  const repo = repoFromJobUrl.exec(entry.url);
  if (!repo) throw new ForgeError("InvalidResponse", `${what}: job ${entry.id} has no repository URL`);
  return { owner: decodeURIComponent(repo[1]), repo: decodeURIComponent(repo[2]) };
}

function toJobDetail(entry: z.infer<typeof jobSchema>, what: string): JobDetail {
  return {
    ...toRunningJob(entry, what),
    status: entry.status,
    conclusion: entry.conclusion,
    completedAt: setTime(entry.completed_at),
  };
}

function toRunningJob(entry: z.infer<typeof jobSchema>, what: string): RunningJob {
  return {
    id: entry.id,
    runnerName: entry.runner_name,
    runId: entry.run_id,
    name: entry.name,
    ...jobRepository(entry, what),
    createdAt: entry.created_at,
    startedAt: setTime(entry.started_at),
  };
}

export interface GiteaClientOptions extends ForgeHttpOptions {
  /** The detected version, when known (see forge_client.ts); `version()` reads it from the server. */
  forge?: ForgeVersion;
}

/** Path of the jobs list for an endpoint, relative to `/api/v1`. */
export function jobsPath(endpoint: JobsEndpoint): string {
  const segment = encodeURIComponent;
  switch (endpoint.scope) {
    case "global":
      return "/admin/actions/jobs";
    case "org":
      return `/orgs/${segment(endpoint.org)}/actions/jobs`;
    case "user":
      return "/user/actions/jobs";
    case "repo":
      return `/repos/${segment(endpoint.owner)}/${segment(endpoint.repo)}/actions/jobs`;
  }
}

/** The jobs path with its names replaced by placeholders, for metrics with bounded labels. */
export function jobsPathTemplate(endpoint: JobsEndpoint): string {
  switch (endpoint.scope) {
    case "global":
      return "/admin/actions/jobs";
    case "org":
      return "/orgs/{org}/actions/jobs";
    case "user":
      return "/user/actions/jobs";
    case "repo":
      return "/repos/{owner}/{repo}/actions/jobs";
  }
}

function toRegistration(runner: z.infer<typeof runnerSchema>): RunnerRegistration {
  return {
    id: runner.id,
    name: runner.name,
    online: runner.status === "online",
    busy: runner.busy,
    disabled: runner.disabled,
    ephemeral: runner.ephemeral,
  };
}

/** Path of the runners list of an endpoint's scope, relative to `/api/v1`. */
export function runnersPath(endpoint: JobsEndpoint): string {
  return jobsPath(endpoint).replace(/\/jobs$/, "/runners");
}

function runnersPathTemplate(endpoint: JobsEndpoint): string {
  return jobsPathTemplate(endpoint).replace(/\/jobs$/, "/runners");
}

/** Parses Gitea's version string ("1.26.0", "1.26.0+dev-12-g1234") and checks it is supported. */
export function checkGiteaVersion(version: string): { major: number; minor: number; patch: number } {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version.trim());
  if (!match) throw new ForgeError("InvalidResponse", `Cannot parse the Gitea version "${version}"`);
  const [major, minor, patch] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const { major: needMajor, minor: needMinor } = minimumGiteaVersion;
  if (major < needMajor || (major === needMajor && minor < needMinor)) {
    throw new ForgeError(
      "UnsupportedVersion",
      `Gitea ${version} is not supported: the operator needs Gitea >= ${needMajor}.${needMinor} (jobs and runners API)`,
    );
  }
  return { major, minor, patch };
}

export class GiteaClient implements ForgeClient {
  readonly forge: ForgeVersion;
  readonly features: ForgeFeatures;
  readonly #http: ForgeHttp;

  constructor(options: GiteaClientOptions) {
    this.#http = new ForgeHttp(options);
    this.forge = options.forge ?? { kind: "gitea", version: "unknown", ...minimumGiteaVersion, patch: 0 };
    this.features = forgeFeatures(this.forge);
  }

  /** The server's version; throws `UnsupportedVersion` below Gitea 1.26. */
  async version(): Promise<string> {
    const body = await this.#call("/version", "/version", "Get the Gitea version", versionSchema);
    checkGiteaVersion(body.value.version);
    return body.value.version;
  }

  /**
   * A runner registration token for the scope of `endpoint` (Gitea >= 1.24). Gitea hands out its current token for
   * that scope, so asking again does not invalidate runners that are starting.
   */
  async createRegistrationToken(endpoint: JobsEndpoint): Promise<string> {
    const path = `${runnersPath(endpoint)}/registration-token`;
    const template = `${runnersPathTemplate(endpoint)}/registration-token`;
    const body = await this.#call(
      path,
      template,
      `Get a runner registration token at ${path}`,
      registrationTokenSchema,
      "POST",
    );
    return body.value.token;
  }

  /** Every runner registered in the scope of `endpoint`, reading all pages. */
  async listRunners(endpoint: JobsEndpoint): Promise<RunnerRegistration[]> {
    const path = runnersPath(endpoint);
    const result: RunnerRegistration[] = [];
    for (let page = 1;; page++) {
      const body = await this.#call(
        `${path}?limit=${pageSize}&page=${page}`,
        runnersPathTemplate(endpoint),
        `List runners at ${path}`,
        runnersPageSchema,
      );
      result.push(...body.value.runners.map(toRegistration));
      if (body.value.runners.length < pageSize || page * pageSize >= body.value.total_count) break;
    }
    return result;
  }

  /** Stops (or lets again) Gitea hand tasks to a runner. A disabled runner gets no task from its next fetch on. */
  async setRunnerDisabled(endpoint: JobsEndpoint, id: number, disabled: boolean): Promise<RunnerRegistration> {
    const path = `${runnersPath(endpoint)}/${id}`;
    const body = await this.#call(
      path,
      `${runnersPathTemplate(endpoint)}/{id}`,
      `${disabled ? "Disable" : "Enable"} runner ${id} at ${path}`,
      runnerSchema,
      "PATCH",
      { disabled },
    );
    return toRegistration(body.value);
  }

  /** Removes a runner registration; a registration that is gone already is not an error. */
  async deleteRunner(endpoint: JobsEndpoint, id: number): Promise<void> {
    const path = `${runnersPath(endpoint)}/${id}`;
    try {
      await this.#call(
        path,
        `${runnersPathTemplate(endpoint)}/{id}`,
        `Delete runner ${id} at ${path}`,
        emptySchema,
        "DELETE",
      );
    } catch (error) {
      if (error instanceof ForgeError && error.kind === "NotFound") return;
      throw error;
    }
  }

  /** The login of the token's user. */
  async currentUser(): Promise<{ login: string; isAdmin: boolean }> {
    const body = await this.#call("/user", "/user", "Get the token's user", userSchema);
    return { login: body.value.login, isAdmin: body.value.is_admin ?? false };
  }

  /**
   * Every queued and in-progress job of an endpoint, reading all pages (one request when at most 50 are open).
   * Waiting (blocked) jobs are not included: they must not get a runner yet.
   */
  async listOpenJobs(endpoint: JobsEndpoint, _options?: { labels?: readonly string[] }): Promise<OpenJobs> {
    const queued = new Map<number, QueuedJob>();
    const running = new Map<number, RunningJob>();
    const path = jobsPath(endpoint);
    for (let page = 1;; page++) {
      const body = await this.#call(
        `${path}?status=queued&status=in_progress&limit=${pageSize}&page=${page}`,
        jobsPathTemplate(endpoint),
        `List open jobs at ${path}`,
        jobsPageSchema,
      );
      const entries = body.value.jobs ?? [];
      const what = `List open jobs at ${path}`;
      for (const entry of entries) {
        if (entry.status === "in_progress") {
          running.set(entry.id, toRunningJob(entry, what));
          continue;
        }
        // Gitea filters by status already; checking again keeps blocked jobs out whatever the server does.
        if (entry.status !== "queued") continue;
        queued.set(entry.id, {
          id: entry.id,
          runId: entry.run_id,
          name: entry.name,
          runsOn: entry.labels,
          ...jobRepository(entry, what),
          createdAt: entry.created_at,
          htmlUrl: entry.html_url,
        });
      }
      if (entries.length < pageSize || page * pageSize >= body.value.total_count) break;
    }
    return { queued: [...queued.values()].sort((a, b) => a.id - b.id), running: [...running.values()] };
  }

  /** Registering runners over the API is Forgejo's (>= 15); Gitea runners register with the shared token. */
  registerRunner(_endpoint: JobsEndpoint, _runner: { name: string; description: string }): Promise<RunnerCredentials> {
    return Promise.reject(unsupported(this.forge, "register runners over its API", "Forgejo >= 15"));
  }

  /** One job of a repository, with its outcome once it completed. */
  async getJob(owner: string, repo: string, id: number): Promise<JobDetail> {
    const path = `/repos/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/actions/jobs/${id}`;
    const what = `Get job ${id} at ${path}`;
    const body = await this.#call(path, "/repos/{owner}/{repo}/actions/jobs/{id}", what, jobSchema);
    return toJobDetail(body.value, what);
  }

  /**
   * The completed jobs of a workflow run (one page of up to 50), with their outcomes: one request for several jobs
   * of a run that ended together (a matrix).
   */
  async listCompletedRunJobs(owner: string, repo: string, runId: number): Promise<JobDetail[]> {
    const path = `/repos/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/actions/runs/${runId}/jobs`;
    const what = `List the completed jobs of run ${runId} at ${path}`;
    const body = await this.#call(
      `${path}?status=completed&limit=${pageSize}`,
      "/repos/{owner}/{repo}/actions/runs/{run}/jobs",
      what,
      jobsPageSchema,
    );
    return (body.value.jobs ?? []).map((entry) => toJobDetail(entry, what));
  }

  /**
   * The workflow file of a run, e.g. `ci.yaml`: Gitea 1.26's run object names it in `path` as `<file>@<ref>`; the
   * workflow's own `name:` is not in the API.
   */
  async getRunWorkflow(owner: string, repo: string, runId: number): Promise<string> {
    const path = `/repos/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/actions/runs/${runId}`;
    const body = await this.#call(
      path,
      "/repos/{owner}/{repo}/actions/runs/{run}",
      `Get run ${runId} at ${path}`,
      runSchema,
    );
    const file = body.value.path.split("@")[0];
    return file.slice(file.lastIndexOf("/") + 1);
  }

  async #call<T>(
    path: string,
    template: string,
    what: string,
    schema: z.ZodType<T>,
    method: Method = "GET",
    body?: unknown,
  ): Promise<{ value: T }> {
    return await this.#http.call({ path: `/api/v1${path}`, template, what, schema, method, body });
  }
}
