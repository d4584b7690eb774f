/**
 * What the reconciler remembers of each group from one reconcile to the next, in one place, so that a group that is
 * gone is forgotten whole. Nothing here is written to the cluster: after a restart it starts empty, and every entry
 * is one the next reconciles rebuild (idle times restart, evictions still in the cache are reported once more).
 */
import type { OrphanSweep } from "./cleanup.ts";
import type { EvictedRunner } from "./demand.ts";
import type { RunnerJobRecord } from "./planner.ts";
import type { RunnerGroup } from "./schema.ts";
import { type ValidatedGroup, validateGroup } from "./validate.ts";

export interface GroupMemory {
  /** The validated spec of the last seen generation (stage 1 runs once per generation). */
  validated?: { uid: string; generation: number; result: ValidatedGroup };
  /** The last API token read, so a deleted group can clean up even after its Secret went first. */
  apiToken?: string;
  /** When each idle runner Job was first seen idle. */
  readonly idleSince: Map<string, number>;
  /** When each offline registration without a runner Job was first seen, and when the last sweep ran. */
  readonly orphans: OrphanSweep;
  /** The warm pool size of the last reconcile, and when the pool last got smaller. */
  warmPool?: { size: number; shrunkAt?: number };
  /** Uids of the evicted runner Jobs already reported (those still in the cache). */
  reportedEvictions: Set<string>;
  /** When each active runner Job was last seen running a job in a forge answer. */
  readonly lastBusy: Map<string, number>;
}

export class GroupMemories {
  readonly #groups = new Map<string, GroupMemory>();

  /** The group's memory, empty the first time. */
  of(key: string): GroupMemory {
    let memory = this.#groups.get(key);
    if (!memory) {
      memory = {
        idleSince: new Map(),
        orphans: { sweptAt: 0, firstSeen: new Map() },
        reportedEvictions: new Set(),
        lastBusy: new Map(),
      };
      this.#groups.set(key, memory);
    }
    return memory;
  }

  /** Only reads: a group never reconciled has no memory (and gets none). */
  peek(key: string): GroupMemory | undefined {
    return this.#groups.get(key);
  }

  forget(key: string): void {
    this.#groups.delete(key);
  }
}

/**
 * Remembers this reconcile's warm pool size and returns when the pool last got smaller (the planner keeps runners
 * that became surplus by a shrink for the idle grace from that moment).
 */
export function noteWarmPool(memory: GroupMemory, size: number, now: number): number | undefined {
  const previous = memory.warmPool;
  const shrunkAt = previous && size < previous.size ? now : previous?.shrunkAt;
  memory.warmPool = { size, ...(shrunkAt !== undefined ? { shrunkAt } : {}) };
  return shrunkAt;
}

/**
 * Keeps idle times only for the runners idle now: one that took a job and went idle again starts over; one idle for
 * the first time starts now.
 */
export function noteIdleRunners(memory: GroupMemory, idle: readonly string[], now: number): void {
  const idleNow = new Set(idle);
  for (const runner of [...memory.idleSince.keys()]) if (!idleNow.has(runner)) memory.idleSince.delete(runner);
  for (const runner of idle) if (!memory.idleSince.has(runner)) memory.idleSince.set(runner, now);
}

/**
 * The runners that ran a job and have not exited yet: active runner Jobs seen running a job in an earlier forge answer
 * and not in this one. Each runner takes one job and exits (Gitea's ephemeral runner, Forgejo's `one-job`), so the
 * planner must not count one as idle: a job queued while it winds down would otherwise wait for it to exit. One that
 * has not exited `holdMs` after it was last seen busy counts as idle again, so a runner that hangs after its job is
 * still removed as an idle one. A runner whose job began and ended between two answers is never seen busy, and after
 * a restart none is known: those count as idle, as before. Only fresh forge answers may be passed in.
 */
export function noteFinishingRunners(
  memory: GroupMemory,
  runnerJobs: readonly RunnerJobRecord[],
  busy: ReadonlySet<string>,
  now: number,
  holdMs: number,
): Set<string> {
  const active = runnerJobs.filter((record) => record.state === "active").map((record) => record.name);
  const activeNow = new Set(active);
  for (const runner of [...memory.lastBusy.keys()]) if (!activeNow.has(runner)) memory.lastBusy.delete(runner);
  const finishing = new Set<string>();
  for (const runner of active) {
    if (busy.has(runner)) memory.lastBusy.set(runner, now);
    else if (now - (memory.lastBusy.get(runner) ?? -Infinity) < holdMs) finishing.add(runner);
  }
  return finishing;
}

/** The evictions not reported yet by this process; a Job that left the cache is forgotten. */
export function newEvictions(memory: GroupMemory, evictions: readonly EvictedRunner[]): EvictedRunner[] {
  const fresh = evictions.filter((evicted) => !memory.reportedEvictions.has(evicted.uid));
  memory.reportedEvictions = new Set(evictions.map((evicted) => evicted.uid));
  return fresh;
}

/**
 * Stage 1, once per spec generation: the spec changes only with a new generation, and a burst's reconciles (one per
 * change of its runner Jobs) would otherwise parse the same spec again each time.
 */
export function validateOnce(memory: GroupMemory, group: RunnerGroup): ValidatedGroup {
  const { uid, generation } = group.metadata;
  const cached = memory.validated;
  if (generation !== undefined && cached?.uid === uid && cached.generation === generation) return cached.result;
  const result = validateGroup(group);
  if (generation !== undefined) memory.validated = { uid, generation, result };
  return result;
}
