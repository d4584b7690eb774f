/**
 * Forgejo end to end: a real control plane, the stand-in kubelet running the test runner for each runner pod, the
 * operator started from `main.ts`, and two Forgejo-shaped servers (tests/harness/forgejo_server.ts, written from
 * Forgejo's handlers): Forgejo 15 (runners registered one by one over the API, bound to their job by its handle) and
 * Forgejo 11 (the shared registration token; the jobs list needs the runner labels). The operator code paths are the
 * Gitea e2e's: poller, planner, runner Job builder, apply, cleanup.
 *
 * Watched for the whole test: never two runner Jobs for one forge job, never one for a job that was running (taken by
 * another runner) or blocked when the group saw it, never a token as a literal in a runner Job.
 */
import assert from "node:assert/strict";
import { BatchV1Api, CoreV1Api, CustomObjectsApi, type V1Job } from "@kubernetes/client-node";
import { startCluster } from "../harness/cluster.ts";
import { createRunnerGroup, getRunnerGroup, installCrd, isFinished } from "../harness/environment.ts";
import { type FakeJob, startForgejoServer } from "../harness/forgejo_server.ts";
import { startDelayAnnotation, startRunnerKubelet } from "../harness/kubelet.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { ensureTools } from "../harness/tools.ts";
import { eventually } from "../harness/wait.ts";

const jobIdLabel = "gitea.bpg.pw/job-id";
const groupLabel = "gitea.bpg.pw/runnergroup-name";

