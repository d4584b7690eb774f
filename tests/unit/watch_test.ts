/**
 * The watch's idle timeout, against a local HTTP server: data keeps a watch open past the timeout, silence ends it
 * with a TimeoutError, and so does a server that never sends the headers.
 */
import assert from "node:assert/strict";
import { StaticCredentials } from "../../src/kube/credentials.ts";
import { KubeConfig } from "../../src/kube/kubeconfig.ts";
import { StreamingWatch } from "../../src/kube/watch.ts";

const idleTimeoutMs = 150;

/** Runs one watch against `handler`; resolves with the events' names, the error given to `done`, and when it came. */
async function watchOnce(
  handler: (request: Request) => Response | Promise<Response>,
  beforeShutdown: () => void = () => {},
): Promise<{ names: string[]; error: unknown; afterMs: number }> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  try {
    const kubeConfig = new KubeConfig(
      `http://127.0.0.1:${server.addr.port}`,
      [],
      new StaticCredentials({ headers: {} }),
      "test",
    );
    const names: string[] = [];
    const done = Promise.withResolvers<unknown>();
    const startedAt = performance.now();
    const controller = await new StreamingWatch(kubeConfig, { idleTimeoutMs }).watch(
      "/apis/batch/v1/jobs",
      {},
      (
        _type,
        object,
      ) => names.push(String((object as { metadata?: { name?: string } }).metadata?.name)),
      (error) => done.resolve(error),
    );
    let guard: ReturnType<typeof setTimeout> | undefined;
    const error = await Promise.race([
      done.promise,
      new Promise((_, reject) => {
        guard = setTimeout(() => reject(new Error("the watch did not end within 5 s")), 5_000);
      }),
    ]).finally(() => {
      clearTimeout(guard);
      controller.abort();
    });
    return { names, error, afterMs: performance.now() - startedAt };
  } finally {
    beforeShutdown();
    await server.shutdown();
  }
}

const line = (name: string): Uint8Array =>
  new TextEncoder().encode(`${JSON.stringify({ type: "ADDED", object: { metadata: { name } } })}\n`);

Deno.test("a watch that keeps sending stays open past the idle timeout, and ends once it has been silent that long", async () => {
  const sent = 8;
  const spacingMs = 50;
  let cancelled: Promise<void> | undefined;
  const result = await watchOnce(() => {
    let timer: ReturnType<typeof setInterval> | undefined;
    let count = 0;
    const ended = Promise.withResolvers<void>();
    cancelled = ended.promise;
    const body = new ReadableStream<Uint8Array>({
      start(controller): void {
        timer = setInterval(() => {
          controller.enqueue(line(`job-${++count}`));
          if (count === sent) clearInterval(timer);
        }, spacingMs);
      },
      cancel(): void {
        clearInterval(timer);
        ended.resolve();
      },
    });
    return new Response(body, { headers: { "content-type": "application/json;stream=watch" } });
  });
  // 8 events 50 ms apart last 400 ms, longer than the 150 ms timeout: each one moved the deadline.
  assert.deepEqual(result.names, Array.from({ length: sent }, (_, index) => `job-${index + 1}`));
  assert.ok(result.error instanceof DOMException && result.error.name === "TimeoutError", String(result.error));
  assert.ok(result.afterMs >= sent * spacingMs + idleTimeoutMs - 20, `ended after ${result.afterMs} ms`);
  await cancelled;
});

Deno.test("a watch whose server never answers ends with a TimeoutError", async () => {
  const release = Promise.withResolvers<void>();
  const result = await watchOnce(async () => {
    await release.promise;
    return new Response("", { status: 503 });
  }, () => release.resolve());
  assert.deepEqual(result.names, []);
  assert.ok(result.error instanceof DOMException && result.error.name === "TimeoutError", String(result.error));
  assert.ok(result.afterMs >= idleTimeoutMs - 20, `ended after ${result.afterMs} ms`);
});
