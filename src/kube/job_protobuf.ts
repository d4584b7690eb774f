/**
 * Runner Job watch events in Kubernetes' protobuf encoding, decoded into the same objects a JSON watch gives after
 * `pruneRunnerJob` (metadata, the operator's reads of status): the Job informer asks for protobuf because the API
 * server encodes each Job event once per encoding and shares it between watchers. kube-controller-manager watches
 * Jobs in protobuf, so a JSON watch was an encoding of its own for the operator alone: in the benchmark's raw round,
 * a JSON watch of the namespace (read by another process) lowered the API server's create rate by a median 8 %, and a
 * protobuf watch did not lower it.
 *
 * Written here because no npm package decodes Kubernetes' protobuf types. Only the wire format and the fields below
 * are read; everything else (the Job's spec, managedFields) is skipped by length. Field numbers are those of
 * k8s.io/api v0.35.4 `batch/v1/generated.proto` and k8s.io/apimachinery v0.35.4 `pkg/apis/meta/v1/generated.proto`
 * and `pkg/runtime/generated.proto` (stable since these types went v1). The stream is framed as in apimachinery's
 * `framer.NewLengthDelimitedFrameWriter` (a 4-byte big-endian length, then the frame); each frame is a `WatchEvent`
 * whose object is the `k8s\0`-prefixed `runtime.Unknown` envelope around the Job or `Status`.
 * tests/integration/protobuf_watch_test.ts compares it with a JSON watch of the same Jobs on a real API server.
 */
import type { V1Job, V1JobCondition, V1OwnerReference } from "@kubernetes/client-node";

/** The media type the Job watch asks for; a server without protobuf answers JSON and the watch reads that. */
export const protobufMediaType = "application/vnd.kubernetes.protobuf";

/** A watch event as a JSON watch line parses: its type and its object. */
export interface DecodedWatchEvent {
  type: string;
  object: unknown;
}

const envelopePrefix = [0x6b, 0x38, 0x73, 0x00];
const decoder = new TextDecoder();

/** Reads protobuf wire format (proto2, as Kubernetes' generated code writes it). */
class Reader {
  #at: number;

  constructor(readonly bytes: Uint8Array, start = 0, readonly end = bytes.length) {
    this.#at = start;
  }

  get done(): boolean {
    return this.#at >= this.end;
  }

  /** A varint as a number (exact up to 2^53, which covers every int32, int64 time and length here). */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.#at >= this.end) throw new Error("The protobuf message ends inside a varint");
      const byte = this.bytes[this.#at++];
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
    throw new Error("A protobuf varint is longer than 10 bytes");
  }

  /** The next field's number and wire type, or undefined at the end. */
  tag(): { field: number; wire: number } | undefined {
    if (this.done) return undefined;
    const key = this.varint();
    return { field: Math.floor(key / 8), wire: key & 7 };
  }

  /** A length-delimited field as a reader over its bytes. */
  message(): Reader {
    const length = this.varint();
    const start = this.#at;
    if (start + length > this.end) throw new Error("A protobuf field runs past its message");
    this.#at = start + length;
    return new Reader(this.bytes, start, start + length);
  }

  /**
   * A string field. Most of a Job's strings (names, labels, times) are short ASCII: those are read byte by byte, which
   * cost about half as much as a TextDecoder call (20,000 strings of 2-30 bytes in a fresh Deno 2.9.6 process: 7-10 ms
   * against 14-22); the others are decoded as UTF-8.
   */
  string(): string {
    const bytes = this.rawBytes();
    if (bytes.length <= 64) {
      let ascii = true;
      for (let index = 0; index < bytes.length && ascii; index++) ascii = bytes[index] < 0x80;
      if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
    }
    return decoder.decode(bytes);
  }

