/**
 * The burst part's figures from its finished rounds (see burst.ts for how a round is measured): the latencies, the
 * rates and their ratios to the raw rounds with the target on the median, CPU, duplicates and API requests. A round
 * that failed is left out and named in a note on the figures that are computed over rounds, so that one failed round
 * neither hides the others nor passes unnoticed.
 */
import type { AuditedRequests } from "./probes.ts";
import { atLeast, atMost, distribution, type Figure, medianInterval, round as rounded } from "./report.ts";

/** The rate target: the median of the rounds' ratios to the raw round under the same load, at least this, in %. */
export const rateTargetPercent = 80;

export interface BurstShape {
  groups: number;
  jobsPerGroup: number;
  rounds: number;
}

export interface BurstRound {
  jobs: number;
  /** Runner Jobs per second from the first to the last runner Job. */
  rate: number;
  /**
   * Runner Jobs per second while the operator had work: over the union of each job's [seen, runner Job] interval,
   * so that time spent waiting for the next poll (which a raw create loop never waits for) does not count.
   */
  busyRate: number;
  /** The raw create rate of a round of the same size right before the burst (see raw_create.ts). */
  rawRate: number;
  /**
   * The same number of Jobs under the load the burst itself brought, in its shape and at its moment. Live: right after
   * the burst, a push of the same shape to twin repositories (which no group serves), each twin's Jobs created once
   * Gitea lists its jobs and as long after its push as the operator saw its group's jobs after that group's push, while
   * Gitea still works on the other twins (see `rawCreateUnderPush`). Backlog: once the operator has stopped, the twins'
   * backlog (queued with the groups') polled as the operator polls and each twin's Jobs created once its answer is in,
   * while Gitea answers the other polls (see `rawCreateAfterPoll`).
   */
  loadedRawRate: number;
  /**
   * CPU milliseconds per runner Job of the operator process. Live: from the push to the last runner Job (its polls
   * while Gitea queues the jobs included). Backlog: from its first poll of the round's repositories to the last runner
   * Job, in a process that has just started (its start-up before that poll not included).
   */
  operatorCpuMsPerJob?: number;
  /** The same for the raw loop's process during the raw round with the API server alone. */
  rawCpuMsPerJob: number;
  /** Backlog: the raw loop's process from its first poll to its last create, in the raw round after the polls. */
  loadedRawCpuMsPerJob?: number;
  duplicates: number;
  kubeRequests: AuditedRequests;
  /** Per group: when the poll first listed one of its jobs, and its first and last runner Job (ms since the push). */
  groups: { group: string; seen?: number; first: number; last: number }[];
}

/** A round that did not finish, and why. */
export interface FailedRound {
  round: number;
  error: string;
}

export interface BurstSamples {
  shape: BurstShape;
  backlog: boolean;
  rounds: readonly BurstRound[];
  failed: readonly FailedRound[];
  /** Seconds from push accepted to runner Job, per job (finished rounds). */
  acceptedToJob: readonly number[];
  /** Seconds from push accepted to the job being seen by the operator's poll. */
  acceptedToSeen: readonly number[];
  /** Seconds from seen to runner Job: the operator's own part. */
  seenToJob: readonly number[];
}

/** The part's name in the table: `burst 5x20 (9 rounds)`, `backlog 5x100`. */
export function burstPart(shape: BurstShape, backlog: boolean): string {
  return `${backlog ? "backlog" : "burst"} ${shape.groups}x${shape.jobsPerGroup}` +
    `${shape.rounds > 1 ? ` (${shape.rounds} rounds)` : ""}`;
}

