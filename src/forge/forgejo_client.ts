/**
 * A typed client for the parts of Forgejo's REST API the operator uses (Forgejo >= 11), read from Forgejo's
 * source: routers/api/v1/api.go and routers/api/v1/shared/runners.go at v11.0.0, v14.0.0 and v15.0.0.
 *
 * Where Forgejo differs from Gitea:
 * - Jobs waiting for a runner are listed at `.../actions/runners/jobs` (global: `/admin/runners/jobs`, and from v15
 *   also `/admin/actions/runners/jobs`) as a bare JSON array, or `null` when there are none, of
 *   `{id, repo_id, owner_id, name, needs, runs_on, task_id, status}` (v15 adds `attempt` and `handle`): no paging, no
 *   status filter, newest first, no repository names. Status `waiting` is runnable (blocked jobs are `blocked` and
 *   never listed), `running` is taken.
 * - The list is filtered by `labels` (comma-separated): a job is listed when each of its runs-on labels is one of
 *   them (ActionRunJob.ItRunsOn). Without the parameter v14 lists every job; v11 lists none.
 * - The registration token is read with GET (POST answers 405). v15 registers runners over the API with their own
 *   credentials, lists and deletes them; before v15 there is no runners API at all.
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

/** Forgejo's `[api] MAX_RESPONSE_ITEMS` default: the most runners one page holds. */
export const forgejoPageSize = 50;

const jobSchema = z.object({
  id: z.number().int().positive(),
  repo_id: z.number().int(),
  owner_id: z.number().int(),
  name: z.string(),
  needs: z.array(z.string()).nullable().optional(),
  runs_on: z.array(z.string()).nullable().transform((labels) => labels ?? []),
  task_id: z.number().int(),
  status: z.string(),
  attempt: z.number().int().optional(),
  handle: z.string().optional(),
});
/** A Go nil slice is encoded as `null`: Forgejo answers `null` when no job matches. */
const jobsSchema = z.array(jobSchema).nullable().transform((jobs) => jobs ?? []);
const repositorySchema = z.object({ name: z.string(), owner: z.object({ login: z.string() }) });
const registrationTokenSchema = z.object({ token: z.string().min(1) });
const userSchema = z.object({ login: z.string(), is_admin: z.boolean().optional() });
const runnerSchema = z.object({
  id: z.number().int().positive(),
  name: z.string(),
  /** "offline", "idle" or "active" (modules/structs/repo_actions.go, v15.0.0). */
  status: z.string(),
  ephemeral: z.boolean().optional().default(false),
});
const runnersSchema = z.array(runnerSchema).nullable().transform((runners) => runners ?? []);
const credentialsSchema = z.object({
  id: z.number().int().positive(),
  uuid: z.string().min(1),
  token: z.string().min(1),
});
const emptySchema = z.unknown();

export interface ForgejoClientOptions extends ForgeHttpOptions {
  /** The detected version: which routes exist depends on it. */
  forge: ForgeVersion;
}

const segment = encodeURIComponent;

/** The runners path of a scope, relative to `/api/v1`; `placeholders` gives the metric template instead. */
export function forgejoRunnersPath(endpoint: JobsEndpoint, forge: ForgeVersion, placeholders = false): string {
  switch (endpoint.scope) {
    case "global":
      // v15 moved the admin routes next to the others' (`/admin/actions/runners`); the old ones are deprecated.
      return forge.major >= 15 ? "/admin/actions/runners" : "/admin/runners";
    case "org":
      return `/orgs/${placeholders ? "{org}" : segment(endpoint.org)}/actions/runners`;
    case "user":
      return "/user/actions/runners";
    case "repo":
      return placeholders
        ? "/repos/{owner}/{repo}/actions/runners"
        : `/repos/${segment(endpoint.owner)}/${segment(endpoint.repo)}/actions/runners`;
  }
}

