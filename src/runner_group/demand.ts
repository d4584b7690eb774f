/**
 * Stage 3 of the reconcile: what the group is asked to run and what it runs already, read from caches only: the
 * shared demand poller's latest answer for the group's forge target, and the runner Jobs in the informer cache.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { DemandPollers, DemandSnapshot, ForgeTarget } from "../forge/demand_poller.ts";
import type { JobsEndpoint } from "../forge/forge_client.ts";
import type { RunnerLabel } from "../forge/labels.ts";
import type { RunnerJobRecord } from "./planner.ts";
import { forgeKey } from "./ownership.ts";
import { describeRunnerJob, forgeLabel, labelKeys, runnerJobEviction } from "./runner_job.ts";
import type { RunnerGroupSpec } from "./schema.ts";

/** The jobs endpoint and expected token owner of a group. */
export function forgeTargetOf(spec: RunnerGroupSpec, token: string): ForgeTarget {
  let endpoint: JobsEndpoint;
  switch (spec.scope) {
    case "global":
      endpoint = { scope: "global" };
      break;
    case "org":
      endpoint = { scope: "org", org: spec.org! };
      break;
    case "user":
      endpoint = { scope: "user" };
      break;
    case "repo":
      endpoint = { scope: "repo", owner: (spec.org ?? spec.user)!, repo: spec.repo! };
      break;
  }
  return {
    baseUrl: spec.giteaURL,
    endpoint,
    token,
    ...(spec.scope === "user" ? { expectedUser: spec.user } : {}),
  };
}

/** Everything the planner needs to know of the world, for one group. */
export interface GroupDemand {
  /** The poller's key of the group's forge target. */
  targetKey: string;
  /** The normalised forge URL (see ownership.ts). */
  forge: string;
  /** The target's latest answer, if any. */
  snapshot?: DemandSnapshot;
  /** Whether the snapshot can be planned on: a successful answer arrived and the last attempt did not fail. */
  usable: boolean;
  /**
   * Names of the group's runners that run a job. Gitea names each job's runner; Forgejo does not, so there a runner
   * Job whose own job is running counts as busy (bound to its job by its handle on Forgejo 15, it is the one running
   * it; before 15 runners of a group may swap jobs, which leaves the count right).
   */
  busyRunners: ReadonlySet<string>;
  /** The group's own runner Jobs. */
  records: RunnerJobRecord[];
  /** Forge job ids with an unfinished runner Job of another group on the same forge. */
  activeElsewhere: Set<number>;
  /** Names of the runner Jobs in the group's namespace, finished ones too (warm slots must avoid them). */
  namesInUse: Set<string>;
  /** The group's runner Jobs that failed because their pod was disrupted (see runner_job.ts). */
  evictions: EvictedRunner[];
}

/** A runner Job whose pod was evicted, preempted or lost with its node. */
export interface EvictedRunner {
  name: string;
  uid: string;
  /** The forge job it was started for; undefined for a warm-pool runner. */
  forgeJobId?: number;
  /** The Job controller's message. */
  message: string;
}

/**
 * Subscribes the group to its forge target (the poller starts on the first subscriber) and reads the latest answer
 * and the runner Jobs from the caches.
 */
export function gatherDemand(input: {
  groupKey: string;
  namespace: string;
  uid: string;
  spec: RunnerGroupSpec;
  /** The group's runner labels: the poller lists their jobs where the forge needs labels (Forgejo < 14). */
  labels: readonly RunnerLabel[];
  apiToken: string;
  pollers: DemandPollers;
  runnerJobs: readonly V1Job[];
  now: number;
}): GroupDemand {
  const targetKey = input.pollers.subscribe(input.groupKey, {
    ...forgeTargetOf(input.spec, input.apiToken),
    labels: input.labels.map((label) => label.name),
  });
  const snapshot = input.pollers.snapshot(targetKey);
  const forge = forgeKey(input.spec.giteaURL);
  const records: RunnerJobRecord[] = [];
  const activeElsewhere = new Set<number>();
  const namesInUse = new Set<string>();
  const evictions: EvictedRunner[] = [];
  // Once per reconcile, not per cached runner Job of other groups (a sha256 each: about 1 ms per 1,000 Jobs).
  const forgeLabelValue = forgeLabel(forge);
  for (const job of input.runnerJobs) {
    if (job.metadata?.namespace === input.namespace && job.metadata.name) namesInUse.add(job.metadata.name);
    const record = describeRunnerJob(job, input.now);
    if (!record) continue;
    const labels = job.metadata?.labels ?? {};
    if (labels[labelKeys.groupUid] === input.uid) {
      records.push(record);
      const eviction = record.evicted ? runnerJobEviction(job) : undefined;
      if (eviction && job.metadata?.uid) {
        evictions.push({
          name: record.name,
          uid: job.metadata.uid,
          ...(record.forgeJobId !== undefined ? { forgeJobId: record.forgeJobId } : {}),
          message: eviction.message,
        });
      }
    } else if (
      labels[labelKeys.forge] === forgeLabelValue && record.state === "active" && record.forgeJobId !== undefined
    ) {
      activeElsewhere.add(record.forgeJobId);
    }
  }
  const usable = snapshot !== undefined && !snapshot.error && snapshot.fetchedAt > 0;
  const busyRunners = new Set(snapshot?.busyRunners ?? []);
  if (snapshot?.forge?.kind === "forgejo") {
    for (const record of records) {
      if (
        record.state === "active" && record.forgeJobId !== undefined && snapshot.runningJobIds?.has(record.forgeJobId)
      ) {
        busyRunners.add(record.name);
      }
    }
  }
  return { targetKey, forge, snapshot, usable, busyRunners, records, activeElsewhere, namesInUse, evictions };
}
