/**
 * The reconcile of a deleted group: one teardown pass per reconcile (teardown.ts) until the group is released, then
 * nothing more for it. A reconcile queued before the release can run before the release's watch event reaches the
 * cache, which then still shows the group with its finalizer; without a record of the release it would tear the group
 * down again, without the API token the release forgot, and report a cleanup it could not do.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { ForgeClient } from "../forge/forge_client.ts";
import type { KubeClients } from "../kube/client.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import type { logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import type { SecretReader } from "./credentials.ts";
import type { RunnerGroup, RunnerGroupSpec } from "./schema.ts";
import { teardownForgeOf, tearDownGroup, type TeardownResult } from "./teardown.ts";

export interface DeletionOptions {
  clients: Pick<KubeClients, "batch" | "custom">;
  cache: { group(namespace: string, name: string): RunnerGroup | undefined; runnerJobs(): V1Job[] };
  events: EventRecorder;
  metrics?: OperatorMetrics;
  readSecret: SecretReader;
  connect: (spec: RunnerGroupSpec, apiToken: string) => Promise<ForgeClient>;
  /** How long a deleted group waits for busy runners and an unreachable forge. */
  timeoutMs: number;
}

export class GroupDeletions {
  /** Per group key: the uid of a deleted group released by this process, while the cache may still show it. */
  readonly #released = new Map<string, string>();

  constructor(readonly options: DeletionOptions) {}

  /** Whether this process released the deleted group already (the cache is behind). */
  wasReleased(key: string, group: RunnerGroup): boolean {
    return group.metadata.deletionTimestamp !== undefined && this.#released.get(key) === group.metadata.uid;
  }

  /** The group left the cache. */
  forget(key: string): void {
    this.#released.delete(key);
  }

  /** One teardown pass; `knownApiToken` is the one the group's last reconcile read (its Secret may be gone). */
  async tearDown(input: {
    key: string;
    group: RunnerGroup;
    knownApiToken?: string;
    target: EventTarget;
    log: ReturnType<typeof logger>;
    now: number;
  }): Promise<TeardownResult> {
    const { key, group } = input;
    const result = await tearDownGroup({
      group,
      forge: await teardownForgeOf(group, {
        knownApiToken: input.knownApiToken,
        readSecret: this.options.readSecret,
        connect: this.options.connect,
      }),
      runnerJobs: this.options.cache.runnerJobs(),
      batch: this.options.clients.batch,
      custom: this.options.clients.custom,
      events: this.options.events,
      metrics: this.options.metrics,
      target: input.target,
      log: input.log,
      now: input.now,
      timeoutMs: this.options.timeoutMs,
    });
    if (result.released) {
      // Released groups that left the cache since are dropped here: a deletion wakes the groups left, not the one gone.
      for (const released of this.#released.keys()) {
        const [namespace, name] = released.split("/");
        if (!this.options.cache.group(namespace, name)) this.#released.delete(released);
      }
      this.#released.set(key, group.metadata.uid);
    }
    return result;
  }
}
