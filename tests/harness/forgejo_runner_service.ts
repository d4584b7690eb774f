/**
 * The runner protocol of the Forgejo-shaped server: `runner.v1.RunnerService` over Connect, JSON codec only (a real
 * Forgejo also speaks the binary codec; the test runner uses JSON against this server). Written from Forgejo's
 * routers/api/actions/runner/{runner,interceptor}.go and models/actions/task.go at v11.0.0, v14.0.0 and v15.0.0:
 *
 * - Register takes a registration token of a scope and creates a runner there; every other call authenticates with
 *   the `x-runner-uuid` and `x-runner-token` headers ("unregistered runner", unauthenticated, otherwise), marks the
 *   runner online, and UpdateTask/UpdateLog mark it active.
 * - FetchTask hands out the least recently updated `waiting` job of the runner's scope whose runs-on labels are all
 *   among the runner's (ItRunsOn), when the request's tasks version is not the latest.
 * - v15: FetchSingleTask does the same, limited to the job whose `handle` the runner asks for; an ephemeral runner
 *   gets no second task, and is deleted once UpdateTask reports its task's final result.
 */
import { type FakeJob, type FakeRunner, ForgejoServer } from "./forgejo_server.ts";

const results = ["RESULT_UNSPECIFIED", "RESULT_SUCCESS", "RESULT_FAILURE", "RESULT_CANCELLED", "RESULT_SKIPPED"];

type Message = Record<string, unknown>;

const ok = (body: Message): Response =>
  new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });

