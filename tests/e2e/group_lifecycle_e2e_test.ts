/**
 * A group's life around its runners, against a real Gitea and a real cluster:
 *
 * - A token Secret created after its group is seen at once (the Secret cache), without a restart or a resync.
 * - A registration token reset in Gitea's web UI: the runner that fails to register is replaced, the managed Secret
 *   is renewed, and the job runs, without manual steps.
 * - Deleting a group with an idle warm runner: the runner Job and its registration in Gitea are gone, then the group.
 * - Deleting a group while its runner runs a job: the job finishes, then the registration and the group are gone.
 * - Deleting the namespace of a group: the namespace goes, and so does the group's registration in Gitea.
 *
 * The operator runs as its own ServiceAccount bound to manifests/base's ClusterRole, so a verb the role lacks fails here.
 */
import assert from "node:assert/strict";
import { type GiteaJob, ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import {
  createRunnerGroup,
  type Environment,
  getRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { assertNoRbacRefusal, operatorKubeconfig } from "../harness/operator_identity.ts";
import { eventReasons, isActiveJob, registrationNames, runnerJobsOf } from "../harness/queries.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "life";
const finalizer = "gitea.bpg.pw/runner-cleanup";
const repoScope = { kind: "repo", owner: "acme", repo: "life" } as const;

async function jobsNamed(env: Environment, names: string[]): Promise<GiteaJob[]> {
  const page = await env.gitea.listJobs(repoScope, { limit: 50 });
  return page.jobs.filter((job) => names.includes(job.name));
}

async function groupExists(env: Environment, ns: string, name: string): Promise<boolean> {
  try {
    await getRunnerGroup(env.custom, ns, name);
    return true;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return false;
    throw error;
  }
}

Deno.test({
  name: "group lifecycle: late Secrets, token resets, and deletion leaves nothing behind",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    const detail = async (): Promise<string> =>
      `operator log:\n${await operator?.logTail(40)}\nregistrations: ${(await registrationNames(env)).join(", ")}`;
    try {
      const { gitea, custom, core } = env;
      await setUpRepository(env, { org: "acme", repo: "life", namespace, registrationToken: false });
      await core.createNamespace({ body: { metadata: { name: "doomed" } } });
      const push = (file: string, jobs: Record<string, [string, number]>): Promise<void> =>
        gitea.pushWorkflow(
          "acme",
          "life",
          `.gitea/workflows/${file}`,
          ownPathWorkflow(
            `.gitea/workflows/${file}`,
            Object.entries(jobs).map(([name, [label, seconds]]) => simpleJob(name, label, seconds)).join(""),
          ),
        );
      // No registration token in the Secret: the operator asks the forge for one.
      const base = repoGroupSpec(env, { org: "acme", repo: "life" }, { registrationToken: undefined });

      operator = await startOperator({
        // The operator's own ServiceAccount with the base ClusterRole: every call below must be granted by it.
        kubeconfigPath: await operatorKubeconfig(env),
        dir: env.dir,
        // A long resync: whatever happens here must not wait for it.
        args: ["--poll-interval", "2s", "--resync-interval", "10m", "--idle-runner-grace", "5s"],
      });

      await t.step("a token Secret created after its group is used at once", async () => {
        await createRunnerGroup(custom, namespace, "late", {
          ...base,
          labels: ["late"],
          authToken: { name: "late-tokens", key: "api" },
        });
        await eventually("CredentialsAvailable False (SecretNotFound)", async () => {
          const group = await getRunnerGroup(custom, namespace, "late");
          return group.status?.conditions?.some((c) =>
            c.type === "CredentialsAvailable" && c.status === "False" && c.reason === "SecretNotFound"
          );
        }, { timeoutMs: 30_000, detail });
        await push("late.yaml", { "late-job": ["late", 0] });
        await core.createNamespacedSecret({
          namespace,
          body: { metadata: { name: "late-tokens" }, stringData: { api: gitea.adminToken } },
        });
        const created = Date.now();
        await eventually("a runner Job for late-job", async () => {
          return (await runnerJobsOf(env, namespace, "late")).length > 0;
        }, { timeoutMs: 60_000, detail });
        // The poll interval is 2 s and the resync 10 min: only the Secret's watch can explain a start within
        // seconds. The bound leaves room for Gitea, which creates the run after the push on its own time.
        const seconds = (Date.now() - created) / 1000;
        assert.ok(seconds < 30, `runner Job after ${seconds.toFixed(1)} s`);
        await eventually("late-job succeeded", async () => {
          const [job] = await jobsNamed(env, ["late-job"]);
          return job?.conclusion === "success";
        }, { timeoutMs: 90_000, detail });
      });

      await t.step(
        "a registration token reset in Gitea: the failed runner is replaced with the new token",
        async () => {
          // "late" keeps its registration token in a Secret the operator made; reset it in Gitea now.
          const managed = await core.readNamespacedSecret({ namespace, name: "late-registration-token" });
          const before = atob(managed.data!.token);
          await gitea.resetRegistrationToken("acme", "life");
          await push("reset.yaml", { "after-reset": ["late", 0] });
          const done = await eventually("after-reset succeeded", async () => {
            const [job] = await jobsNamed(env, ["after-reset"]);
            return job?.status === "completed" ? job : undefined;
          }, { timeoutMs: 120_000, detail });
          assert.equal(done.conclusion, "success");
          const renewed = await core.readNamespacedSecret({ namespace, name: "late-registration-token" });
          assert.notEqual(atob(renewed.data!.token), before, "the managed Secret holds the new token");
          assert.equal(atob(renewed.data!.token), await gitea.registrationToken(repoScope));
          assert.ok((await eventReasons(env, namespace, "late")).includes("RegistrationTokenRenewed"));
          const attempts = (await runnerJobsOf(env, namespace, "late")).filter((job) =>
            job.metadata?.labels?.["gitea.bpg.pw/job-id"] === String(done.id)
          );
          assert.ok(attempts.some((job) => job.status?.failed), "the first runner failed to register");
        },
      );

      await t.step("deleting a group with an idle warm runner removes its registration, then the group", async () => {
        await createRunnerGroup(custom, namespace, "warm", { ...base, labels: ["warm"], minIdleRunners: 1 });
        await eventually("warm-warm-0 registered", async () => {
          return (await registrationNames(env)).includes("warm-warm-0");
        }, { timeoutMs: 60_000, detail });
        const group = await getRunnerGroup(custom, namespace, "warm") as unknown as {
          metadata: { finalizers?: string[] };
        };
        assert.deepEqual(group.metadata.finalizers, [finalizer]);
        const deleted = Date.now();
        await custom.deleteNamespacedCustomObject({
          group: "gitea.bpg.pw",
          version: "v1alpha1",
          namespace,
          plural: "runnergroups",
          name: "warm",
        });
        await eventually("group warm gone", async () => !(await groupExists(env, namespace, "warm")), {
          timeoutMs: 30_000,
          detail,
        });
        const seconds = (Date.now() - deleted) / 1000;
        const names = await registrationNames(env);
        assert.ok(!names.some((name) => name.startsWith("warm-")), `registrations left: ${names.join(", ")}`);
        await eventually("no active runner Job of warm", async () => {
          return (await runnerJobsOf(env, namespace, "warm")).filter(isActiveJob).length === 0;
        }, { timeoutMs: 30_000 });
        assert.ok(seconds < 30, `released after ${seconds.toFixed(1)} s`);
      });

      await t.step("deleting a group while its runner runs a job: the job finishes, then the group goes", async () => {
        await createRunnerGroup(custom, namespace, "busy", { ...base, labels: ["busy"] });
        await waitForFirstPoll(custom, namespace, "busy");
        await push("busy.yaml", { "long-job": ["busy", 20] });
        const running = await eventually("long-job in progress", async () => {
          const [job] = await jobsNamed(env, ["long-job"]);
          return job?.status === "in_progress" ? job : undefined;
        }, { timeoutMs: 90_000, detail });
        await custom.deleteNamespacedCustomObject({
          group: "gitea.bpg.pw",
          version: "v1alpha1",
          namespace,
          plural: "runnergroups",
          name: "busy",
        });
        // The group waits for its busy runner: still there a few seconds later, its runner still registered.
        await new Promise((resolve) => setTimeout(resolve, 5000));
        assert.ok(await groupExists(env, namespace, "busy"), "the group waits for its busy runner");
        assert.ok((await registrationNames(env)).includes(running.runner_name));
        await eventually("group busy gone", async () => !(await groupExists(env, namespace, "busy")), {
          timeoutMs: 90_000,
          detail,
        });
        const [done] = await jobsNamed(env, ["long-job"]);
        assert.deepEqual([done.status, done.conclusion], ["completed", "success"], "the job was not cut short");
        const names = await registrationNames(env);
        assert.ok(!names.some((name) => name.startsWith("busy-")), `registrations left: ${names.join(", ")}`);
      });

      await t.step("deleting the namespace of a group removes its registration and does not hang", async () => {
        await core.createNamespacedSecret({
          namespace: "doomed",
          body: { metadata: { name: "tokens" }, stringData: { api: gitea.adminToken } },
        });
        await createRunnerGroup(custom, "doomed", "doomed", { ...base, labels: ["doomed"], minIdleRunners: 1 });
        await eventually("doomed-warm-0 registered", async () => {
          return (await registrationNames(env)).includes("doomed-warm-0");
        }, { timeoutMs: 60_000, detail });
        const deleted = Date.now();
        await core.deleteNamespace({ name: "doomed" });
        await eventually("namespace doomed gone", async () => {
          try {
            await core.readNamespace({ name: "doomed" });
            return false;
          } catch (error) {
            return (error as { code?: number }).code === 404;
          }
        }, { timeoutMs: 90_000, detail });
        const seconds = (Date.now() - deleted) / 1000;
        const names = await registrationNames(env);
        assert.ok(!names.some((name) => name.startsWith("doomed-")), `registrations left: ${names.join(", ")}`);
        assert.ok(seconds < 90, `namespace gone after ${seconds.toFixed(1)} s`);
      });

      assert.equal(await operator.stop("SIGTERM"), 0);
      await assertNoRbacRefusal(operator);
    } finally {
      if (operator?.running()) await operator.stop("SIGKILL");
      await env.dispose();
    }
  },
});
