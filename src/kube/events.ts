/**
 * Kubernetes Events about RunnerGroups, written off the hot path and aggregated the way client-go's event correlator
 * does (`tools/record/events_cache.go`):
 *
 * - `record()` only queues: a reconcile never waits for an Event write. A background writer sends the queue with a
 *   bounded number of writes in flight.
 * - The same event (object, type, reason, message) again within the correlation window increments `count` and moves
 *   `lastTimestamp` of the Event already written (a JSON patch) instead of creating another one; occurrences that
 *   arrive while it waits in the queue are written as one.
 * - An object's events of one type and reason with more than `similarBurst` different messages within the window
 *   (a burst of runner Jobs for one group) get one Event with the message "(combined from similar events): <latest>"
 *   from then on, counted the same way.
 * - The queue is bounded: when it is full the oldest waiting event is dropped, counted and logged, so a slow or
 *   unreachable API server never blocks a reconcile nor grows the memory. Every occurrence that is not written (queue
 *   full, a write that failed, or left at stop) is reported to `onDropped` (the operator counts it in a metric).
 * - `stop()` drains what is queued within a bounded time, for a graceful shutdown.
 */
import type { CoreV1Event } from "@kubernetes/client-node";
import type { CoreV1Api } from "./api.ts";
import { describeError, logger, redact } from "../log.ts";
import { apiStatus, isNamespaceTerminating } from "./client.ts";

export interface EventTarget {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

/** The calls the recorder makes (client-node's CoreV1Api, or a fake in tests). */
export type EventWriter = Pick<CoreV1Api, "createNamespacedEvent" | "patchNamespacedEvent">;

export interface EventRecorderOptions {
  /** How long the same event keeps counting on one Event, and similar messages are counted together. Default 10 min. */
  correlationWindowMs?: number;
  /** Different messages of one reason for one object within the window before they are combined. Default 10. */
  similarBurst?: number;
  /** Most events waiting to be written; beyond it the oldest is dropped. Default 1000. */
  maxQueued?: number;
  /** Most writes in flight at once. Default 4. */
  maxInFlight?: number;
  /** Told about occurrences that will not be written, and why. */
  onDropped?: (reason: DropReason, occurrences: number) => void;
  now?: () => number;
}

/**
 * Why occurrences were not written: the queue was full, the API server refused or failed the write, the Event's
 * namespace is being deleted (see {@linkcode isNamespaceTerminating}; not a failure, so not logged as one), or at stop.
 */
export type DropReason = "queue_full" | "write_failed" | "namespace_terminating" | "shutdown";

type EventType = "Normal" | "Warning";

/** What the recorder knows of one Event in the API (one series of occurrences). */
interface Series {
  target: EventTarget;
  type: EventType;
  reason: string;
  message: string;
  /** The Event's name once created. */
  name?: string;
  /** Occurrences written so far. */
  count: number;
  /** Occurrences recorded but not written yet. */
  pending: number;
  firstTimestamp: number;
  lastTimestamp: number;
}

/** Different messages seen for one object, type and reason within the window. */
interface Similar {
  messages: Set<string>;
  lastAt: number;
}

export const combinedPrefix = "(combined from similar events): ";

/** Kubernetes times have seconds precision. */
const apiTime = (ms: number): Date => new Date(Math.floor(ms / 1000) * 1000);

export class EventRecorder {
  readonly #writer: EventWriter;
  readonly #windowMs: number;
  readonly #similarBurst: number;
  readonly #maxQueued: number;
  readonly #maxInFlight: number;
  readonly #now: () => number;
  readonly #series = new Map<string, Series>();
  readonly #similar = new Map<string, Similar>();
  /** Keys of series with pending occurrences, oldest first (a Set keeps insertion order). */
  readonly #queue = new Set<string>();
  readonly #inFlight = new Set<string>();
  readonly #idleWaiters: (() => void)[] = [];
  #dropped = 0;
  readonly #onDropped: (reason: DropReason, occurrences: number) => void;
  #lastDropLog = -Infinity;
  #lastPrune = -Infinity;
  #stopped = false;
  readonly #log = logger("events");

  constructor(
    writer: EventWriter,
    readonly component: string,
    readonly instance: string,
    options: EventRecorderOptions = {},
  ) {
    this.#writer = writer;
    this.#windowMs = options.correlationWindowMs ?? 10 * 60_000;
    this.#similarBurst = options.similarBurst ?? 10;
    this.#maxQueued = options.maxQueued ?? 1000;
    this.#maxInFlight = options.maxInFlight ?? 4;
    this.#now = options.now ?? Date.now;
    this.#onDropped = options.onDropped ?? (() => {});
  }

  /** Occurrences dropped because the queue was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Events waiting to be written, and writes in flight. */
  get backlog(): number {
    return this.#queue.size + this.#inFlight.size;
  }

  /**
   * Queues an event and returns at once; it is written in the background. Never throws. (It returns a settled promise
   * so that callers written for the synchronous recorder keep working.)
   */
  record(target: EventTarget, type: EventType, reason: string, message: string): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    try {
      this.#enqueue(target, type, reason, redact(message).slice(0, 1024));
    } catch (error) {
      this.#log.warn("Cannot queue event {reason}: {error}", { reason, error: describeError(error) });
    }
    return Promise.resolve();
  }

