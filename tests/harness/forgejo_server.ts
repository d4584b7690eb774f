/**
 * A Forgejo-shaped server for the tests: no Forgejo 11+ server can be built here (its module path and its
 * code.forgejo.org dependencies are refused by the module proxy), so this answers the way Forgejo's handlers do, for
 * the parts the operator and a runner use. Written from Forgejo's source (github mirror of forgejo/forgejo, tags
 * v11.0.0, v14.0.0 and v15.0.0):
 *
 * - routers/api/forgejo/v1/{api,forgejo}.go: `GET /api/forgejo/v1/version` -> `{"version": "X.Y.Z+gitea-1.22.0"}`
 *   (the Makefile appends GITEA_COMPATIBILITY); routers/api/v1/misc/version.go answers `/api/v1/version` the same.
 * - routers/api/v1/api.go: which runner routes exist per version (jobs and registration-token from v11; list,
 *   register (POST), get and delete runners, and `/admin/actions/runners/...`, from v15). Only GET is routed for
 *   registration-token, so POST answers 405. Admin routes need a site admin (403), org routes an org owner (403),
 *   repository routes the repository's owner or an admin (reqOwner, 403).
 * - routers/api/v1/shared/runners.go: GetActionRunJobs lists `waiting` and `running` jobs of the scope, newest first
 *   (FindTaskOptions orders by id DESC), as a bare array or `null`, filtered by the `labels` parameter
 *   (ActionRunJob.ItRunsOn: every runs-on label of the job is one of the given labels; false without runs-on). v11
 *   splits a missing parameter into [""] and so lists nothing; v14 lists everything without it, and a job without
 *   runs-on when it is empty. v15 adds `attempt` and `handle`. ListRunners pages with X-Total-Count; RegisterRunner
 *   answers 201 `{id, uuid, token}`; DeleteRunner 204.
 * The runner routes are in forgejo_rest.ts; the runner protocol (Connect, routers/api/actions/runner/) is in
 * forgejo_runner_service.ts.
 *
 * Jobs are queued by the test (`queueJob`); a job with `needs` starts `blocked` and becomes `waiting` once the jobs it
 * needs succeeded, as EmitJobsIfReady does.
 */
import { runnerRoute, runnerScope } from "./forgejo_rest.ts";
import { handleRunnerService } from "./forgejo_runner_service.ts";

export interface FakeOwner {
  id: number;
  login: string;
  kind: "user" | "org";
  isAdmin: boolean;
  /** API token (users only). */
  token?: string;
  /** Org owners' user ids. */
  owners: number[];
}

export interface FakeRepo {
  id: number;
  ownerId: number;
  name: string;
}

export type FakeJobStatus = "waiting" | "blocked" | "running" | "success" | "failure" | "cancelled";

export interface FakeJob {
  id: number;
  runId: number;
  repoId: number;
  ownerId: number;
  name: string;
  runsOn: string[];
  needs: string[];
  status: FakeJobStatus;
  taskId: number;
  attempt: number;
  handle: string;
  /** Bumped on every change; runners are handed the least recently updated waiting job first. */
  updated: number;
  /** The single-job workflow the runner receives. */
  workflow: string;
}

export interface FakeRunner {
  id: number;
  uuid: string;
  token: string;
  name: string;
  description: string;
  ownerId: number;
  repoId: number;
  ephemeral: boolean;
  labels: string[];
  version: string;
  lastOnline: number;
  lastActive: number;
}

export interface FakeTask {
  id: number;
  jobId: number;
  runnerId: number;
  logRows: number;
  done: boolean;
}

/** A forge version's routes and answers. */
export interface ForgejoShape {
  major: number;
  /** `X.Y.Z+gitea-1.22.0`, as Forgejo's build sets it. */
  version: string;
}

export const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json;charset=utf-8", ...headers },
  });
/** Forgejo's API errors: `{"message": ..., "url": ...}`. */
export const apiError = (status: number, message: string): Response =>
  json(status, { message, url: "https://forgejo.org/api/swagger" });

