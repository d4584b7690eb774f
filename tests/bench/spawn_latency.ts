/**
 * Spawn latency with real runners: from a push that queues a 20-job matrix to each job's runner Job existing (seen
 * through a watch), in poll mode (`--poll-interval 10s`, the push landing at a random point of the poll cycle) and in
 * push mode (webhooks, a 10-minute poll). The runner pods run: the stand-in kubelet starts a real runner for each, so
 * this is the whole path a user sees, not only the operator's part (see the burst and push parts for the split).
 */
import { ownPathWorkflow } from "../harness/gitea.ts";
import { runnerJobSelector } from "../../src/runner_group/runner_job.ts";
import type { BenchContext } from "./context.ts";
import { JobWatch } from "./job_watch.ts";
import { distribution, type Figure } from "./report.ts";

const pollInterval = "10s";

export async function measureSpawnLatency(ctx: BenchContext, jobs: number): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const mode of ["poll", "push"] as const) {
    const org = `latency-${mode}`;
    const { port, operator } = await ctx.startRepositoryGroup(org, { maxActiveRunners: jobs }, [
      "--log-level",
      "info",
      ...mode === "poll"
        ? ["--poll-interval", pollInterval]
        : ["--poll-interval", "10m", "--webhook-secret", `${org}/tokens:webhook`],
    ]);
    const watch = await JobWatch.start(ctx.env.cluster.kubeConfig, org, runnerJobSelector);
    try {
      if (mode === "push") await ctx.addWebhook(org, "app", port);
      // Start at a random point of the poll cycle, as a real push would.
      else await new Promise((resolve) => setTimeout(resolve, Math.random() * 10_000));
      const path = `.gitea/workflows/${mode}.yaml`;
      const matrix = Array.from({ length: jobs }, (_, index) => index + 1).join(", ");
      await ctx.env.gitea.pushWorkflow(
        org,
        "app",
        path,
        ownPathWorkflow(
          path,
          `  run:\n    runs-on: ${org}\n    strategy:\n      matrix:\n        n: [${matrix}]\n` +
            `    steps:\n      - run: echo \${{ matrix.n }}\n`,
        ),
      );
      const accepted = Date.now();
      await watch.waitForAdded(jobs, 180_000);
      const latencies = watch.added().map((job) => (job.at - accepted) / 1000);
      figures.push({
        part: `spawn latency, ${jobs}-job matrix, real runners`,
        what: `push accepted -> runner Job exists, ${mode} mode${mode === "poll" ? ` (${pollInterval})` : ""}`,
        unit: "s",
        distribution: distribution(latencies),
      });
    } finally {
      await watch.stop();
      await ctx.stopOperator(operator);
    }
    await ctx.deleteNamespace(org);
  }
  return figures;
}
