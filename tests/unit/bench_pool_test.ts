/**
 * Pooling the rate targets' rounds over runs (tests/bench/pool.ts) and the median's interval it rests on
 * (`medianInterval` in tests/bench/report.ts).
 */
import assert from "node:assert/strict";
import { formatPooled, pool, roundsOf, verdictOf } from "../bench/pool.ts";
import { medianInterval } from "../bench/report.ts";

Deno.test("the median's interval takes the order statistics the binomial allows, with their exact coverage", () => {
  // 9 samples: P(B <= 1) = 10/512 <= 0.025 < P(B <= 2) = 46/512, so [x(2), x(8)], covering 1 - 20/512.
  const nine = [9, 1, 8, 2, 7, 3, 6, 4, 5];
  const close = (actual: ReturnType<typeof medianInterval>, low: number, high: number, coverage: number): void => {
    assert.deepEqual([actual?.low, actual?.high], [low, high]);
    assert.ok(Math.abs(actual!.coverage - coverage) < 1e-12, `coverage ${actual!.coverage}, not ${coverage}`);
  };
  close(medianInterval(nine), 2, 8, 1 - 20 / 512);
  // 6 samples is the fewest with an interval at 95 %: [min, max], covering 1 - 2/64; 5 have none.
  close(medianInterval([6, 5, 4, 3, 2, 1]), 1, 6, 1 - 2 / 64);
  assert.equal(medianInterval([1, 2, 3, 4, 5]), undefined);
  // A lower confidence narrows it: at 0.5, 9 samples give [x(3), x(7)] (P(B <= 2) = 46/512 <= 0.25 < 130/512).
  close(medianInterval(nine, 0.5), 3, 7, 1 - 92 / 512);
  // Large n does not underflow: 2,000 samples give an interval around the middle, covering at least 95 %.
  const many = medianInterval(Array.from({ length: 2000 }, (_, index) => index));
  assert.ok(many && many.low > 940 && many.low < 1000 && many.high > 1000 && many.high < 1060, JSON.stringify(many));
  assert.ok(many.coverage >= 0.95 && many.coverage < 0.96);
  assert.throws(() => medianInterval(nine, 1), /between 0 and 1/);
});

const results = (commit: string, burst: number[][], backlog: number[][] = []): unknown => ({
  machine: { commit, cpu: "AMD EPYC" },
  parts: [
    { part: "raw", detail: { rounds: [] } },
    {
      part: "burst",
      detail: [{
        shape: { groups: 5, jobsPerGroup: 20, rounds: burst.length },
        rounds: burst.map(([busyRate, loadedRawRate]) => ({ busyRate, loadedRawRate })),
      }],
    },
    {
      part: "backlog",
      detail: backlog.length === 0 ? [] : [{
        shape: { groups: 5, jobsPerGroup: 100, rounds: backlog.length },
        rounds: backlog.map(([busyRate, loadedRawRate]) => ({ busyRate, loadedRawRate })),
      }],
    },
  ],
});

Deno.test("rounds of several runs are pooled by part and shape, their ratios as the run's own target takes them", () => {
  const first = roundsOf("a.json", results("aaa", [[400, 500], [450, 500]], [[300, 400]]));
  const second = roundsOf("b.json", results("bbb", [[500, 500], [null as unknown as number, 500]]));
  const pooled = pool([first, second]);
  assert.deepEqual(pooled.map((entry) => [entry.part, entry.shape, entry.ratios, entry.commits]), [
    ["backlog", "5x100", [75], ["aaa"]],
    ["burst", "5x20", [80, 90, 100], ["aaa", "bbb"]],
  ]);
  const table = formatPooled(pooled);
  assert.match(table, /\| burst +\| 5x20 +\| 3 +\| 90 % +\| \(fewer than 6 rounds\) +\| 3 +\| too few rounds \|/);
  assert.match(table, /Commits pooled: aaa, bbb\./);
});

Deno.test("the verdict says which side of 80 % the median's interval lies on, or that it spans it", () => {
  assert.equal(verdictOf(medianInterval([81, 82, 83, 84, 85, 86])), "above");
  assert.equal(verdictOf(medianInterval([70, 71, 72, 73, 74, 79.9])), "below");
  assert.equal(verdictOf(medianInterval([70, 75, 79, 81, 85, 90])), "undecided");
  assert.equal(verdictOf(medianInterval([90, 90, 90])), "too few rounds");
});

Deno.test("a file that is not the benchmark's results, or has no burst or backlog rounds, is named in the error", () => {
  assert.throws(
    () => roundsOf("x.json", { parts: [] }),
    /x\.json is not the JSON that `deno task bench -- --out` writes/,
  );
  assert.throws(() => roundsOf("y.json", results("ccc", [])), /y\.json has no finished burst or backlog rounds/);
  const broken = results("ddd", [[1, 2]]) as { parts: { part: string; detail: unknown }[] };
  broken.parts[1].detail = [{ shape: { groups: 5 }, rounds: [] }];
  assert.throws(() => roundsOf("z.json", broken), /z\.json: the burst part's rounds cannot be read/);
});
