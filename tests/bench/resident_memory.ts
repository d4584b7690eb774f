/**
 * The operator's whole-process resident memory (VmRSS) with the idle fleet of 22 groups, and its growth per 1,000
 * cached runner Jobs: runner-labelled Jobs are created in the watched namespace (suspended, so no pods) in two equal
 * steps, the operator's Job informer caches them, and resident memory is sampled after each step has settled. Each
 * figure is the median of several samples. The growth is the slope from idle to the last step, and each step's own
 * slope is shown beside it: on this project's machine the resident memory of one process moves by 5-10 MiB between
 * samples as V8 and malloc grow and hand back their heaps, so steps of 1,000 Jobs gave per-1,000 slopes anywhere
 * from 5 to 12 MiB; steps of 3,000 (the default) gave 5.4-8.1 in five runs. (Module-load memory is measured
 * elsewhere; this is the running process.)
 */
import type { V1Job } from "@kubernetes/client-node";
import type { BenchContext } from "./context.ts";
import { runnerShapedJob } from "./context.ts";
import { ensureFleet } from "./fleet.ts";
import { residentMiB } from "./probes.ts";
import { atMost, distribution, type Figure } from "./report.ts";

export interface MemoryResult {
  idleMiB: number[];
  /** Cached runner Jobs after each step, and the samples taken then. */
  steps: { cachedJobs: number; samplesMiB: number[] }[];
  growthPer1000MiB: number;
  figures: Figure[];
}

const samples = 10;
const sampleEveryMs = 2_000;
/** Time for the informer to receive the last Jobs and the heap to settle before sampling again. */
const settleMs = 30_000;

async function sample(pid: number): Promise<number[]> {
  const values: number[] = [];
  for (let index = 0; index < samples; index++) {
    values.push(residentMiB(pid));
    await new Promise((resolve) => setTimeout(resolve, sampleEveryMs));
  }
  return values;
}

export async function measureResidentMemory(ctx: BenchContext, jobsPerStep: number): Promise<MemoryResult> {
  const fleet = await ensureFleet(ctx);
  const idleMiB = await sample(fleet.pid);
  const steps: MemoryResult["steps"] = [];
  for (let step = 1; step <= 2; step++) {
    // Runner Jobs of a group that does not exist, of another forge: cached, but no group of the fleet runs them. No
    // owner reference, or the garbage collector would delete them for their missing owner.
    const jobs: V1Job[] = Array.from({ length: jobsPerStep }, (_, index) => {
      const job = runnerShapedJob(
        { name: "cached", namespace: fleet.namespace, uid: crypto.randomUUID(), giteaUrl: "http://cached.invalid" },
        (step - 1) * jobsPerStep + index + 1,
      );
      job.metadata!.ownerReferences = undefined;
      job.spec!.suspend = true;
      return job;
    });
    let next = 0;
    await Promise.all(Array.from({ length: ctx.options.createConcurrency }, async () => {
      while (next < jobs.length) {
        await ctx.env.batch.createNamespacedJob({ namespace: fleet.namespace, body: jobs[next++] });
      }
    }));
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    steps.push({ cachedJobs: step * jobsPerStep, samplesMiB: await sample(fleet.pid) });
  }
  const idle = distribution(idleMiB);
  const last = steps[steps.length - 1];
  const growthPer1000MiB = ((distribution(last.samplesMiB).median - idle.median) * 1000) / last.cachedJobs;
  const part = `memory, ${fleet.targets} groups`;
  return {
    idleMiB,
    steps,
    growthPer1000MiB,
    figures: [
      {
        part,
        what: "resident memory, idle",
        unit: "MiB",
        distribution: idle,
        target: atMost(idle.median, 100, "MiB (median)"),
      },
      ...steps.map((step) => ({
        part,
        what: `resident memory with ${step.cachedJobs} cached runner Jobs`,
        unit: "MiB",
        distribution: distribution(step.samplesMiB),
      })),
      {
        part,
        what: `growth per 1,000 cached runner Jobs (idle -> ${last.cachedJobs})`,
        unit: "MiB",
        value: growthPer1000MiB,
        target: atMost(growthPer1000MiB, 10, "MiB"),
        note: `each step: ${stepSlopes(idle.median, steps).map((slope) => slope.toFixed(2)).join(", ")} MiB per 1,000`,
      },
    ],
  };
}

/** Each step's growth per 1,000 cached runner Jobs, from the step before it (idle for the first). */
export function stepSlopes(idleMiB: number, steps: readonly { cachedJobs: number; samplesMiB: number[] }[]): number[] {
  let before = { cachedJobs: 0, mib: idleMiB };
  return steps.map((step) => {
    const mib = distribution(step.samplesMiB).median;
    const slope = ((mib - before.mib) * 1000) / (step.cachedJobs - before.cachedJobs);
    before = { cachedJobs: step.cachedJobs, mib };
    return slope;
  });
}
