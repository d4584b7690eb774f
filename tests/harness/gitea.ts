/**
 * A real Gitea for tests: one process per harness on a free loopback port, with its own temporary work directory
 * (sqlite database, repositories, app.ini and log), an admin user and an API token with every scope.
 *
 * The process never outlives the test run: {@linkcode GiteaHarness.dispose} kills it and removes the directory, and
 * it runs under a watchdog that kills it when the test process dies, however that happens
 * ({@linkcode spawnTiedToThisProcess}). The temporary directory is only removed by `dispose()`.
 *
 * Also starts the Go test runner (`tests/harness/runner`) as a child process: {@linkcode runTestRunner}.
 */
import { Buffer } from "node:buffer";
import { GiteaPortTakenError, GiteaProcess } from "./gitea_process.ts";
import { freeLoopbackPort, spawnTiedToThisProcess, tail } from "./process.ts";
import { ensureTools, selectGiteaBuild } from "./tools.ts";

export interface StartGiteaOptions {
  /**
   * Which built Gitea to start ("1.26.0"; see `tests/tools/build.sh`). Default: `GRO_GITEA_VERSION`, else the newest.
   */
  version?: string;
  /** A Gitea binary to start instead of a built version (with `giteaSourceDir`). */
  gitea?: string;
  /** Gitea's source tree holding `templates/` and `options/`, for `gitea`. */
  giteaSourceDir?: string;
  /** Extra app.ini settings, merged over the defaults: `{ actions: { ZOMBIE_TASK_TIMEOUT: "1m" } }`. */
  settings?: Record<string, Record<string, string>>;
  /** How long to wait for the API to answer after starting the process. Default 60 s. */
  readyTimeoutMs?: number;
  /** The port to try first (a test's); default a free one. Gitea moves to another if it cannot bind it. */
  port?: number;
}

/** Where a runner registration token is valid, and so which runners may pick a job. */
export type RunnerScope =
  | { kind: "global" }
  | { kind: "org"; org: string }
  | { kind: "user"; user: string }
  | { kind: "repo"; owner: string; repo: string };

/** Which jobs to list: one repository's, an organisation's, a user's own (`/user/...`) or all of them (admin). */
export type JobScope =
  | { kind: "all" }
  | { kind: "org"; org: string }
  | { kind: "user"; user: string }
  | { kind: "repo"; owner: string; repo: string };

/** A workflow job as `GET .../actions/jobs` reports it (only the fields the tests read). */
export interface GiteaJob {
  id: number;
  run_id: number;
  name: string;
  /** The job's `runs-on` values, as Gitea matches them against runner labels. */
  labels: string[];
  /** `queued` (runnable), `waiting` (blocked on needs/approval/concurrency), `in_progress` or `completed`. */
  status: string;
  /** Only once `completed` (absent before): `success`, `failure`, `cancelled` or `skipped`. */
  conclusion?: string;
  runner_id: number;
  runner_name: string;
}

export interface GiteaJobPage {
  jobs: GiteaJob[];
  /** All jobs matching the filter, not just this page. */
  totalCount: number;
}

export interface GiteaRunner {
  id: number;
  name: string;
  status: string;
  busy: boolean;
  ephemeral: boolean;
  labels: { id: number; name: string; type: string }[];
}

export interface ListJobsOptions {
  /** Gitea's filter values: `queued`, `waiting`/`pending`, `in_progress`, `completed`, `success`, ... */
  status?: string[];
  limit?: number;
  page?: number;
}

