/**
 * The protobuf watch's framing, the Status of ERROR events, malformed frames, and the fallback to JSON. Jobs are
 * compared with a JSON watch of the same objects on a real API server in tests/integration/protobuf_watch_test.ts; the
 * frames here are written by the small encoder below, with the field numbers of k8s.io/apimachinery v0.35.4
 * (`pkg/apis/meta/v1/generated.proto`: WatchEvent type 1, object 2; Status status 2, message 3, reason 4, code 6;
 * `pkg/runtime/generated.proto`: RawExtension raw 1; Unknown typeMeta 1, raw 2; TypeMeta apiVersion 1, kind 2).
 */
import assert from "node:assert/strict";
import { decodeJobWatchEvent } from "../../src/kube/job_protobuf.ts";
import { StaticCredentials } from "../../src/kube/credentials.ts";
import { KubeConfig } from "../../src/kube/kubeconfig.ts";
import { readFrames, StreamingWatch } from "../../src/kube/watch.ts";

const encoder = new TextEncoder();

function varint(value: number): number[] {
  const bytes: number[] = [];
  while (value >= 0x80) {
    bytes.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  bytes.push(value);
  return bytes;
}

const bytesField = (field: number, value: Uint8Array | number[]): number[] => [
  ...varint(field * 8 + 2),
  ...varint(value.length),
  ...value,
];
const stringField = (field: number, value: string): number[] => bytesField(field, [...encoder.encode(value)]);
const varintField = (field: number, value: number): number[] => [...varint(field * 8), ...varint(value)];

/** A WatchEvent frame around `object` of `kind`, in the `k8s\0` envelope. */
function watchEvent(type: string, kind: string, object: number[], envelope = true): Uint8Array {
  const unknown = [
    ...bytesField(1, [...stringField(1, "v1"), ...stringField(2, kind)]),
    ...bytesField(2, object),
  ];
  const raw = envelope ? [0x6b, 0x38, 0x73, 0x00, ...unknown] : unknown;
  return new Uint8Array([...stringField(1, type), ...bytesField(2, bytesField(1, raw))]);
}

function framed(...frames: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(frames.reduce((sum, frame) => sum + 4 + frame.length, 0));
  let offset = 0;
  for (const frame of frames) {
    new DataView(out.buffer).setUint32(offset, frame.length);
    out.set(frame, offset + 4);
    offset += 4 + frame.length;
  }
  return out;
}

/** `bytes` as a byte stream (as a fetch body is) that enqueues chunks of `size`, or as a plain stream of them. */
function chunks(bytes: Uint8Array, size: number, kind: "bytes" | "plain" = "bytes"): ReadableStream<Uint8Array> {
  let offset = 0;
  const pull = (controller: ReadableStreamDefaultController<Uint8Array> | ReadableByteStreamController): void => {
    if (offset >= bytes.length) {
      controller.close();
      // A byte stream closed under a pending BYOB read answers it with no bytes, as a fetch body does.
      if ("byobRequest" in controller) controller.byobRequest?.respond(0);
      return;
    }
    controller.enqueue(bytes.slice(offset, offset + size));
    offset += size;
  };
  return kind === "bytes" ? new ReadableStream({ type: "bytes", pull }) : new ReadableStream({ pull });
}

const gone = [
  ...stringField(2, "Failure"),
  ...stringField(3, "too old resource version: 5 (12)"),
  ...stringField(4, "Expired"),
  ...varintField(6, 410),
];

Deno.test("an ERROR event's Status decodes with its code, message, reason and status", () => {
  assert.deepEqual(decodeJobWatchEvent(watchEvent("ERROR", "Status", gone)), {
    type: "ERROR",
    object: {
      apiVersion: "v1",
      kind: "Status",
      status: "Failure",
      message: "too old resource version: 5 (12)",
      reason: "Expired",
      code: 410,
    },
  });
});

Deno.test("strings decode as UTF-8, short or long, ASCII or not", () => {
  const messages = ["", "ok", "Jöb für 🚀 ünd ä", "x".repeat(64), "y".repeat(65) + "é", "z".repeat(300)];
  for (const message of messages) {
    const status = [...stringField(2, "Failure"), ...stringField(3, message), ...varintField(6, 500)];
    const decoded = decodeJobWatchEvent(watchEvent("ERROR", "Status", status));
    assert.equal((decoded.object as { message: string }).message, message);
  }
});

Deno.test("frames are found however the stream is cut into chunks", async () => {
  const frames = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(300).fill(7)];
  for (const kind of ["bytes", "plain"] as const) {
    for (const size of [1, 2, 3, 5, 64, 1000]) {
      const seen: number[][] = [];
      let data = 0;
      await readFrames(chunks(framed(...frames), size, kind), () => data++, (frame) => seen.push([...frame]));
      assert.deepEqual(seen, frames.map((frame) => [...frame]), `${kind} chunks of ${size}`);
      assert.ok(data > 0);
    }
  }
});

