/**
 * A pass-through observer between the operator and Gitea, on a loopback port: RunnerGroups point their `giteaURL` at
 * it, it forwards every request to the real Gitea unchanged and records when each queued job was first *seen* by the
 * operator, i.e. when the operator's poll that first listed the job ended (its last page was handed over). That is
 * the start of the operator's own part of a job's latency, measured from outside without a hook in the operator.
 *
 * A poll is the operator's walk over the pages of `GET .../actions/jobs` (`src/forge/gitea_client.ts`,
 * `listOpenJobs`): page 1 starts one, and the page with fewer entries than the limit, or that reaches `total_count`,
 * ends it, the same rule the client stops on.
 */

interface JobsPage {
  jobs: { id: number; status: string }[] | null;
  total_count: number;
}

export class ForgeObserver {
  /** Queued job id -> when the poll that first listed it ended (ms since epoch). */
  readonly #seen = new Map<number, number>();
  /** Per jobs path: the queued job ids of the poll in progress. */
  readonly #pollInProgress = new Map<string, Set<number>>();
  readonly #pollListeners = new Set<(path: string) => void>();
  #requests = 0;

  #server?: Deno.HttpServer<Deno.NetAddr>;

  private constructor(readonly upstream: string) {}

  /** Starts forwarding to `upstream` (Gitea's base URL, with or without a trailing slash). */
  static start(upstream: string): ForgeObserver {
    const observer = new ForgeObserver(upstream.replace(/\/+$/, ""));
    observer.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) => observer.#forward(request),
    );
    return observer;
  }

  /** The base URL to give RunnerGroups instead of Gitea's. */
  get url(): string {
    return `http://127.0.0.1:${this.#server!.addr.port}`;
  }

  /** Requests forwarded so far. */
  get requests(): number {
    return this.#requests;
  }

  seenAt(jobId: number): number | undefined {
    return this.#seen.get(jobId);
  }

  /**
   * Calls `listener` with the path of each jobs request (a poll's page) as it arrives, before it is forwarded, e.g. to
   * sample a process's CPU at its first poll. Returns the function that removes the listener.
   */
  onJobsRequest(listener: (path: string) => void): () => void {
    this.#pollListeners.add(listener);
    return () => this.#pollListeners.delete(listener);
  }

  async stop(): Promise<void> {
    await this.#server?.shutdown();
  }

  async #forward(request: Request): Promise<Response> {
    this.#requests++;
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname.endsWith("/actions/jobs")) {
      for (const listener of this.#pollListeners) listener(url.pathname);
    }
    const headers = new Headers(request.headers);
    headers.delete("host");
    const hasBody = request.method !== "GET" && request.method !== "HEAD";
    const upstream = await fetch(`${this.upstream}${url.pathname}${url.search}`, {
      method: request.method,
      headers,
      body: hasBody ? await request.arrayBuffer() : undefined,
      redirect: "manual",
    });
    const body = new Uint8Array(await upstream.arrayBuffer());
    if (request.method === "GET" && upstream.status === 200 && url.pathname.endsWith("/actions/jobs")) {
      this.#observePage(url, body);
    }
    const responseHeaders = new Headers(upstream.headers);
    // fetch has decoded the body already.
    responseHeaders.delete("content-encoding");
    responseHeaders.delete("content-length");
    return new Response(body, { status: upstream.status, headers: responseHeaders });
  }

  #observePage(url: URL, body: Uint8Array): void {
    let page: JobsPage;
    try {
      page = JSON.parse(new TextDecoder().decode(body));
    } catch {
      return;
    }
    const number = Number(url.searchParams.get("page") ?? "1");
    const limit = Number(url.searchParams.get("limit") ?? "50");
    const key = `${url.pathname}?${url.searchParams.getAll("status").join(",")}`;
    let ids = this.#pollInProgress.get(key);
    if (number === 1 || !ids) {
      ids = new Set();
      this.#pollInProgress.set(key, ids);
    }
    const entries = page.jobs ?? [];
    for (const job of entries) if (job.status === "queued") ids.add(job.id);
    if (entries.length < limit || number * limit >= page.total_count) {
      const now = Date.now();
      for (const id of ids) if (!this.#seen.has(id)) this.#seen.set(id, now);
      this.#pollInProgress.delete(key);
    }
  }
}
