/** Polling helpers for tests that wait for a real system to reach a state. */

export interface EventuallyOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Adds context (e.g. a log tail) to the timeout error. */
  detail?: () => Promise<string> | string;
}

/**
 * A shorter limit than {@linkcode eventually}'s default, for waits on a state the test's own action brings about
 * within seconds (a create seen by a watch, a poll's answer): 30 s before the test fails.
 */
export const waitLimit: EventuallyOptions = { timeoutMs: 30_000 };

/** Calls `check` until it returns a value other than undefined/false, and returns it; throws after the timeout. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: EventuallyOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const detail = options.detail ? `\n${await options.detail()}` : "";
      const cause = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      throw new Error(`Timed out after ${options.timeoutMs ?? 60_000} ms waiting for ${what}${cause}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 250));
  }
}