export class ForgejoServer {
  readonly shape: ForgejoShape;
  readonly owners = new Map<number, FakeOwner>();
  readonly repos = new Map<number, FakeRepo>();
  readonly jobs = new Map<number, FakeJob>();
  readonly runners = new Map<number, FakeRunner>();
  readonly tasks = new Map<number, FakeTask>();
  /** Registration tokens by scope key (`global`, `owner:<id>`, `repo:<id>`). */
  readonly registrationTokens = new Map<string, string>();
  /** Every API request, `METHOD path?query`, for tests that count requests. */
  readonly requests: string[] = [];
  /** Bumped whenever a task may have become available (Forgejo's tasks version). */
  tasksVersion = 1;
  #nextId = 1;
  #clock = 1;
  #server?: Deno.HttpServer<Deno.NetAddr>;

  constructor(version: string) {
    const major = Number(/^(\d+)\./.exec(version)?.[1] ?? Number.NaN);
    if (!Number.isInteger(major)) throw new Error(`Cannot parse the Forgejo version "${version}"`);
    this.shape = { major, version: `${version}+gitea-1.22.0` };
  }

  get url(): string {
    if (!this.#server) throw new Error("The Forgejo-shaped server is not started");
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  start(): this {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) => this.handle(request),
    );
    return this;
  }

  async stop(): Promise<void> {
    await this.#server?.shutdown();
  }

  nextId(): number {
    return this.#nextId++;
  }

  tick(): number {
    return this.#clock++;
  }

  addUser(login: string, options: { admin?: boolean } = {}): FakeOwner & { token: string } {
    const user = {
      id: this.nextId(),
      login,
      kind: "user" as const,
      isAdmin: options.admin ?? false,
      token: crypto.randomUUID().replaceAll("-", ""),
      owners: [],
    };
    this.owners.set(user.id, user);
    return user;
  }

  addOrg(login: string, owners: FakeOwner[]): FakeOwner {
    const org: FakeOwner = { id: this.nextId(), login, kind: "org", isAdmin: false, owners: owners.map((o) => o.id) };
    this.owners.set(org.id, org);
    return org;
  }

  addRepo(owner: FakeOwner, name: string): FakeRepo {
    const repo = { id: this.nextId(), ownerId: owner.id, name };
    this.repos.set(repo.id, repo);
    return repo;
  }

  /** Queues one job of a new (or given) run; `steps` become the job's `run:` steps. */
  queueJob(
    repo: FakeRepo,
    job: { name: string; runsOn: string[]; needs?: string[]; runId?: number; steps?: string[] },
  ): FakeJob {
    const steps = (job.steps ?? ["echo ok"]).map((run) => `      - run: ${JSON.stringify(run)}`).join("\n");
    const created: FakeJob = {
      id: this.nextId(),
      runId: job.runId ?? this.nextId(),
      repoId: repo.id,
      ownerId: repo.ownerId,
      name: job.name,
      runsOn: job.runsOn,
      needs: job.needs ?? [],
      status: (job.needs ?? []).length > 0 ? "blocked" : "waiting",
      taskId: 0,
      attempt: 1,
      handle: crypto.randomUUID(),
      updated: this.tick(),
      workflow: `name: test\non: push\njobs:\n  ${job.name}:\n    name: ${job.name}\n    runs-on: ${
        JSON.stringify(job.runsOn)
      }\n    steps:\n${steps}\n`,
    };
    this.jobs.set(created.id, created);
    this.tasksVersion++;
    return created;
  }

  /** Cancels a job as the web UI does: a running task ends cancelled, a waiting job never runs. */
  cancelJob(id: number): void {
    const job = this.jobs.get(id);
    if (!job || ["success", "failure", "cancelled"].includes(job.status)) return;
    job.status = "cancelled";
    job.updated = this.tick();
  }

  /** Marks a job done (from UpdateTask) and unblocks the jobs of its run that needed it. */
  finishJob(job: FakeJob, status: "success" | "failure" | "cancelled"): void {
    job.status = status;
    job.updated = this.tick();
    for (const other of this.jobs.values()) {
      if (other.runId !== job.runId || other.status !== "blocked") continue;
      const needed = [...this.jobs.values()].filter((j) => j.runId === job.runId && other.needs.includes(j.name));
      if (needed.every((j) => j.status === "success")) {
        other.status = "waiting";
        other.updated = this.tick();
        this.tasksVersion++;
      }
    }
  }

