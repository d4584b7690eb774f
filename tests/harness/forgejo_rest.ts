/**
 * The runner routes of the Forgejo-shaped server's REST API (`.../actions/runners/...`): which exist per version, who
 * may use them, and what they answer. See forgejo_server.ts for the Forgejo source files and versions they follow.
 */
import { apiError, type FakeOwner, type FakeRunner, ForgejoServer, json, m405 } from "./forgejo_server.ts";

/** Resolves the scope of a runner route (`.../actions/runners/...`), checking the caller may use it. */
export function runnerScope(
  server: ForgejoServer,
  path: string,
  user: FakeOwner,
): { rest: string; ownerId: number; repoId: number } | { error: Response } | undefined {
  const v15 = server.shape.major >= 15;
  const admin = /^\/admin\/(runners|actions\/runners)(\/.*)?$/.exec(path);
  if (admin) {
    // `/admin/actions/runners` exists from v15; `/admin/runners` keeps only registration-token and jobs.
    if (admin[1] === "actions/runners" && !v15) return undefined;
    if (admin[1] === "runners" && !/^\/(registration-token|jobs)$/.test(admin[2] ?? "")) return undefined;
    if (!user.isAdmin) return { error: apiError(403, "user should be the site admin") };
    return { rest: admin[2] ?? "", ownerId: 0, repoId: 0 };
  }
  const userScope = /^\/user\/actions\/runners(\/.*)?$/.exec(path);
  if (userScope) return { rest: userScope[1] ?? "", ownerId: user.id, repoId: 0 };
  const org = /^\/orgs\/([^/]+)\/actions\/runners(\/.*)?$/.exec(path);
  if (org) {
    const found = [...server.owners.values()].find((o) => o.kind === "org" && o.login === decodeURIComponent(org[1]));
    if (!found) return { error: apiError(404, "not found") };
    if (!user.isAdmin && !found.owners.includes(user.id)) {
      return { error: apiError(403, "Must be an organization owner") };
    }
    return { rest: org[2] ?? "", ownerId: found.id, repoId: 0 };
  }
  const repo = /^\/repos\/([^/]+)\/([^/]+)\/actions\/runners(\/.*)?$/.exec(path);
  if (repo) {
    const owner = [...server.owners.values()].find((o) => o.login === decodeURIComponent(repo[1]));
    const found = owner &&
      [...server.repos.values()].find((r) => r.ownerId === owner.id && r.name === decodeURIComponent(repo[2]));
    if (!owner || !found) return { error: apiError(404, "not found") };
    const isOwner = owner.id === user.id || owner.owners.includes(user.id);
    if (!isOwner && !user.isAdmin) return { error: apiError(403, "user should be the owner of the repo") };
    return { rest: repo[3] ?? "", ownerId: 0, repoId: found.id };
  }
  return undefined;
}

export async function runnerRoute(
  server: ForgejoServer,
  request: Request,
  url: URL,
  rest: string,
  ownerId: number,
  repoId: number,
): Promise<Response> {
  const v15 = server.shape.major >= 15;
  const method = request.method;
  const scopeKey = repoId ? `repo:${repoId}` : ownerId ? `owner:${ownerId}` : "global";
  if (rest === "/registration-token") {
    return method === "GET" ? json(200, { token: server.registrationToken(scopeKey) }) : m405();
  }
  if (rest === "/jobs") return method === "GET" ? listJobs(server, url, ownerId, repoId) : m405();
  if (!v15) return apiError(404, "not found");
  const inScope = (runner: FakeRunner): boolean =>
    repoId ? runner.repoId === repoId : ownerId ? runner.ownerId === ownerId : !runner.repoId && !runner.ownerId;
  if (rest === "") {
    if (method === "GET") {
      const all = [...server.runners.values()].filter(inScope).sort((a, b) => a.id - b.id);
      const limit = Math.min(50, Math.max(1, Number(url.searchParams.get("limit") ?? "30") || 30));
      const page = Math.max(1, Number(url.searchParams.get("page") ?? "1") || 1);
      const slice = all.slice((page - 1) * limit, page * limit).map((runner) => ({
        id: runner.id,
        uuid: runner.uuid,
        owner_id: runner.ownerId,
        repo_id: runner.repoId,
        name: runner.name,
        status: ForgejoServer.runnerStatus(runner),
        version: runner.version,
        labels: runner.labels,
        description: runner.description,
        ephemeral: runner.ephemeral,
      }));
      return json(200, slice, { "x-total-count": String(all.length) });
    }
    if (method === "POST") {
      const body = await request.json().catch(() => undefined) as
        | { name?: unknown; description?: unknown; ephemeral?: unknown }
        | undefined;
      if (typeof body?.name !== "string" || body.name === "") {
        return json(422, { message: "[Name]: Required", url: "https://forgejo.org/api/swagger" });
      }
      const runner = server.createRunner({
        name: body.name,
        description: typeof body.description === "string" ? body.description : "",
        ephemeral: body.ephemeral === true,
        ownerId,
        repoId,
      });
      return json(201, { id: runner.id, uuid: runner.uuid, token: runner.token });
    }
    return m405();
  }
  const byId = /^\/(\d+)$/.exec(rest);
  if (byId) {
    const runner = server.runners.get(Number(byId[1]));
    if (!runner || !inScope(runner)) return apiError(404, "not found");
    if (method === "DELETE") {
      server.runners.delete(runner.id);
      return new Response(null, { status: 204 });
    }
    return method === "GET" ? json(200, { id: runner.id, name: runner.name }) : m405();
  }
  return apiError(404, "not found");
}

function listJobs(server: ForgejoServer, url: URL, ownerId: number, repoId: number): Response {
  // v11: strings.Split(FormTrim("labels"), ","); v14: the same only when the parameter is present.
  const given = url.searchParams.has("labels");
  const labels = server.shape.major >= 14 && !given ? [] : (url.searchParams.get("labels") ?? "").trim().split(",");
  const jobs = [...server.jobs.values()]
    .filter((job) => job.status === "waiting" || job.status === "running")
    .filter((job) => (!repoId || job.repoId === repoId) && (!ownerId || job.ownerId === ownerId))
    .filter((job) =>
      server.shape.major >= 14
        ? labels.length === 0 || (labels[0] === "" && job.runsOn.length === 0) || ForgejoServer.itRunsOn(job, labels)
        : ForgejoServer.itRunsOn(job, labels)
    )
    .sort((a, b) => b.id - a.id)
    .map((job) => ({
      id: job.id,
      ...(server.shape.major >= 15 ? { attempt: job.attempt, handle: job.handle } : {}),
      repo_id: job.repoId,
      owner_id: job.ownerId,
      name: job.name,
      needs: job.needs.length > 0 ? job.needs : null,
      runs_on: job.runsOn.length > 0 ? job.runsOn : null,
      task_id: job.taskId,
      status: job.status,
    }));
  // A nil Go slice: Forgejo answers `null` when no job matches.
  return json(200, jobs.length > 0 ? jobs : null);
}