export interface GiteaHarness {
  /** Base URL with a trailing slash, e.g. `http://127.0.0.1:41234/`. */
  url: string;
  /** The version the running server reports (`GET /api/v1/version`), e.g. "1.27.3". */
  version: string;
  admin: { username: string; password: string };
  /** An API token of the admin with every scope. */
  adminToken: string;
  /** The harness's temporary directory; Gitea's output goes to `gitea.log` in it. */
  dir: string;
  /** Calls the API (`path` relative to `/api/v1/`) as the admin, or with `token`; throws on a non-2xx answer. */
  api<T>(method: string, path: string, body?: unknown, token?: string): Promise<T>;
  /** Returns a job's log: one `<timestamp> <line>` per row the runner sent. */
  jobLogs(owner: string, repo: string, jobId: number): Promise<string>;
  /** Creates a user and returns an API token of it with every scope. */
  createUser(name: string): Promise<string>;
  createOrg(name: string): Promise<void>;
  /** Creates a repository with an initial commit on `main`, owned by a user or an organisation. */
  createRepo(owner: string, name: string): Promise<void>;
  /** Creates or updates a file on `main`; the push event starts the workflows it defines. */
  pushWorkflow(owner: string, repo: string, path: string, yaml: string): Promise<void>;
  registrationToken(scope: RunnerScope): Promise<string>;
  listJobs(scope: JobScope, options?: ListJobsOptions): Promise<GiteaJobPage>;
  /** All runners on the instance (admin API). */
  listRunners(): Promise<GiteaRunner[]>;
  /**
   * Cancels a workflow run as a user does, with the web UI's cancel action (Gitea 1.26's API has no cancel endpoint),
   * signed in as the admin.
   */
  cancelRun(owner: string, repo: string, runId: number): Promise<void>;
  /** Resets the repository's runner registration token, as an administrator does in the web UI. */
  resetRegistrationToken(owner: string, repo: string): Promise<void>;
  /** Stops the Gitea process, keeping its port and data (for outage tests). */
  stop(): Promise<void>;
  /** Starts a stopped Gitea again on the same port and data and waits until its API answers. */
  start(): Promise<void>;
  /** Stops Gitea and removes its directory; safe to call twice. */
  dispose(): Promise<void>;
  /** Gitea's log tail, for assertion messages. */
  logTail(lines?: number): string;
}

const adminUser = { username: "gitea-admin", password: "gitea-admin-password-1" };
const userPassword = "test-user-password-1";
const encoder = new TextEncoder();

/** Starts a fresh Gitea and returns once its API answers and the admin token exists. */
export async function startGitea(options: StartGiteaOptions = {}): Promise<GiteaHarness> {
  let { gitea, giteaSourceDir } = options;
  if (gitea === undefined || giteaSourceDir === undefined) {
    const tools = await ensureTools();
    const build = options.version === undefined
      ? { gitea: tools.gitea, giteaSourceDir: tools.giteaSourceDir }
      : selectGiteaBuild(tools.giteaBuilds, options.version);
    ({ gitea, giteaSourceDir } = build);
  }
  const dir = await Deno.makeTempDir({ prefix: "gro-gitea-" });
  const forge = new GiteaProcess({ ...options, gitea, giteaSourceDir }, dir, options.port ?? freeLoopbackPort());
  try {
    await Deno.writeTextFile(forge.configPath, forge.appIni());
    await forge.cli(["migrate"]);
    await forge.cli([
      "admin",
      "user",
      "create",
      "--username",
      adminUser.username,
      "--password",
      adminUser.password,
      "--email",
      `${adminUser.username}@example.invalid`,
      "--admin",
      "--must-change-password=false",
    ]);
    // The token is the last line: Gitea may print warnings (e.g. about running as root) before its logger is set up.
    const tokenOutput = await forge.cli([
      "admin",
      "user",
      "generate-access-token",
      "--username",
      adminUser.username,
      "--token-name",
      "tests",
      "--scopes",
      "all",
      "--raw",
    ]);
    const adminToken = tokenOutput.trim().split("\n").at(-1) ?? "";
    if (!/^[0-9a-f]{40}$/.test(adminToken)) {
      throw new Error(`"gitea admin user generate-access-token" printed no token (${tokenOutput.length} bytes)`);
    }
    // The port was free when picked; another process may take it before Gitea binds it. Then Gitea moves.
    for (let attempt = 1;; attempt++) {
      try {
        await forge.start();
        break;
      } catch (error) {
        if (!(error instanceof GiteaPortTakenError) || attempt === 3) throw error;
        await forge.movePort(freeLoopbackPort());
      }
    }
    await waitForToken(forge.url, adminToken);
    const harness = new Harness(forge, adminToken);
    harness.version = (await harness.api<{ version: string }>("GET", "version")).version;
    return harness;
  } catch (error) {
    await forge.dispose();
    throw error;
  }
}

