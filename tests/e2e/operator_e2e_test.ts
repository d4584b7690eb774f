/**
 * The acceptance test of the operator: a real control plane, a real Gitea, runner pods whose runner processes really
 * run the jobs, and the operator started from `main.ts` with the `run` task's permissions.
 *
 * Invariants are watched continuously by a monitor for the whole test, across an operator SIGKILL and a 30 s Gitea
 * outage: never more active runner Jobs than a group allows, never a runner Job for a job Gitea reports as blocked,
 * never two runner Jobs for one forge job.
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { DemandPollers } from "../../src/forge/demand_poller.ts";
import { loadKubeConfig, makeClients } from "../../src/kube/client.ts";
import { EventRecorder } from "../../src/kube/events.ts";
import { RunnerGroupReconciler } from "../../src/runner_group/reconciler.ts";
import { defaultRunnerImage } from "../../src/runner_group/runner_job.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";
import { createRunnerGroup, getRunnerGroup, isFinished, startEnvironment } from "../harness/environment.ts";
import { type GiteaJob, ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import { recentRunnerLogs } from "../harness/kubelet.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "ci";
const jobIdLabel = "gitea.bpg.pw/job-id";
const groupLabel = "gitea.bpg.pw/runnergroup-name";

Deno.test({
  name: "end to end: queued Gitea jobs get exactly one ephemeral runner Job each, within limits, through failures",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment({ echo: Deno.env.get("GRO_TEST_ECHO") === "1" });
    let operator: OperatorProcess | undefined;
    const monitor = {
      stop: false,
      violations: [] as string[],
      jobs: new Map<string, V1Job>(),
      maxActive: new Map<string, number>(),
      /** Runner Job lists taken so far. */
      lists: 0,
    };
    // A runner Job created and run within one of the monitor's rounds (a short job, a fast runner) is in its record
    // only after the next list: before reading the record, wait for a list that began after this call.
    const monitorCaughtUp = async (): Promise<void> => {
      const from = monitor.lists;
      await eventually("the monitor's next list of runner Jobs", () => monitor.lists >= from + 2, {
        timeoutMs: 30_000,
      });
    };
    let monitorDone: Promise<void> = Promise.resolve();
    const operatorArgs = ["--poll-interval", "2s", "--resync-interval", "10s", "--namespaces", namespace];
    const logTails = async (): Promise<string> =>
      `--- operator log ---\n${await operator?.logTail(30)}\n--- gitea log ---\n${env.gitea.logTail(15)}\n` +
      recentRunnerLogs(env.kubelet);
    try {
      const { gitea, core, custom } = env;
      // Owners and repositories for every scope; one label per group so runners of one group never take another's.
      const aliceToken = await gitea.createUser("alice");
      await gitea.createOrg("acme");
      await gitea.createOrg("tools");
      await gitea.createRepo("acme", "app");
      await gitea.createRepo("acme", "lib");
      await gitea.createRepo("alice", "site");
      await gitea.createRepo("tools", "misc");

      await core.createNamespace({ body: { metadata: { name: namespace } } });
      const secret = async (name: string, api: string, registration: string): Promise<void> => {
        await core.createNamespacedSecret({
          namespace,
          body: { metadata: { name }, stringData: { api, registration } },
        });
      };
      await secret(
        "repo-tokens",
        gitea.adminToken,
        await gitea.registrationToken({ kind: "repo", owner: "acme", repo: "app" }),
      );
      await secret("org-tokens", gitea.adminToken, await gitea.registrationToken({ kind: "org", org: "acme" }));
      await secret("user-tokens", aliceToken, await gitea.registrationToken({ kind: "user", user: "alice" }));
      await secret("global-tokens", gitea.adminToken, await gitea.registrationToken({ kind: "global" }));

      const giteaURL = gitea.url.replace(/\/$/, "");
      const group = async (name: string, spec: Record<string, unknown>): Promise<void> => {
        await createRunnerGroup(custom, namespace, name, {
          giteaURL,
          defaultLabels: false,
          registrationToken: { name: `${name}-tokens`, key: "registration" },
          authToken: { name: `${name}-tokens`, key: "api" },
          ttlSecondsAfterFinished: 3600,
          ...spec,
        });
      };
      await group("repo", {
        scope: "repo",
        org: "acme",
        repo: "app",
        labels: ["repo-linux:docker://node:20"],
        maxActiveRunners: 2,
      });
      await group("org", { scope: "org", org: "acme", labels: ["org-linux"], maxActiveRunners: 3 });
      await group("user", { scope: "user", user: "alice", labels: ["user-linux"], maxActiveRunners: 3 });
      await group("global", { scope: "global", labels: ["global-linux"], maxActiveRunners: 3 });
      const limits: Record<string, number> = { repo: 2, org: 3, user: 3, global: 3 };

      // The monitor: every runner Job ever seen, the most active at once per group, and blocked-job violations.
      monitorDone = (async () => {
        while (!monitor.stop) {
          try {
            const list = await env.batch.listNamespacedJob({
              namespace,
              labelSelector: "app.kubernetes.io/component=runner",
            });
            const active = new Map<string, number>();
            for (const job of list.items) {
              monitor.jobs.set(job.metadata!.uid!, job);
              const groupName = job.metadata!.labels![groupLabel];
              if (!isFinished(job)) active.set(groupName, (active.get(groupName) ?? 0) + 1);
            }
            monitor.lists++;
            for (const [name, count] of active) {
              monitor.maxActive.set(name, Math.max(monitor.maxActive.get(name) ?? 0, count));
              if (count > limits[name]) monitor.violations.push(`group ${name} had ${count} active runner Jobs`);
            }
            // Blocked jobs are read after the runner Jobs: a job only leaves "waiting" for "queued", never back, so
            // one Gitea still reports as blocked was blocked when the list above was taken, and a runner Job in that
            // list for it is a violation. Read before the list, the job could have been released in between and its
            // runner Job rightly created (a CI run once failed on exactly that race in this monitor).
            const waiting = await gitea.listJobs({ kind: "all" }, { status: ["waiting"], limit: 50 });
            const blockedJobIds = new Set(waiting.jobs.map((job) => String(job.id)));
            for (const job of list.items) {
              if (blockedJobIds.has(job.metadata!.labels![jobIdLabel])) {
                monitor.violations.push(
                  `runner Job ${job.metadata!.name} exists for blocked job ${job.metadata!.labels![jobIdLabel]}`,
                );
              }
            }
          } catch {
            // Gitea is down during the outage phase; the monitor carries on.
          }
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })();

      operator = await startOperator({ kubeconfigPath: env.cluster.kubeconfigPath, dir: env.dir, args: operatorArgs });

      const push = (owner: string, repo: string, path: string, jobs: string): Promise<void> =>
        gitea.pushWorkflow(owner, repo, path, ownPathWorkflow(path, jobs));
      const allJobs = async (): Promise<GiteaJob[]> => (await gitea.listJobs({ kind: "all" }, { limit: 50 })).jobs;
      const waitForJobs = async (what: string, done: (jobs: GiteaJob[]) => boolean, timeoutMs = 180_000) =>
        await eventually(what, async () => {
          const jobs = await allJobs();
          return done(jobs) ? jobs : undefined;
        }, { timeoutMs, intervalMs: 500, detail: logTails });

      await t.step(
        "every scope's group runs its jobs; limits hold; blocked and unmatched jobs get no runner",
        async () => {
          await push(
            "acme",
            "app",
            ".gitea/workflows/matrix.yaml",
            `  build:\n    runs-on: repo-linux\n    strategy:\n      matrix:\n        n: [1, 2, 3]\n` +
              `    steps:\n      - run: echo "build \${{ matrix.n }}" && sleep 3\n` +
              `  report:\n    needs: build\n    runs-on: repo-linux\n    steps:\n      - run: echo report\n` +
              simpleJob("orphan", "no-such-label"),
          );
          await push("acme", "lib", ".gitea/workflows/org.yaml", simpleJob("org-job", "org-linux"));
          await push("alice", "site", ".gitea/workflows/user.yaml", simpleJob("user-job", "user-linux"));
          await push("tools", "misc", ".gitea/workflows/global.yaml", simpleJob("global-job", "global-linux"));

          const jobs = await waitForJobs(
            "all runnable jobs to complete",
            (jobs) =>
              jobs.length === 8 && jobs.filter((j) => j.name !== "orphan").every((j) => j.status === "completed"),
          );
          const orphan = jobs.find((j) => j.name === "orphan")!;
          assert.equal(orphan.status, "queued", "the job no group can run stays queued");
          for (const job of jobs.filter((j) => j.name !== "orphan")) {
            assert.equal(job.conclusion, "success", `${job.name} should succeed\n${await logTails()}`);
          }
          assert.equal(monitor.maxActive.get("repo"), 2, "the repo group used, and never exceeded, its 2 runners");
        },
      );

      await t.step(
        "each runnable job got exactly one runner Job, whose runner ran a job; none for the orphan",
        async () => {
          await monitorCaughtUp();
          const jobs = await allJobs();
          const runnerJobs = [...monitor.jobs.values()];
          const orphan = jobs.find((j) => j.name === "orphan")!;
          // On a failure: every runner Job the monitor saw, with its job, and which runner ran each job.
          const seen = async (): Promise<string> =>
            `runner Jobs seen:\n${
              runnerJobs.map((r) =>
                `  ${r.metadata!.name} job ${r.metadata!.labels![jobIdLabel]} created ${
                  r.metadata!.creationTimestamp
                } finished ${isFinished(r)}`
              ).join("\n")
            }\njobs:\n${
              jobs.map((j) => `  ${j.name} (${j.id}) ${j.status} on ${j.runner_name || "-"}`).join("\n")
            }\nthe repo group's reconciles that did something:\n${
              (await operator!.logs())
                .filter((line) =>
                  line.group === `${namespace}/repo` && /Created|Removed|Deleted|created [1-9]/.test(
                    String(line.message),
                  )
                )
                .map((line) => `  ${line["@timestamp"]} ${line.message}`).join("\n")
            }\n${await logTails()}`;
          for (const job of jobs) {
            const mine = runnerJobs.filter((r) => r.metadata!.labels![jobIdLabel] === String(job.id));
            if (mine.length !== (job === orphan ? 0 : 1)) {
              assert.fail(`runner Jobs for ${job.name} (${job.id}): ${mine.length}\n${await seen()}`);
            }
          }
          const names = new Set(runnerJobs.map((r) => r.metadata!.name));
          for (const job of jobs.filter((j) => j !== orphan)) {
            assert.ok(
              names.has(job.runner_name),
              `${job.name} ran on ${job.runner_name}, one of our ephemeral runners`,
            );
          }
          for (const groupName of ["repo", "org", "user", "global"]) {
            assert.ok(
              runnerJobs.some((r) => r.metadata!.labels![groupLabel] === groupName),
              `group ${groupName} ran a job`,
            );
          }
        },
      );

      const statusOf = async (name: string): Promise<Record<string, unknown>> =>
        (await getRunnerGroup(custom, namespace, name)).status ?? {};
      const conditionOf = (status: Record<string, unknown>, type: string) =>
        (status.conditions as { type: string; status: string; reason: string }[] | undefined)?.find((c) =>
          c.type === type
        );

      await t.step(
        "SIGKILL while runners start, then a restart: no duplicate runner Job, every job completes",
        async () => {
          await push(
            "acme",
            "app",
            ".gitea/workflows/again.yaml",
            simpleJob("k1", "repo-linux", 2) + simpleJob("k2", "repo-linux", 2) + simpleJob("k3", "repo-linux", 2),
          );
          await eventually(
            "a runner Job for the new jobs",
            () =>
              [...monitor.jobs.values()].some((r) =>
                r.metadata!.annotations!["gitea.bpg.pw/job-name"] === "k1" ||
                r.metadata!.annotations!["gitea.bpg.pw/job-name"] === "k2"
              ),
            { timeoutMs: 60_000, detail: logTails },
          );
          // Each group's Ready and ForgeReachable as the first process left them, to compare after the restart.
          const groupNames = ["repo", "org", "user", "global"];
          const conditionsBefore = new Map<string, unknown[]>();
          for (const name of groupNames) {
            const conditions = (await statusOf(name)).conditions as Record<string, unknown>[];
            conditionsBefore.set(name, conditions.filter((c) => c.type === "Ready" || c.type === "ForgeReachable"));
          }
          const code = await operator!.stop("SIGKILL");
          const killedAt = Date.now();
          assert.notEqual(code, 0, "the operator was killed");
          operator = await startOperator({
            kubeconfigPath: env.cluster.kubeconfigPath,
            dir: env.dir,
            args: operatorArgs,
            name: "operator-2",
          });
          await waitForJobs(
            "k1..k3 to complete",
            (jobs) => ["k1", "k2", "k3"].every((n) => jobs.find((j) => j.name === n)?.conclusion === "success"),
          );
          await monitorCaughtUp();
          const jobs = await allJobs();
          for (const name of ["k1", "k2", "k3"]) {
            const job = jobs.find((j) => j.name === name)!;
            const count = [...monitor.jobs.values()].filter((r) =>
              r.metadata!.labels![jobIdLabel] === String(job.id)
            ).length;
            assert.equal(count, 1, `runner Jobs for ${name}`);
          }
          // A restart does not turn a group's conditions Unknown until the forge answers again: once the new process
          // has an answer for every group, Ready and ForgeReachable are as they were, transition times included.
          for (const name of groupNames) {
            await eventually(
              `${name}'s status checked by the new process`,
              async () => Date.parse(String((await statusOf(name)).lastCheckTime)) > killedAt,
              { timeoutMs: 60_000, detail: logTails },
            );
            const conditions = (await statusOf(name)).conditions as Record<string, unknown>[];
            assert.deepEqual(
              conditions.filter((c) => c.type === "Ready" || c.type === "ForgeReachable"),
              conditionsBefore.get(name),
              `${name}'s Ready and ForgeReachable across the restart`,
            );
          }
        },
      );

      await t.step(
        "a reconcile from a stale cache (a watch event not seen yet) creates no second runner Job",
        async () => {
          // A group in a namespace the operator process does not watch, reconciled here in-process with a cache that
          // never shows its runner Jobs: only the deterministic Job name stands between it and a duplicate.
          const staleNamespace = "stale";
          await core.createNamespace({ body: { metadata: { name: staleNamespace } } });
          await core.createNamespacedSecret({
            namespace: staleNamespace,
            body: {
              metadata: { name: "stale-tokens" },
              stringData: {
                api: gitea.adminToken,
                registration: await gitea.registrationToken({ kind: "repo", owner: "acme", repo: "lib" }),
              },
            },
          });
          const staleGroup = await createRunnerGroup(custom, staleNamespace, "stale", {
            scope: "repo",
            org: "acme",
            repo: "lib",
            giteaURL,
            defaultLabels: false,
            labels: ["stale-linux"],
            maxActiveRunners: 5,
            registrationToken: { name: "stale-tokens", key: "registration" },
            authToken: { name: "stale-tokens", key: "api" },
          }) as unknown as RunnerGroup;
          const clients = makeClients(await loadKubeConfig(env.cluster.kubeconfigPath, () => undefined));
          const pollers = new DemandPollers({ intervalMs: 1000, timeoutMs: 5000, onChange: () => {} });
          const reconciler = new RunnerGroupReconciler({
            clients,
            cache: { group: () => staleGroup, groups: () => [staleGroup], runnerJobs: () => [] },
            pollers,
            events: new EventRecorder(clients.core, "e2e-test", "e2e-test"),
            runnerImage: defaultRunnerImage,
            retry: { limit: 3, baseDelayMs: 10_000, maxDelayMs: 60_000 },
            resyncIntervalMs: 60_000,
          });
          try {
            await push("acme", "lib", ".gitea/workflows/stale.yaml", simpleJob("stale-job", "stale-linux"));
            const listStale = async (): Promise<V1Job[]> =>
              (await env.batch.listNamespacedJob({ namespace: staleNamespace })).items;
            await eventually("a runner Job for stale-job", async () => {
              await reconciler.reconcile("stale/stale");
              return (await listStale()).length > 0;
            }, { timeoutMs: 60_000 });
            for (let again = 0; again < 3; again++) await reconciler.reconcile("stale/stale");
            const jobs = await listStale();
            assert.equal(jobs.length, 1, `runner Jobs: ${jobs.map((job) => job.metadata!.name).join(", ")}`);
            await waitForJobs(
              "stale-job to succeed",
              (all) => all.find((j) => j.name === "stale-job")?.conclusion === "success",
            );
          } finally {
            await pollers.stop();
          }
        },
      );

      await t.step(
        "Gitea down for 30 s: ForgeReachable turns False with a reason, then True, and the jobs complete",
        async () => {
          // Gitea is stopped while both runners run their jobs. (Stopping it while a runner's FetchTask is in flight
          // can leave the job assigned to a runner that never heard of it, in progress until Gitea's zombie-task
          // timeout: Gitea's behaviour, not the operator's, so the test avoids that moment.) A job shows in_progress as
          // soon as Gitea has assigned it in FetchTask, before the answer reaches the runner: one CI run stopped Gitea
          // in that gap, and the runner went on asking for a task while its job stayed in progress. So the test also
          // waits until each job's runner logs that it runs a task.
          await push(
            "acme",
            "app",
            ".gitea/workflows/outage.yaml",
            simpleJob("o1", "repo-linux", 12) + simpleJob("o2", "repo-linux", 12),
          );
          const running = await waitForJobs(
            "o1 and o2 to be running",
            (jobs) => ["o1", "o2"].every((n) => jobs.find((j) => j.name === n)?.status === "in_progress"),
            60_000,
          );
          const runnersOf = ["o1", "o2"].map((n) => running.find((j) => j.name === n)!.runner_name);
          await eventually("the runners of o1 and o2 to have their tasks", () =>
            runnersOf.every((runner) => {
              const pod = env.kubelet.started.findLast((started) => started.name.startsWith(`${runner}-`));
              return pod !== undefined && Deno.readTextFileSync(pod.logPath).includes("running task");
            }), { timeoutMs: 30_000, detail: logTails });
          await gitea.stop();
          const stoppedAt = Date.now();
          const down = await eventually("ForgeReachable False", async () => {
            const condition = conditionOf(await statusOf("repo"), "ForgeReachable");
            return condition?.status === "False" ? condition : undefined;
          }, { timeoutMs: 30_000, detail: logTails });
          assert.equal(down.reason, "Unreachable");
          assert.equal(conditionOf(await statusOf("repo"), "Ready")?.status, "False");
          const rest = 30_000 - (Date.now() - stoppedAt);
          if (rest > 0) {
            await new Promise((resolve) => setTimeout(resolve, rest));
          }
          assert.equal(operator!.running(), true, "the operator kept running through the outage");
          await gitea.start();
          await eventually(
            "ForgeReachable True again",
            async () => conditionOf(await statusOf("repo"), "ForgeReachable")?.status === "True",
            {
              timeoutMs: 120_000,
              detail: logTails,
            },
          );
          await waitForJobs(
            "o1 and o2 to complete",
            (jobs) => ["o1", "o2"].every((n) => jobs.find((j) => j.name === n)?.conclusion === "success"),
          );
        },
      );

      await t.step("at the end: no runner registrations left, every group shows 0 active and 0 queued", async () => {
        await eventually("no runner registrations in Gitea", async () => (await gitea.listRunners()).length === 0, {
          timeoutMs: 60_000,
          detail: async () => JSON.stringify(await gitea.listRunners()),
        });
        for (const name of ["repo", "org", "user", "global"]) {
          const status = await eventually(`status of ${name} to settle`, async () => {
            const status = await statusOf(name);
            const ready = conditionOf(status, "Ready")?.status === "True";
            return status.activeRunners === 0 && status.queuedJobs === 0 && ready ? status : undefined;
          }, {
            timeoutMs: 90_000,
            detail: async () => {
              const jobs = await env.batch.listNamespacedJob({ namespace, labelSelector: `${groupLabel}=${name}` });
              const open = jobs.items.filter((job) => !isFinished(job)).map((job) => job.metadata!.name);
              return `status ${JSON.stringify(await statusOf(name))}\nunfinished runner Jobs: ${open.join(", ")}\n` +
                `gitea jobs: ${JSON.stringify((await allJobs()).map((j) => [j.id, j.name, j.status, j.runner_name]))}`;
            },
          });
          assert.equal(conditionOf(status, "Ready")?.status, "True", `${name} is Ready`);
        }
        await monitorCaughtUp();
        assert.deepEqual(monitor.violations, [], "invariants held for the whole test");
        // Over the whole test: every job of the watched groups had exactly one runner Job, which ran a job.
        const runnerJobs = [...monitor.jobs.values()];
        const names = new Set(runnerJobs.map((r) => r.metadata!.name));
        for (const job of (await allJobs()).filter((j) => j.name !== "stale-job")) {
          const count = runnerJobs.filter((r) => r.metadata!.labels![jobIdLabel] === String(job.id)).length;
          assert.equal(count, job.name === "orphan" ? 0 : 1, `runner Jobs for ${job.name} (${job.id})`);
          if (job.name === "orphan") continue;
          assert.equal(job.conclusion, "success", `${job.name} (${job.id})`);
          assert.ok(names.has(job.runner_name), `${job.name} ran on ${job.runner_name}, one of our runners`);
        }
      });

      await t.step("metrics show the runners created, the forge requests and the outage", async () => {
        const base = `http://127.0.0.1:${await operator!.port()}`;
        const ready = await fetch(`${base}/readyz`);
        assert.equal(ready.status, 200, await ready.text());
        const text = await (await fetch(`${base}/metrics`)).text();
        const value = (pattern: string): number => {
          const match = new RegExp(`^${pattern.replace(/[{}()[\]|.+*?$^\\]/g, "\\$&")} (\\S+)$`, "m").exec(text);
          return match ? Number(match[1]) : NaN;
        };
        assert.ok(
          value('gitea_runner_operator_runner_jobs_created_total{namespace="ci",runnergroup="repo"}') >= 2,
          "o1 and o2 got runner Jobs from this operator process",
        );
        assert.ok(
          value(
            'gitea_runner_operator_forge_requests_total{endpoint="/repos/{owner}/{repo}/actions/jobs",code="2xx"}',
          ) > 0,
        );
        assert.ok(
          value(
            'gitea_runner_operator_forge_requests_total{endpoint="/repos/{owner}/{repo}/actions/jobs",code="error"}',
          ) > 0,
        );
        assert.ok(value('gitea_runner_operator_spawn_latency_seconds_count{namespace="ci",runnergroup="repo"}') >= 2);
        assert.equal(value('gitea_runner_operator_active_runners{namespace="ci",runnergroup="repo"}'), 0);
        assert.doesNotMatch(text, /job_id|job-id/, "no job ids in labels");
      });

      await t.step("SIGTERM stops the operator cleanly with exit code 0", async () => {
        const code = await operator!.stop("SIGTERM");
        assert.equal(code, 0, await operator!.logTail(20));
        const logs = await operator!.logs();
        assert.ok(logs.some((line) => String(line.message).includes("Stopped")), "the manager drained and stopped");
      });

      await t.step("no secret value appears in the operator's logs or in any runner Job", async () => {
        const secrets = [gitea.adminToken, aliceToken];
        for (const name of ["repo", "org", "user", "global"]) {
          const s = await core.readNamespacedSecret({ namespace, name: `${name}-tokens` });
          secrets.push(atob(s.data!.registration));
        }
        const logs = await Deno.readTextFile(operator!.logPath) +
          await Deno.readTextFile(operator!.logPath.replace("operator-2", "operator")).catch(() => "");
        const jobsText = JSON.stringify([...monitor.jobs.values()]);
        const events = JSON.stringify(await core.listNamespacedEvent({ namespace }));
        for (const value of secrets) {
          assert.ok(value.length > 10);
          assert.ok(!logs.includes(value), "a token appears in the operator log");
          assert.ok(!jobsText.includes(value), "a token appears in a runner Job");
          assert.ok(!events.includes(value), "a token appears in an event");
        }
      });
    } finally {
      monitor.stop = true;
      await monitorDone;
      if (operator?.running()) await operator.stop("SIGTERM");
      await env.dispose();
    }
  },
});