  rawBytes(): Uint8Array {
    const inner = this.message();
    return inner.bytes.subarray(inner.#at, inner.end);
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.#at += 8;
        break;
      case 2:
        this.message();
        return;
      case 5:
        this.#at += 4;
        break;
      default:
        throw new Error(`Unsupported protobuf wire type ${wire}`);
    }
    if (this.#at > this.end) throw new Error("A protobuf field runs past its message");
  }
}

/** Calls `read` for each field of the message; fields it does not take are skipped. */
function fields(reader: Reader, read: (field: number, wire: number) => boolean): void {
  for (let tag = reader.tag(); tag; tag = reader.tag()) {
    if (!read(tag.field, tag.wire)) reader.skip(tag.wire);
  }
}

/**
 * metav1.Time as its JSON form: RFC 3339 in UTC, whole seconds. The zero time is written as an empty message and is
 * `null` in JSON.
 */
function time(reader: Reader): string | null {
  let seconds: number | undefined;
  fields(reader, (field, wire) => {
    if (field !== 1 || wire !== 0) return false;
    const value = reader.varint();
    // int64: a time before 1970 comes as a 10-byte two's complement varint.
    seconds = value >= 2 ** 63 ? value - 2 ** 64 : value;
    return true;
  });
  if (seconds === undefined) return null;
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** A map<string, string> entry. */
function mapEntry(reader: Reader, into: Record<string, string>): void {
  let key = "";
  let value = "";
  fields(reader, (field, wire) => {
    if (wire !== 2) return false;
    if (field === 1) key = reader.string();
    else if (field === 2) value = reader.string();
    else return false;
    return true;
  });
  into[key] = value;
}

function ownerReference(reader: Reader): V1OwnerReference {
  const reference = { apiVersion: "", kind: "", name: "", uid: "" } as V1OwnerReference;
  fields(reader, (field, wire) => {
    if (wire === 2 && field === 5) reference.apiVersion = reader.string();
    else if (wire === 2 && field === 1) reference.kind = reader.string();
    else if (wire === 2 && field === 3) reference.name = reader.string();
    else if (wire === 2 && field === 4) reference.uid = reader.string();
    else if (wire === 0 && field === 6) reference.controller = reader.varint() !== 0;
    else if (wire === 0 && field === 7) reference.blockOwnerDeletion = reader.varint() !== 0;
    else return false;
    return true;
  });
  return reference;
}

/** Strings Kubernetes marks `omitempty`: absent in JSON when empty, always written in protobuf. */
function nonEmpty(value: string): string | undefined {
  return value === "" ? undefined : value;
}

/** ObjectMeta's string fields that the operator reads, by field number. */
const metaStrings = { 1: "name", 3: "namespace", 5: "uid", 6: "resourceVersion" } as const;

function objectMeta(reader: Reader): NonNullable<V1Job["metadata"]> {
  // Times stay strings, as in a JSON watch (client-node types them as Date).
  const metadata: NonNullable<V1Job["metadata"]> & Record<string, unknown> = {};
  fields(reader, (field, wire) => {
    if (wire !== 2) return false;
    switch (field) {
      case 1:
      case 3:
      case 5:
      case 6: {
        const value = nonEmpty(reader.string());
        if (value !== undefined) metadata[metaStrings[field]] = value;
        return true;
      }
      case 8:
        metadata.creationTimestamp = time(reader.message()) as unknown as Date;
        return true;
      case 9:
        metadata.deletionTimestamp = time(reader.message()) as unknown as Date;
        return true;
      case 11:
        mapEntry(reader.message(), metadata.labels ??= {});
        return true;
      case 12:
        mapEntry(reader.message(), metadata.annotations ??= {});
        return true;
      case 13:
        (metadata.ownerReferences ??= []).push(ownerReference(reader.message()));
        return true;
      default:
        return false;
    }
  });
  return metadata;
}

/** Times stay strings, as in a JSON watch (client-node types them as Date). */
function jobCondition(reader: Reader): V1JobCondition {
  const condition: Record<string, unknown> = { type: "", status: "" };
  fields(reader, (field, wire) => {
    if (wire !== 2) return false;
    if (field === 1) condition.type = reader.string();
    else if (field === 2) condition.status = reader.string();
    else if (field === 4) condition.lastTransitionTime = time(reader.message());
    else if (field === 5 || field === 6) {
      const value = nonEmpty(reader.string());
      if (value !== undefined) condition[field === 5 ? "reason" : "message"] = value;
    } else return false;
    return true;
  });
  return condition as unknown as V1JobCondition;
}

/**
 * A batch/v1 Job with what `pruneRunnerJob` keeps: apiVersion, kind, the metadata it reads (all annotations; the
 * transform filters them) and the status conditions' type, status, lastTransitionTime, reason and message.
 */
export function decodeJob(bytes: Uint8Array): V1Job {
  const job: V1Job = { apiVersion: "batch/v1", kind: "Job" };
  const reader = new Reader(bytes);
  fields(reader, (field, wire) => {
    if (wire !== 2) return false;
    if (field === 1) {
      job.metadata = objectMeta(reader.message());
      return true;
    }
    if (field !== 3) return false;
    const status = reader.message();
    const conditions: V1JobCondition[] = [];
    fields(status, (statusField, statusWire) => {
      if (statusField !== 1 || statusWire !== 2) return false;
      conditions.push(jobCondition(status.message()));
      return true;
    });
    if (conditions.length > 0) job.status = { conditions };
    return true;
  });
  return job;
}

/** metav1.Status, as an ERROR event carries it (e.g. 410 Gone when the watch's resourceVersion expired). */
function status(bytes: Uint8Array): Record<string, unknown> {
  const result: Record<string, unknown> = { apiVersion: "v1", kind: "Status" };
  const reader = new Reader(bytes);
  fields(reader, (field, wire) => {
    if (wire === 2 && field === 2) result.status = reader.string();
    else if (wire === 2 && field === 3) result.message = reader.string();
    else if (wire === 2 && field === 4) result.reason = reader.string();
    else if (wire === 0 && field === 6) result.code = reader.varint();
    else return false;
    return true;
  });
  return result;
}

/**
 * One frame of a protobuf watch of Jobs: a `WatchEvent` (type, and the object in its `k8s\0` envelope). The object is
 * a Job, or a Status for ERROR events; another kind is an error.
 */
export function decodeJobWatchEvent(frame: Uint8Array): DecodedWatchEvent {
  let type = "";
  let raw: Uint8Array | undefined;
  const event = new Reader(frame);
  fields(event, (field, wire) => {
    if (wire !== 2) return false;
    if (field === 1) type = event.string();
    else if (field === 2) {
      const extension = event.message();
      fields(extension, (extensionField, extensionWire) => {
        if (extensionField !== 1 || extensionWire !== 2) return false;
        raw = extension.rawBytes();
        return true;
      });
    } else return false;
    return true;
  });
  if (!raw || envelopePrefix.some((byte, index) => raw![index] !== byte)) {
    throw new Error(`A protobuf watch event (${type || "no type"}) has no Kubernetes protobuf object`);
  }
  let kind = "";
  let object: Uint8Array | undefined;
  const unknown = new Reader(raw, envelopePrefix.length);
  fields(unknown, (field, wire) => {
    if (wire !== 2) return false;
    if (field === 1) {
      const typeMeta = unknown.message();
      fields(typeMeta, (typeField, typeWire) => {
        if (typeField !== 2 || typeWire !== 2) return false;
        kind = typeMeta.string();
        return true;
      });
    } else if (field === 2) object = unknown.rawBytes();
    else return false;
    return true;
  });
  const bytes = object ?? new Uint8Array();
  if (kind === "Job") return { type, object: decodeJob(bytes) };
  if (kind === "Status") return { type, object: status(bytes) };
  throw new Error(`A protobuf watch event (${type}) carries a ${kind || "object of no kind"}, not a Job`);
}
