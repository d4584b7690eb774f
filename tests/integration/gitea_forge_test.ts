/**
 * Pins down the Gitea behaviour the operator relies on, against each Gitea version `tests/tools/build.sh` builds (one
 * test per version) and our test runner: which job states mean "needs a runner", how job labels are reported, what a
 * runner's labels look like, that an ephemeral runner's registration disappears once its task is done, how list
 * endpoints paginate, and (`gitea_api_contract.ts`) the jobs list and registration token of every scope and signed
 * `workflow_job` webhooks. Run one version with `deno test --allow-all tests/integration/gitea_forge_test.ts --filter
 * "Gitea 1.27.3"`.
 */
import assert from "node:assert/strict";
import { GiteaApiError, type GiteaHarness, type GiteaJob, runTestRunner, startGitea } from "../harness/gitea.ts";
import { ensureTools } from "../harness/tools.ts";
import { eventually, waitLimit } from "../harness/wait.ts";
import { GiteaClient } from "../../src/forge/gitea_client.ts";
import { apiContractSteps } from "./gitea_api_contract.ts";

const owner = "gitea-admin";

/** Test output goes to stderr so it stays readable next to Deno's report. */
function note(message: string): void {
  // deno-lint-ignore no-console
  console.error(`[gitea_forge_test] ${message}`);
}

function byName(jobs: GiteaJob[]): Record<string, GiteaJob> {
  return Object.fromEntries(jobs.map((job) => [job.name, job]));
}

const matrixWorkflow = `name: forge-test
on: push
jobs:
  build:
    runs-on: linux-test
    strategy:
      matrix:
        shard: [1, 2, 3]
    steps:
      - name: Shard \${{ matrix.shard }}
        run: |
          echo "shard \${{ matrix.shard }} ran in $GITHUB_WORKSPACE"
          test "$(pwd)" = "$GITHUB_WORKSPACE"
      - run: echo "second step of \${{ matrix.shard }} ran"
  report:
    needs: build
    runs-on: linux-test
    steps:
      - run: echo all shards done
  orphan:
    runs-on: no-such-label
    steps:
      - run: echo never runs
`;

const failingWorkflow = `on: push
jobs:
  fails:
    runs-on: fail-test
    steps:
      - run: echo before the failure; exit 3
      - run: echo must not run
`;

const slowWorkflow = `on: push
jobs:
  slow:
    runs-on: slow-test
    steps:
      - run: sleep 300
`;

function pagingWorkflow(jobCount: number): string {
  const values = Array.from({ length: jobCount }, (_, index) => index + 1).join(", ");
  return `on: push
jobs:
  many:
    runs-on: paging-test
    strategy:
      matrix:
        n: [${values}]
    steps:
      - run: echo \${{ matrix.n }}
`;
}

for (const { version } of (await ensureTools()).giteaBuilds) {
  Deno.test({
    name: `Gitea ${version}: forge behaviour the operator relies on`,
    // Gitea and runner child processes and their output streams outlive single steps by design.
    sanitizeResources: false,
    sanitizeOps: false,
    fn: (t) => forgeContract(t, version),
  });
}

