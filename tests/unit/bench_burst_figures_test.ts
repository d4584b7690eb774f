/**
 * The burst part's figures (tests/bench/burst_figures.ts): the rate target is the median of the finished rounds'
 * ratios, and a round that failed is left out of every figure and named where the verdicts are.
 */
import assert from "node:assert/strict";
import { burstFigures, type BurstRound, type BurstSamples } from "../bench/burst_figures.ts";
import type { Figure } from "../bench/report.ts";

const round = (busyRate: number, loadedRawRate: number, duplicates = 0): BurstRound => ({
  jobs: 100,
  rate: busyRate / 2,
  busyRate,
  rawRate: 800,
  loadedRawRate,
  rawCpuMsPerJob: 0.5,
  duplicates,
  kubeRequests: { total: 102, byKind: { "create jobs": 100, "patch runnergroups/status": 2 } },
  groups: [],
});

/** One sample per job of the rounds, the i-th job's `seconds + i / 1000`. */
const perJob = (rounds: BurstRound[], seconds: number): number[] =>
  rounds.flatMap((round) => Array.from({ length: round.jobs }, (_, index) => seconds + index / 1000));

const samples = (rounds: BurstRound[], failed: BurstSamples["failed"] = []): BurstSamples => ({
  shape: { groups: 5, jobsPerGroup: 20, rounds: rounds.length + failed.length },
  backlog: true,
  rounds,
  failed,
  acceptedToJob: perJob(rounds, 1.5),
  acceptedToSeen: perJob(rounds, 1),
  seenToJob: perJob(rounds, 0.5),
});

const find = (figures: Figure[], what: RegExp): Figure => {
  const figure = figures.find((candidate) => what.test(candidate.what));
  assert.ok(figure, `no figure matches ${what}`);
  return figure;
};

Deno.test("the rate target is the median of the rounds' ratios to the raw round after the same polls", () => {
  const figures = burstFigures(samples([round(400, 500), round(450, 500), round(300, 500)]));
  const ratio = find(figures, /raw rate after the same polls/);
  assert.equal(ratio.part, "backlog 5x20 (3 rounds)");
  assert.deepEqual([ratio.distribution?.n, ratio.distribution?.median], [3, 80]);
  assert.deepEqual(ratio.target, { text: "≥ 80 % (median)", pass: true });
  assert.equal(ratio.note, undefined);
  const missed = find(burstFigures(samples([round(390, 500), round(450, 500), round(300, 500)])), /after the same/);
  assert.equal(missed.target?.pass, false);
  assert.equal(find(figures, /duplicate/).target?.pass, true);
});

Deno.test("a failed round is left out of the figures and named in the notes of the verdicts", () => {
  const failed = [{ round: 2, error: "Gitea did not queue 20 jobs in every one of g1 in 120 s" }];
  const figures = burstFigures(samples([round(400, 500), round(500, 500, 1)], failed));
  const ratio = find(figures, /raw rate after the same polls/);
  assert.equal(ratio.distribution?.n, 2);
  assert.equal(ratio.part, "backlog 5x20 (3 rounds)");
  const note = "2 of 3 rounds; round 2 failed: Gitea did not queue 20 jobs in every one of g1 in 120 s";
  assert.equal(ratio.note, note);
  assert.equal(find(figures, /duplicate/).note, note);
  assert.deepEqual(find(figures, /duplicate/).target, { text: "≤ 0", pass: false });
  assert.equal(find(figures, /job seen -> runner Job/).note, note);
  assert.equal(find(figures, /push accepted -> runner Job/).distribution?.n, 200);
  assert.equal(find(figures, /push accepted -> runner Job/).note, note);
  assert.equal(find(figures, /requests per runner Job/).value, 204 / 200);
});

Deno.test("a shape with no finished round has no figures: it fails, naming the part and why its rounds failed", () => {
  assert.throws(
    () => burstFigures(samples([], [{ round: 1, error: "boom" }])),
    /No round of backlog 5x20 finished: round 1 failed: boom/,
  );
});

Deno.test("a backlog's CPU per Job is reported for both sides from their first poll, where a round has it", () => {
  const measured = (operatorCpuMsPerJob: number, loadedRawCpuMsPerJob: number): BurstRound => ({
    ...round(400, 500),
    operatorCpuMsPerJob,
    loadedRawCpuMsPerJob,
  });
  const figures = burstFigures(samples([measured(1.2, 0.7), measured(1.8, 0.9), measured(1.5, 0.8), round(450, 500)]));
  const operator = find(figures, /operator CPU per runner Job, first poll -> last runner Job/);
  assert.deepEqual([operator.distribution?.n, operator.distribution?.median], [3, 1.5]);
  const raw = find(figures, /raw loop's CPU per Job, first poll -> last create/);
  assert.deepEqual([raw.distribution?.n, raw.distribution?.median], [3, 0.8]);
  const none = burstFigures(samples([round(400, 500)]));
  assert.equal(none.some((figure) => /CPU per (runner )?Job, first poll/.test(figure.what)), false);
});

Deno.test("with six rounds or more, the rate target's note gives the median's 95 % interval", () => {
  const nine = [300, 320, 340, 360, 380, 400, 420, 440, 460].map((busy) => round(busy, 500));
  const ratio = find(burstFigures(samples(nine)), /raw rate after the same polls/);
  assert.equal(ratio.distribution?.median, 76);
  assert.equal(ratio.note, "the median's 95 % interval is 64-88 % over 9 rounds");
});