/**
 * Waits until the API accepts a token. Seen once: right after start, Gitea answered an admin request with 401 "token
 * is required" for a token that worked a moment later.
 */
async function waitForToken(url: string, token: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  let last = "";
  while (Date.now() < deadline) {
    const response = await fetch(`${url}api/v1/user`, {
      headers: { Authorization: `token ${token}` },
      signal: AbortSignal.timeout(5_000),
    }).catch((error) => error as Error);
    if (response instanceof Response) {
      last = `${response.status} ${(await response.text()).slice(0, 200)}`;
      if (response.ok) return;
    } else {
      last = response.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`Gitea at ${url} did not accept the admin token within 20 s: ${last}`);
}

class Harness implements GiteaHarness {
  readonly admin = adminUser;
  version = "";
  readonly #userTokens = new Map<string, string>();

  constructor(readonly forge: GiteaProcess, readonly adminToken: string) {
    this.#userTokens.set(adminUser.username, adminToken);
  }

  get url(): string {
    return this.forge.url;
  }

  get dir(): string {
    return this.forge.dir;
  }

  logTail(lines = 30): string {
    return tail(this.forge.logPath, lines);
  }

  async api<T>(method: string, path: string, body?: unknown, token = this.adminToken): Promise<T> {
    const text = await this.#request(method, path, body, { Authorization: `token ${token}` });
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Returns a job's log as Gitea stores it: one `<timestamp> <line>` per row the runner sent. */
  async jobLogs(owner: string, repo: string, jobId: number): Promise<string> {
    const path = `repos/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/actions/jobs/${jobId}/logs`;
    return await this.#request("GET", path, undefined, { Authorization: `token ${this.adminToken}` });
  }

  async #request(method: string, path: string, body: unknown, headers: Record<string, string>): Promise<string> {
    const url = `${this.url}api/v1/${path.replace(/^\//, "")}`;
    let response: Response;
    let text: string;
    for (let attempt = 1;; attempt++) {
      response = await fetch(url, {
        method,
        headers: { ...headers, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
      text = await response.text();
      // Gitea has once answered a valid token with 401 "token is required" (see waitForToken); ask again, twice.
      if (response.status !== 401 || !text.includes("token is required") || attempt === 3) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (!response.ok) {
      throw new GiteaApiError(
        `Gitea answered ${method} ${url} with ${response.status}: ${text.slice(0, 500)}`,
        response.status,
      );
    }
    return text;
  }

  async createUser(name: string): Promise<string> {
    await this.api("POST", "admin/users", {
      username: name,
      email: `${name}@example.invalid`,
      password: userPassword,
      must_change_password: false,
    });
    // Only the user itself may create its tokens, with basic authentication.
    const basic = `Basic ${Buffer.from(`${name}:${userPassword}`).toString("base64")}`;
    const answer = await this.#request("POST", `users/${encodeURIComponent(name)}/tokens`, {
      name: "tests",
      scopes: ["all"],
    }, { Authorization: basic });
    const token = (JSON.parse(answer) as { sha1: string }).sha1;
    this.#userTokens.set(name, token);
    return token;
  }

  async createOrg(name: string): Promise<void> {
    await this.api("POST", "orgs", { username: name, visibility: "public" });
  }

  async createRepo(owner: string, name: string): Promise<void> {
    const isOrg = await this.api("GET", `orgs/${encodeURIComponent(owner)}`).then(() => true, (error) => {
      if (error instanceof GiteaApiError && error.status === 404) return false;
      throw error;
    });
    const path = isOrg
      ? `orgs/${encodeURIComponent(owner)}/repos`
      : owner === adminUser.username
      ? "user/repos"
      : `admin/users/${encodeURIComponent(owner)}/repos`;
    await this.api("POST", path, { name, auto_init: true, default_branch: "main", readme: "Default" });
  }

  async pushWorkflow(owner: string, repo: string, path: string, yaml: string): Promise<void> {
    const url = `repos/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/contents/${path}`;
    const existing = await this.api<{ sha: string }>("GET", `${url}?ref=main`).catch((error) => {
      if (error instanceof GiteaApiError && error.status === 404) return undefined;
      throw error;
    });
    const body = {
      content: Buffer.from(encoder.encode(yaml)).toString("base64"),
      message: `Update ${path}`,
      branch: "main",
      ...(existing ? { sha: existing.sha } : {}),
    };
    await this.api(existing ? "PUT" : "POST", url, body);
  }

  async registrationToken(scope: RunnerScope): Promise<string> {
    let path: string;
    let token = this.adminToken;
    switch (scope.kind) {
      case "global":
        path = "admin/actions/runners/registration-token";
        break;
      case "org":
        path = `orgs/${encodeURIComponent(scope.org)}/actions/runners/registration-token`;
        break;
      case "user":
        path = "user/actions/runners/registration-token";
        token = this.#tokenOf(scope.user);
        break;
      case "repo":
        path = `repos/${encodeURIComponent(scope.owner)}/${
          encodeURIComponent(scope.repo)
        }/actions/runners/registration-token`;
        break;
    }
    // POST returns the scope's latest active token, creating one only when there is none.
    return (await this.api<{ token: string }>("POST", path, undefined, token)).token;
  }

  async listJobs(scope: JobScope, options: ListJobsOptions = {}): Promise<GiteaJobPage> {
    let path: string;
    let token = this.adminToken;
    switch (scope.kind) {
      case "all":
        path = "admin/actions/jobs";
        break;
      case "org":
        path = `orgs/${encodeURIComponent(scope.org)}/actions/jobs`;
        break;
      case "user":
        path = "user/actions/jobs";
        token = this.#tokenOf(scope.user);
        break;
      case "repo":
        path = `repos/${encodeURIComponent(scope.owner)}/${encodeURIComponent(scope.repo)}/actions/jobs`;
        break;
    }
    const query = new URLSearchParams();
    for (const status of options.status ?? []) query.append("status", status);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.page !== undefined) query.set("page", String(options.page));
    const page = await this.api<{ jobs: GiteaJob[] | null; total_count: number }>(
      "GET",
      `${path}?${query}`,
      undefined,
      token,
    );
    return { jobs: page.jobs ?? [], totalCount: page.total_count };
  }

  async listRunners(): Promise<GiteaRunner[]> {
    const runners: GiteaRunner[] = [];
    for (let page = 1;; page++) {
      const answer = await this.api<{ runners: GiteaRunner[] | null; total_count: number }>(
        "GET",
        `admin/actions/runners?limit=50&page=${page}`,
      );
      runners.push(...answer.runners ?? []);
      if (!answer.runners?.length || runners.length >= answer.total_count) return runners;
    }
  }

  async cancelRun(owner: string, repo: string, runId: number): Promise<void> {
    const path = `${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/actions/runs/${runId}/cancel`;
    await this.#webPost(path, `cancel run ${runId}`);
  }

  async resetRegistrationToken(owner: string, repo: string): Promise<void> {
    // The web UI's "Reset registration token" (routers/web/shared/actions/runners.go in Gitea 1.26): a new token,
    // and the scope's old ones deactivated. The REST API has no such call.
    const path = `${encodeURIComponent(owner)}/${
      encodeURIComponent(repo)
    }/settings/actions/runners/reset_registration_token`;
    await this.#webPost(path, `reset the registration token of ${owner}/${repo}`);
  }

  /** A POST to the web UI as the signed-in admin. */
  async #webPost(path: string, what: string): Promise<void> {
    // Gitea 1.26 has no CSRF token: its cross-origin protection lets requests without Origin/Sec-Fetch-Site through.
    const login = await fetch(`${this.url}user/login`, {
      method: "POST",
      body: new URLSearchParams({ user_name: adminUser.username, password: adminUser.password }),
      redirect: "manual",
      signal: AbortSignal.timeout(30_000),
    });
    await login.body?.cancel();
    // The sign-in renews the session: Gitea sets i_like_gitea twice, and only the last one is signed in.
    const jar = new Map<string, string>();
    for (const cookie of login.headers.getSetCookie()) {
      const pair = cookie.split(";")[0];
      jar.set(pair.slice(0, pair.indexOf("=")), pair);
    }
    const cookies = [...jar.values()];
    if (login.status !== 303 && login.status !== 302 || !jar.has("i_like_gitea")) {
      throw new Error(`Cannot sign in to Gitea's web UI: ${login.status} ${login.headers.get("location") ?? ""}`);
    }
    const response = await fetch(`${this.url}${path}`, {
      method: "POST",
      headers: { Cookie: cookies.join("; ") },
      redirect: "manual",
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new GiteaApiError(`Cannot ${what}: ${response.status} ${text.slice(0, 300)}`, response.status);
    }
  }

  #tokenOf(user: string): string {
    const token = this.#userTokens.get(user);
    if (!token) throw new Error(`Cannot act as user "${user}": the harness did not create it`);
    return token;
  }

  stop(): Promise<void> {
    return this.forge.stop();
  }

  start(): Promise<void> {
    return this.forge.start();
  }

  dispose(): Promise<void> {
    return this.forge.dispose();
  }
}

/** A workflow that runs only when its own file (`path`) changes, so that pushing one file starts one run. */
export const ownPathWorkflow = (path: string, jobs: string): string =>
  `on:\n  push:\n    paths:\n      - "${path}"\njobs:\n${jobs}`;

/** One job of a workflow: runs on `label`, echoes its name and sleeps `seconds`. */
export const simpleJob = (name: string, label: string, seconds = 1): string =>
  `  ${name}:\n    runs-on: ${label}\n    steps:\n      - run: echo "${name} on ${label}" && sleep ${seconds}\n`;

/** Like {@linkcode simpleJob}, but its step fails (`exit 1`) after sleeping: a job whose conclusion is `failure`. */
export const failingJob = (name: string, label: string, seconds = 1): string =>
  `  ${name}:\n    runs-on: ${label}\n    steps:\n      - run: echo "${name} on ${label}" && sleep ${seconds} && exit 1\n`;

/** A non-2xx answer from Gitea's API; `status` lets callers branch on 404 and the like. */
export class GiteaApiError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "GiteaApiError";
  }
}