/** The figures of a burst shape's finished rounds; there must be at least one. */
export function burstFigures(samples: BurstSamples): Figure[] {
  const { shape, backlog, rounds, failed } = samples;
  const part = burstPart(shape, backlog);
  const failures = failed.map(({ round, error }) => `round ${round} failed: ${error}`).join("; ");
  if (rounds.length === 0) throw new Error(`No round of ${part} finished: ${failures}`);
  const total = shape.groups * shape.jobsPerGroup;
  // The figures with a target, and the first, say which rounds they leave out.
  const roundsNote = failed.length === 0
    ? undefined
    : `${rounds.length} of ${rounds.length + failed.length} rounds; ${failures}`;
  const rate = distribution(rounds.map((round) => round.rate));
  const busyRates = rounds.map((round) => round.busyRate).filter((value) => !Number.isNaN(value));
  const busyRate = busyRates.length > 0 ? distribution(busyRates) : undefined;
  const duplicates = rounds.reduce((sum, round) => sum + round.duplicates, 0);
  const requests = rounds.reduce((sum, round) => sum + round.kubeRequests.total, 0);
  const jobs = rounds.reduce((sum, round) => sum + round.jobs, 0);
  const byKind: Record<string, number> = {};
  for (const round of rounds) {
    for (const [kind, count] of Object.entries(round.kubeRequests.byKind)) byKind[kind] = (byKind[kind] ?? 0) + count;
  }
  const topKinds = Object.entries(byKind).sort((a, b) => b[1] - a[1]).slice(0, 5)
    .map(([kind, count]) => `${kind} ${count}`).join(", ");
  const seenToJob = samples.seenToJob.length > 0 ? distribution(samples.seenToJob) : undefined;
  const figures: Figure[] = [
    {
      part,
      what: "push accepted -> runner Job exists",
      unit: "s",
      distribution: distribution(samples.acceptedToJob),
      ...noted(roundsNote),
    },
    ...(samples.acceptedToSeen.length > 0
      ? [{
        part,
        what: "push accepted -> job seen by the operator's poll",
        unit: "s",
        distribution: distribution(samples.acceptedToSeen),
      }]
      : []),
    {
      part,
      what: "job seen -> runner Job exists (operator's part)",
      unit: "s",
      distribution: seenToJob,
      ...(seenToJob && total === 100 ? { target: atMost(seenToJob.max, 2, "s (max)") } : {}),
      ...noted(
        samples.seenToJob.length < jobs
          ? `${jobs - samples.seenToJob.length} of ${jobs} jobs were never seen through the forge observer`
          : undefined,
        roundsNote,
      ),
    },
    { part, what: "runner Jobs per second, first to last", unit: "Jobs/s", distribution: rate },
    {
      part,
      what: "runner Jobs per second while jobs were seen, not yet created",
      unit: "Jobs/s",
      distribution: busyRate,
    },
    {
      part,
      what: "raw create rate right before each round (API server alone)",
      unit: "Jobs/s",
      distribution: distribution(rounds.map((round) => round.rawRate)),
    },
    {
      part,
      what: backlog
        ? "raw create rate after polling the twins' backlog, each twin's Jobs once its poll is answered (the same polls)"
        : "raw create rate under a twin push, each twin's Jobs as long after its listing as the operator's after theirs (the burst's load)",
      unit: "Jobs/s",
      distribution: distribution(rounds.map((round) => round.loadedRawRate)),
    },
  ];
  const measured = rounds.filter((round) => !Number.isNaN(round.busyRate));
  if (measured.length > 0) {
    figures.push({
      part,
      what: "runner Job rate while busy / raw rate, API server alone",
      unit: "%",
      distribution: distribution(measured.map((round) => (round.busyRate / round.rawRate) * 100)),
    });
    // The target: the limit under the forge work the same jobs bring, a push (live) or the polls (backlog).
    const ratios = measured.map((round) => (round.busyRate / round.loadedRawRate) * 100);
    const loaded = distribution(ratios);
    // One run's few rounds rarely decide the target on a shared machine: the median's interval says how far they do
    // (`deno task bench:pool` pools the rounds of several runs).
    const interval = medianInterval(ratios);
    const intervalNote = interval
      ? `the median's 95 % interval is ${rounded(interval.low)}-${
        rounded(interval.high)
      } % over ${ratios.length} rounds`
      : undefined;
    figures.push({
      part,
      what: `runner Job rate while busy / raw rate ${backlog ? "after the same polls" : "under the same Gitea load"}`,
      unit: "%",
      distribution: loaded,
      target: atLeast(loaded.median, rateTargetPercent, "% (median)"),
      ...noted(roundsNote, intervalNote),
    });
  }
  const operatorCpu = rounds.flatMap((round) => round.operatorCpuMsPerJob ?? []);
  if (operatorCpu.length > 0) {
    figures.push({
      part,
      what: backlog
        ? "operator CPU per runner Job, first poll -> last runner Job (a process just started)"
        : "operator CPU per runner Job, push -> last runner Job (polls included)",
      unit: "ms",
      distribution: distribution(operatorCpu),
    });
  }
  const loadedRawCpu = rounds.flatMap((round) => round.loadedRawCpuMsPerJob ?? []);
  if (loadedRawCpu.length > 0) {
    figures.push({
      part,
      what: "raw loop's CPU per Job, first poll -> last create (raw round after the same polls)",
      unit: "ms",
      distribution: distribution(loadedRawCpu),
    });
  }
  figures.push(
    {
      part,
      what: "raw loop's CPU per Job (its process, raw round with the API server alone)",
      unit: "ms",
      distribution: distribution(rounds.map((round) => round.rawCpuMsPerJob)),
    },
    {
      part,
      what: "duplicate runner Jobs",
      unit: "",
      value: duplicates,
      target: atMost(duplicates, 0, ""),
      ...noted(roundsNote),
    },
    {
      part,
      what: "operator's Kubernetes API requests per runner Job",
      unit: "",
      value: requests / jobs,
      note: `${requests} requests in all, most: ${topKinds}`,
    },
  );
  return figures;
}

/** A figure's `note` from the remarks given, none when there are none. */
function noted(...remarks: (string | undefined)[]): { note?: string } {
  const note = remarks.filter((remark) => remark !== undefined).join("; ");
  return note === "" ? {} : { note };
}