/** A Connect error: the code's HTTP status and `{code, message}`. */
function connectError(code: "invalid_argument" | "unauthenticated" | "internal", message: string): Response {
  const status = { invalid_argument: 400, unauthenticated: 401, internal: 500 }[code];
  return new Response(JSON.stringify({ code, message }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Reads an int64 as protojson writes it (a string) or as a number. */
const int = (value: unknown): number => (typeof value === "string" || typeof value === "number" ? Number(value) : 0);

function resultOf(value: unknown): number {
  if (typeof value === "number") return value;
  const index = results.indexOf(String(value ?? ""));
  return index < 0 ? 0 : index;
}

function runnerMessage(runner: FakeRunner): Message {
  return {
    id: String(runner.id),
    uuid: runner.uuid,
    token: runner.token,
    name: runner.name,
    version: runner.version,
    labels: runner.labels,
    ephemeral: runner.ephemeral,
  };
}

export async function handleRunnerService(server: ForgejoServer, request: Request, url: URL): Promise<Response> {
  const method = /^\/api\/actions\/runner\.v1\.RunnerService\/([A-Za-z]+)$/.exec(url.pathname)?.[1];
  const known = ["Register", "Declare", "FetchTask", "UpdateTask", "UpdateLog"];
  if (server.shape.major >= 15) known.push("FetchSingleTask");
  // An unknown procedure is a 404, which a Connect client reports as unimplemented.
  if (request.method !== "POST" || !method || !known.includes(method)) return new Response(null, { status: 404 });
  if (!(request.headers.get("content-type") ?? "").startsWith("application/json")) {
    return new Response(null, { status: 415 });
  }
  const body = await request.json().catch(() => undefined) as Message | undefined;
  if (!body) return connectError("invalid_argument", "cannot parse the request body");
  if (method === "Register") return register(server, body);

  const runner = [...server.runners.values()].find((r) => r.uuid === request.headers.get("x-runner-uuid"));
  if (!runner || runner.token !== request.headers.get("x-runner-token")) {
    return connectError("unauthenticated", "unregistered runner");
  }
  runner.lastOnline = Date.now();
  if (method === "UpdateTask" || method === "UpdateLog") runner.lastActive = Date.now();
  switch (method) {
    case "Declare":
      runner.labels = (body.labels as string[] | undefined) ?? [];
      runner.version = String(body.version ?? "");
      return ok({ runner: runnerMessage(runner) });
    case "FetchTask":
      return fetchTask(server, runner, body, undefined);
    case "FetchSingleTask":
      return fetchTask(server, runner, body, typeof body.handle === "string" && body.handle !== "" ? body.handle : "");
    case "UpdateTask":
      return updateTask(server, runner, body);
    default:
      return updateLog(server, runner, body);
  }
}

function register(server: ForgejoServer, body: Message): Response {
  if (!body.token || !body.name) return connectError("invalid_argument", "missing runner token, name");
  const scope = [...server.registrationTokens.entries()].find(([, token]) => token === body.token)?.[0];
  if (!scope) return connectError("invalid_argument", "runner registration token not found");
  const [kind, id] = scope.split(":");
  const runner = server.createRunner({
    name: String(body.name).slice(0, 255),
    ephemeral: body.ephemeral === true,
    ownerId: kind === "owner" ? Number(id) : 0,
    repoId: kind === "repo" ? Number(id) : 0,
    labels: (body.labels as string[] | undefined) ?? [],
  });
  runner.version = String(body.version ?? "");
  return ok({ runner: runnerMessage(runner) });
}

/** Whether a job is in the runner's scope (GetAvailableJobsForRunner). */
function inScope(server: ForgejoServer, runner: FakeRunner, job: FakeJob): boolean {
  if (runner.repoId) return job.repoId === runner.repoId;
  if (runner.ownerId) return server.repos.get(job.repoId)?.ownerId === runner.ownerId;
  return true;
}

/** FetchTask, or FetchSingleTask when `handle` is a string ("" asks for no particular job). */
function fetchTask(server: ForgejoServer, runner: FakeRunner, body: Message, handle: string | undefined): Response {
  const latest = server.tasksVersion;
  if (int(body.tasksVersion ?? body.tasks_version) === latest) return ok({ tasksVersion: String(latest) });
  const hasTask = [...server.tasks.values()].some((task) => task.runnerId === runner.id);
  if (runner.ephemeral && hasTask) return ok({ tasksVersion: String(latest) });
  const job = [...server.jobs.values()]
    .filter((job) => job.status === "waiting" && job.taskId === 0 && inScope(server, runner, job))
    .sort((a, b) => a.updated - b.updated || a.id - b.id)
    .find((job) => (!handle || job.handle === handle) && ForgejoServer.itRunsOn(job, runner.labels));
  if (!job) return ok({ tasksVersion: String(latest) });
  const task = { id: server.nextId(), jobId: job.id, runnerId: runner.id, logRows: 0, done: false };
  server.tasks.set(task.id, task);
  job.status = "running";
  job.taskId = task.id;
  job.updated = server.tick();
  const repo = server.repos.get(job.repoId)!;
  const owner = server.owners.get(repo.ownerId)!;
  return ok({
    task: {
      id: String(task.id),
      workflowPayload: btoa(job.workflow),
      context: {
        repository: `${owner.login}/${repo.name}`,
        repository_owner: owner.login,
        run_id: String(job.runId),
        run_attempt: String(job.attempt),
        server_url: "http://forgejo.invalid",
      },
      secrets: {},
      vars: {},
    },
    tasksVersion: String(latest),
  });
}

function updateTask(server: ForgejoServer, runner: FakeRunner, body: Message): Response {
  const state = (body.state ?? {}) as Message;
  const task = server.tasks.get(int(state.id));
  if (!task || task.runnerId !== runner.id) return connectError("internal", "update task: task not found");
  const job = server.jobs.get(task.jobId)!;
  const result = resultOf(state.result);
  if (result !== 0 && !task.done) {
    task.done = true;
    if (job.status === "running") {
      server.finishJob(job, result === 1 || result === 4 ? "success" : result === 3 ? "cancelled" : "failure");
    }
    // v15: an ephemeral runner is deleted once its task is final.
    if (runner.ephemeral) server.runners.delete(runner.id);
  }
  const jobResult = { success: 1, failure: 2, cancelled: 3 }[job.status as string] ?? 0;
  return ok({ state: { id: String(task.id), result: results[jobResult] }, sentOutputs: [] });
}

function updateLog(server: ForgejoServer, runner: FakeRunner, body: Message): Response {
  const task = server.tasks.get(int(body.taskId ?? body.task_id));
  if (!task || task.runnerId !== runner.id) return connectError("internal", "invalid runner for task");
  const index = int(body.index);
  const rows = (body.rows as unknown[] | undefined) ?? [];
  if (rows.length > 0 && index <= task.logRows && index + rows.length > task.logRows) {
    task.logRows = index + rows.length;
  }
  return ok({ ackIndex: String(task.logRows) });
}
