/** The Gitea client against a local HTTP server that answers like Gitea (or fails like it). */
import assert from "node:assert/strict";
import { ForgeError, parseRetryAfter } from "../../src/forge/errors.ts";
import { checkGiteaVersion, GiteaClient, jobsPath, pageSize } from "../../src/forge/gitea_client.ts";

type Handler = (request: Request) => Response | Promise<Response>;

async function withServer(handler: Handler, body: (url: string, requests: URL[]) => Promise<void>): Promise<void> {
  const requests: URL[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    requests.push(new URL(request.url));
    return handler(request);
  });
  try {
    await body(`http://127.0.0.1:${server.addr.port}`, requests);
  } finally {
    await server.shutdown();
  }
}

const apiJob = (id: number, status = "queued", labels: string[] | null = ["linux"]) => ({
  id,
  run_id: 1000 + id,
  name: `job ${id}`,
  labels,
  status,
  url: `http://gitea.local/api/v1/repos/acme/app/actions/jobs/${id}`,
  html_url: `http://gitea.local/acme/app/actions/runs/1/jobs/${id}`,
  created_at: "2026-01-01T00:00:00Z",
});

async function expectForgeError(promise: Promise<unknown>, kind: string, pattern?: RegExp): Promise<ForgeError> {
  const error = await promise.then(() => undefined, (e) => e);
  assert.ok(error instanceof ForgeError, `expected a ForgeError, got ${error}`);
  assert.equal(error.kind, kind, error.message);
  if (pattern) assert.match(error.message, pattern);
  return error;
}

Deno.test("jobsPath uses the jobs endpoint of each scope", () => {
  assert.equal(jobsPath({ scope: "global" }), "/admin/actions/jobs");
  assert.equal(jobsPath({ scope: "org", org: "acme" }), "/orgs/acme/actions/jobs");
  assert.equal(jobsPath({ scope: "user" }), "/user/actions/jobs");
  assert.equal(jobsPath({ scope: "repo", owner: "acme", repo: "my app" }), "/repos/acme/my%20app/actions/jobs");
});

Deno.test("listOpenJobs reads every page of 50, asks for queued and in-progress jobs and sends the token", async () => {
  const all = Array.from({ length: 120 }, (_, index) => apiJob(index + 1));
  await withServer((request) => {
    const url = new URL(request.url);
    assert.equal(request.headers.get("authorization"), "token api-token-123456");
    const page = Number(url.searchParams.get("page"));
    const limit = Number(url.searchParams.get("limit"));
    return Response.json({ jobs: all.slice((page - 1) * limit, page * limit), total_count: all.length });
  }, async (url, requests) => {
    const client = new GiteaClient({ baseUrl: `${url}/`, token: "api-token-123456" });
    const { queued: jobs } = await client.listOpenJobs({ scope: "repo", owner: "acme", repo: "app" });
    assert.equal(jobs.length, 120);
    assert.deepEqual(jobs.slice(0, 2).map((job) => job.id), [1, 2]);
    assert.deepEqual(jobs[0], {
      id: 1,
      runId: 1001,
      name: "job 1",
      runsOn: ["linux"],
      owner: "acme",
      repo: "app",
      createdAt: "2026-01-01T00:00:00Z",
      htmlUrl: "http://gitea.local/acme/app/actions/runs/1/jobs/1",
    });
    assert.equal(requests.length, 3);
    assert.ok(requests.every((r) => r.pathname === "/api/v1/repos/acme/app/actions/jobs"));
    assert.ok(requests.every((r) => r.searchParams.getAll("status").join() === "queued,in_progress"));
    assert.ok(requests.every((r) => r.searchParams.get("limit") === String(pageSize)));
    assert.deepEqual(requests.map((r) => r.searchParams.get("page")), ["1", "2", "3"]);
  });
});