/** The jobs list of a scope, relative to `/api/v1`. */
export function forgejoJobsPath(endpoint: JobsEndpoint, forge: ForgeVersion, placeholders = false): string {
  return `${forgejoRunnersPath(endpoint, forge, placeholders)}/jobs`;
}

function toRegistration(runner: z.infer<typeof runnerSchema>): RunnerRegistration {
  return {
    id: runner.id,
    name: runner.name,
    online: runner.status !== "offline",
    // "active": the runner updated a task or its log within the last seconds (ActionRunner.Status, v15.0.0).
    busy: runner.status === "active",
    disabled: false,
    ephemeral: runner.ephemeral,
  };
}

export class ForgejoClient implements ForgeClient {
  readonly forge: ForgeVersion;
  readonly features: ForgeFeatures;
  readonly #http: ForgeHttp;
  /** Repository names by id: the jobs list names repositories by id only, and names rarely change. */
  readonly #repositories = new Map<number, Promise<{ owner: string; repo: string }>>();

  constructor(options: ForgejoClientOptions) {
    this.#http = new ForgeHttp(options);
    this.forge = options.forge;
    this.features = forgeFeatures(options.forge);
  }

  async currentUser(): Promise<{ login: string; isAdmin: boolean }> {
    const body = await this.#call("/user", "/user", "Get the token's user", userSchema);
    return { login: body.login, isAdmin: body.is_admin ?? false };
  }

  /**
   * The waiting and running jobs of an endpoint, in one request. Before Forgejo 14 the list is empty unless labels
   * are given, so `labels` (the runner label names the caller serves) are sent then; from 14 on every job is listed,
   * as Gitea does, so that `check` can say which label a job lacks. Jobs without runs-on labels are left out: Forgejo
   * never hands them to a runner (ItRunsOn is false for them, models/actions/run_job.go v11.0.0 to v15.0.0), unlike
   * Gitea, which hands them to any runner.
   */
  async listOpenJobs(endpoint: JobsEndpoint, options: { labels?: readonly string[] } = {}): Promise<OpenJobs> {
    const labels = [...new Set(options.labels ?? [])].sort();
    if (this.features.jobsNeedLabels && labels.length === 0) return { queued: [], running: [] };
    const path = forgejoJobsPath(endpoint, this.forge);
    const query = this.features.jobsNeedLabels ? `?labels=${segment(labels.join(","))}` : "";
    const jobs = await this.#call(
      `${path}${query}`,
      forgejoJobsPath(endpoint, this.forge, true),
      `List open jobs at ${path}`,
      jobsSchema,
    );
    const waiting = jobs.filter((job) => job.status === "waiting" && job.runs_on.length > 0);
    const runningJobs = jobs.filter((job) => job.status === "running");
    // Repository names are looked up once per repository (cached), for the running jobs too (job metrics).
    const names = new Map(
      await Promise.all(
        [...new Set([...waiting, ...runningJobs].map((job) => job.repo_id))].map(async (id) =>
          [id, await this.#repository(id)] as const
        ),
      ),
    );
    const queued: QueuedJob[] = waiting.map((job) => ({
      id: job.id,
      runId: 0,
      name: job.name,
      runsOn: job.runs_on,
      owner: names.get(job.repo_id)!.owner,
      repo: names.get(job.repo_id)!.repo,
      createdAt: "",
      htmlUrl: "",
      ...(job.handle ? { handle: job.handle } : {}),
    }));
    // Forgejo's job list names no runner, run or times: the job metrics get what there is.
    const running: RunningJob[] = runningJobs.map((job) => ({
      id: job.id,
      runnerName: "",
      runId: 0,
      name: job.name,
      owner: names.get(job.repo_id)!.owner,
      repo: names.get(job.repo_id)!.repo,
      createdAt: "",
      startedAt: "",
    }));
    // Forgejo lists newest first; the planner wants the oldest first.
    return { queued: queued.sort((a, b) => a.id - b.id), running };
  }

