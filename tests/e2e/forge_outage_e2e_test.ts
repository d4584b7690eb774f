/**
 * Recovery after a forge outage, end to end: the operator (default poll interval) and its runners reach Gitea through
 * a fault-injecting proxy. The jobs endpoint answers 500 for 60 s, then an HTML login page for 20 s; a job queued
 * during each outage must get its runner Job within 15 s of the forge answering again, and the proxy counts what the
 * operator asked meanwhile. Everything else (registration, the runner protocol) goes through the proxy untouched.
 *
 * `GRO_TEST_OUTAGE_SECONDS` lengthens the 500 outage for a run by hand (e.g. 300 for the request rate of 5 minutes).
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import {
  createRunnerGroup,
  getRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { type Fault, type FaultProxy, jobsEndpoint, startFaultProxy } from "../harness/fault_proxy.ts";
import { ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "outage";
const label = "outage-linux";
/** The design bound: the failure backoff caps at 10 s, plus a reconcile. */
const recoveryBoundMs = 15_000;

const report = (message: string): void => {
  // deno-lint-ignore no-console
  console.error(`[forge_outage_e2e] ${message}`);
};

Deno.test({
  name: "forge outage: a job queued while the jobs endpoint fails gets its runner Job within 15 s of recovery",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment({ echo: Deno.env.get("GRO_TEST_ECHO") === "1" });
    let proxy: FaultProxy | undefined;
    let operator: OperatorProcess | undefined;
    const logTails = async (): Promise<string> =>
      `--- operator log ---\n${await operator?.logTail(30)}\n--- gitea log ---\n${env.gitea.logTail(10)}`;
    try {
      const { gitea, custom, batch } = env;
      proxy = startFaultProxy(gitea.url);
      await setUpRepository(env, { org: "acme", repo: "app", namespace });
      await createRunnerGroup(
        custom,
        namespace,
        "app",
        repoGroupSpec(env, { org: "acme", repo: "app" }, { giteaURL: proxy.url.replace(/\/$/, ""), labels: [label] }),
      );
      // Default poll interval and resync: the recovery bound is a claim about the defaults.
      operator = await startOperator({
        kubeconfigPath: env.cluster.kubeconfigPath,
        dir: env.dir,
        args: ["--namespaces", namespace],
      });
      await waitForFirstPoll(custom, namespace, "app");

      const runnerJobOf = async (jobName: string): Promise<V1Job | undefined> =>
        (await batch.listNamespacedJob({ namespace })).items.find((job) =>
          job.metadata?.annotations?.["gitea.bpg.pw/job-name"] === jobName
        );
      const conclusionOf = async (jobName: string): Promise<string | undefined> =>
        (await gitea.listJobs({ kind: "repo", owner: "acme", repo: "app" }, { limit: 50 })).jobs.find((job) =>
          job.name === jobName
        )?.conclusion;
      const forgeReachable = async () =>
        (await getRunnerGroup(custom, namespace, "app")).status?.conditions?.find((c) => c.type === "ForgeReachable");
      const queue = (jobName: string): Promise<void> =>
        gitea.pushWorkflow(
          "acme",
          "app",
          `.gitea/workflows/${jobName}.yaml`,
          ownPathWorkflow(`.gitea/workflows/${jobName}.yaml`, simpleJob(jobName, label)),
        );

      await t.step("through the proxy, a runner registers, takes its job and finishes it", async () => {
        const before = proxy!.requests().length;
        await queue("before");
        await eventually("job before to succeed", async () => (await conclusionOf("before")) === "success", {
          timeoutMs: 120_000,
          detail: logTails,
        });
        const seen = proxy!.requests().slice(before);
        const runnerProtocol = seen.filter((r) => r.path.startsWith("/api/actions/"));
        assert.ok(
          runnerProtocol.some((r) => r.path.includes("Register") && r.status === 200),
          `the runner registered through the proxy: ${runnerProtocol.map((r) => `${r.path} ${r.status}`)}`,
        );
        assert.ok(runnerProtocol.some((r) => r.path.includes("FetchTask") && r.status === 200), "and fetched its task");
      });

      /** Takes the jobs endpoint down for `seconds`, queues a job meanwhile, and measures the recovery. */
      const outage = async (fault: Fault, seconds: number, jobName: string, reason: string): Promise<void> => {
        const start = Date.now();
        proxy!.fail(fault, jobsEndpoint);
        const down = await eventually(`ForgeReachable False (${reason})`, async () => {
          const condition = await forgeReachable();
          return condition?.status === "False" ? condition : undefined;
        }, { timeoutMs: 40_000, detail: logTails });
        assert.equal(down.reason, reason, down.message);
        await queue(jobName);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, start + seconds * 1000 - Date.now())));
        assert.equal(await runnerJobOf(jobName), undefined, "no runner Job from a failed answer");
        assert.equal((await forgeReachable())?.status, "False", "the error is still shown at the end of the outage");
        proxy!.heal();
        const recovered = Date.now();
        // Found later than the bound: measured anyway (a before/after figure), then the assertion fails.
        await eventually(`a runner Job for ${jobName}`, () => runnerJobOf(jobName), {
          timeoutMs: 120_000,
          intervalMs: 100,
          detail: logTails,
        });
        const delayMs = Date.now() - recovered;
        const during = proxy!.requests().filter((r) => r.at >= start && r.at < recovered);
        const jobsAsked = during.filter((r) => jobsEndpoint.test(r.path)).length;
        const apiAsked = during.filter((r) => r.path.startsWith("/api/v1/")).length;
        const minutes = (recovered - start) / 60_000;
        report(
          `${fault} for ${Math.round((recovered - start) / 1000)} s: runner Job ${(delayMs / 1000).toFixed(1)} s ` +
            `after recovery; requests during the outage: ${jobsAsked} to the jobs endpoint ` +
            `(${(jobsAsked / minutes).toFixed(1)}/min), ${apiAsked} to /api/v1 (${
              (apiAsked / minutes).toFixed(1)
            }/min)`,
        );
        assert.ok(delayMs <= recoveryBoundMs, `runner Job ${delayMs} ms after recovery`);
        // The schedule allows at most 2 attempts per 10 s once capped, plus the ramp (15 in the first minute).
        assert.ok(jobsAsked <= 3 + 12 * minutes, `${jobsAsked} jobs requests in ${minutes.toFixed(2)} min`);
        assert.ok(jobsAsked >= 3, `${jobsAsked} jobs requests: the operator kept asking`);
        await eventually("ForgeReachable True again", async () => (await forgeReachable())?.status === "True", {
          timeoutMs: 30_000,
          detail: logTails,
        });
        await eventually(`${jobName} to succeed`, async () => (await conclusionOf(jobName)) === "success", {
          timeoutMs: 120_000,
          detail: logTails,
        });
      };

      const seconds = Number(Deno.env.get("GRO_TEST_OUTAGE_SECONDS") ?? "60");
      await t.step(`the jobs endpoint answers 500 for ${seconds} s`, async () => {
        await outage("500", seconds, "during-500", "ServerError");
      });
      await t.step("the jobs endpoint answers an HTML login page for 20 s", async () => {
        await outage("html", 20, "during-html", "InvalidResponse");
      });
    } finally {
      if (operator?.running()) await operator.stop("SIGTERM");
      await proxy?.stop();
      await env.dispose();
    }
  },
});
