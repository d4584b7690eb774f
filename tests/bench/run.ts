/**
 * `deno task bench`: measures the operator against the limits in one run, on a local control plane and a real Gitea,
 * and prints a table (median / p95 / max, the targets and PASS or MISS) and writes the same as JSON. Each part is in
 * its own module; `--only` and `--skip` pick parts (`deno task bench -- --only push`), `--help` lists the flags.
 *
 * Targets are checked here, never by timed assertions in tests. The exit code is 0 when every part ran (whatever the
 * targets say), 1 when a part failed, 2 on a bad command line.
 */
import { join } from "node:path";
import { BenchContext } from "./context.ts";
import { type BurstShape, measureBurst } from "./burst.ts";
import { disposeFleet } from "./fleet.ts";
import { measureIdleCost } from "./idle_cost.ts";
import { type BenchArgs, benchUsage, BenchUsageError, parseBenchArgs, type Part } from "./options.ts";
import { measurePushSplit } from "./push_split.ts";
import { measureRawCreateRate } from "./raw_create.ts";
import { type Figure, formatTable } from "./report.ts";
import { measureResidentMemory } from "./resident_memory.ts";
import { measureSpawnLatency } from "./spawn_latency.ts";
import { measureWarmPool } from "./warm_pool.ts";

const encoder = new TextEncoder();
const say = (line: string): void => void Deno.stdout.writeSync(encoder.encode(`${line}\n`));
const complain = (line: string): void => void Deno.stderr.writeSync(encoder.encode(`${line}\n`));

interface PartRecord {
  part: Part;
  seconds: number;
  /** The 1-minute load average when the part started and ended: the machine may be shared. */
  loadBefore: number;
  loadAfter: number;
  detail?: unknown;
  error?: string;
}

function machine(): Record<string, unknown> {
  let cpu = "unknown";
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? cpu;
  } catch {
    // Not Linux; the model stays unknown.
  }
  const commit = new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stdout: "piped", stderr: "null" })
    .outputSync();
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    commit: commit.success ? new TextDecoder().decode(commit.stdout).trim() : "unknown",
  };
}

/** An error as the run reports it: its stack when it has one. */
const errorText = (error: unknown): string => error instanceof Error ? (error.stack ?? error.message) : String(error);

interface PartResult {
  figures: Figure[];
  detail?: unknown;
  /** What failed when the part measured only some of its figures. */
  error?: string;
}