  /** Writes what is queued, waiting at most `timeoutMs`; what is left then is dropped and logged. */
  async stop(timeoutMs = 2_000): Promise<void> {
    this.#stopped = true;
    if (this.backlog > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const idle = new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      await Promise.race([idle, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    const left = [...this.#queue].reduce((sum, key) => sum + (this.#series.get(key)?.pending ?? 0), 0);
    if (left > 0) {
      this.#log.warn("Stopping with {count} events not written after {ms} ms", { count: left, ms: timeoutMs });
      this.#onDropped("shutdown", left);
    }
    this.#queue.clear();
  }

  #enqueue(target: EventTarget, type: EventType, reason: string, message: string): void {
    const now = this.#now();
    this.#forgetOld(now);
    const similarKey = `${target.uid}|${target.namespace}/${target.name}|${type}|${reason}`;
    let similar = this.#similar.get(similarKey);
    if (!similar || now - similar.lastAt > this.#windowMs) {
      similar = { messages: new Set(), lastAt: now };
      this.#similar.set(similarKey, similar);
    }
    similar.lastAt = now;
    let key = `${similarKey}|${message}`;
    let text = message;
    if (!similar.messages.has(message)) {
      if (similar.messages.size < this.#similarBurst) {
        similar.messages.add(message);
      } else {
        key = `${similarKey}|*`;
        text = `${combinedPrefix}${message}`;
      }
    }
    let series = this.#series.get(key);
    if (series && now - series.lastTimestamp > this.#windowMs && !this.#inFlight.has(key)) {
      // Too old to count on: a new Event (the API server may have expired the old one anyway).
      this.#series.delete(key);
      series = undefined;
    }
    if (!series) {
      series = { target, type, reason, message: text, count: 0, pending: 0, firstTimestamp: now, lastTimestamp: now };
      this.#series.set(key, series);
    }
    series.pending++;
    series.lastTimestamp = now;
    series.message = text;
    if (!this.#queue.has(key)) {
      if (this.#queue.size >= this.#maxQueued) this.#dropOldest(now);
      this.#queue.add(key);
    }
    this.#pump();
  }

  #dropOldest(now: number): void {
    const oldest = this.#queue.values().next().value!;
    this.#queue.delete(oldest);
    const series = this.#series.get(oldest)!;
    this.#dropped += series.pending;
    this.#onDropped("queue_full", series.pending);
    series.pending = 0;
    // One warning per 10 s at most: an overflow comes in storms.
    if (now - this.#lastDropLog >= 10_000) {
      this.#lastDropLog = now;
      this.#log.warn("The event queue is full ({max}); dropped the oldest events ({dropped} so far)", {
        max: this.#maxQueued,
        dropped: this.#dropped,
      });
    }
  }

  /** Starts writes while there is room: never two writes of one series at once, so one Event per series. */
  #pump(): void {
    for (const key of this.#queue) {
      if (this.#inFlight.size >= this.#maxInFlight) break;
      if (this.#inFlight.has(key)) continue;
      this.#queue.delete(key);
      this.#inFlight.add(key);
      void this.#write(key).finally(() => {
        this.#inFlight.delete(key);
        this.#pump();
        if (this.backlog === 0) this.#idleWaiters.splice(0).forEach((resolve) => resolve());
      });
    }
  }

  async #write(key: string): Promise<void> {
    const series = this.#series.get(key)!;
    const occurrences = series.pending;
    series.pending = 0;
    if (occurrences === 0) return;
    const { target } = series;
    try {
      if (series.name !== undefined) {
        try {
          await this.#writer.patchNamespacedEvent({
            namespace: target.namespace,
            name: series.name,
            // A JSON patch (client-node's default patch type for Events): only the counters and the latest message.
            body: [
              { op: "replace", path: "/count", value: series.count + occurrences },
              { op: "replace", path: "/lastTimestamp", value: apiTime(series.lastTimestamp).toISOString() },
              { op: "replace", path: "/message", value: series.message },
            ],
          });
          series.count += occurrences;
          return;
        } catch (error) {
          // Expired (Events live an hour by default) or deleted: start a new one.
          if (apiStatus(error) !== 404) throw error;
          series.name = undefined;
          series.count = 0;
          series.firstTimestamp = series.lastTimestamp;
        }
      }
      const created: CoreV1Event = await this.#writer.createNamespacedEvent({
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
          reason: series.reason,
          message: series.message,
          type: series.type,
          count: series.count + occurrences,
          firstTimestamp: apiTime(series.firstTimestamp),
          lastTimestamp: apiTime(series.lastTimestamp),
          source: { component: this.component },
          reportingComponent: this.component,
          reportingInstance: this.instance,
        },
      });
      series.name = created.metadata?.name;
      series.count += occurrences;
    } catch (error) {
      if (isNamespaceTerminating(error)) {
        this.#onDropped("namespace_terminating", occurrences);
        this.#log.debug("Not recording event {reason} on {namespace}/{name}: its namespace is being deleted", {
          reason: series.reason,
          namespace: target.namespace,
          name: target.name,
        });
        return;
      }
      this.#onDropped("write_failed", occurrences);
      this.#log.warn("Cannot record event {reason} on {namespace}/{name}: {error}", {
        reason: series.reason,
        namespace: target.namespace,
        name: target.name,
        error: describeError(error),
      });
    }
  }

  /** Forgets series and similar-message sets older than the window, once there are many (at most once a minute). */
  #forgetOld(now: number): void {
    if (this.#series.size + this.#similar.size < 10_000 || now - this.#lastPrune < 60_000) return;
    this.#lastPrune = now;
    for (const [key, series] of this.#series) {
      if (now - series.lastTimestamp > this.#windowMs && !this.#queue.has(key) && !this.#inFlight.has(key)) {
        this.#series.delete(key);
      }
    }
    for (const [key, similar] of this.#similar) if (now - similar.lastAt > this.#windowMs) this.#similar.delete(key);
  }
}
