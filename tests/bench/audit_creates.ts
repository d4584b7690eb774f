/**
 * When each Job of a namespace was created, read from the API server's audit log as it grows: the moment the API
 * server completed the create (its `ResponseComplete` stage), by Job name. The API server writes that log for every
 * create of the benchmark's user anyway, the raw loop's as much as the operator's, so observing the operator this
 * way adds no work to the run it measures; a watch would (one more watcher for the API server to serve, and its events
 * for this process to read while the operator works on the same two cores).
 */

/** A Job's create, as the audit log shows it. */
export interface AuditedCreate {
  name: string;
  /** When the API server completed the create (ms since epoch). */
  at: number;
}

interface AuditEvent {
  verb?: string;
  requestURI?: string;
  user?: { username?: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  stageTimestamp?: string;
}

export class AuditedCreates {
  readonly #created = new Map<string, number>();
  readonly #decoder = new TextDecoder();
  #offset: number;
  #partial = "";

  private constructor(
    readonly path: string,
    readonly user: string,
    readonly namespace: string,
    offset: number,
  ) {
    this.#offset = offset;
  }

  /** Follows the audit log at `path` from its current end: creates of Jobs in `namespace` by `user`. */
  static async follow(path: string, user: string, namespace: string): Promise<AuditedCreates> {
    return new AuditedCreates(path, user, namespace, (await Deno.stat(path)).size);
  }

  /** Reads what the log gained since the last read. */
  async read(): Promise<void> {
    using file = await Deno.open(this.path);
    await file.seek(this.#offset, Deno.SeekMode.Start);
    const buffer = new Uint8Array(1 << 16);
    let text = this.#partial;
    for (let count = await file.read(buffer); count !== null; count = await file.read(buffer)) {
      this.#offset += count;
      text += this.#decoder.decode(buffer.subarray(0, count), { stream: true });
    }
    const lines = text.split("\n");
    this.#partial = lines.pop() ?? "";
    for (const line of lines) this.#take(line);
  }

  /** The creates completed at or after `from` (ms since epoch), in the order they completed. */
  since(from: number): AuditedCreate[] {
    return [...this.#created].filter(([, at]) => at >= from).map(([name, at]) => ({ name, at }))
      .sort((a, b) => a.at - b.at);
  }

  /** Resolves once `count` creates completed at or after `from`; throws after `timeoutMs`. */
  async waitFor(count: number, from: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (await this.read(); this.since(from).length < count; await this.read()) {
      if (Date.now() > deadline) {
        throw new Error(`Only ${this.since(from).length} of ${count} Jobs were created in ${this.namespace}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  #take(line: string): void {
    // Most lines are other requests: skip them before parsing.
    if (!line.includes('"verb":"create"') || !line.includes('"resource":"jobs"')) return;
    const event = JSON.parse(line) as AuditEvent;
    const ref = event.objectRef;
    if (
      event.user?.username !== this.user || ref?.namespace !== this.namespace || ref.subresource !== undefined ||
      event.responseStatus?.code !== 201 || !ref.name || !event.stageTimestamp ||
      // The operator's check of a group's template is a dry-run create: nothing is stored.
      /[?&]dryRun=/.test(event.requestURI ?? "")
    ) return;
    if (!this.#created.has(ref.name)) this.#created.set(ref.name, Date.parse(event.stageTimestamp));
  }
}
