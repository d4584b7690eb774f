/**
 * Kubernetes Events about RunnerGroups, rate-limited: the same reason and message for the same object is recorded at
 * most once per interval, so a failing forge does not produce an event per poll.
 */
import type { CoreV1Api } from "./api.ts";
import { describeError, logger, redact } from "../log.ts";

export interface EventTarget {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

export class EventRecorder {
  readonly #recent = new Map<string, number>();
  readonly #log = logger("events");

  constructor(
    readonly core: CoreV1Api,
    readonly component: string,
    readonly instance: string,
    readonly intervalMs = 5 * 60_000,
  ) {}

  /** Records an event unless the same one was recorded within the interval; never throws. */
  async record(target: EventTarget, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const now = Date.now();
    const safeMessage = redact(message).slice(0, 1024);
    const key = `${target.uid}|${reason}|${safeMessage}`;
    const last = this.#recent.get(key);
    if (last !== undefined && now - last < this.intervalMs) return;
    this.#recent.set(key, now);
    if (this.#recent.size > 10_000) {
      for (const [oldKey, at] of this.#recent) if (now - at >= this.intervalMs) this.#recent.delete(oldKey);
    }
    const time = new Date(now);
    try {
      await this.core.createNamespacedEvent({
        namespace: target.namespace,
        body: {
          metadata: { generateName: `${target.name}.`, namespace: target.namespace },
          involvedObject: {
            apiVersion: target.apiVersion,
            kind: target.kind,
            name: target.name,
            namespace: target.namespace,
            uid: target.uid,
          },
          reason,
          message: safeMessage,
          type,
          count: 1,
          firstTimestamp: time,
          lastTimestamp: time,
          source: { component: this.component },
          reportingComponent: this.component,
          reportingInstance: this.instance,
        },
      });
    } catch (error) {
      this.#log.warn("Cannot record event {reason} on {namespace}/{name}: {error}", {
        reason,
        namespace: target.namespace,
        name: target.name,
        error: describeError(error),
      });
    }
  }
}