Deno.test("a frame longer than the read buffer is read whole, and the frames after it too", async () => {
  // The reader's buffer is 64 KiB: a frame of 200 KB needs a larger one, and the buffer is reused after it.
  const big = new Uint8Array(200_000).map((_, index) => index % 251);
  const frames = [new Uint8Array([9]), big, new Uint8Array(70_000).fill(3), new Uint8Array([4, 5])];
  for (const size of [1000, 65_536, 300_000]) {
    const seen: Uint8Array[] = [];
    await readFrames(chunks(framed(...frames), size), () => {}, (frame) => seen.push(frame.slice()));
    assert.deepEqual(seen, frames, `chunks of ${size}`);
  }
});

Deno.test("a stream that ends inside a frame, or announces a huge one, is an error", async () => {
  const cut = framed(new Uint8Array(10)).subarray(0, 8);
  const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff, 1]);
  for (const kind of ["bytes", "plain"] as const) {
    await assert.rejects(readFrames(chunks(cut, 3, kind), () => {}, () => {}), /ended inside a frame \(8 bytes left\)/);
    await assert.rejects(readFrames(chunks(huge, 5, kind), () => {}, () => {}), /too long/);
  }
});

Deno.test("frames that are not Kubernetes protobuf Jobs or Statuses are refused", () => {
  assert.throws(() => decodeJobWatchEvent(watchEvent("ADDED", "Pod", [])), /carries a Pod, not a Job/);
  assert.throws(() => decodeJobWatchEvent(watchEvent("ADDED", "Job", [], false)), /no Kubernetes protobuf object/);
  // A length that runs past the message.
  assert.throws(() => decodeJobWatchEvent(new Uint8Array([0x0a, 0x05, 0x41])), /runs past/);
});

Deno.test("the watch asks for protobuf, reads JSON when answered JSON, and asks JSON after a frame it cannot read", async () => {
  const accepts: string[] = [];
  const added = JSON.stringify({ type: "ADDED", object: { metadata: { name: "json", resourceVersion: "3" } } });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const accept = request.headers.get("accept") ?? "";
    accepts.push(accept);
    if (accepts.length === 1) {
      return new Response(`${added}\n`, { headers: { "content-type": "application/json;stream=watch" } });
    }
    // A protobuf answer whose frame carries a Pod: not understood.
    return new Response(framed(watchEvent("ADDED", "Pod", [])), {
      headers: { "content-type": "application/vnd.kubernetes.protobuf;stream=watch" },
    });
  });
  try {
    const kubeConfig = new KubeConfig(
      `http://127.0.0.1:${server.addr.port}`,
      [],
      new StaticCredentials({ headers: {} }),
      "test",
    );
    const watch = new StreamingWatch(kubeConfig, { decodeProtobuf: decodeJobWatchEvent });
    const run = async (): Promise<{ events: string[]; error: unknown }> => {
      const events: string[] = [];
      const done = Promise.withResolvers<unknown>();
      await watch.watch("/apis/batch/v1/jobs", {}, (type, object) => {
        events.push(`${type} ${(object as { metadata?: { name?: string } }).metadata?.name}`);
      }, (error) => done.resolve(error));
      return { events, error: await done.promise };
    };
    assert.deepEqual(await run(), { events: ["ADDED json"], error: null });
    const second = await run();
    assert.deepEqual(second.events, []);
    assert.match(String(second.error), /carries a Pod/);
    await run();
    assert.deepEqual(accepts, [
      "application/vnd.kubernetes.protobuf, application/json",
      "application/vnd.kubernetes.protobuf, application/json",
      "application/json",
    ]);
  } finally {
    await server.shutdown();
  }
});
