/**
 * The limit: how fast the operator's own Kubernetes client (`makeClients` of `src/kube/client.ts`, with the operator's
 * identity) creates Jobs shaped exactly like runner Jobs, `concurrency` in flight, with no operator creating anything.
 * The `raw` part runs rounds of its own; the burst part runs one round of its size right before each burst, so that on
 * a shared machine the two rates it compares are measured under the same load.
 */
import type { V1Job } from "@kubernetes/client-node";
import { type KubeClients, loadKubeConfig, makeClients } from "../../src/kube/client.ts";
import type { BenchContext } from "./context.ts";
import { runnerShapedJob, unschedulable } from "./context.ts";
import { Limiter } from "../../src/runtime/concurrency.ts";
import { GiteaClient } from "../../src/forge/gitea_client.ts";
import { cpuSeconds } from "./probes.ts";
import { type Distribution, distribution, type Figure, unionMs } from "./report.ts";

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

export interface RawRound {
  /** Jobs per second. */
  rate: number;
  /** CPU milliseconds per Job of this process (the creating client) during the creates. */
  cpuMsPerJob: number;
  seconds: number;
  /** Milliseconds per create request. */
  latencies: number[];
}

/** A few creates before the measured ones: the client's connections and the API server's first Job admissions. */
export const rawWarmUpJobs = 20;

/**
 * One round in a new namespace (deleted afterwards, waiting until it is gone): `jobs` runner-shaped Jobs, owned by a
 * real RunnerGroup that no operator reconciles, so they carry the same owner reference as runner Jobs.
 */
export async function rawCreateRound(
  ctx: BenchContext,
  namespace: string,
  jobs: number,
  concurrency: number,
): Promise<RawRound> {
  const { batch, job, slots } = await setUpRawRound(ctx, namespace, concurrency);
  const bodies = Array.from({ length: jobs }, (_, index) => job(index + 1));
  const cpuBefore = cpuSeconds(Deno.pid);
  const started = performance.now();
  const { latencies } = await createJobs(batch, namespace, bodies, slots);
  const seconds = (performance.now() - started) / 1000;
  const cpuMsPerJob = ((cpuSeconds(Deno.pid) - cpuBefore) * 1000) / jobs;
  await ctx.deleteNamespace(namespace);
  return { rate: jobs / seconds, seconds, latencies, cpuMsPerJob };
}

/**
 * Sets a round up: the namespace, a group, and the client's connections warmed up with {@linkcode rawWarmUpJobs}
 * creates (ids from 1,000,000, clear of the measured ones). `job(id)` builds a runner-shaped Job of that group;
 * `slots` bounds the round's creates in flight to `concurrency`.
 */
async function setUpRawRound(
  ctx: BenchContext,
  namespace: string,
  concurrency: number,
): Promise<{ batch: KubeClients["batch"]; job: (id: number) => V1Job; slots: Limiter }> {
  const { batch } = makeClients(await loadKubeConfig(ctx.operatorKubeconfig, () => undefined));
  await ctx.createNamespace(namespace);
  const uid = await ctx.createGroup(namespace, "raw", {
    scope: "repo",
    org: "bench",
    repo: "bench",
    giteaURL: ctx.giteaUrl,
    labels: ["bench"],
    maxActiveRunners: 10_000,
    template: { nodeSelector: unschedulable },
  });
  const job = (id: number): V1Job => runnerShapedJob({ name: "raw", namespace, uid, giteaUrl: ctx.giteaUrl }, id);
  const slots = new Limiter(concurrency);
  const warmUp = Array.from({ length: rawWarmUpJobs }, (_, index) => job(1_000_000 + index));
  await createJobs(batch, namespace, warmUp, slots);
  return { batch, job, slots };
}

