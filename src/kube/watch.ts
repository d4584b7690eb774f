/**
 * A Kubernetes watch over Deno's own fetch, with the kubeconfig's TLS material and headers, so that a dropped
 * connection ends the stream and reaches `done` (client-node's `Watch`, under Deno, never reported a dropped connection
 * or its own inactivity timeout; seen against a real kube-apiserver in tests/integration). It asks for bookmarks and a
 * server-side timeout so that an idle watch is renewed regularly, and ends a watch that stays silent for too long.
 * Each watch has its own HTTP/1.1 connection, closed when the watch ends. Events come as JSON lines, or in Kubernetes'
 * protobuf encoding when the watch is given a decoder (the runner Job watch, see job_protobuf.ts).
 */
import type { DecodedWatchEvent } from "./job_protobuf.ts";
import { protobufMediaType } from "./job_protobuf.ts";
import type { KubeConfig } from "./kubeconfig.ts";
import { apiUrl, httpClientOptions, type QueryValue, requestHeaders } from "./rest.ts";

type WatchCallback = (phase: string, apiObject: unknown, watchObject?: unknown) => void;
type DoneCallback = (error: unknown) => void;

export interface StreamingWatchOptions {
  /** End a watch that delivered no data for this long; `done` gets a TimeoutError and the informer re-watches. */
  idleTimeoutMs?: number;
  /** The server ends each watch after about this long (jittered). */
  serverTimeoutSeconds?: number;
  /**
   * Asks for Kubernetes' protobuf encoding and decodes each frame with this (see job_protobuf.ts); JSON is read when
   * the server answers JSON. After a frame it cannot decode, the watch ends with that error and later watches ask
   * for JSON.
   */
  decodeProtobuf?: (frame: Uint8Array) => DecodedWatchEvent;
}

/** Frames longer than this end the watch (the API server's own request limit is 3 MiB per object). */
const maxFrameBytes = 64 * 1024 * 1024;

export class StreamingWatch {
  readonly #idleTimeoutMs: number;
  readonly #serverTimeoutSeconds: number;
  #decodeProtobuf?: (frame: Uint8Array) => DecodedWatchEvent;

  constructor(readonly kubeConfig: KubeConfig, options: StreamingWatchOptions = {}) {
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.#serverTimeoutSeconds = options.serverTimeoutSeconds ?? 300;
    this.#decodeProtobuf = options.decodeProtobuf;
  }

  /** Same contract as client-node's `Watch.watch`: the returned controller aborts the watch without calling done. */
  async watch(
    path: string,
    queryParams: Record<string, unknown>,
    callback: WatchCallback,
    done: DoneCallback,
  ): Promise<AbortController> {
    const jitter = 1 + Math.random();
    const url = apiUrl(this.kubeConfig, path, {
      watch: "true",
      allowWatchBookmarks: "true",
      timeoutSeconds: Math.round(this.#serverTimeoutSeconds * jitter),
      ...(queryParams as Record<string, QueryValue>),
    });
    const credentials = await this.kubeConfig.credentials();
    const startedAt = Date.now();
    const headers = requestHeaders(credentials);
    const decodeProtobuf = this.#decodeProtobuf;
    if (decodeProtobuf) headers.accept = `${protobufMediaType}, application/json`;
    const client = Deno.createHttpClient(httpClientOptions(this.kubeConfig, credentials));

    const controller = new AbortController();
    const internal = new AbortController();
    let finished = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (error: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      internal.abort();
      client.close();
      // Aborted by the owner (the informer stopping or restarting): it expects no callback.
      if (!controller.signal.aborted) done(error);
    };
    // Data only moves the deadline; one timer checks it when due. Re-arming a timer per chunk cost about 60 us a chunk
    // (a CPU profile through a burst of 400 runner Jobs, each its own watch event).
    let lastDataAt = performance.now();
    const noteData = (): void => {
      lastDataAt = performance.now();
    };
    const armIdleTimer = (delayMs: number): void => {
      timer = setTimeout(() => {
        const silentMs = performance.now() - lastDataAt;
        if (silentMs < this.#idleTimeoutMs) return armIdleTimer(this.#idleTimeoutMs - silentMs);
        finish(new DOMException(`No data on the watch for ${this.#idleTimeoutMs} ms`, "TimeoutError"));
      }, delayMs);
    };
    controller.signal.addEventListener("abort", () => finish(controller.signal.reason));

    void (async () => {
      try {
        armIdleTimer(this.#idleTimeoutMs);
        const response = await fetch(url, { headers, client, signal: internal.signal });
        if (response.status !== 200) {
          if (response.status === 401) this.kubeConfig.unauthorized(startedAt);
          const error = new Error(`Watch of ${path} failed with status ${response.status}`) as Error & {
            statusCode?: number;
          };
          error.statusCode = response.status;
          await response.body?.cancel();
          throw error;
        }
        const body = response.body!;
        const deliver = (event: { type: string; object: unknown }): void => callback(event.type, event.object, event);
        const contentType = response.headers.get("content-type") ?? "";
        if (decodeProtobuf && contentType.startsWith(protobufMediaType)) {
          await readFrames(body, noteData, (frame) => {
            let event: DecodedWatchEvent;
            try {
              event = decodeProtobuf(frame);
            } catch (error) {
              // Not understood: this watch ends, and the next ones read JSON.
              this.#decodeProtobuf = undefined;
              throw error;
            }
            deliver(event);
          });
        } else {
          await readLines(body, noteData, deliver);
        }
        finish(null);
      } catch (error) {
        finish(error);
      }
    })();
    return controller;
  }
}

/** JSON watch events, one per line; a line that is not JSON is skipped. */
async function readLines(
  body: ReadableStream<Uint8Array>,
  onData: () => void,
  deliver: (event: { type: string; object: unknown }) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body) {
    onData();
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line === "") continue;
      let event: { type: string; object: unknown };
      try {
        event = JSON.parse(line);
      } catch {
        continue;
      }
      deliver(event);
    }
  }
}

