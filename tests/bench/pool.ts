/**
 * `deno task bench:pool A.json B.json ...`: the burst and backlog rate targets over the rounds of several runs of
 * `deno task bench -- --out F`. One run's median of 3 to 9 rounds lands on either side of 80 % on this project's
 * machine kind, so the verdict on a target should rest on rounds pooled over runs of the same code. For each part and
 * shape this prints the rounds' ratios (rate while busy / the raw round under the same load, as the run's own target
 * takes them), their median, a distribution-free 95 % interval for it, how many rounds reached 80 %, and which way
 * the interval points: above the target, below it, or not yet either.
 *
 * Files are read as `deno task bench` writes them; one that cannot be read or has no burst or backlog rounds is named
 * in the error and nothing is printed. Rounds of different commits are pooled as given, and the commits are listed.
 */
import { z } from "zod";
import { rateTargetPercent } from "./burst_figures.ts";
import { distribution, markdownTable, type MedianInterval, medianInterval, round } from "./report.ts";

const roundSchema = z.object({ busyRate: z.number().nullable(), loadedRawRate: z.number() });
const shapeSchema = z.object({
  shape: z.object({ groups: z.number(), jobsPerGroup: z.number() }),
  rounds: z.array(roundSchema),
});
const resultsSchema = z.object({
  machine: z.object({ commit: z.string(), cpu: z.string() }),
  parts: z.array(z.object({ part: z.string(), detail: z.unknown().optional() })),
});

export interface PooledShape {
  part: "burst" | "backlog";
  shape: string;
  /** Each round's rate while busy / the raw rate under the same load, in %, in file order. */
  ratios: number[];
  commits: string[];
}

const describeIssue = (issue: z.core.$ZodIssue | undefined): string =>
  issue === undefined ? "unknown" : `${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${issue.message}`;

/** The rounds of one results file, by part and shape; a file without any is an error naming it. */
export function roundsOf(file: string, json: unknown): PooledShape[] {
  const parsed = resultsSchema.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `${file} is not the JSON that \`deno task bench -- --out\` writes: ${describeIssue(parsed.error.issues[0])}`,
    );
  }
  const pooled: PooledShape[] = [];
  for (const record of parsed.data.parts) {
    if (record.part !== "burst" && record.part !== "backlog") continue;
    const shapes = z.array(shapeSchema).safeParse(record.detail ?? []);
    if (!shapes.success) throw new Error(`${file}: the ${record.part} part's rounds cannot be read`);
    for (const { shape, rounds } of shapes.data) {
      // A round whose rate while busy could not be measured (NaN, written as null) has no ratio, as in the run.
      const ratios = rounds.flatMap((entry) =>
        entry.busyRate === null || !Number.isFinite(entry.busyRate)
          ? []
          : [(entry.busyRate / entry.loadedRawRate) * 100]
      );
      if (ratios.length === 0) continue;
      pooled.push({
        part: record.part,
        shape: `${shape.groups}x${shape.jobsPerGroup}`,
        ratios,
        commits: [parsed.data.machine.commit],
      });
    }
  }
  if (pooled.length === 0) throw new Error(`${file} has no finished burst or backlog rounds`);
  return pooled;
}

/** The shapes of several files merged: one entry per part and shape, rounds in file order. */
export function pool(perFile: readonly PooledShape[][]): PooledShape[] {
  const merged = new Map<string, PooledShape>();
  for (const shapes of perFile) {
    for (const entry of shapes) {
      const key = `${entry.part} ${entry.shape}`;
      const kept = merged.get(key);
      if (!kept) merged.set(key, { ...entry, ratios: [...entry.ratios], commits: [...entry.commits] });
      else {
        kept.ratios.push(...entry.ratios);
        for (const commit of entry.commits) if (!kept.commits.includes(commit)) kept.commits.push(commit);
      }
    }
  }
  return [...merged.values()].sort((a, b) => a.part.localeCompare(b.part) || a.shape.localeCompare(b.shape));
}

export type PooledVerdict = "above" | "below" | "undecided" | "too few rounds";

/** Where the 95 % interval of the median (`medianInterval` of the rounds' ratios) lies against the target. */
export function verdictOf(interval: MedianInterval | undefined): PooledVerdict {
  if (!interval) return "too few rounds";
  if (interval.low >= rateTargetPercent) return "above";
  if (interval.high < rateTargetPercent) return "below";
  return "undecided";
}

export function formatPooled(shapes: readonly PooledShape[]): string {
  const header = [
    "part",
    "shape",
    "rounds",
    "median",
    "95 % interval of the median",
    `rounds >= ${rateTargetPercent} %`,
    "verdict",
  ];
  const rows = shapes.map((entry) => {
    const interval = medianInterval(entry.ratios);
    return [
      entry.part,
      entry.shape,
      String(entry.ratios.length),
      `${round(distribution(entry.ratios).median)} %`,
      interval
        ? `${round(interval.low)}-${round(interval.high)} % (covers ${(interval.coverage * 100).toFixed(1)} %)`
        : "(fewer than 6 rounds)",
      String(entry.ratios.filter((ratio) => ratio >= rateTargetPercent).length),
      verdictOf(interval),
    ];
  });
  const commits = [...new Set(shapes.flatMap((entry) => entry.commits))];
  return [
    markdownTable(header, rows),
    "",
    `Commits pooled: ${commits.join(", ")}. The ratio is each round's rate while busy over the raw round under the ` +
    `same load (after the same polls for a backlog); the median is nearest-rank, as in the run's own table.`,
  ].join("\n");
}

const encoder = new TextEncoder();
const say = (line: string): void => void Deno.stdout.writeSync(encoder.encode(`${line}\n`));
const complain = (line: string): void => void Deno.stderr.writeSync(encoder.encode(`${line}\n`));

if (import.meta.main) {
  const files = Deno.args.filter((arg) => arg !== "--");
  if (files.length === 0 || files.includes("--help")) {
    say("Usage: deno task bench:pool RESULTS.json [RESULTS.json ...]   (files from deno task bench -- --out)");
    Deno.exit(files.length === 0 ? 2 : 0);
  }
  try {
    const perFile = await Promise.all(files.map(async (file) => {
      let text: string;
      try {
        text = await Deno.readTextFile(file);
      } catch (error) {
        throw new Error(`Cannot read ${file}: ${error instanceof Error ? error.message : error}`);
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (error) {
        throw new Error(`${file} is not JSON: ${error instanceof Error ? error.message : error}`);
      }
      return roundsOf(file, json);
    }));
    say(formatPooled(pool(perFile)));
  } catch (error) {
    complain(`bench:pool: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