/**
 * A raw round under the load of a burst, and shaped like it: pushes to `repos` at once and, once Gitea lists one
 * repository's `jobsPerRepo` queued jobs and `startAfterListedMs[index]` has passed since then (as long as the operator
 * took to see its group's jobs after Gitea listed them, so that Gitea's work on the pushes overlaps the creates as it
 * overlapped the operator's), creates that many Jobs, every repository's creates sharing `concurrency` in flight as the
 * operator's groups share its limit. The rate counts the time when some repository's Jobs were due and not all created
 * yet (the union of each Job's [due, created]), as the burst's rate while busy counts [seen, created].
 */
export async function rawCreateUnderPush(
  ctx: BenchContext,
  input: RepoRoundInput & {
    push: (repo: string) => Promise<void>;
    /** Per repository: create no earlier than this long after Gitea listed its jobs. */
    startAfterListedMs?: readonly number[];
  },
): Promise<RawRound> {
  return await perRepositoryRound(ctx, input, {
    before: async () => {
      await Promise.all(input.repos.map((repo) => input.push(repo)));
    },
    due: async (repo, index) => {
      await waitForQueued(ctx, input.owner, [repo], input.jobsPerRepo, { everyMs: listedProbeMs });
      const delayMs = input.startAfterListedMs?.[index] ?? 0;
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      return Date.now();
    },
  });
}

/**
 * How often the bench asks Gitea whether a repository's jobs are listed: often enough to place the listing within a
 * fifth of a second, seldom enough that the probes of five repositories do not load Gitea more than polls would.
 */
export const listedProbeMs = 200;

/**
 * When Gitea first listed `jobs` queued jobs in each of `repos` (ms since epoch), asking every {@linkcode listedProbeMs};
 * a repository not listed within 2 minutes is left out. A burst's groups are probed as the loaded round probes its
 * twins, so both rounds load Gitea alike.
 */
export async function whenListed(
  ctx: BenchContext,
  owner: string,
  repos: readonly string[],
  jobs: number,
): Promise<Map<string, number>> {
  const listed = new Map<string, number>();
  await Promise.all(repos.map(async (repo) => {
    try {
      await waitForQueued(ctx, owner, [repo], jobs, { everyMs: listedProbeMs });
      listed.set(repo, Date.now());
    } catch {
      // Not listed in time: its twin's creates start once listed.
    }
  }));
  return listed;
}

/**
 * A raw round in a backlog's shape: `jobsPerRepo` jobs already queued in each of `repos`, Gitea quiet. Like an operator
 * started on that backlog, the loop first asks the forge for each repository's open jobs, with the operator's own forge
 * client and request (`GiteaClient.listOpenJobs`, one poll per repository, all at once, through the forge observer as
 * the operator's polls go), and creates a repository's Jobs once its answer is in, every repository's creates sharing
 * `concurrency` in flight. Gitea answers the later polls while the first creates run, as it does for the operator. The
 * rate counts the union of each Job's [its job seen by the poll, created], as the backlog's rate while busy does.
 */
export async function rawCreateAfterPoll(ctx: BenchContext, input: RepoRoundInput): Promise<RawRound> {
  const forge = new GiteaClient({ baseUrl: ctx.forge.url, token: ctx.env.gitea.adminToken });
  return await perRepositoryRound(ctx, input, {
    due: async (repo) => {
      const { queued } = await forge.listOpenJobs({ scope: "repo", owner: input.owner, repo });
      const answered = Date.now();
      if (queued.length < input.jobsPerRepo) {
        throw new Error(`Gitea lists ${queued.length} queued jobs in ${input.owner}/${repo}, not ${input.jobsPerRepo}`);
      }
      // The observer marks every job of one poll seen at the same moment: when that poll's last page was handed over.
      return ctx.forge.seenAt(queued[0].id) ?? answered;
    },
  });
}

interface RepoRoundInput {
  owner: string;
  repos: readonly string[];
  jobsPerRepo: number;
  namespace: string;
  concurrency: number;
}

/**
 * The frame of the rounds in a burst's shape: `before` runs once the round is set up; then, for every repository at
 * once, `due` waits until its Jobs are due and says since when (ms since epoch), and its `jobsPerRepo` Jobs are created,
 * all repositories sharing `concurrency` creates in flight. The rate counts the union of each Job's [due, created];
 * the CPU is this process's from `before`'s end.
 */
