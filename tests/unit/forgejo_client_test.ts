/**
 * Forge detection and the Forgejo client against the Forgejo-shaped server (tests/harness/forgejo_server.ts), which
 * answers as Forgejo v11.0.0, v14.0.0 and v15.0.0 do (see its header for the source files).
 */
import assert from "node:assert/strict";
import { createForgeClient } from "../../src/forge/connect.ts";
import { ForgeError } from "../../src/forge/errors.ts";
import {
  checkSupported,
  detectForge,
  ForgeDetector,
  forgeFeatures,
  parseForgeVersion,
} from "../../src/forge/forge_client.ts";
import { ForgeHttp } from "../../src/forge/forge_http.ts";
import type { ForgejoClient } from "../../src/forge/forgejo_client.ts";
import { type FakeOwner, type ForgejoServer, startForgejoServer } from "../harness/forgejo_server.ts";

async function withForgejo(
  version: string,
  body: (server: ForgejoServer, admin: FakeOwner & { token: string }) => Promise<void>,
): Promise<void> {
  const server = startForgejoServer(version);
  try {
    await body(server, server.addUser("root", { admin: true }));
  } finally {
    await server.stop();
  }
}

async function expectForgeError(promise: Promise<unknown>, kind: string, pattern?: RegExp): Promise<ForgeError> {
  const error = await promise.then(() => undefined, (e) => e);
  assert.ok(error instanceof ForgeError, `expected a ForgeError, got ${error}`);
  assert.equal(error.kind, kind, error.message);
  if (pattern) assert.match(error.message, pattern);
  return error;
}

const client = (server: ForgejoServer, token: string): ForgejoClient =>
  createForgeClient(parseForgeVersion("forgejo", server.shape.version), {
    baseUrl: server.url,
    token,
  }) as ForgejoClient;

Deno.test("detectForge reads Forgejo's own version route first, and never reads +gitea-1.22.0 as a Gitea version", async () => {
  await withForgejo("15.0.0", async (server) => {
    const found = await detectForge(new ForgeHttp({ baseUrl: server.url, token: "x" }));
    assert.deepEqual(found, { kind: "forgejo", version: "15.0.0+gitea-1.22.0", major: 15, minor: 0, patch: 0 });
    assert.deepEqual(server.requests, ["GET /api/forgejo/v1/version"]);
  });
  // Gitea has no /api/forgejo route; a Forgejo behind a proxy that hides it still says "+gitea-" in /api/v1/version.
  for (const [version, kind] of [["1.26.0", "gitea"], ["11.0.3+gitea-1.22.0", "forgejo"]] as const) {
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
      const path = new URL(request.url).pathname;
      return path === "/api/v1/version" ? Response.json({ version }) : new Response("not found", { status: 404 });
    });
    try {
      const found = await detectForge(new ForgeHttp({ baseUrl: `http://127.0.0.1:${server.addr.port}`, token: "x" }));
      assert.equal(found.kind, kind);
      assert.equal(found.version, version);
    } finally {
      await server.shutdown();
    }
  }
});

Deno.test("versions below the minimum are refused with an error naming the minimum", () => {
  const refuse = (kind: "gitea" | "forgejo", version: string, pattern: RegExp): void => {
    assert.throws(() => checkSupported(parseForgeVersion(kind, version)), (error: unknown) => {
      assert.ok(error instanceof ForgeError);
      assert.equal(error.kind, "UnsupportedVersion");
      assert.match(error.message, pattern);
      return true;
    });
  };
  refuse(
    "forgejo",
    "10.0.3+gitea-1.22.0",
    /^Forgejo 10\.0\.3\+gitea-1\.22\.0 is not supported: .* needs Forgejo >= 11 \(runner jobs API\)$/,
  );
  refuse("gitea", "1.25.4", /^Gitea 1\.25\.4 is not supported: .* needs Gitea >= 1\.26 \(jobs and runners API\)$/);
  assert.equal(checkSupported(parseForgeVersion("forgejo", "11.0.0+gitea-1.22.0")).major, 11);
  assert.throws(() => parseForgeVersion("forgejo", "banana"), /Cannot parse the Forgejo version "banana"/);
});

Deno.test("features follow the version: labels needed before 14, runners API, registration and handles from 15", () => {
  const features = (version: string) => forgeFeatures(parseForgeVersion("forgejo", version));
  assert.equal(features("11.0.0").jobsNeedLabels, true);
  assert.equal(features("13.0.4").jobsNeedLabels, true);
  assert.equal(features("14.0.0").jobsNeedLabels, false);
  for (const version of ["11.0.0", "14.0.5"]) {
    const { runnersApi, runnerRegistration, jobHandles } = features(version);
    assert.deepEqual([runnersApi, runnerRegistration, jobHandles], [false, false, false], version);
  }
  const v15 = features("15.0.0");
  assert.deepEqual([v15.runnersApi, v15.runnerRegistration, v15.jobHandles], [true, true, true]);
  assert.equal(v15.disableRunners, false);
  assert.equal(v15.workflowJobWebhooks, false);
  assert.equal(forgeFeatures(parseForgeVersion("gitea", "1.26.0")).workflowJobWebhooks, true);
});