/**
 * Length-delimited frames (a 4-byte big-endian length, then the frame), as apimachinery's framer writes them.
 *
 * A fetch body is a byte stream, read here through a BYOB reader into one buffer that is reused for every read: the
 * body's own chunks, taken through `for await`, cost a process that has just started about 0.3 ms of CPU each in
 * Deno 2.9's stream machinery against 0.14 ms this way (tests/bench/NOTES.md), and the runner Job watch sends a chunk
 * for nearly every event. `deliver` gets a view into that buffer: it must decode the frame before it returns and
 * keep nothing of its bytes (decodeJobWatchEvent copies out strings and numbers only). A stream that is not a byte
 * stream is read chunk by chunk.
 */
export async function readFrames(
  body: ReadableStream<Uint8Array>,
  onData: () => void,
  deliver: (frame: Uint8Array) => void,
): Promise<void> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch {
    return await readFrameChunks(body, onData, deliver);
  }
  let buffer = new ArrayBuffer(readBufferBytes);
  let filled = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read(new Uint8Array(buffer, filled));
      // The read transfers the buffer: its bytes live on in the returned view's buffer.
      if (value) buffer = value.buffer as ArrayBuffer;
      if (done) break;
      if (value.byteLength === 0) continue;
      onData();
      filled += value.byteLength;
      const bytes = new Uint8Array(buffer, 0, filled);
      const { consumed, needed } = deliverFrames(bytes, deliver);
      bytes.copyWithin(0, consumed, filled);
      filled -= consumed;
      if (needed > buffer.byteLength || (needed <= readBufferBytes && buffer.byteLength > readBufferBytes)) {
        // A frame longer than the buffer: a buffer that holds it, and the usual size again once it has passed.
        const resized = new Uint8Array(Math.max(needed, readBufferBytes));
        resized.set(new Uint8Array(buffer, 0, filled));
        buffer = resized.buffer;
      }
    }
  } finally {
    reader.releaseLock();
  }
  if (filled > 0) throw new Error(`The watch ended inside a frame (${filled} bytes left)`);
}

/** The buffer a frame watch reads into; a longer frame gets a buffer of its own size while it is read. */
const readBufferBytes = 64 * 1024;

async function readFrameChunks(
  body: ReadableStream<Uint8Array>,
  onData: () => void,
  deliver: (frame: Uint8Array) => void,
): Promise<void> {
  let pending: Uint8Array = new Uint8Array(0);
  for await (const chunk of body) {
    onData();
    if (pending.length === 0) pending = chunk;
    else {
      const joined = new Uint8Array(pending.length + chunk.length);
      joined.set(pending);
      joined.set(chunk, pending.length);
      pending = joined;
    }
    pending = pending.subarray(deliverFrames(pending, deliver).consumed);
  }
  if (pending.length > 0) throw new Error(`The watch ended inside a frame (${pending.length} bytes left)`);
}

/**
 * Delivers the whole frames at the start of `bytes`; says how many bytes they took and how many the next frame needs
 * in all, its length included (0 while its length has not come).
 */
function deliverFrames(bytes: Uint8Array, deliver: (frame: Uint8Array) => void): { consumed: number; needed: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (bytes.length - offset >= 4) {
    const length = view.getUint32(offset);
    if (length > maxFrameBytes) throw new Error(`A watch frame of ${length} bytes is too long`);
    if (bytes.length - offset - 4 < length) return { consumed: offset, needed: 4 + length };
    deliver(bytes.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  return { consumed: offset, needed: 0 };
}