/** Environment of the test runner, named like the official runner image's. */
export interface TestRunnerEnv {
  GITEA_INSTANCE_URL: string;
  GITEA_RUNNER_REGISTRATION_TOKEN: string;
  GITEA_RUNNER_NAME?: string;
  GITEA_RUNNER_LABELS: string;
  GITEA_RUNNER_EPHEMERAL?: string;
  /** "true": register, then exit (a runner whose pod died right after registering). */
  TEST_RUNNER_REGISTER_ONLY?: string;
  /** A Go duration: wait that long after registering before asking for a task. */
  TEST_RUNNER_FETCH_DELAY?: string;
}

export interface TestRunnerProcess {
  /** Resolves when the runner exits; `output` is its stderr and stdout. */
  exited: Promise<{ code: number; output: string }>;
  /** Sends SIGTERM (default) or SIGINT, or kills at once with SIGKILL; no-op once exited. */
  kill(signal?: "SIGTERM" | "SIGINT" | "SIGKILL"): void;
}

/** Starts the Go test runner (`ensureTools().testRunner`) with the given environment. */
export function runTestRunner(binary: string, env: TestRunnerEnv): TestRunnerProcess {
  const runner = spawnTiedToThisProcess(binary, [], { env: { ...env } });
  const exited = runner.process.output().then((output) => {
    const decoder = new TextDecoder();
    return { code: output.code, output: decoder.decode(output.stderr) + decoder.decode(output.stdout) };
  });
  return { exited, kill: runner.kill };
}
