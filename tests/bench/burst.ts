/**
 * Burst: G repositories, each with its own repo-scope RunnerGroup, get a workflow with an M-job matrix pushed at the
 * same moment (G x M jobs queued at once), in poll mode. For every job: from the push being accepted by Gitea's API to
 * its runner Job existing (the API server's audit log, see audit_creates.ts), split at the moment the operator's poll
 * first listed the job (the forge observer): Gitea's and the poll's part before, the operator's own part after. Also
 * the runner Job rate during the burst against the raw create rate of rounds of the same size measured in the same
 * round (the API server alone before the burst, and right after it under the same Gitea load, in the burst's shape and
 * at the moment the operator saw its jobs; with a backlog, after polling the same backlog in twin repositories),
 * duplicates, and the operator's Kubernetes API requests (audit log). Before a live burst, the operator creates as many
 * runner Jobs as the raw loop's warm-up. A live burst's rounds share one operator process; a backlog's each start one.
 *
 * Runner pods are never scheduled (see `unschedulable`), so a 500-job burst costs no runner processes. Gitea 1.26 has
 * no limit on a matrix's size or on queued jobs per repository (`modules/actions/jobparser` and act's `GetMatrixes`
 * expand any cartesian product; GitHub's 256-job cap is not enforced), so 5 x 100 is one run of 100 jobs per repository.
 * Jobs are created by Gitea after the push is accepted (its `push_update` queue), which is part of the first split.
 */
import { ownPathWorkflow } from "../harness/gitea.ts";
import { waitForFirstPoll } from "../harness/environment.ts";
import { labelKeys } from "../../src/runner_group/runner_job.ts";
import { describeError } from "../../src/log.ts";
import type { BenchContext } from "./context.ts";
import type { OperatorProcess } from "../harness/operator.ts";
import { operatorUser, unschedulable } from "./context.ts";
import { AuditedCreates } from "./audit_creates.ts";
import { runnerJobsOf } from "../harness/queries.ts";
import {
  rawCreateAfterPoll,
  rawCreateRound,
  rawCreateUnderPush,
  type RawRound,
  rawWarmUpJobs,
  waitForQueued,
  whenListed,
} from "./raw_create.ts";
import { auditedRequests, cpuSeconds } from "./probes.ts";
import { type Figure, unionMs } from "./report.ts";
import { burstFigures, type BurstRound, type BurstShape, type FailedRound } from "./burst_figures.ts";

export type { BurstShape } from "./burst_figures.ts";

/** Parses `5x20` or `5x20*3` (three rounds). */
export function parseBurstShape(text: string): BurstShape {
  const match = /^(\d+)x(\d+)(?:\*(\d+))?$/.exec(text.trim());
  if (!match || Number(match[1]) < 1 || Number(match[2]) < 1 || Number(match[3] ?? "1") < 1) {
    throw new Error(`Cannot parse burst "${text}": expected GROUPSxJOBS or GROUPSxJOBS*ROUNDS, such as 5x20*3`);
  }
  return { groups: Number(match[1]), jobsPerGroup: Number(match[2]), rounds: Number(match[3] ?? "1") };
}

export interface BurstOptions {
  pollInterval: string;
  /**
   * The operator starts only once every job is queued and Gitea is quiet (an operator started or restarted with a
   * backlog): its first polls see all jobs. Its rate is compared with a raw round that polls the same backlog in twin
   * repositories as the operator polls and then creates (see `rawCreateAfterPoll`), and with the API server alone.
   */
  backlog?: boolean;
  /** Creates in flight of the raw round measured right before each burst. */
  createConcurrency: number;
}

export interface BurstResult {
  shape: BurstShape;
  /** Seconds from push accepted to runner Job, per job (all rounds). */
  acceptedToJob: number[];
  /** Seconds from push accepted to the job being seen by the operator's poll. */
  acceptedToSeen: number[];
  /** Seconds from seen to runner Job: the operator's own part. */
  seenToJob: number[];
  rounds: BurstRound[];
  /** Rounds that did not finish: left out of the figures, and named in their notes. */
  failed: FailedRound[];
  figures: Figure[];
}

