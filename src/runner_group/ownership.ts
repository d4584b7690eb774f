/**
 * Which group runs a queued job when several could: a pure, deterministic rule, so that groups reconciled in
 * parallel (or by different operator processes) agree without talking to each other.
 *
 * Among the groups that can run the job (same Gitea instance, scope covers the job's repository, labels match, spec
 * valid, not paused), the most specific scope wins (repo, then org or user, then global); a tie goes to the group
 * whose `namespace/name` sorts first.
 */
import type { QueuedJob } from "../forge/gitea_client.ts";
import { canRunJob, type RunnerLabel } from "../forge/labels.ts";
import { isPaused, type RunnerGroup, type RunnerGroupScope } from "./schema.ts";
import { validateGroup } from "./validate.ts";

/** What the rule needs to know of a group. */
export interface GroupCoverage {
  key: string;
  forge: string;
  scope: RunnerGroupScope;
  owner?: string;
  repo?: string;
  labels: readonly RunnerLabel[];
  paused: boolean;
}

const specificity: Record<RunnerGroupScope, number> = { repo: 3, org: 2, user: 2, global: 1 };

/** Normalises a Gitea base URL so that equal instances compare equal. */
export function forgeKey(giteaUrl: string): string {
  const url = new URL(giteaUrl);
  return `${url.protocol}//${url.host.toLowerCase()}${url.pathname.replace(/\/+$/, "")}`;
}

/** Whether a group's scope includes the job's repository (Gitea owner and repository names ignore case). */
export function scopeCovers(group: GroupCoverage, job: QueuedJob): boolean {
  const same = (a: string | undefined, b: string): boolean => a !== undefined && a.toLowerCase() === b.toLowerCase();
  switch (group.scope) {
    case "global":
      return true;
    case "org":
    case "user":
      return same(group.owner, job.owner);
    case "repo":
      return same(group.owner, job.owner) && same(group.repo, job.repo);
  }
}

/**
 * The key of the group that runs `job` on `forge`, or undefined when none can. `asIfRunning` names a paused group
 * to treat as running: the owner it would be, for counting the jobs a paused group would run.
 */
export function chooseOwnerGroup(
  forge: string,
  job: QueuedJob,
  groups: readonly GroupCoverage[],
  asIfRunning?: string,
): string | undefined {
  let best: GroupCoverage | undefined;
  for (const group of groups) {
    if (
      (group.paused && group.key !== asIfRunning) || group.forge !== forge || !scopeCovers(group, job) ||
      !canRunJob(group.labels, job.runsOn)
    ) {
      continue;
    }
    if (
      best === undefined || specificity[group.scope] > specificity[best.scope] ||
      (specificity[group.scope] === specificity[best.scope] && group.key < best.key)
    ) {
      best = group;
    }
  }
  return best?.key;
}

/** What the rule needs of a group; undefined for a group whose spec is invalid (it runs no jobs). */
export function coverageOf(key: string, group: Pick<RunnerGroup, "spec">): GroupCoverage | undefined {
  const validated = validateGroup(group);
  if (!validated.ok) return undefined;
  const { spec, labels } = validated;
  return {
    key,
    forge: forgeKey(spec.giteaURL),
    scope: spec.scope,
    owner: spec.scope === "org" ? spec.org : spec.scope === "user" ? spec.user : spec.org ?? spec.user,
    repo: spec.repo,
    labels,
    paused: isPaused(spec),
  };
}

/**
 * What the ownership rule needs of every group, parsed again only when a group's spec changes: a new generation (or
 * uid), or a new resourceVersion for an object without a generation. Status writes and finalizer patches change only
 * the resourceVersion, and a burst brings a status write per group, each of which used to parse every spec again.
 */
export class CoverageCache {
  readonly #entries = new Map<
    string,
    { uid: string; generation?: number; resourceVersion?: string; coverage?: GroupCoverage }
  >();

  constructor(readonly keyOf: (namespace: string, name: string) => string) {}

  /** The coverages of the groups that are valid and not being deleted. */
  of(groups: readonly RunnerGroup[]): GroupCoverage[] {
    const result: GroupCoverage[] = [];
    for (const group of groups) {
      const { namespace, name, uid, generation, resourceVersion } = group.metadata;
      const key = this.keyOf(namespace, name);
      let entry = this.#entries.get(key);
      const current = entry !== undefined && entry.uid === uid &&
        (generation !== undefined ? entry.generation === generation : entry.resourceVersion === resourceVersion);
      if (!entry || !current) {
        entry = { uid, generation, resourceVersion, coverage: coverageOf(key, group) };
        this.#entries.set(key, entry);
      }
      if (entry.coverage && !group.metadata.deletionTimestamp) result.push(entry.coverage);
    }
    return result;
  }

  forget(key: string): void {
    this.#entries.delete(key);
  }
}