Deno.test("ForgeDetector asks once per forge, and again after a failure or forget", async () => {
  await withForgejo("14.0.0", async (server) => {
    const detector = new ForgeDetector();
    const http = new ForgeHttp({ baseUrl: server.url, token: "x" });
    const [a, b] = await Promise.all([detector.detect(http), detector.detect(http)]);
    assert.equal(a, b);
    assert.equal(server.requests.length, 1);
    detector.forget(`${server.url}/`);
    await detector.detect(http);
    assert.equal(server.requests.length, 2);
  });
  const detector = new ForgeDetector();
  const gone = new ForgeHttp({ baseUrl: "http://127.0.0.1:9", token: "x", timeoutMs: 500 });
  await expectForgeError(detector.detect(gone), "Unreachable");
  await expectForgeError(detector.detect(gone), "Unreachable"); // not remembered: asked again, fails again
});

Deno.test("v15 jobs: a bare array, newest first, mapped oldest first with repository names and handles", async () => {
  await withForgejo("15.0.0", async (server, admin) => {
    const acme = server.addOrg("acme", [admin]);
    const app = server.addRepo(acme, "app");
    const lib = server.addRepo(acme, "lib");
    const first = server.queueJob(app, { name: "build", runsOn: ["linux"] });
    const second = server.queueJob(lib, { name: "test", runsOn: ["linux", "gpu"] });
    server.queueJob(app, { name: "deploy", runsOn: ["linux"], needs: ["build"], runId: first.runId }); // blocked
    server.queueJob(app, { name: "anywhere", runsOn: [] }); // no runs-on: Forgejo never runs it
    const taken = server.queueJob(lib, { name: "lint", runsOn: ["linux"] });
    taken.status = "running";
    taken.taskId = 99;

    const open = await client(server, admin.token).listOpenJobs({ scope: "global" }, { labels: ["linux"] });
    assert.deepEqual(open.queued, [
      {
        id: first.id,
        runId: 0,
        name: "build",
        runsOn: ["linux"],
        owner: "acme",
        repo: "app",
        createdAt: "",
        htmlUrl: "",
        handle: first.handle,
      },
      {
        id: second.id,
        runId: 0,
        name: "test",
        runsOn: ["linux", "gpu"],
        owner: "acme",
        repo: "lib",
        createdAt: "",
        htmlUrl: "",
        handle: second.handle,
      },
    ]);
    // Forgejo names no runner, run or times; the repository is resolved as for waiting jobs (job metrics).
    assert.deepEqual(open.running, [{
      id: taken.id,
      runnerName: "",
      runId: 0,
      name: "lint",
      owner: "acme",
      repo: "lib",
      createdAt: "",
      startedAt: "",
    }]);
    // v15 lists every job without labels, at the new admin route; each repository is asked for once.
    assert.deepEqual(server.requests.sort(), [
      "GET /api/v1/admin/actions/runners/jobs",
      `GET /api/v1/repositories/${app.id}`,
      `GET /api/v1/repositories/${lib.id}`,
    ]);
    const forgejo = client(server, admin.token);
    await forgejo.listOpenJobs({ scope: "global" });
    await forgejo.listOpenJobs({ scope: "global" });
    assert.equal(server.requests.filter((request) => request.includes("/repositories/")).length, 4);
  });
});

Deno.test("an empty answer is null, and is no jobs", async () => {
  await withForgejo("15.0.0", async (server, admin) => {
    const response = await fetch(`${server.url}/api/v1/admin/actions/runners/jobs`, {
      headers: { authorization: `token ${admin.token}` },
    });
    assert.equal(await response.text(), "null");
    assert.deepEqual(await client(server, admin.token).listOpenJobs({ scope: "global" }), { queued: [], running: [] });
  });
});

Deno.test("v11 lists nothing without labels: the client sends the labels, and asks nothing when it has none", async () => {
  await withForgejo("11.0.0", async (server, admin) => {
    const app = server.addRepo(admin, "app");
    const job = server.queueJob(app, { name: "build", runsOn: ["linux"] });
    server.queueJob(app, { name: "cuda", runsOn: ["gpu"] });
    const bare = await fetch(`${server.url}/api/v1/repos/root/app/actions/runners/jobs`, {
      headers: { authorization: `token ${admin.token}` },
    });
    assert.equal(await bare.text(), "null", "v11 without labels lists nothing");

    const forgejo = client(server, admin.token);
    const endpoint = { scope: "repo" as const, owner: "root", repo: "app" };
    const open = await forgejo.listOpenJobs(endpoint, { labels: ["linux", "arm64"] });
    assert.deepEqual(open.queued.map((queued) => queued.id), [job.id]);
    assert.equal(server.requests.at(-2), "GET /api/v1/repos/root/app/actions/runners/jobs?labels=arm64%2Clinux");
    const before = server.requests.length;
    assert.deepEqual(await forgejo.listOpenJobs(endpoint, { labels: [] }), { queued: [], running: [] });
    assert.equal(server.requests.length, before, "no request without labels: it could only answer null");
  });
});

