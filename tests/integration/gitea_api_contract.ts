/**
 * The parts of Gitea's API that the operator's client (`src/forge/gitea_client.ts`) and webhook endpoint
 * (`src/http/webhook.ts`) rely on, asserted through that very code against a real Gitea: the jobs list of each scope,
 * registration tokens of each scope, and signed `workflow_job` deliveries. Steps of `gitea_forge_test.ts`, which runs
 * them once per Gitea version; where versions differ, the step asserts each version's behaviour and names the source.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { GiteaClient, type JobsEndpoint, type OpenJobs } from "../../src/forge/gitea_client.ts";
import { addWebhookRoutes, webhookPath } from "../../src/http/webhook.ts";
import type { GiteaHarness, GiteaJob } from "../harness/gitea.ts";
import { eventually } from "../harness/wait.ts";

const admin = "gitea-admin";
const org = "contract-org";
const user = "contract-user";
const member = "contract-member";

const oneJob = (label: string): string =>
  `on: push\njobs:\n  only:\n    runs-on: ${label}\n    steps:\n      - run: echo ${label}\n`;

const threeJobs = `on: push
jobs:
  first:
    runs-on: order-test
    steps:
      - run: echo 1
  second:
    runs-on: order-test
    steps:
      - run: echo 2
  third:
    runs-on: order-test
    steps:
      - run: echo 3
`;

/** Whether `version` ("1.27.3") is `minor` ("1.27") or later. */
function atLeast(version: string, minor: string): boolean {
  const [major, minorPart] = version.split(".").map(Number);
  const [needMajor, needMinor] = minor.split(".").map(Number);
  return major > needMajor || (major === needMajor && minorPart >= needMinor);
}

const queuedIn = (open: OpenJobs, repos: string[]): string[] =>
  open.queued.filter((job) => repos.includes(`${job.owner}/${job.repo}`)).map((job) => `${job.owner}/${job.repo}`)
    .sort();