Deno.test("one request when at most 50 jobs are open; blocked jobs, null labels and busy runners are handled", async () => {
  await withServer(
    () =>
      Response.json({
        jobs: [
          apiJob(3, "waiting"),
          apiJob(2, "queued", null),
          apiJob(1),
          { ...apiJob(9, "in_progress"), runner_name: "ci-7", started_at: "2026-01-01T00:00:04Z" },
          // Gitea 1.26 shows a time it has not got as the Unix epoch.
          { ...apiJob(10, "in_progress"), runner_name: "ci-8", started_at: "1970-01-01T00:00:00Z" },
        ],
        total_count: 5,
      }),
    async (url, requests) => {
      const observed: string[] = [];
      const client = new GiteaClient({
        baseUrl: url,
        token: "t",
        observe: (endpoint, code, seconds) => observed.push(`${endpoint} ${code} ${seconds >= 0}`),
      });
      const open = await client.listOpenJobs({ scope: "global" });
      assert.deepEqual(observed, ["/admin/actions/jobs 2xx true"], "each request is reported with its template");
      assert.deepEqual(open.queued.map((job) => [job.id, job.runsOn]), [[1, ["linux"]], [2, []]]);
      const running = { runId: 1009, name: "job 9", owner: "acme", repo: "app", createdAt: "2026-01-01T00:00:00Z" };
      assert.deepEqual(open.running, [
        { id: 9, runnerName: "ci-7", ...running, startedAt: "2026-01-01T00:00:04Z" },
        { id: 10, runnerName: "ci-8", ...running, runId: 1010, name: "job 10", startedAt: "" },
      ]);
      assert.equal(requests.length, 1);
    },
  );
});

Deno.test("getJob and listCompletedRunJobs read outcomes and times; getRunWorkflow names the workflow file", async () => {
  await withServer((request) => {
    const url = new URL(request.url);
    if (url.pathname === "/api/v1/repos/acme/my%20app/actions/jobs/41") {
      return Response.json({
        ...apiJob(41, "completed"),
        url: "http://gitea.local/api/v1/repos/acme/my%20app/actions/jobs/41",
        conclusion: "failure",
        runner_name: "ci-41",
        started_at: "2026-01-01T00:00:05Z",
        completed_at: "2026-01-01T00:01:05Z",
      });
    }
    if (url.pathname === "/api/v1/repos/acme/my%20app/actions/runs/1041/jobs") {
      assert.equal(url.searchParams.get("status"), "completed");
      assert.equal(url.searchParams.get("limit"), "50");
      return Response.json({ jobs: [{ ...apiJob(41, "completed"), conclusion: "success" }], total_count: 1 });
    }
    if (url.pathname === "/api/v1/repos/acme/my%20app/actions/runs/1041") {
      return Response.json({ id: 1041, path: "build.yaml@refs/heads/main", status: "completed" });
    }
    return Response.json({ message: "not found" }, { status: 404 });
  }, async (url) => {
    const observed: string[] = [];
    const client = new GiteaClient({ baseUrl: url, token: "t", observe: (endpoint) => observed.push(endpoint) });
    assert.deepEqual(await client.getJob("acme", "my app", 41), {
      id: 41,
      runId: 1041,
      name: "job 41",
      owner: "acme",
      repo: "my app",
      runnerName: "ci-41",
      createdAt: "2026-01-01T00:00:00Z",
      startedAt: "2026-01-01T00:00:05Z",
      status: "completed",
      conclusion: "failure",
      completedAt: "2026-01-01T00:01:05Z",
    });
    assert.equal(await client.getRunWorkflow("acme", "my app", 1041), "build.yaml");
    const [listed] = await client.listCompletedRunJobs("acme", "my app", 1041);
    assert.deepEqual([listed.id, listed.status, listed.conclusion, listed.owner, listed.repo], [
      41,
      "completed",
      "success",
      "acme",
      "app",
    ]);
    await expectForgeError(client.getJob("acme", "my app", 42), "NotFound");
    assert.deepEqual(observed, [
      "/repos/{owner}/{repo}/actions/jobs/{id}",
      "/repos/{owner}/{repo}/actions/runs/{run}",
      "/repos/{owner}/{repo}/actions/runs/{run}/jobs",
      "/repos/{owner}/{repo}/actions/jobs/{id}",
    ], "requests are counted by endpoint template, never by job id");
  });
});