async function forgeContract(t: Deno.TestContext, version: string): Promise<void> {
  const tools = await ensureTools();
  const gitea: GiteaHarness = await startGitea({ version });
  const repoJobs = (repo: string, status?: string[]): ReturnType<GiteaHarness["listJobs"]> =>
    gitea.listJobs({ kind: "repo", owner, repo }, { status, limit: 50 });
  try {
    assert.equal(gitea.version, version, "the server reports the version that was built");
    await apiContractSteps(t, gitea);

    await gitea.createRepo(owner, "matrix");
    await gitea.pushWorkflow(owner, "matrix", ".gitea/workflows/forge-test.yaml", matrixWorkflow);
    const jobs = await eventually("the push to start 5 jobs", async () => {
      const page = await repoJobs("matrix");
      return page.jobs.length === 5 ? byName(page.jobs) : undefined;
    }, waitLimit);

    await t.step("a push queues each matrix job with its runs-on values as labels", () => {
      for (const shard of [1, 2, 3]) {
        const job = jobs[`build (${shard})`];
        assert.ok(job, `no job "build (${shard})" in ${JSON.stringify(Object.keys(jobs))}`);
        assert.equal(job.status, "queued");
        assert.equal(job.conclusion, undefined);
        assert.deepEqual(job.labels, ["linux-test"]);
      }
      note(`labels as reported: ${JSON.stringify(Object.values(jobs).map((job) => [job.name, job.labels]))}`);
    });

    await t.step("a job that needs unfinished jobs is waiting and not listed as queued", async () => {
      assert.equal(jobs.report.status, "waiting");
      assert.deepEqual(jobs.report.labels, ["linux-test"]);
      const queued = await repoJobs("matrix", ["queued"]);
      assert.deepEqual(queued.jobs.map((job) => job.name).sort(), ["build (1)", "build (2)", "build (3)", "orphan"]);
      assert.equal(queued.totalCount, 4);
      const blocked = await repoJobs("matrix", ["waiting"]);
      assert.deepEqual(blocked.jobs.map((job) => job.name), ["report"]);
    });

    await t.step("a job whose label no runner has is queued like any other", () => {
      assert.equal(jobs.orphan.status, "queued");
      assert.deepEqual(jobs.orphan.labels, ["no-such-label"]);
    });

    await t.step("the runner declares label names only and exits promptly on SIGTERM while idle", async () => {
      const runner = runTestRunner(tools.testRunner, {
        GITEA_INSTANCE_URL: gitea.url,
        GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken({ kind: "global" }),
        GITEA_RUNNER_NAME: "idle-runner",
        GITEA_RUNNER_LABELS: "idle-label:docker://node:20,other-idle-label:host",
        GITEA_RUNNER_EPHEMERAL: "true",
      });
      try {
        const registered = await eventually("the idle runner to register", async () => {
          const runners = await gitea.listRunners();
          return runners.find((runner) => runner.name === "idle-runner");
        }, waitLimit);
        assert.deepEqual(registered.labels.map((label) => label.name).sort(), ["idle-label", "other-idle-label"]);
        assert.equal(registered.ephemeral, true);
      } finally {
        runner.kill("SIGTERM");
      }
      const stoppedAt = Date.now();
      const { code, output } = await runner.exited;
      assert.equal(code, 143, output);
      assert.ok(Date.now() - stoppedAt < 3_000, "the runner took more than 3 s to stop");
      // Gitea only deletes an ephemeral runner when its task finishes: one that never got a task stays registered
      // (offline) until someone deletes it.
      const runners = await gitea.listRunners();
      assert.ok(runners.some((runner) => runner.name === "idle-runner"), "Gitea deleted the idle ephemeral runner");
    });

    await t.step(
      "the operator's runners API client: a disabled runner gets no task, a delete is idempotent",
      async () => {
        const client = new GiteaClient({ baseUrl: gitea.url, token: gitea.adminToken });
        const endpoint = { scope: "repo", owner, repo: "matrix" } as const;
        const queuedBefore = (await repoJobs("matrix", ["queued"])).jobs.map((job) => job.id).sort();
        const runner = runTestRunner(tools.testRunner, {
          GITEA_INSTANCE_URL: gitea.url,
          GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken({ kind: "repo", owner, repo: "matrix" }),
          GITEA_RUNNER_NAME: "disabled-runner",
          GITEA_RUNNER_LABELS: "linux-test:host",
          GITEA_RUNNER_EPHEMERAL: "true",
          TEST_RUNNER_FETCH_DELAY: "3s",
        });
        try {
          const registered = await eventually("the runner to register", async () => {
            return (await client.listRunners(endpoint)).find((entry) => entry.name === "disabled-runner");
          }, waitLimit);
          assert.deepEqual(
            { online: registered.online, busy: registered.busy, disabled: registered.disabled },
            { online: false, busy: false, disabled: false },
            "registered, not yet heard from",
          );
          assert.equal(registered.ephemeral, true);
          const disabled = await client.setRunnerDisabled(endpoint, registered.id, true);
          assert.equal(disabled.disabled, true);
          // The runner now asks for tasks (after its 3 s delay) and is online, but Gitea hands it none.
          await eventually("the disabled runner to poll", async () => {
            return (await client.listRunners(endpoint)).find((entry) => entry.name === "disabled-runner")?.online;
          }, waitLimit);
          await new Promise((resolve) => setTimeout(resolve, 3_000));
          const queuedAfter = (await repoJobs("matrix", ["queued"])).jobs.map((job) => job.id).sort();
          assert.deepEqual(queuedAfter, queuedBefore, "a disabled runner took a job");
          await client.deleteRunner(endpoint, registered.id);
          assert.ok(!(await client.listRunners(endpoint)).some((entry) => entry.name === "disabled-runner"));
          await client.deleteRunner(endpoint, registered.id); // gone already: not an error
          // Its next request is refused as "unregistered runner": it stops with an error.
          const timer = setTimeout(() => runner.kill("SIGKILL"), 30_000);
          const { code, output } = await runner.exited.finally(() => clearTimeout(timer));
          assert.equal(code, 1, output);
          assert.match(output, /unregistered runner/);
        } finally {
          runner.kill("SIGKILL");
        }
      },
    );

    let ranJob: GiteaJob | undefined;
    await t.step("the test runner runs one queued job to success, streams its log and exits 0", async () => {
      const runner = runTestRunner(tools.testRunner, {
        GITEA_INSTANCE_URL: gitea.url,
        GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken({ kind: "repo", owner, repo: "matrix" }),
        GITEA_RUNNER_NAME: "matrix-runner",
        GITEA_RUNNER_LABELS: "linux-test:host",
        GITEA_RUNNER_EPHEMERAL: "1",
      });
      const timer = setTimeout(() => runner.kill("SIGKILL"), 60_000);
      const { code, output } = await runner.exited.finally(() => clearTimeout(timer));
      assert.equal(code, 0, output);

      const page = await repoJobs("matrix");
      const done = page.jobs.filter((job) => job.status === "completed");
      assert.equal(done.length, 1, `expected one completed job, got ${JSON.stringify(page.jobs)}`);
      ranJob = done[0];
      assert.match(ranJob.name, /^build \([123]\)$/);
      assert.equal(ranJob.conclusion, "success");
      assert.equal(ranJob.runner_name, "matrix-runner");
      assert.ok(ranJob.runner_id > 0);
      const shard = /\((\d)\)/.exec(ranJob.name)![1];
      const log = await gitea.jobLogs(owner, "matrix", ranJob.id);
      assert.match(log, new RegExp(`shard ${shard} ran in /`));
      assert.match(log, new RegExp(`second step of ${shard} ran`));
      // The other shards still wait for a runner; the needs-job still waits for them.
      const states = byName(page.jobs);
      assert.equal(states.report.status, "waiting");
      assert.equal(page.jobs.filter((job) => job.status === "queued").length, 3);
    });

    await t.step("Gitea deletes an ephemeral runner's registration as soon as its task is finished", async () => {
      // models/actions/task.go UpdateTask: storing a final task status calls DeleteEphemeralRunner, inside the
      // runner's own final UpdateTask call, so a runner must upload its last logs before that (ours does); later
      // calls with its credentials fail as "unregistered runner". (services/actions/task.go PickTask also deletes a
      // used ephemeral runner that asks for another task.) The delete is a soft delete (action_runner.deleted): the
      // runner disappears from runner lists and GET by id, but finished jobs still report its id and name.
      assert.ok(ranJob);
      const runners = await gitea.listRunners();
      assert.ok(
        !runners.some((runner) => runner.name === "matrix-runner"),
        `the used ephemeral runner is still registered: ${JSON.stringify(runners)}`,
      );
      await assert.rejects(
        gitea.api("GET", `admin/actions/runners/${ranJob.runner_id}`),
        (error: unknown) => error instanceof GiteaApiError && error.status === 404,
      );
    });

    await t.step("after an outage Gitea keeps its jobs and a waiting runner registers and runs one", async () => {
      const token = await gitea.registrationToken({ kind: "repo", owner, repo: "matrix" });
      await gitea.stop();
      await assert.rejects(fetch(`${gitea.url}api/v1/version`));
      const runner = runTestRunner(tools.testRunner, {
        GITEA_INSTANCE_URL: gitea.url,
        GITEA_RUNNER_REGISTRATION_TOKEN: token,
        GITEA_RUNNER_NAME: "outage-runner",
        GITEA_RUNNER_LABELS: "linux-test",
        GITEA_RUNNER_EPHEMERAL: "true",
      });
      const timer = setTimeout(() => runner.kill("SIGKILL"), 60_000);
      try {
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        await gitea.start();
      } finally {
        const { code, output } = await runner.exited.finally(() => clearTimeout(timer));
        assert.equal(code, 0, output);
        assert.match(output, /cannot register .*retrying/);
      }
      const page = await repoJobs("matrix");
      const byRunner = page.jobs.filter((job) => job.runner_name === "outage-runner");
      assert.equal(byRunner.length, 1, JSON.stringify(page.jobs));
      assert.equal(byRunner[0].conclusion, "success");
    });

    await t.step("once the jobs it needs succeed, the waiting job becomes queued", async () => {
      const runner = runTestRunner(tools.testRunner, {
        GITEA_INSTANCE_URL: gitea.url,
        GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken({ kind: "repo", owner, repo: "matrix" }),
        GITEA_RUNNER_LABELS: "linux-test",
        GITEA_RUNNER_EPHEMERAL: "true",
      });
      const timer = setTimeout(() => runner.kill("SIGKILL"), 60_000);
      const { code, output } = await runner.exited.finally(() => clearTimeout(timer));
      assert.equal(code, 0, output);
      const finishedAt = Date.now();
      const report = await eventually("the needs-job to become queued", async () => {
        const job = byName((await repoJobs("matrix")).jobs).report;
        return job.status === "queued" ? job : undefined;
      }, { timeoutMs: 10_000 });
      note(`"report" became queued ${Date.now() - finishedAt} ms after the last needed job finished`);
      assert.deepEqual(report.labels, ["linux-test"]);
    });

    await t.step("SIGTERM during a job stops the runner at once and Gitea marks the job cancelled", async () => {
      await gitea.createRepo(owner, "slow");
      await gitea.pushWorkflow(owner, "slow", ".gitea/workflows/slow.yaml", slowWorkflow);
      const runner = runTestRunner(tools.testRunner, {
        GITEA_INSTANCE_URL: gitea.url,
        GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken({ kind: "repo", owner, repo: "slow" }),
        GITEA_RUNNER_LABELS: "slow-test",
        GITEA_RUNNER_EPHEMERAL: "true",
      });
      try {
        await eventually("the slow job to start", async () => {
          const [job] = (await repoJobs("slow", ["in_progress"])).jobs;
          return job;
        }, waitLimit);
      } finally {
        runner.kill("SIGTERM");
      }
      const stoppedAt = Date.now();
      const { code, output } = await runner.exited;
      assert.equal(code, 143, output);
      assert.ok(Date.now() - stoppedAt < 3_000, "the runner took more than 3 s to stop");
      const [job] = (await repoJobs("slow")).jobs;
      assert.equal(job.status, "completed", output);
      assert.equal(job.conclusion, "cancelled");
    });

    await t.step("a failing step fails the job, skips later steps and the runner still exits 0", async () => {
      await gitea.createRepo(owner, "failing");
      await gitea.pushWorkflow(owner, "failing", ".gitea/workflows/fail.yaml", failingWorkflow);
      const [queued] = await eventually("the failing job to be queued", async () => {
        const page = await repoJobs("failing", ["queued"]);
        return page.jobs.length === 1 ? page.jobs : undefined;
      }, waitLimit);
      const runner = runTestRunner(tools.testRunner, {
        GITEA_INSTANCE_URL: gitea.url,
        GITEA_RUNNER_REGISTRATION_TOKEN: await gitea.registrationToken({ kind: "repo", owner, repo: "failing" }),
        GITEA_RUNNER_LABELS: "fail-test",
        GITEA_RUNNER_EPHEMERAL: "true",
      });
      const timer = setTimeout(() => runner.kill("SIGKILL"), 60_000);
      const { code, output } = await runner.exited.finally(() => clearTimeout(timer));
      assert.equal(code, 0, output);
      const [job] = (await repoJobs("failing")).jobs;
      assert.equal(job.id, queued.id);
      assert.equal(job.status, "completed");
      assert.equal(job.conclusion, "failure");
      const log = await gitea.jobLogs(owner, "failing", job.id);
      assert.match(log, /before the failure/);
      assert.doesNotMatch(log, /must not run/);
    });

    await t.step("job lists return at most 50 items per page (MAX_RESPONSE_ITEMS), 30 by default", async () => {
      await gitea.createRepo(owner, "paging");
      await gitea.pushWorkflow(owner, "paging", ".gitea/workflows/many.yaml", pagingWorkflow(60));
      const scope = { kind: "repo", owner, repo: "paging" } as const;
      await eventually("60 queued jobs", async () => {
        const page = await gitea.listJobs(scope, { status: ["queued"], limit: 1 });
        return page.totalCount === 60 ? true : undefined;
      }, waitLimit);
      const capped = await gitea.listJobs(scope, { status: ["queued"], limit: 100 });
      assert.equal(capped.jobs.length, 50);
      assert.equal(capped.totalCount, 60);
      const byDefault = await gitea.listJobs(scope, { status: ["queued"] });
      assert.equal(byDefault.jobs.length, 30);
      const second = await gitea.listJobs(scope, { status: ["queued"], limit: 50, page: 2 });
      assert.equal(second.jobs.length, 10);
      const ids = new Set([...capped.jobs, ...second.jobs].map((job) => job.id));
      assert.equal(ids.size, 60, "pages 1 and 2 overlap");
    });
  } catch (error) {
    note(`Gitea log tail:\n${gitea.logTail(40)}`);
    throw error;
  } finally {
    await gitea.dispose();
  }
}