  /** The scope's runner registration token: read with GET (Forgejo answers POST with 405). */
  async createRegistrationToken(endpoint: JobsEndpoint): Promise<string> {
    const path = `${forgejoRunnersPath(endpoint, this.forge)}/registration-token`;
    const body = await this.#call(
      path,
      `${forgejoRunnersPath(endpoint, this.forge, true)}/registration-token`,
      `Get a runner registration token at ${path}`,
      registrationTokenSchema,
    );
    return body.token;
  }

  /** Every runner registered in the scope (Forgejo >= 15), reading all pages. */
  async listRunners(endpoint: JobsEndpoint): Promise<RunnerRegistration[]> {
    this.#need("runnersApi", "list runners", "Forgejo >= 15");
    const path = forgejoRunnersPath(endpoint, this.forge);
    const result: RunnerRegistration[] = [];
    for (let page = 1;; page++) {
      const { value, headers } = await this.#http.call({
        path: `/api/v1${path}?page=${page}&limit=${forgejoPageSize}`,
        template: forgejoRunnersPath(endpoint, this.forge, true),
        what: `List runners at ${path}`,
        schema: runnersSchema,
      });
      result.push(...value.map(toRegistration));
      const total = Number(headers.get("x-total-count") ?? Number.NaN);
      if (value.length < forgejoPageSize || !(page * forgejoPageSize < total)) break;
    }
    return result;
  }

  setRunnerDisabled(_endpoint: JobsEndpoint, _id: number, _disabled: boolean): Promise<RunnerRegistration> {
    return Promise.reject(unsupported(this.forge, "disable a runner", "Gitea"));
  }

  /** Removes a runner registration (Forgejo >= 15); one that is gone already is not an error. */
  async deleteRunner(endpoint: JobsEndpoint, id: number): Promise<void> {
    this.#need("runnersApi", "delete runners", "Forgejo >= 15");
    const path = `${forgejoRunnersPath(endpoint, this.forge)}/${id}`;
    try {
      await this.#call(
        path,
        `${forgejoRunnersPath(endpoint, this.forge, true)}/{id}`,
        `Delete runner ${id} at ${path}`,
        emptySchema,
        "DELETE",
      );
    } catch (error) {
      if (error instanceof ForgeError && error.kind === "NotFound") return;
      throw error;
    }
  }

  /**
   * Registers an ephemeral runner in the scope (Forgejo >= 15) and returns its own credentials. Forgejo deletes an
   * ephemeral runner once its task is final (routers/api/actions/runner/runner.go UpdateTask, v15.0.0).
   */
  async registerRunner(
    endpoint: JobsEndpoint,
    runner: { name: string; description: string },
  ): Promise<RunnerCredentials> {
    this.#need("runnerRegistration", "register runners over its API", "Forgejo >= 15");
    const path = forgejoRunnersPath(endpoint, this.forge);
    return await this.#call(
      path,
      forgejoRunnersPath(endpoint, this.forge, true),
      `Register runner "${runner.name}" at ${path}`,
      credentialsSchema,
      "POST",
      { name: runner.name, description: runner.description, ephemeral: true },
    );
  }

  /** A repository's owner and name by id, asked once per id (a failed lookup is asked again next time). */
  #repository(id: number): Promise<{ owner: string; repo: string }> {
    let known = this.#repositories.get(id);
    if (!known) {
      known = this.#call(`/repositories/${id}`, "/repositories/{id}", `Get repository ${id}`, repositorySchema)
        .then((repository) => ({ owner: repository.owner.login, repo: repository.name }));
      this.#repositories.set(id, known);
      known.catch(() => this.#repositories.delete(id));
    }
    return known;
  }

  #need(feature: keyof ForgeFeatures, what: string, needs: string): void {
    if (!this.features[feature]) throw unsupported(this.forge, what, needs);
  }

  async #call<T>(
    path: string,
    template: string,
    what: string,
    schema: z.ZodType<T>,
    method: Method = "GET",
    body?: unknown,
  ): Promise<T> {
    return (await this.#http.call({ path: `/api/v1${path}`, template, what, schema, method, body })).value;
  }
}