Deno.test("v14 lists every job without labels, and the old admin route serves the global scope", async () => {
  await withForgejo("14.0.0", async (server, admin) => {
    const app = server.addRepo(admin, "app");
    const jobs = [
      server.queueJob(app, { name: "a", runsOn: ["linux"] }),
      server.queueJob(app, { name: "b", runsOn: ["gpu"] }),
    ];
    const open = await client(server, admin.token).listOpenJobs({ scope: "global" }, { labels: ["linux"] });
    assert.deepEqual(open.queued.map((job) => job.id), jobs.map((job) => job.id));
    assert.equal(open.queued[0].handle, undefined, "no handles before v15");
    assert.equal(server.requests[0], "GET /api/v1/admin/runners/jobs");
  });
});

Deno.test("the registration token is read with GET (POST is 405) at each scope's route", async () => {
  await withForgejo("14.0.0", async (server, admin) => {
    const acme = server.addOrg("acme", [admin]);
    server.addRepo(acme, "app");
    const forgejo = client(server, admin.token);
    const tokens = [
      await forgejo.createRegistrationToken({ scope: "global" }),
      await forgejo.createRegistrationToken({ scope: "org", org: "acme" }),
      await forgejo.createRegistrationToken({ scope: "repo", owner: "acme", repo: "app" }),
      await forgejo.createRegistrationToken({ scope: "user" }),
    ];
    assert.equal(new Set(tokens).size, 4);
    assert.equal(await forgejo.createRegistrationToken({ scope: "global" }), tokens[0], "the same token again");
    const post = await fetch(`${server.url}/api/v1/admin/runners/registration-token`, {
      method: "POST",
      headers: { authorization: `token ${admin.token}` },
    });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  });
});

Deno.test("v15 registers an ephemeral runner with its own credentials, lists it by pages and deletes it", async () => {
  await withForgejo("15.0.0", async (server, admin) => {
    const acme = server.addOrg("acme", [admin]);
    const forgejo = client(server, admin.token);
    const endpoint = { scope: "org" as const, org: "acme" };
    const credentials = await forgejo.registerRunner(endpoint, { name: "group-17", description: "for job 17" });
    assert.match(credentials.uuid, /^[0-9a-f-]{36}$/);
    assert.ok(credentials.token.length >= 32);
    const stored = server.runners.get(credentials.id)!;
    assert.deepEqual([stored.name, stored.ownerId, stored.ephemeral], ["group-17", acme.id, true]);

    for (let i = 0; i < 60; i++) {
      server.createRunner({ name: `other-${i}`, ephemeral: false, ownerId: acme.id, repoId: 0 });
    }
    const runners = await forgejo.listRunners(endpoint);
    assert.equal(runners.length, 61);
    assert.deepEqual(runners[0], {
      id: credentials.id,
      name: "group-17",
      online: false,
      busy: false,
      disabled: false,
      ephemeral: true,
    });
    assert.deepEqual(
      server.requests.filter((request) => request.startsWith("GET /api/v1/orgs/acme/actions/runners?")),
      [
        "GET /api/v1/orgs/acme/actions/runners?page=1&limit=50",
        "GET /api/v1/orgs/acme/actions/runners?page=2&limit=50",
      ],
    );

    await forgejo.deleteRunner(endpoint, credentials.id);
    assert.equal(server.runners.has(credentials.id), false);
    await forgejo.deleteRunner(endpoint, credentials.id); // gone already: not an error
  });
});

Deno.test("before v15 the runners API is refused by the client, and absent on the server", async () => {
  await withForgejo("14.0.0", async (server, admin) => {
    const forgejo = client(server, admin.token);
    const endpoint = { scope: "global" as const };
    await expectForgeError(forgejo.listRunners(endpoint), "UnsupportedVersion", /needs Forgejo >= 15/);
    await expectForgeError(forgejo.registerRunner(endpoint, { name: "x", description: "" }), "UnsupportedVersion");
    await expectForgeError(forgejo.deleteRunner(endpoint, 1), "UnsupportedVersion");
    assert.equal(server.requests.length, 0);
    const response = await fetch(`${server.url}/api/v1/admin/actions/runners`, {
      headers: { authorization: `token ${admin.token}` },
    });
    assert.equal(response.status, 404);
    await response.body?.cancel();
  });
});

Deno.test("tokens without the scope's rights are told apart: 401, 403", async () => {
  await withForgejo("15.0.0", async (server) => {
    const alice = server.addUser("alice");
    await expectForgeError(client(server, "wrong").listOpenJobs({ scope: "global" }), "Unauthorized");
    await expectForgeError(client(server, alice.token).listOpenJobs({ scope: "global" }), "Forbidden");
    assert.equal((await client(server, alice.token).currentUser()).login, "alice");
  });
});
