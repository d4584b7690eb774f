/**
 * Reads a streamed response body into one reused buffer and hands the unread bytes to a parser that takes the complete
 * records (watch frames, watch lines) from them.
 *
 * Why not the body's chunks: Deno gives JavaScript each chunk of a fetch body as a new buffer that its Rust side
 * allocated with malloc, freed only when V8 collects the chunk, and the freed memory stays in the process's malloc heap.
 * Measured on Deno 2.9.6, a local server streaming 16 MB three times in 4 KB pieces: reading the chunks grew the malloc
 * heap (`[heap]` in /proc/self/smaps) from 1.6 to 29.5 MiB, still 27.4 MiB 15 s later; reading into one buffer through
 * a BYOB reader kept it at 2.6–2.9 MiB, and the process's resident memory ended 17 MiB lower. A watch of runner Jobs
 * carries a few KB per Job, so each 1,000 Jobs that arrive through it cost resident memory that way.
 *
 * Bodies that are not byte streams (tests hand in async iterables) are copied into the same buffer chunk by chunk.
 */

/** The buffer's first size, and the least free space a read gets. */
const initialBytes = 64 * 1024;
const minimumRead = 16 * 1024;

/**
 * Takes complete records from the front of `unread` and returns how many bytes it took (0 when none is complete yet).
 * `unread` is valid only during the call: the next read reuses its memory.
 */
export type TakeRecords = (unread: Uint8Array) => number;

class RecordBuffer {
  start = 0;
  end = 0;

  constructor(public bytes: Uint8Array = new Uint8Array(initialBytes)) {}

  /** Free space for at least `free` more bytes at the end: moves the unread bytes to the front, or grows. */
  makeRoom(free: number): void {
    if (this.bytes.length - this.end >= free) return;
    const unread = this.end - this.start;
    if (this.start > 0) {
      this.bytes.copyWithin(0, this.start, this.end);
      this.start = 0;
      this.end = unread;
    }
    if (this.bytes.length - this.end >= free) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, unread + free));
    grown.set(this.bytes.subarray(0, this.end));
    this.bytes = grown;
  }

  /** After `count` new bytes: hands the unread bytes to `take`; throws when over `limit` bytes stay untaken. */
  filled(count: number, take: TakeRecords, limit: number): void {
    this.end += count;
    this.start += take(this.bytes.subarray(this.start, this.end));
    if (this.start === this.end) {
      this.start = this.end = 0;
      // A long record grew the buffer; the next ones get a small one again.
      if (this.bytes.length > 4 * initialBytes) this.bytes = new Uint8Array(initialBytes);
    } else if (this.end - this.start > limit) {
      throw new Error(`A record of over ${limit} bytes in the stream`);
    }
  }
}

/**
 * Reads `body` to its end, calling `onData` after each read and `take` with the bytes not yet taken. Resolves with the
 * number of bytes left untaken at the end (a record the stream cut off); rejects when the stream fails, `take` throws,
 * or more than `limit` bytes pile up without a complete record.
 */
export async function readRecords(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  onData: () => void,
  take: TakeRecords,
  limit: number,
): Promise<number> {
  return (await readInto(new RecordBuffer(), body, onData, take, limit)).left;
}

/**
 * A whole body as text, read through a buffer borrowed from a small pool (requests in flight each hold one), so that
 * reading answers leaves nothing in the malloc heap either (see above).
 */
export async function readText(body: ReadableStream<Uint8Array> | null): Promise<string> {
  if (body === null) return "";
  const decoder = new TextDecoder();
  let text = "";
  const buffer = await readInto(new RecordBuffer(pool.pop()), body, () => {}, (unread) => {
    text += decoder.decode(unread, { stream: true });
    return unread.length;
  }, Infinity);
  if (buffer.bytes.length === initialBytes && pool.length < pooledBuffers) pool.push(buffer.bytes);
  return text + decoder.decode();
}

/** Buffers of `initialBytes` kept for {@linkcode readText}. */
const pool: Uint8Array[] = [];
const pooledBuffers = 16;

/** Reads `body` into `buffer`; resolves with the buffer's memory (a read may move it) and the bytes left untaken. */
async function readInto(
  buffer: RecordBuffer,
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  onData: () => void,
  take: TakeRecords,
  limit: number,
): Promise<{ bytes: Uint8Array; left: number }> {
  const reader = byobReader(body);
  if (!reader) {
    for await (const chunk of body) {
      onData();
      buffer.makeRoom(chunk.length);
      buffer.bytes.set(chunk, buffer.end);
      buffer.filled(chunk.length, take, limit);
    }
    return { bytes: buffer.bytes, left: buffer.end - buffer.start };
  }
  let finished = false;
  try {
    for (;;) {
      buffer.makeRoom(minimumRead);
      const view = new Uint8Array(buffer.bytes.buffer, buffer.end, buffer.bytes.length - buffer.end);
      const { value, done } = await reader.read(view);
      // The read transfers the buffer's memory to the view it returns (the old one is detached): keep using it.
      if (value) buffer.bytes = new Uint8Array(value.buffer);
      if (done) break;
      onData();
      buffer.filled(value.length, take, limit);
    }
    finished = true;
    return { bytes: buffer.bytes, left: buffer.end - buffer.start };
  } finally {
    if (!finished) void reader.cancel().catch(() => {});
  }
}

/** A BYOB reader when the body is a byte stream (fetch bodies are); undefined otherwise. */
function byobReader(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
): ReadableStreamBYOBReader | undefined {
  if (!(body instanceof ReadableStream)) return undefined;
  try {
    return body.getReader({ mode: "byob" });
  } catch {
    return undefined;
  }
}