  /** The registration token of a scope, made on first use (GetLatestRunnerToken / NewRunnerToken). */
  registrationToken(scope: string): string {
    let token = this.registrationTokens.get(scope);
    if (!token) {
      token = crypto.randomUUID().replaceAll("-", "").slice(0, 40);
      this.registrationTokens.set(scope, token);
    }
    return token;
  }

  /** ActionRunJob.ItRunsOn: every runs-on label is one of `labels`; never for a job without runs-on. */
  static itRunsOn(job: FakeJob, labels: readonly string[]): boolean {
    if (labels.length === 0 || job.runsOn.length === 0) return false;
    const set = new Set(labels);
    return job.runsOn.every((label) => set.has(label));
  }

  /** Runner status as ActionRunner.Status computes it (offline after a minute, idle after 10 s). */
  static runnerStatus(runner: FakeRunner, now = Date.now()): "offline" | "idle" | "active" {
    if (now - runner.lastOnline > 60_000) return "offline";
    if (now - runner.lastActive > 10_000) return "idle";
    return "active";
  }

  async handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname.startsWith("/api/actions/")) return await handleRunnerService(this, request, url);
    this.requests.push(`${request.method} ${url.pathname}${url.search}`);
    if (url.pathname === "/api/forgejo/v1/version" && request.method === "GET") {
      return json(200, { version: this.shape.version });
    }
    if (!url.pathname.startsWith("/api/v1/")) return apiError(404, "not found");
    const path = url.pathname.slice("/api/v1".length);
    if (path === "/version" && request.method === "GET") return json(200, { version: this.shape.version });
    const user = this.#user(request);
    if (!user) return apiError(401, "token is required");
    return await this.#api(request, url, path, user);
  }

  #user(request: Request): FakeOwner | undefined {
    const token = /^token (\S+)$/i.exec(request.headers.get("authorization") ?? "")?.[1];
    return [...this.owners.values()].find((owner) => owner.token !== undefined && owner.token === token);
  }

  async #api(request: Request, url: URL, path: string, user: FakeOwner): Promise<Response> {
    const method = request.method;
    if (path === "/user") return method === "GET" ? json(200, { login: user.login, is_admin: user.isAdmin }) : m405();
    const repoById = /^\/repositories\/(\d+)$/.exec(path);
    if (repoById) {
      const repo = this.repos.get(Number(repoById[1]));
      const owner = repo && this.owners.get(repo.ownerId);
      if (!repo || !owner) return apiError(404, "not found");
      return json(200, {
        id: repo.id,
        name: repo.name,
        full_name: `${owner.login}/${repo.name}`,
        owner: { id: owner.id, login: owner.login },
      });
    }
    const scope = runnerScope(this, path, user);
    if (!scope) return apiError(404, "not found");
    if ("error" in scope) return scope.error;
    return await runnerRoute(this, request, url, scope.rest, scope.ownerId, scope.repoId);
  }

  createRunner(
    runner: {
      name: string;
      description?: string;
      ephemeral: boolean;
      ownerId: number;
      repoId: number;
      labels?: string[];
    },
  ): FakeRunner {
    const created: FakeRunner = {
      id: this.nextId(),
      uuid: crypto.randomUUID(),
      token: crypto.randomUUID().replaceAll("-", "").slice(0, 40),
      name: runner.name,
      description: runner.description ?? "",
      ownerId: runner.ownerId,
      repoId: runner.repoId,
      // There is no ephemeral runner before v15 (models/actions/runner.go gained the column in v15).
      ephemeral: this.shape.major >= 15 && runner.ephemeral,
      labels: runner.labels ?? [],
      version: "",
      lastOnline: 0,
      lastActive: 0,
    };
    this.runners.set(created.id, created);
    return created;
  }
}

/** What Forgejo's router answers for a route that exists with another method. */
export function m405(): Response {
  return new Response(null, { status: 405 });
}

/** Starts a Forgejo-shaped server on a free loopback port. */
export function startForgejoServer(version: string): ForgejoServer {
  return new ForgejoServer(version).start();
}