/** After this many failed rounds a shape's remaining rounds are skipped: something is wrong beyond one round. */
const failedRoundsLimit = 2;

/** A job `name` on the `burst` label with an n-job matrix. */
const matrixJob = (name: string, jobs: number): string =>
  `  ${name}:\n    runs-on: burst\n    strategy:\n      matrix:\n        n: [${
    Array.from({ length: jobs }, (_, index) => index + 1).join(", ")
  }]\n    steps:\n      - run: echo \${{ matrix.n }}\n`;

export async function measureBurst(ctx: BenchContext, shape: BurstShape, options: BurstOptions): Promise<BurstResult> {
  const { gitea, custom } = ctx.env;
  const total = shape.groups * shape.jobsPerGroup;
  const result: BurstResult = {
    shape,
    acceptedToJob: [],
    acceptedToSeen: [],
    seenToJob: [],
    rounds: [],
    failed: [],
    figures: [],
  };
  const backlog = options.backlog === true;
  const tagOf = (round: number): string =>
    `${backlog ? "backlog" : "burst"}-${shape.groups}x${shape.jobsPerGroup}-${round}`;
  const operatorArgs = (namespaces: string[]): string[] => [
    "--namespaces",
    namespaces.join(","),
    "--poll-interval",
    options.pollInterval,
    "--log-level",
    "info",
  ];
  // Live bursts: one operator serves every round, watching each round's namespace, as a running operator serves one
  // burst after another. A new process per round would create each burst's runner Jobs while V8 still compiles the
  // code they run: about a hundred functions, 33-45 ms of compile time, during each measured 100-job burst (traced
  // with --trace-opt on 29b15a9), which an operator that has been running has done long before. So round 1 is the
  // operator's first burst, later rounds find its code compiled. A backlog's operator starts in its round (below).
  const shared = backlog ? undefined : await ctx.startOperator(
    `operator-burst-${shape.groups}x${shape.jobsPerGroup}`,
    operatorArgs(Array.from({ length: shape.rounds }, (_, index) => tagOf(index + 1))),
  );
  try {
    // A failed round is reported and the next one runs: the finished rounds still make the part's figures.
    for (let round = 1; round <= shape.rounds && result.failed.length < failedRoundsLimit; round++) {
      try {
        await measureRound(round);
      } catch (error) {
        const message = describeError(error);
        result.failed.push({ round, error: message });
        ctx.say(`  ${tagOf(round)} failed: ${message}`);
      }
    }
    const skipped = shape.rounds - result.rounds.length - result.failed.length;
    if (skipped > 0) ctx.say(`  ${skipped} rounds skipped after ${failedRoundsLimit} failed`);
  } finally {
    if (shared) await ctx.stopOperator(shared);
  }

  async function measureRound(round: number): Promise<void> {
    const tag = tagOf(round);
    await gitea.createOrg(tag);
    await ctx.createNamespace(tag);
    const start = (): Promise<OperatorProcess> => ctx.startOperator(`operator-${tag}`, operatorArgs([tag]));
    let operator = shared;
    let stopSampling = (): void => {};
    // A round that fails leaves nothing behind for the next: its operator stops and its namespace goes.
    try {
      const groups = Array.from({ length: shape.groups }, (_, index) => `g${index + 1}`);
      const twins = groups.map((group) => `twin-${group}`);
      for (const twin of twins) await gitea.createRepo(tag, twin);
      for (const group of groups) {
        await gitea.createRepo(tag, group);
        await ctx.createGroup(tag, group, {
          scope: "repo",
          org: tag,
          repo: group,
          giteaURL: ctx.forge.url,
          labels: ["burst"],
          maxActiveRunners: Math.min(10_000, 2 * shape.jobsPerGroup),
          template: { nodeSelector: unschedulable },
        });
      }
      const creates = await AuditedCreates.follow(ctx.auditLogPath, operatorUser, tag);
      // Live: as the raw loop warms its client up, the running operator creates as many runner Jobs before the
      // measured push; their jobs and runner Jobs stay queued (no runner pod is ever scheduled).
      const perGroup = operator ? Math.ceil(rawWarmUpJobs / shape.groups) : 0;
      if (operator) {
        await Promise.all(groups.map((group) => waitForFirstPoll(custom, tag, group)));
        const warmUpPath = ".gitea/workflows/warm-up.yaml";
        const warmUp = ownPathWorkflow(warmUpPath, matrixJob("warm-up", perGroup));
        const warmUpAt = Date.now();
        await Promise.all(groups.map((group) => gitea.pushWorkflow(tag, group, warmUpPath, warmUp)));
        await creates.waitFor(perGroup * shape.groups, warmUpAt, 120_000);
      }
      // The limit right now, with this operator idle, so that both rates see the same load on a shared machine.
      const raw = await rawCreateRound(ctx, `${tag}-raw`, total, options.createConcurrency);
      const path = ".gitea/workflows/burst.yaml";
      const workflow = ownPathWorkflow(path, matrixJob("burst", shape.jobsPerGroup));
      const accepted = new Map<string, number>();
      let operatorPid = operator?.pid();
      let cpuAtPush = operatorPid === undefined ? undefined : cpuSeconds(operatorPid);
      const pushedAt = Date.now();
      // Live: when Gitea lists each group's jobs, to place the twins' creates (below).
      const listing = backlog ? undefined : whenListed(ctx, tag, groups, shape.jobsPerGroup + perGroup);
      await Promise.all(groups.map(async (group) => {
        await gitea.pushWorkflow(tag, group, path, workflow);
        accepted.set(group, Date.now());
      }));
      if (backlog) {
        // The twins get the same backlog, for the raw round after the polls (below).
        await Promise.all(twins.map((twin) => gitea.pushWorkflow(tag, twin, path, workflow)));
        // Untimed: Gitea is asked once a second; its queueing time grows with the backlog (2 x 5x100 took over 2 min
        // on a 2-core AMD EPYC machine on 73ce7fc), so the limit grows by 0.3 s per job.
        const all = [...groups, ...twins];
        const limitMs = 120_000 + 300 * all.length * shape.jobsPerGroup;
        await waitForQueued(ctx, tag, all, shape.jobsPerGroup, { everyMs: 1_000, timeoutMs: limitMs });
        // Gitea's work on the push goes on for a while after its jobs are listed.
        await new Promise((resolve) => setTimeout(resolve, 5_000));
        // The operator's CPU counts from its first poll of this round's repositories, where the raw round's does.
        const started = await start();
        stopSampling = ctx.forge.onJobsRequest((path) => {
          if (cpuAtPush !== undefined || !path.includes(`/repos/${tag}/`)) return;
          operatorPid = started.pid();
          if (operatorPid !== undefined) cpuAtPush = cpuSeconds(operatorPid);
        });
        operator = started;
      }
      await creates.waitFor(total, pushedAt, 600_000);
      const operatorCpu = cpuAtPush === undefined ? undefined : cpuSeconds(operatorPid!) - cpuAtPush;
      stopSampling();
      // Anything beyond one runner Job per job (a duplicate) would come within a poll or two.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await creates.read();
      const labels = new Map(
        (await runnerJobsOf(ctx.env, tag)).map((job) => [job.metadata!.name!, job.metadata!.labels]),
      );
      const added = creates.since(pushedAt).map((job) => {
        const jobLabels = labels.get(job.name);
        if (!jobLabels) throw new Error(`Runner Job ${tag}/${job.name} was created during the burst but is gone`);
        return { ...job, labels: jobLabels };
      });
      const times = added.map((job) => job.at).sort((a, b) => a - b);
      const samples = { acceptedToJob: [] as number[], acceptedToSeen: [] as number[], seenToJob: [] as number[] };
      const perJob = new Map<string, number>();
      const busy: [number, number][] = [];
      const windows = new Map<string, { seen?: number; first: number; last: number }>();
      for (const job of added) {
        const group = job.labels[labelKeys.groupName];
        const window = windows.get(group) ?? { first: Infinity, last: -Infinity };
        windows.set(group, window);
        window.first = Math.min(window.first, job.at - pushedAt);
        window.last = Math.max(window.last, job.at - pushedAt);
        const id = job.labels[labelKeys.jobId];
        perJob.set(id, (perJob.get(id) ?? 0) + 1);
        const pushed = accepted.get(job.labels[labelKeys.groupName])!;
        samples.acceptedToJob.push((job.at - pushed) / 1000);
        const seen = ctx.forge.seenAt(Number(id));
        if (seen !== undefined) {
          window.seen = Math.min(window.seen ?? Infinity, seen - pushedAt);
          busy.push([seen, job.at]);
          samples.acceptedToSeen.push((seen - pushed) / 1000);
          samples.seenToJob.push((job.at - seen) / 1000);
        }
      }
      const span = (times.at(-1)! - times[0]) / 1000;
      const rate = span > 0 ? (times.length - 1) / span : Infinity;
      const busyRate = busy.length > 0 ? busy.length / (unionMs(busy) / 1000) : Number.NaN;
      const twinRound = {
        owner: tag,
        repos: twins,
        jobsPerRepo: shape.jobsPerGroup,
        concurrency: options.createConcurrency,
      };
      let loadedRaw: RawRound;
      if (backlog) {
        // The reference needs Gitea quiet again, as it was when the operator started.
        await ctx.stopOperator(operator!);
        operator = undefined;
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        loadedRaw = await rawCreateAfterPoll(ctx, { ...twinRound, namespace: `${tag}-polled` });
      } else {
        // The limit under the burst's own load: Gitea works on a push for seconds, on the API server's cores, after a
        // delay of its own that differs from push to push. So each twin's Jobs start as long after Gitea listed its
        // jobs as the operator saw its group's jobs after Gitea listed them (at once when either is unknown).
        const listed = await listing!;
        const seenAfterListed = groups.map((group) => {
          const seen = windows.get(group)?.seen;
          const at = listed.get(group);
          return seen === undefined || at === undefined ? 0 : Math.max(0, pushedAt + seen - at);
        });
        loadedRaw = await rawCreateUnderPush(ctx, {
          ...twinRound,
          namespace: `${tag}-loaded`,
          push: (repo) => gitea.pushWorkflow(tag, repo, path, workflow),
          startAfterListedMs: seenAfterListed,
        });
      }
      const duplicates = [...perJob.values()].reduce((sum, count) => sum + count - 1, 0);
      const kubeRequests = await auditedRequests(ctx.auditLogPath, operatorUser, pushedAt, times.at(-1)! + 1);
      // Only a finished round's samples count.
      result.acceptedToJob.push(...samples.acceptedToJob);
      result.acceptedToSeen.push(...samples.acceptedToSeen);
      result.seenToJob.push(...samples.seenToJob);
      result.rounds.push({
        jobs: added.length,
        rate,
        busyRate,
        rawRate: raw.rate,
        loadedRawRate: loadedRaw.rate,
        ...(operatorCpu === undefined ? {} : { operatorCpuMsPerJob: (operatorCpu * 1000) / total }),
        rawCpuMsPerJob: raw.cpuMsPerJob,
        ...(backlog ? { loadedRawCpuMsPerJob: loadedRaw.cpuMsPerJob } : {}),
        duplicates,
        kubeRequests,
        groups: [...windows].map(([group, window]) => ({ group, ...window })).sort((a, b) => a.first - b.first),
      });
      ctx.say(
        `  burst ${tag}: ${added.length} runner Jobs, last ${((times.at(-1)! - pushedAt) / 1000).toFixed(2)} s after ` +
          `the push, ${rate.toFixed(1)} Jobs/s first to last, ${busyRate.toFixed(1)} Jobs/s while busy ` +
          `(raw ${raw.rate.toFixed(1)} Jobs/s just before` +
          `, ${loadedRaw.rate.toFixed(1)} Jobs/s ${backlog ? "after polling the twins" : "under a twin push"}), ` +
          `${kubeRequests.total} API requests`,
      );
    } finally {
      stopSampling();
      if (operator && operator !== shared) await ctx.stopOperator(operator);
      await ctx.deleteNamespace(tag);
    }
  }

  result.figures = burstFigures({ ...result, shape, backlog });
  return result;
}
