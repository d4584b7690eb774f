/**
 * The limit: how fast the operator's own Kubernetes client (`makeClients` of `src/kube/client.ts`, with the operator's
 * identity) creates Jobs shaped exactly like runner Jobs, `concurrency` in flight, with no operator running. The burst
 * part compares the operator's runner Job rate with this one.
 */
import type { V1Job } from "@kubernetes/client-node";
import { type KubeClients, loadKubeConfig, makeClients } from "../../src/kube/client.ts";
import type { BenchContext } from "./context.ts";
import { runnerShapedJob, unschedulable } from "./context.ts";
import { type Distribution, distribution, type Figure } from "./report.ts";

export interface RawCreateOptions {
  jobs: number;
  rounds: number;
  concurrency: number;
}

export interface RawCreateResult {
  /** Jobs per second of each round. */
  rates: number[];
  rate: Distribution;
  createLatencyMs: Distribution;
  figures: Figure[];
}

export async function measureRawCreateRate(ctx: BenchContext, options: RawCreateOptions): Promise<RawCreateResult> {
  const { batch } = makeClients(loadKubeConfig(ctx.operatorKubeconfig, () => undefined));
  const rates: number[] = [];
  const latencies: number[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    const namespace = `raw-${round}`;
    await ctx.createNamespace(namespace);
    // A real (never reconciled) group owns the Jobs, so they carry the same owner reference as runner Jobs.
    const uid = await ctx.createGroup(namespace, "raw", {
      scope: "repo",
      org: "bench",
      repo: "bench",
      giteaURL: ctx.giteaUrl,
      labels: ["bench"],
      maxActiveRunners: 10_000,
      template: { nodeSelector: unschedulable },
    });
    const jobs = Array.from(
      { length: options.jobs },
      (_, index) => runnerShapedJob({ name: "raw", namespace, uid, giteaUrl: ctx.giteaUrl }, index + 1),
    );
    if (round === 1) {
      // Warm-up, not measured: the client's connections and the API server's first Job admissions.
      await createJobs(
        batch,
        namespace,
        Array.from(
          { length: warmUpJobs },
          (_, index) =>
            runnerShapedJob({ name: "raw", namespace, uid, giteaUrl: ctx.giteaUrl }, options.jobs + 1 + index),
        ),
        options.concurrency,
      );
    }
    const started = performance.now();
    latencies.push(...await createJobs(batch, namespace, jobs, options.concurrency));
    const seconds = (performance.now() - started) / 1000;
    rates.push(options.jobs / seconds);
    ctx.say(
      `  raw round ${round}: ${options.jobs} Jobs in ${seconds.toFixed(2)} s = ${rates.at(-1)!.toFixed(1)} Jobs/s`,
    );
    await ctx.deleteNamespace(namespace);
  }
  const rate = distribution(rates);
  const createLatencyMs = distribution(latencies);
  const part = `raw create (${options.jobs} Jobs, ${options.concurrency} in flight)`;
  return {
    rates,
    rate,
    createLatencyMs,
    figures: [
      { part, what: "Jobs per second, per round", unit: "Jobs/s", distribution: rate },
      { part, what: "one create request", unit: "ms", distribution: createLatencyMs },
    ],
  };
}

const warmUpJobs = 50;

/** Creates `jobs` with `concurrency` creates in flight; returns each create's latency in ms. */
async function createJobs(
  batch: KubeClients["batch"],
  namespace: string,
  jobs: V1Job[],
  concurrency: number,
): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < jobs.length) {
      const body = jobs[next++];
      const sent = performance.now();
      await batch.createNamespacedJob({ namespace, body });
      latencies.push(performance.now() - sent);
    }
  }));
  return latencies;
}