async function perRepositoryRound(ctx: BenchContext, input: RepoRoundInput, steps: {
  before?: () => Promise<void>;
  due: (repo: string, index: number) => Promise<number>;
}): Promise<RawRound> {
  const { batch, job, slots } = await setUpRawRound(ctx, input.namespace, input.concurrency);
  const bodies = input.repos.map((_, repo) =>
    Array.from({ length: input.jobsPerRepo }, (_, index) => job(repo * input.jobsPerRepo + index + 1))
  );
  const intervals: [number, number][] = [];
  const latencies: number[] = [];
  await steps.before?.();
  const cpuBefore = cpuSeconds(Deno.pid);
  await Promise.all(input.repos.map(async (repo, index) => {
    const due = await steps.due(repo, index);
    const created = await createJobs(batch, input.namespace, bodies[index], slots);
    latencies.push(...created.latencies);
    intervals.push(...created.endedAt.map((end): [number, number] => [due, end]));
  }));
  const cpuMsPerJob = ((cpuSeconds(Deno.pid) - cpuBefore) * 1000) / intervals.length;
  await ctx.deleteNamespace(input.namespace);
  const seconds = unionMs(intervals) / 1000;
  return { rate: intervals.length / seconds, seconds, latencies, cpuMsPerJob };
}

/**
 * Waits until Gitea lists `jobs` queued jobs in every one of `repos`, asking every `everyMs` (default 50), for at most
 * `timeoutMs` (default 2 minutes).
 */
export async function waitForQueued(
  ctx: BenchContext,
  owner: string,
  repos: readonly string[],
  jobs: number,
  { everyMs = 50, timeoutMs = 120_000 }: { everyMs?: number; timeoutMs?: number } = {},
): Promise<void> {
  const queued = async (repo: string): Promise<boolean> =>
    (await ctx.env.gitea.listJobs({ kind: "repo", owner, repo }, { status: ["queued"], limit: 1 })).totalCount >= jobs;
  const deadline = Date.now() + timeoutMs;
  while (!(await Promise.all(repos.map(queued))).every((done) => done)) {
    if (Date.now() > deadline) {
      throw new Error(`Gitea did not queue ${jobs} jobs in every one of ${repos} in ${timeoutMs / 1000} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export async function measureRawCreateRate(ctx: BenchContext, options: RawCreateOptions): Promise<RawCreateResult> {
  const rates: number[] = [];
  const latencies: number[] = [];
  const cpuMsPerJob: number[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    const result = await rawCreateRound(ctx, `raw-${round}`, options.jobs, options.concurrency);
    rates.push(result.rate);
    cpuMsPerJob.push(result.cpuMsPerJob);
    latencies.push(...result.latencies);
    ctx.say(
      `  raw round ${round}: ${options.jobs} Jobs in ${result.seconds.toFixed(2)} s = ${result.rate.toFixed(1)} Jobs/s`,
    );
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
      { part, what: "the client's CPU per Job (its process)", unit: "ms", distribution: distribution(cpuMsPerJob) },
    ],
  };
}

/**
 * Creates `jobs` in order through `slots` (the creates in flight, shared by every caller of the same Limiter, as the
 * operator's groups share its limit); returns each create's latency in ms and when it ended (ms since epoch).
 */
async function createJobs(
  batch: KubeClients["batch"],
  namespace: string,
  jobs: readonly V1Job[],
  slots: Limiter,
): Promise<{ latencies: number[]; endedAt: number[] }> {
  const latencies: number[] = [];
  const endedAt: number[] = [];
  await Promise.all(jobs.map((body) =>
    slots.run(async () => {
      const sent = performance.now();
      await batch.createNamespacedJob({ namespace, body });
      latencies.push(performance.now() - sent);
      endedAt.push(Date.now());
    })
  ));
  return { latencies, endedAt };
}
