/**
 * The reused-buffer body reader under the watches (record_reader.ts): records found whatever the cut of the stream,
 * through a BYOB reader of a byte stream and of a real fetch body, records longer than the buffer, and the limit.
 */
import assert from "node:assert/strict";
import { readRecords, readText } from "../../src/kube/record_reader.ts";
import { readFrames } from "../../src/kube/watch.ts";

/** Frames of the given sizes, each filled with its index, as apimachinery's framer writes them. */
function framed(sizes: number[]): Uint8Array {
  const total = sizes.reduce((sum, size) => sum + 4 + size, 0);
  const out = new Uint8Array(total);
  let at = 0;
  sizes.forEach((size, index) => {
    new DataView(out.buffer, at, 4).setUint32(0, size);
    out.fill(index % 251, at + 4, at + 4 + size);
    at += 4 + size;
  });
  return out;
}

/** Free space of the reader's buffer at each read of a byte stream (a default reader offers none). */
const offered: number[] = [];

/** A byte stream (as fetch bodies are) handing out `bytes` in pieces of the sizes given, in turn. */
function byteStream(bytes: Uint8Array, pieces: number[]): ReadableStream<Uint8Array> {
  let at = 0;
  let turn = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller): void {
      offered.push(controller.byobRequest?.view?.byteLength ?? 0);
      if (at >= bytes.length) {
        controller.close();
        controller.byobRequest?.respond(0);
        return;
      }
      const size = Math.min(pieces[turn++ % pieces.length], bytes.length - at);
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

/** What readFrames delivered: each frame's size and whether every byte is its index's fill. */
async function frameSizes(body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>): Promise<number[]> {
  const sizes: number[] = [];
  await readFrames(body, () => {}, (frame) => {
    const index = sizes.length;
    assert.ok(frame.every((byte) => byte === index % 251), `frame ${index} has foreign bytes`);
    sizes.push(frame.length);
  });
  return sizes;
}

Deno.test("frames come out whole through a byte stream cut anywhere, longer than the buffer too", async () => {
  offered.length = 0;
  // 300 KB is longer than the reader's first buffer (64 KiB), so it grows, and shrinks again after.
  const sizes = [3, 0, 4000, 300_000, 17, 70_000, 5, ...Array.from({ length: 200 }, (_, index) => 1000 + index * 7)];
  for (const pieces of [[1, 2, 3], [4096], [65_536, 7], [1_000_000]]) {
    assert.deepEqual(await frameSizes(byteStream(framed(sizes), pieces)), sizes, `pieces of ${pieces}`);
  }
  // Each read lends the stream the reader's own buffer, with room for at least 16 KiB.
  assert.ok(offered.length > 0 && offered.every((free) => free >= 16 * 1024), `offered ${offered.slice(0, 5)}`);
});

Deno.test("frames come out whole from a real fetch body", async () => {
  const sizes = Array.from({ length: 3000 }, (_, index) => 2000 + ((index * 7919) % 5000));
  const bytes = framed(sizes);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    let at = 0;
    return new Response(
      new ReadableStream({
        pull(controller): void {
          if (at >= bytes.length) return controller.close();
          const size = 1 + ((at * 31) % 9000);
          controller.enqueue(bytes.slice(at, at + size));
          at += size;
        },
      }),
    );
  });
  try {
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    assert.deepEqual(await frameSizes(response.body!), sizes);
  } finally {
    await server.shutdown();
  }
});

Deno.test("async iterables are read into the same buffer", async () => {
  const sizes = [10, 100_000, 0, 20];
  const bytes = framed(sizes);
  async function* pieces(): AsyncIterable<Uint8Array> {
    for (let at = 0; at < bytes.length; at += 33_333) yield bytes.slice(at, at + 33_333);
  }
  assert.deepEqual(await frameSizes(pieces()), sizes);
});

Deno.test("what is left untaken at the end is counted, and too much untaken is an error", async () => {
  const never = (): number => 0;
  assert.equal(await readRecords(byteStream(new Uint8Array(5000), [999]), () => {}, never, 10_000), 5000);
  await assert.rejects(
    readRecords(byteStream(new Uint8Array(200_000), [4096]), () => {}, never, 100_000),
    /A record of over 100000 bytes/,
  );
  // onData is called once per read that brought bytes.
  let reads = 0;
  await readRecords(byteStream(new Uint8Array(10), [3]), () => reads++, (unread) => unread.length, 100);
  assert.equal(reads, 4);
});

Deno.test("whole answers read as text, characters cut between reads included", async () => {
  const text = `{"message":"${"héllo wörld ✓ ".repeat(20_000)}"}`;
  const bytes = new TextEncoder().encode(text);
  // Pieces of 7 bytes cut the two- and three-byte characters.
  assert.equal(await readText(byteStream(bytes, [7, 4096, 65_536])), text);
  assert.equal(await readText(null), "");
  assert.equal(await readText(byteStream(new Uint8Array(0), [1])), "");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response(text));
  try {
    // Requests in flight at once each read through their own buffer.
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => readText((await fetch(`http://127.0.0.1:${server.addr.port}/`)).body)),
    );
    assert.ok(answers.every((answer) => answer === text));
  } finally {
    await server.shutdown();
  }
});