/** Runs the API contract steps against a fresh Gitea (it only adds its own users, organization and repositories). */
export async function apiContractSteps(t: Deno.TestContext, gitea: GiteaHarness): Promise<void> {
  const adminClient = new GiteaClient({ baseUrl: gitea.url, token: gitea.adminToken });
  const userToken = await gitea.createUser(user);
  const userClient = new GiteaClient({ baseUrl: gitea.url, token: userToken });
  await gitea.createOrg(org);
  await gitea.createRepo(org, "org-app");
  await gitea.createRepo(user, "user-app");
  await gitea.createRepo(admin, "admin-app");
  // A private repository of the organization that a plain member of it cannot read.
  await gitea.api("POST", `orgs/${org}/repos`, {
    name: "private-app",
    private: true,
    auto_init: true,
    default_branch: "main",
    readme: "Default",
  });
  for (const [owner, repo] of [[org, "org-app"], [user, "user-app"], [admin, "admin-app"], [org, "private-app"]]) {
    await gitea.pushWorkflow(owner, repo, ".gitea/workflows/scope.yaml", oneJob("scope-test"));
  }
  const ours = [`${org}/org-app`, `${user}/user-app`, `${admin}/admin-app`, `${org}/private-app`];
  await eventually("a queued job in each of the four repositories", async () => {
    const open = await adminClient.listOpenJobs({ scope: "global" });
    return queuedIn(open, ours).length === 4;
  }, { timeoutMs: 30_000 });

  await t.step("each scope's jobs list holds exactly that scope's jobs, with their repository", async () => {
    const cases: [string, GiteaClient, JobsEndpoint, string[]][] = [
      ["global", adminClient, { scope: "global" }, ours],
      ["org", adminClient, { scope: "org", org }, [`${org}/org-app`, `${org}/private-app`]],
      ["user", userClient, { scope: "user" }, [`${user}/user-app`]],
      ["repo", adminClient, { scope: "repo", owner: org, repo: "org-app" }, [`${org}/org-app`]],
    ];
    for (const [name, client, endpoint, expected] of cases) {
      const open = await client.listOpenJobs(endpoint);
      assert.deepEqual(queuedIn(open, ours), [...expected].sort(), `scope ${name}`);
      for (const job of open.queued.filter((entry) => ours.includes(`${entry.owner}/${entry.repo}`))) {
        assert.deepEqual(job.runsOn, ["scope-test"], `scope ${name}: runs-on of job ${job.id}`);
        assert.equal(job.name, "only");
        assert.match(job.htmlUrl, new RegExp(`/${job.owner}/${job.repo}/actions/runs/\\d+/jobs/${job.id}$`));
      }
    }
  });

  await t.step("a registration token of each scope is the same when asked again", async () => {
    const cases: [GiteaClient, JobsEndpoint][] = [
      [adminClient, { scope: "global" }],
      [adminClient, { scope: "org", org }],
      [userClient, { scope: "user" }],
      [adminClient, { scope: "repo", owner: org, repo: "org-app" }],
    ];
    const tokens = new Set<string>();
    for (const [client, endpoint] of cases) {
      const first = await client.createRegistrationToken(endpoint);
      assert.match(first, /^[0-9a-zA-Z]{30,}$/, `a token for ${endpoint.scope}`);
      assert.equal(await client.createRegistrationToken(endpoint), first, `asking again (${endpoint.scope})`);
      tokens.add(first);
    }
    assert.equal(tokens.size, 4, "each scope has its own token");
  });

  await t.step("the jobs list has no label filter: a labels parameter changes nothing", async () => {
    // Neither 1.26 nor 1.27 reads a `labels` query parameter on .../actions/jobs (routers/api/v1/shared/action.go
    // ListJobs reads status, page, limit and, from 1.27, sort and order); the operator matches labels itself.
    const path = `repos/${org}/org-app/actions/jobs?status=queued`;
    const plain = await gitea.api<{ jobs: GiteaJob[]; total_count: number }>("GET", path);
    const filtered = await gitea.api<{ jobs: GiteaJob[]; total_count: number }>("GET", `${path}&labels=no-such-label`);
    assert.equal(plain.total_count, 1);
    assert.deepEqual(filtered.jobs.map((job) => job.id), plain.jobs.map((job) => job.id));
    assert.equal(filtered.total_count, plain.total_count);
  });

  await t.step("jobs come oldest first; 1.27 added sort=id&order=desc, which 1.26 ignores", async () => {
    await gitea.createRepo(admin, "ordered");
    await gitea.pushWorkflow(admin, "ordered", ".gitea/workflows/three.yaml", threeJobs);
    const path = `repos/${admin}/ordered/actions/jobs?status=queued`;
    const plain = await eventually("three queued jobs", async () => {
      const page = await gitea.api<{ jobs: GiteaJob[] }>("GET", path);
      return page.jobs.length === 3 ? page.jobs.map((job) => job.id) : undefined;
    }, { timeoutMs: 30_000 });
    assert.deepEqual(plain, [...plain].sort((a, b) => a - b), "oldest first by default");
    const descending = (await gitea.api<{ jobs: GiteaJob[] }>("GET", `${path}&sort=id&order=desc`)).jobs
      .map((job) => job.id);
    // 1.27: routers/api/v1/shared/action.go ListJobs resolves sort/order (utils.ResolveSortOrder) with default
    // "id ASC". 1.26 has no ORDER BY and no sort parameter.
    assert.deepEqual(descending, atLeast(gitea.version, "1.27") ? [...plain].reverse() : plain);
  });

  await t.step(
    "org jobs seen by a plain member: all repositories up to 1.26, only readable ones from 1.27",
    async () => {
      const memberToken = await gitea.createUser(member);
      const team = await gitea.api<{ id: number }>("POST", `orgs/${org}/teams`, {
        name: "no-repositories",
        permission: "read",
        includes_all_repositories: false,
        units: ["repo.code", "repo.actions"],
      });
      await gitea.api("PUT", `teams/${team.id}/members/${member}`);
      const memberClient = new GiteaClient({ baseUrl: gitea.url, token: memberToken });
      const seen = queuedIn(await memberClient.listOpenJobs({ scope: "org", org }), ours);
      // 1.27: shared/action.go ListJobs adds actionsOwnerAccessibleRepoIDsSubQuery for callers that are not site
      // admins; 1.26 lists every job of the organization to any member (route check reqOrgMembership only). The
      // operator's org groups need an owner's token (README), which sees every repository in both.
      const expected = atLeast(gitea.version, "1.27") ? [`${org}/org-app`] : [`${org}/org-app`, `${org}/private-app`];
      assert.deepEqual(seen, expected);
    },
  );

  await t.step("a workflow_job webhook reaches the operator's endpoint, signed and naming the repository", async () => {
    const secret = "contract-webhook-secret-0123456789";
    const events: { owner: string; repo: string; action: string }[] = [];
    const app = new Hono();
    addWebhookRoutes(app, { secret: () => secret, onJobEvent: (event) => events.push(event) });
    const answers: number[] = [];
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
      const response = await app.fetch(request);
      answers.push(response.status);
      return response;
    });
    try {
      await gitea.createRepo(admin, "hooked");
      await gitea.api("POST", `repos/${admin}/hooked/hooks`, {
        type: "gitea",
        active: true,
        events: ["workflow_job"],
        config: { url: `http://127.0.0.1:${server.addr.port}${webhookPath}`, content_type: "json", secret },
      });
      await gitea.pushWorkflow(admin, "hooked", ".gitea/workflows/hook.yaml", oneJob("hook-test"));
      await eventually(
        "a queued workflow_job delivery",
        () => events.some((event) => event.action === "queued"),
        { timeoutMs: 30_000, detail: () => `answers so far: ${JSON.stringify(answers)}\n${gitea.logTail(20)}` },
      );
      // Every delivery passed the signature check (401 otherwise) and was a workflow_job with a payload the endpoint
      // parses (202 "accepted" rather than 400).
      assert.ok(answers.length > 0 && answers.every((status) => status === 202), JSON.stringify(answers));
      assert.ok(events.every((event) => event.owner === admin && event.repo === "hooked"), JSON.stringify(events));
    } finally {
      await server.shutdown();
    }
  });
}
