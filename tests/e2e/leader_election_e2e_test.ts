/**
 * High availability: two operator processes with leader election. Only the leader creates runner Jobs; when it is
 * killed with SIGKILL while runners are starting, the standby takes the Lease over after it expires and finishes the
 * work, with no duplicate runner Job.
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { createRunnerGroup, repoGroupSpec, setUpRepository, startEnvironment } from "../harness/environment.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "ha";

Deno.test({
  name: "leader election: the standby takes over from a killed leader, without duplicate runner Jobs",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(): Promise<void> {
    const env = await startEnvironment();
    const operators: OperatorProcess[] = [];
    const seen = new Map<string, V1Job>();
    let watching = true;
    let watcher: Promise<void> = Promise.resolve();
    try {
      const { gitea, custom } = env;
      await setUpRepository(env, { org: "acme", repo: "app", namespace });
      await createRunnerGroup(
        custom,
        namespace,
        "app",
        repoGroupSpec(env, { org: "acme", repo: "app" }, { labels: ["ha-linux"], maxActiveRunners: 4 }),
      );
      watcher = (async () => {
        while (watching) {
          for (const job of (await env.batch.listNamespacedJob({ namespace }).catch(() => ({ items: [] }))).items) {
            seen.set(job.metadata!.uid!, job);
          }
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })();
      const args = [
        "--namespaces",
        namespace,
        "--poll-interval",
        "2s",
        "--leader-elect",
        "true",
        "--leader-election-namespace",
        namespace,
        "--lease-duration",
        "6s",
      ];
      const start = async (name: string): Promise<OperatorProcess> => {
        const operator = await startOperator({ kubeconfigPath: env.cluster.kubeconfigPath, dir: env.dir, name, args });
        operators.push(operator);
        return operator;
      };
      const leads = async (operator: OperatorProcess): Promise<boolean> =>
        (await operator.logs()).some((line) => String(line.message).startsWith("Became the leader"));

      const first = await start("operator-a");
      await eventually("operator-a to lead", () => leads(first), { timeoutMs: 30_000 });
      const second = await start("operator-b");
      const secondPort = await second.port();
      await eventually("operator-b to be a ready standby", async () => {
        const response = await fetch(`http://127.0.0.1:${secondPort}/readyz`);
        return response.status === 200 && (await response.text()) === "ok (standby)";
      }, { timeoutMs: 30_000 });
      assert.equal(await leads(second), false, "only one leader");

      await gitea.pushWorkflow(
        "acme",
        "app",
        ".gitea/workflows/ha.yaml",
        "on: push\njobs:\n" +
          ["h1", "h2", "h3"].map((n) => `  ${n}:\n    runs-on: ha-linux\n    steps:\n      - run: sleep 2\n`).join(""),
      );
      await eventually("a runner Job from the leader", () => seen.size > 0, { timeoutMs: 60_000 });
      assert.notEqual(await first.stop("SIGKILL"), 0);
      const killedAt = Date.now();
      await eventually("operator-b to take over", () => leads(second), { timeoutMs: 30_000 });
      const takeover = (Date.now() - killedAt) / 1000;
      assert.ok(takeover < 6 + 6, `took over ${takeover} s after the kill (lease duration 6 s)`);

      const jobs = await eventually("h1..h3 to succeed", async () => {
        const list = (await gitea.listJobs({ kind: "repo", owner: "acme", repo: "app" })).jobs;
        return list.length === 3 && list.every((job) => job.conclusion === "success") ? list : undefined;
      }, { timeoutMs: 120_000, detail: () => second.logTail(20) });
      for (const job of jobs) {
        const count = [...seen.values()].filter((r) => r.metadata!.labels!["gitea.bpg.pw/job-id"] === String(job.id));
        assert.equal(count.length, 1, `runner Jobs for ${job.name}`);
      }
      assert.equal(await second.stop("SIGTERM"), 0);
      const released = (await second.logs()).some((line) => String(line.message).startsWith("Released the Lease"));
      assert.ok(released, "a leader that stops gracefully releases the Lease");
    } finally {
      watching = false;
      await watcher;
      for (const operator of operators) if (operator.running()) await operator.stop("SIGKILL");
      await env.dispose();
    }
  },
});
