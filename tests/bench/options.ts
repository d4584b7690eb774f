/** The benchmark's command line: which parts to run and their sizes. */
import { parseArgs } from "node:util";
import { type BurstShape, parseBurstShape } from "./burst.ts";

export const parts = ["raw", "burst", "backlog", "push", "idle", "memory", "latency", "warm-pool"] as const;
export type Part = typeof parts[number];

export interface BenchArgs {
  parts: Part[];
  /** Where the JSON goes; default `bench-results.json` in a new temporary folder. */
  out?: string;
  createConcurrency: number;
  rawJobs: number;
  rawRounds: number;
  bursts: BurstShape[];
  backlogBursts: BurstShape[];
  burstPollInterval: string;
  pushSamples: number;
  idleSeconds: number;
  cachedJobs: number;
  latencyJobs: number;
  /**
   * kube-controller-manager's Job controller during the parts that compare create rates (raw, burst, backlog). Paused
   * by default: on a machine where everything shares a few cores, its work on the new Jobs' pods lands inside the
   * operator's window but mostly after a raw round's shorter one, so the comparison would measure the cores.
   */
  jobController: "paused" | "running";
}

/** A bad command line; the runner prints the message and the usage, and exits with code 2. */
export class BenchUsageError extends Error {
  override name = "BenchUsageError";
}

export const benchUsage = `Usage: deno task bench [-- flags]

Measures the operator against the local control plane and Gitea, prints a table and writes JSON.

  --only PARTS               comma-separated parts to run (default all): ${parts.join(", ")}
  --skip PARTS               parts not to run
  --out FILE                 the JSON results (default: bench-results.json in a new temporary folder)
  --create-concurrency N     creates in flight for the raw rate, and the operator's flag when it has one (default 8)
  --raw-jobs N               Jobs per raw round (default 500)
  --raw-rounds N             raw rounds (default 3)
  --bursts LIST              GROUPSxJOBS[*ROUNDS], comma-separated (default 5x20*9,5x100*3)
  --backlog-bursts LIST      the same for an operator started with the jobs already queued (default 5x20*9,5x100*3)
  --burst-poll-interval D    the operator's --poll-interval during bursts (default 2s)
  --push-samples N           single pushes in push mode (default 20)
  --idle-seconds N           idle window (default 120)
  --cached-jobs N            runner Jobs created in each of the memory part's two steps (default 3000)
  --latency-jobs N           jobs of the spawn-latency and warm-pool parts (default 20)
  --job-controller MODE      paused (default) or running: kube-controller-manager's Job controller during the raw,
                             burst and backlog parts; paused, the Jobs they create get no pods on either side of
                             the comparison (the other parts always run it)`;

function positiveInteger(flag: string, text: string, min = 1): number {
  if (!/^\d+$/.test(text) || Number(text) < min) {
    throw new BenchUsageError(`Invalid value "${text}" for --${flag}: expected a whole number from ${min}`);
  }
  return Number(text);
}

function partList(flag: string, text: string): Part[] {
  const names = text.split(",").map((name) => name.trim()).filter(Boolean);
  for (const name of names) {
    if (!(parts as readonly string[]).includes(name)) {
      throw new BenchUsageError(`Unknown part "${name}" in --${flag}: expected some of ${parts.join(", ")}`);
    }
  }
  return names as Part[];
}

export function parseBenchArgs(args: readonly string[]): BenchArgs {
  let values: Record<string, string | boolean | undefined>;
  try {
    // `deno task bench -- --only burst` passes the separator on.
    ({ values } = parseArgs({
      args: args.filter((arg) => arg !== "--"),
      strict: true,
      options: {
        only: { type: "string" },
        skip: { type: "string" },
        out: { type: "string" },
        "create-concurrency": { type: "string", default: "8" },
        "raw-jobs": { type: "string", default: "500" },
        "raw-rounds": { type: "string", default: "3" },
        bursts: { type: "string", default: "5x20*9,5x100*3" },
        "backlog-bursts": { type: "string", default: "5x20*9,5x100*3" },
        "burst-poll-interval": { type: "string", default: "2s" },
        "push-samples": { type: "string", default: "20" },
        "idle-seconds": { type: "string", default: "120" },
        "cached-jobs": { type: "string", default: "3000" },
        "latency-jobs": { type: "string", default: "20" },
        "job-controller": { type: "string", default: "paused" },
      },
    }));
  } catch (error) {
    throw new BenchUsageError(error instanceof Error ? error.message : String(error));
  }
  const text = (name: string): string => String(values[name]);
  let selected: Part[] = values.only === undefined ? [...parts] : partList("only", text("only"));
  if (values.skip !== undefined) {
    const skipped = partList("skip", text("skip"));
    selected = selected.filter((part) => !skipped.includes(part));
  }
  if (selected.length === 0) throw new BenchUsageError("No part left to run: check --only and --skip");
  if (!/^\d+(ms|s|m)$/.test(text("burst-poll-interval"))) {
    throw new BenchUsageError(
      `Invalid value "${text("burst-poll-interval")}" for --burst-poll-interval: expected a duration such as 2s`,
    );
  }
  const jobController = text("job-controller");
  if (jobController !== "paused" && jobController !== "running") {
    throw new BenchUsageError(`Invalid value "${jobController}" for --job-controller: expected paused or running`);
  }
  let bursts: BurstShape[];
  let backlogBursts: BurstShape[];
  try {
    bursts = text("bursts").split(",").map(parseBurstShape);
    backlogBursts = text("backlog-bursts").split(",").map(parseBurstShape);
  } catch (error) {
    throw new BenchUsageError(error instanceof Error ? error.message : String(error));
  }
  return {
    parts: parts.filter((part) => selected.includes(part)),
    out: values.out === undefined ? undefined : text("out"),
    createConcurrency: positiveInteger("create-concurrency", text("create-concurrency")),
    rawJobs: positiveInteger("raw-jobs", text("raw-jobs"), 2),
    rawRounds: positiveInteger("raw-rounds", text("raw-rounds")),
    bursts,
    backlogBursts,
    burstPollInterval: text("burst-poll-interval"),
    pushSamples: positiveInteger("push-samples", text("push-samples")),
    idleSeconds: positiveInteger("idle-seconds", text("idle-seconds"), 30),
    cachedJobs: positiveInteger("cached-jobs", text("cached-jobs")),
    latencyJobs: positiveInteger("latency-jobs", text("latency-jobs")),
    jobController,
  };
}