Deno.test({
  name: "end to end on Forgejo 15 and 11: one runner Job per waiting job, none for running ones, registrations cleaned",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const echo = Deno.env.get("GRO_TEST_ECHO") === "1";
    const tools = await ensureTools();
    const dir = await Deno.makeTempDir({ prefix: "gro-forgejo-e2e-" });
    const cluster = await startCluster({ echoOutput: echo });
    const kubelet = await startRunnerKubelet({
      kubeConfig: cluster.kubeConfig,
      runnerBinary: tools.testRunner,
      nodeName: cluster.nodeName,
      echoOutput: echo,
      dir: `${dir}/runners`,
    });
    const v15 = startForgejoServer("15.0.0");
    const v11 = startForgejoServer("11.0.0");
    let operator: OperatorProcess | undefined;
    const monitor = { stop: false, violations: [] as string[], jobs: new Map<string, V1Job>() };
    let monitorDone: Promise<void> = Promise.resolve();
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
    const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    const logTail = async (): Promise<string> => `--- operator log ---\n${await operator?.logTail(40)}`;
    try {
      await installCrd(cluster);
      // Forgejo 15: an organization, a repository, the admin's API token; nothing else (no registration token).
      const admin15 = v15.addUser("root", { admin: true });
      const app15 = v15.addRepo(v15.addOrg("acme", [admin15]), "app");
      // Forgejo 11: a user's repository; the registration token is fetched by the operator (GET).
      const alice11 = v11.addUser("alice");
      const site11 = v11.addRepo(alice11, "site");

      // Jobs the groups must leave alone: one taken by a runner outside the cluster, one blocked on another.
      const taken = v15.queueJob(app15, { name: "taken", runsOn: ["fj-linux"] });
      taken.status = "running";
      taken.taskId = 1;
      const build = v15.queueJob(app15, { name: "build", runsOn: ["fj-linux"], steps: ["echo build"] });
      const deploy = v15.queueJob(app15, {
        name: "deploy",
        runsOn: ["fj-linux"],
        needs: ["build"],
        runId: build.runId,
      });
      // Far longer than --idle-runner-grace: a busy runner must not be taken for an idle one. Long enough, too, for
      // build and deploy to run and their runners to exit while it runs (see the first step).
      const test = v15.queueJob(app15, { name: "test", runsOn: ["fj-linux"], steps: ["sleep 40"] });
      const old = v11.queueJob(site11, { name: "site", runsOn: ["fj-old"] });
      const unmatched = v11.queueJob(site11, { name: "windows", runsOn: ["windows"] });

      for (const namespace of ["fj15", "fj11"]) {
        await core.createNamespace({ body: { metadata: { name: namespace } } });
      }
      await core.createNamespacedSecret({
        namespace: "fj15",
        body: { metadata: { name: "forgejo" }, stringData: { api: admin15.token } },
      });
      await core.createNamespacedSecret({
        namespace: "fj11",
        body: { metadata: { name: "forgejo" }, stringData: { api: alice11.token } },
      });
      // The monitor records every runner Job it ever sees, and checks the invariants on each.
      const seenRunning = new Set<number>([taken.id]);
      const blockedAtStart = new Set<number>([deploy.id]);
      monitorDone = (async () => {
        while (!monitor.stop) {
          try {
            for (const namespace of ["fj15", "fj11"]) {
              for (const job of (await batch.listNamespacedJob({ namespace })).items) {
                const key = `${namespace}/${job.metadata!.name}`;
                if (!monitor.jobs.has(key)) {
                  const id = Number(job.metadata?.labels?.[jobIdLabel]);
                  const twin = [...monitor.jobs.values()].find((other) =>
                    other.metadata?.namespace === namespace && other.metadata?.labels?.[jobIdLabel] === String(id) &&
                    !isFinished(other)
                  );
                  if (twin) {
                    monitor.violations.push(`two runner Jobs for forge job ${id}: ${key}, ${twin.metadata?.name}`);
                  }
                  if (namespace === "fj15" && seenRunning.has(id)) {
                    monitor.violations.push(`a runner for running ${id}`);
                  }
                  if (namespace === "fj15" && blockedAtStart.has(id) && deploy.status === "blocked") {
                    monitor.violations.push(`a runner for blocked job ${id}`);
                  }
                  for (const token of [admin15.token, alice11.token, ...v11.registrationTokens.values()]) {
                    if (JSON.stringify(job).includes(token)) monitor.violations.push(`a token literal in ${key}`);
                  }
                  for (const runner of v15.runners.values()) {
                    if (JSON.stringify(job).includes(runner.token)) monitor.violations.push(`a runner token in ${key}`);
                  }
                }
                monitor.jobs.set(key, job);
              }
            }
          } catch {
            // The API server is always up in this test; a failed list is retried.
          }
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })();

      operator = await startOperator({
        kubeconfigPath: cluster.kubeconfigPath,
        dir,
        args: [
          "--poll-interval",
          "1s",
          "--resync-interval",
          "10s",
          "--namespaces",
          "fj15,fj11",
          "--idle-runner-grace",
          "3s",
        ],
      });
      const group = (namespace: string, name: string, spec: Record<string, unknown>): Promise<unknown> =>
        createRunnerGroup(custom, namespace, name, {
          defaultLabels: false,
          maxActiveRunners: 4,
          authToken: { name: "forgejo", key: "api" },
          ttlSecondsAfterFinished: 3600,
          ...spec,
        });
      const runnerJobs = async (namespace: string, name: string): Promise<V1Job[]> =>
        (await batch.listNamespacedJob({ namespace, labelSelector: `${groupLabel}=${name}` })).items;
      const jobIdsOf = (jobs: V1Job[]): number[] =>
        jobs.map((job) => Number(job.metadata!.labels![jobIdLabel])).sort((a, b) => a - b);
      const done = (job: FakeJob): boolean => job.status === "success";

      await t.step(
        "Forgejo 15: each waiting job gets one runner of its own, bound to it; jobs run to success",
        async () => {
          await group("fj15", "app", { scope: "org", org: "acme", giteaURL: v15.url, labels: ["fj-linux:host"] });
          // Forgejo does not name a running job's runner: the runner Job whose own job runs is the busy one. Checked
          // once build and deploy have run and their runners have exited, so that test's runner is the only active
          // one: a runner between the end of its job and its pod's exit is rightly counted idle for that moment.
          const idleRunners = async (): Promise<number | undefined> =>
            ((await getRunnerGroup(custom, "fj15", "app")) as { status?: { idleRunners?: number } }).status
              ?.idleRunners;
          const testRunnerActive = async (): Promise<boolean> =>
            (await runnerJobs("fj15", "app")).some((job) =>
              job.metadata!.labels![jobIdLabel] === String(test.id) && !isFinished(job)
            );
          await eventually("test running while build and deploy ran and their runner Jobs ended", async () => {
            if (test.status !== "running" || !done(build) || !done(deploy)) return false;
            const ended = (await runnerJobs("fj15", "app")).filter((job) =>
              [build.id, deploy.id].includes(Number(job.metadata!.labels![jobIdLabel])) && isFinished(job)
            );
            return ended.length === 2;
          }, { timeoutMs: 60_000, detail: logTail });
          await eventually("no idle runner in the status", async () => (await idleRunners()) === 0, {
            timeoutMs: 10_000,
            detail: async () => `idleRunners ${await idleRunners()}\n${await logTail()}`,
          });
          // For longer than the 3 s idle grace: the runner running test stays busy, not idle, and is not removed.
          for (const until = Date.now() + 4_000; Date.now() < until;) {
            assert.equal(await idleRunners(), 0, "the runner running test is busy, not idle");
            assert.ok(await testRunnerActive(), "the runner Job of test is still active");
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
          assert.equal(test.status, "running", "the runner of a long job is not removed after the 3 s idle grace");
          await eventually("build and test to run to success", () => done(build) && done(test), {
            timeoutMs: 90_000,
            detail: logTail,
          });
          // deploy was blocked on build; once build succeeded it is waiting, gets its runner, and runs.
          await eventually("deploy to run once build succeeded", () => done(deploy), {
            timeoutMs: 60_000,
            detail: logTail,
          });
          const jobs = await runnerJobs("fj15", "app");
          assert.deepEqual(jobIdsOf(jobs), [build.id, deploy.id, test.id], "exactly one runner Job per waiting job");
          assert.equal(taken.status, "running", "the job another runner took is left alone");
          for (const job of jobs) {
            const container = job.spec!.template.spec!.containers[0];
            assert.equal(container.args?.[0], "one-job");
            assert.ok(container.env!.every((e) => e.name !== "FORGEJO_RUNNER_REGISTRATION_TOKEN"));
            const handle = container.env!.find((e) => e.name === "FORGEJO_RUNNER_HANDLE")?.value;
            const forgeJob = v15.jobs.get(Number(job.metadata!.labels![jobIdLabel]))!;
            assert.equal(handle, forgeJob.handle, "bound to its own job");
            // The credentials Secret belongs to the Job, so it goes with it.
            const secret = await core.readNamespacedSecret({ namespace: "fj15", name: `${job.metadata!.name}-runner` });
            assert.deepEqual(secret.metadata!.ownerReferences!.map((o) => [o.kind, o.name]), [[
              "Job",
              job.metadata!.name,
            ]]);
          }
          await eventually(
            "the runner Jobs to complete",
            async () => (await runnerJobs("fj15", "app")).every(isFinished),
          );
          // Forgejo 15 deletes an ephemeral runner once its job is done: no registration is left.
          assert.deepEqual(
            [...v15.runners.values()].map((runner) => runner.name),
            [],
          );
          const secrets = (await core.listNamespacedSecret({ namespace: "fj15" })).items.map((s) => s.metadata!.name);
          assert.ok(!secrets.includes("app-registration-token"), "no shared registration token is kept on Forgejo 15");
          const status = await getRunnerGroup(custom, "fj15", "app");
          const reachable = status.status?.conditions?.find((c) => c.type === "ForgeReachable");
          assert.match(reachable?.message ?? "", /^Forgejo 15\.0\.0\+gitea-1\.22\.0 answered$/);
        },
      );

      await t.step("Forgejo 15: a runner whose job was cancelled is removed with its registration", async () => {
        await group("fj15", "slow", {
          scope: "repo",
          org: "acme",
          repo: "app",
          giteaURL: v15.url,
          labels: ["fj-slow:host"],
          // The stand-in kubelet keeps the pod Pending this long, as if its image were being pulled.
          template: { podAnnotations: { [startDelayAnnotation]: "120" } },
        });
        const slow = v15.queueJob(app15, { name: "slow", runsOn: ["fj-slow"] });
        const [runnerJob] = await eventually("a runner Job for the slow job", async () => {
          const jobs = await runnerJobs("fj15", "slow");
          return jobs.length > 0 && jobs;
        }, { detail: logTail });
        const registration = await eventually(
          "its registration",
          () => [...v15.runners.values()].find((runner) => runner.name === runnerJob.metadata!.name),
        );
        v15.cancelJob(slow.id);
        await eventually("the idle runner Job and its registration to be removed", async () => {
          const jobs = await runnerJobs("fj15", "slow");
          return jobs.every((job) => job.metadata?.deletionTimestamp) && !v15.runners.has(registration.id);
        }, { timeoutMs: 60_000, detail: logTail });
      });

      await t.step(
        "Forgejo 11: the shared token from GET, the labels the jobs list needs, registrations left",
        async () => {
          await group("fj11", "site", { scope: "user", user: "alice", giteaURL: v11.url, labels: ["fj-old:host"] });
          await eventually("the site job to run to success", () => done(old), { timeoutMs: 90_000, detail: logTail });
          const jobs = await runnerJobs("fj11", "site");
          assert.deepEqual(jobIdsOf(jobs), [old.id]);
          assert.equal(unmatched.status, "waiting");
          const container = jobs[0].spec!.template.spec!.containers[0];
          const tokenRef = container.env!.find((e) => e.name === "FORGEJO_RUNNER_REGISTRATION_TOKEN")?.valueFrom;
          assert.deepEqual(
            [tokenRef?.secretKeyRef?.name, tokenRef?.secretKeyRef?.key],
            ["site-registration-token", "token"],
          );
          assert.ok(
            v11.requests.some((request) => request === "GET /api/v1/user/actions/runners/registration-token"),
            "the token is read with GET",
          );
          assert.ok(
            v11.requests.some((request) => request.endsWith("/user/actions/runners/jobs?labels=fj-old")),
            "the jobs list is asked with the group's labels",
          );
          // Before v15 Forgejo keeps the runner's registration; the operator has no API to remove it.
          assert.deepEqual([...v11.runners.values()].map((runner) => runner.name), [jobs[0].metadata!.name]);
        },
      );

      assert.deepEqual(monitor.violations, []);
      // build, test, deploy and site ran; the slow group's pod never started (its job was cancelled first).
      assert.deepEqual(
        kubelet.started.map((runner) => runner.forgeJobId).sort(),
        [
          String(build.id),
          String(deploy.id),
          String(test.id),
          String(old.id),
        ].sort(),
      );
    } finally {
      monitor.stop = true;
      await monitorDone;
      await operator?.stop().catch(() => {});
      await kubelet.stop().catch(() => {});
      await v15.stop();
      await v11.stop();
      await cluster.dispose();
      if (Deno.env.get("GRO_TEST_KEEP") !== "1") await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
