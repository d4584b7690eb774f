/**
 * Runs a reconcile function over a work queue with a bounded pool of workers. One place decides retries: a thrown
 * error means per-key backoff, `requeueAfterMs` means a timer, success means forget.
 */
import { describeError, logger } from "../log.ts";
import { WorkQueue } from "./work_queue.ts";

export interface ReconcileResult {
  requeueAfterMs?: number;
}

export type Reconcile = (key: string) => Promise<ReconcileResult>;

/** Errors that retrying cannot fix: logged once, not retried until the object changes. */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TerminalError";
  }
}

export class Controller {
  readonly queue: WorkQueue;
  readonly #log = logger("controller");
  #workers: Promise<void>[] = [];

  constructor(readonly name: string, readonly reconcile: Reconcile, queue = new WorkQueue()) {
    this.queue = queue;
  }

  /** Starts `count` workers. */
  start(count: number): void {
    for (let index = 0; index < count; index++) this.#workers.push(this.#work());
  }

  /** Stops taking keys and waits for the reconciles in flight. */
  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.#workers);
    this.#workers = [];
  }

  async #work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        const result = await this.reconcile(key);
        this.queue.forget(key);
        if (result.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
      } catch (error) {
        if (error instanceof TerminalError) {
          this.queue.forget(key);
          this.#log.error("Reconcile of {key} failed and will not be retried: {error}", {
            key,
            error: describeError(error),
          });
        } else {
          const delay = this.queue.addRateLimited(key);
          this.#log.warn("Reconcile of {key} failed, retrying in {delayMs} ms: {error}", {
            key,
            delayMs: delay,
            error: describeError(error),
          });
        }
      } finally {
        this.queue.done(key);
      }
    }
  }
}
