/**
 * What the warm pool (`minIdleRunners`) buys: start latency, from a push to Gitea reporting the job in progress (a
 * runner took it), for jobs pushed one after another, without and with a pool of 2, both in push mode, with real
 * runners. The stand-in kubelet starts runner processes at once; a real node adds image pull and container start to
 * every cold start, which the pool avoids too.
 */
import { ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import { getRunnerGroup } from "../harness/environment.ts";
import { eventually } from "../harness/wait.ts";
import type { BenchContext } from "./context.ts";
import { distribution, type Figure } from "./report.ts";

export async function measureWarmPool(ctx: BenchContext, jobs: number): Promise<Figure[]> {
  const { gitea, custom } = ctx.env;
  const figures: Figure[] = [];
  for (const mode of ["cold", "warm"] as const) {
    const org = `start-${mode}`;
    const pool = mode === "warm" ? 2 : 0;
    const { port, operator } = await ctx.startRepositoryGroup(org, { maxActiveRunners: 4, minIdleRunners: pool }, [
      "--log-level",
      "info",
      "--poll-interval",
      "10m",
      "--webhook-secret",
      `${org}/tokens:webhook`,
    ]);
    /** The status of the newest job named `name`, looking through every page of the repository's jobs. */
    const jobStatus = async (name: string): Promise<string | undefined> => {
      for (let page = 1;; page++) {
        const answer = await gitea.listJobs({ kind: "repo", owner: org, repo: "app" }, { limit: 50, page });
        const job = answer.jobs.find((entry) => entry.name === name);
        if (job) return job.status;
        if (answer.jobs.length < 50) return undefined;
      }
    };
    const latencies: number[] = [];
    try {
      await ctx.addWebhook(org, "app", port);
      for (let n = 1; n <= jobs; n++) {
        // Jobs arrive slower than the pool refills: wait until it is full again.
        await eventually(`${pool} idle runners registered`, async () => {
          const group = await getRunnerGroup(custom, org, "app");
          const idle = (group.status as { idleRunners?: number } | undefined)?.idleRunners ?? 0;
          const registered = (await gitea.listRunners()).filter((runner) => runner.name.startsWith("app-warm-"));
          return idle === pool && registered.length >= pool;
        }, { timeoutMs: 120_000 });
        const name = `${mode}${n}`;
        const path = `.gitea/workflows/${name}.yaml`;
        await gitea.pushWorkflow(org, "app", path, ownPathWorkflow(path, simpleJob(name, org, 0)));
        const pushedAt = performance.now();
        await eventually(`job ${name} started`, async () => {
          const status = await jobStatus(name);
          return status !== undefined && status !== "queued" && status !== "waiting";
        }, { timeoutMs: 120_000, intervalMs: 100 });
        latencies.push((performance.now() - pushedAt) / 1000);
        await eventually(`job ${name} done`, async () => (await jobStatus(name)) === "completed", {
          timeoutMs: 120_000,
        });
      }
    } finally {
      await ctx.stopOperator(operator);
    }
    await ctx.deleteNamespace(org);
    figures.push({
      part: `start latency, ${jobs} single pushes, push mode, real runners`,
      what: `push accepted -> job in progress, ${mode === "warm" ? "minIdleRunners 2" : "no warm pool"}`,
      unit: "s",
      distribution: distribution(latencies),
      note: mode === "cold"
        ? "polled every 100 ms through Gitea's API, so up to 0.1 s of observation delay"
        : undefined,
    });
  }
  return figures;
}