async function runParts(ctx: BenchContext, args: BenchArgs, records: PartRecord[], figures: Figure[]): Promise<void> {
  /** Runs one part; a part that measured some of its figures and failed in the rest gives both. */
  const run = async (part: Part, measure: () => Promise<PartResult>): Promise<void> => {
    if (!args.parts.includes(part)) return;
    say(`\n== ${part}`);
    const started = performance.now();
    const record: PartRecord = { part, seconds: 0, loadBefore: Deno.loadavg()[0], loadAfter: 0 };
    try {
      const result = await measure();
      figures.push(...result.figures);
      record.detail = result.detail;
      for (const figure of result.figures) say(`  ${formatTable([figure]).split("\n")[2]}`);
      if (result.error !== undefined) {
        record.error = result.error;
        complain(
          result.figures.length > 0
            ? `Part ${part} gave some of its figures and failed in the rest: ${record.error}`
            : `Part ${part} failed: ${record.error}`,
        );
      }
    } catch (error) {
      record.error = errorText(error);
      complain(`Part ${part} failed: ${record.error}`);
    }
    record.seconds = (performance.now() - started) / 1000;
    record.loadAfter = Deno.loadavg()[0];
    records.push(record);
  };

  // The create-rate parts run with the Job controller paused unless asked otherwise (see BenchArgs.jobController).
  const rateParts: readonly Part[] = ["raw", "burst", "backlog"];
  const pauseJobController = args.jobController === "paused" && rateParts.some((part) => args.parts.includes(part));
  if (pauseJobController) {
    say("\nThe Job controller is paused during the raw, burst and backlog parts (--job-controller running keeps it)");
    await ctx.env.cluster.restartControllerManager(["job-controller"]);
  }
  await run("raw", async () => {
    const result = await measureRawCreateRate(ctx, {
      jobs: args.rawJobs,
      rounds: args.rawRounds,
      concurrency: args.createConcurrency,
    });
    return { figures: result.figures, detail: { rates: result.rates, createLatencyMs: result.createLatencyMs } };
  });
  /**
   * The burst shapes one after another, live or with a backlog. A shape that fails, or a round of it, does not lose
   * the others' figures; the part is reported as failed with what went wrong.
   */
  const bursts = async (shapes: readonly BurstShape[], backlog: boolean): Promise<PartResult> => {
    const results = [];
    const errors: string[] = [];
    for (const shape of shapes) {
      const name = `${shape.groups}x${shape.jobsPerGroup}`;
      try {
        const result = await measureBurst(ctx, shape, {
          pollInterval: args.burstPollInterval,
          createConcurrency: args.createConcurrency,
          backlog,
        });
        results.push(result);
        errors.push(...result.failed.map(({ round, error }) => `${name} round ${round}: ${error}`));
      } catch (error) {
        const message = errorText(error);
        errors.push(`${name}: ${message}`);
        complain(`  ${name} failed: ${message}`);
      }
    }
    return {
      figures: results.flatMap((result) => result.figures),
      detail: results.map(({ figures: _, ...rest }) => rest),
      ...(errors.length > 0 ? { error: errors.join("\n") } : {}),
    };
  };
  await run("burst", () => bursts(args.bursts, false));
  await run("backlog", () => bursts(args.backlogBursts, true));
  if (pauseJobController) await ctx.env.cluster.restartControllerManager();
  await run("push", async () => {
    const { figures, ...detail } = await measurePushSplit(ctx, args.pushSamples);
    return { figures, detail };
  });
  await run("idle", async () => {
    const { figures, ...detail } = await measureIdleCost(ctx, args.idleSeconds);
    return { figures, detail };
  });
  await run("memory", async () => {
    const { figures, ...detail } = await measureResidentMemory(ctx, args.cachedJobs);
    return { figures, detail };
  });
  await disposeFleet(ctx);
  await run("latency", async () => ({ figures: await measureSpawnLatency(ctx, args.latencyJobs) }));
  await run("warm-pool", async () => ({ figures: await measureWarmPool(ctx, args.latencyJobs) }));
}

async function main(): Promise<number> {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    say(benchUsage);
    return 0;
  }
  let args: BenchArgs;
  try {
    args = parseBenchArgs(Deno.args);
  } catch (error) {
    if (!(error instanceof BenchUsageError)) throw error;
    complain(`bench: ${error.message}\n\n${benchUsage}`);
    return 2;
  }
  const dir = await Deno.makeTempDir({ prefix: "gro-bench-" });
  const out = args.out ?? join(dir, "bench-results.json");
  const about = machine();
  say(
    `Benchmark of ${about.commit} on ${about.cpu}, ${about.cores} cores, load ${
      Deno.loadavg().map((load) => load.toFixed(2)).join(" ")
    }`,
  );
  say(`Parts: ${args.parts.join(", ")}`);
  const startedAt = new Date().toISOString();
  const records: PartRecord[] = [];
  const figures: Figure[] = [];
  say("Starting the control plane and Gitea");
  const ctx = await BenchContext.start(dir, { createConcurrency: args.createConcurrency, say });
  try {
    say(
      `The operator ${
        ctx.operatorHasCreateConcurrency ? "takes" : "has no"
      } --create-concurrency; raw creates use ${args.createConcurrency} in flight`,
    );
    await runParts(ctx, args, records, figures);
  } finally {
    await ctx.dispose();
    // GRO_TEST_KEEP=1 keeps the API server's audit log (the operator's requests, with their times) for a look after.
    if (Deno.env.get("GRO_TEST_KEEP") !== "1") {
      for (const file of ["audit.log", "audit-policy.json"]) await Deno.remove(join(dir, file)).catch(() => {});
    }
  }
  say(`\n${formatTable(figures)}`);
  const results = {
    machine: about,
    startedAt,
    finishedAt: new Date().toISOString(),
    parameters: args,
    figures,
    parts: records,
  };
  await Deno.writeTextFile(out, `${JSON.stringify(results, null, 2)}\n`);
  // The folder holds nothing else now; keep it only when the results went there.
  if (args.out !== undefined) await Deno.remove(dir).catch(() => {});
  say(`\nResults: ${out}`);
  return records.some((record) => record.error) ? 1 : 0;
}

Deno.exit(await main());