Deno.test("version detection accepts Gitea >= 1.26 and rejects older servers", async () => {
  assert.deepEqual(checkGiteaVersion("1.26.0+dev-12-gabc"), { major: 1, minor: 26, patch: 0 });
  assert.deepEqual(checkGiteaVersion("1.27.3"), { major: 1, minor: 27, patch: 3 });
  assert.deepEqual(checkGiteaVersion("2.0.0"), { major: 2, minor: 0, patch: 0 });
  // 1.25 lists jobs but cannot disable a runner (no PATCH .../runners/{id}), which idle-runner removal needs.
  for (const old of ["1.25.4", "1.24.6"]) {
    assert.throws(
      () => checkGiteaVersion(old),
      (e: unknown) =>
        e instanceof ForgeError && e.kind === "UnsupportedVersion" && /needs Gitea >= 1\.26/.test(e.message),
      old,
    );
  }
  assert.throws(
    () => checkGiteaVersion("banana"),
    (e: unknown) => e instanceof ForgeError && e.kind === "InvalidResponse",
  );
  await withServer(() => Response.json({ version: "1.26.3" }), async (url) => {
    assert.equal(await new GiteaClient({ baseUrl: url, token: "t" }).version(), "1.26.3");
  });
  await withServer(() => Response.json({ version: "1.25.3" }), async (url) => {
    await expectForgeError(new GiteaClient({ baseUrl: url, token: "t" }).version(), "UnsupportedVersion", /1\.25\.3/);
  });
  await withServer(() => Response.json({ version: "1.22.0" }), async (url) => {
    await expectForgeError(new GiteaClient({ baseUrl: url, token: "t" }).version(), "UnsupportedVersion", /1\.22\.0/);
  });
});

Deno.test("errors are classified once: credentials, not found, transient, invalid", async () => {
  const cases: [Handler, string, RegExp][] = [
    [() => new Response('{"message":"token is required"}', { status: 401 }), "Unauthorized", /401/],
    [() => new Response("{}", { status: 403 }), "Forbidden", /403/],
    [() => new Response("{}", { status: 404 }), "NotFound", /404/],
    [() => new Response("slow down", { status: 429, headers: { "retry-after": "7" } }), "RateLimited", /429/],
    [() => new Response("boom", { status: 502 }), "ServerError", /502/],
    [() => new Response("<html>login</html>", { status: 200 }), "InvalidResponse", /not JSON: "<html>login<\/html>"/],
    [() => Response.json({ jobs: "nope", total_count: 1 }), "InvalidResponse", /jobs/],
  ];
  for (const [handler, kind, pattern] of cases) {
    await withServer(handler, async (url) => {
      const error = await expectForgeError(
        new GiteaClient({ baseUrl: url, token: "t" }).listOpenJobs({ scope: "global" }),
        kind,
        pattern,
      );
      if (kind === "RateLimited") assert.equal(error.retryAfterMs, 7000);
      assert.equal(error.transient, ["RateLimited", "ServerError"].includes(kind));
    });
  }
});

Deno.test("an unreachable server and a timeout are transient Unreachable errors", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const down = await expectForgeError(
    new GiteaClient({ baseUrl: `http://127.0.0.1:${port}`, token: "t" }).version(),
    "Unreachable",
  );
  assert.equal(down.transient, true);
  await withServer(async () => {
    await new Promise((resolve) => setTimeout(resolve, 500));
    return Response.json({ version: "1.26.0" });
  }, async (url) => {
    await expectForgeError(
      new GiteaClient({ baseUrl: url, token: "t", timeoutMs: 100 }).version(),
      "Unreachable",
      /no answer within 100 ms/,
    );
  });
});

Deno.test("Retry-After is read as seconds or as a date", () => {
  assert.equal(parseRetryAfter("120"), 120_000);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("Thu, 01 Jan 1970 00:00:10 GMT", 4000), 6000);
  assert.equal(parseRetryAfter("soon"), undefined);
});
