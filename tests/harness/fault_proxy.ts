/**
 * A fault-injecting HTTP proxy in front of the test Gitea, for outage tests: everything is forwarded untouched (the
 * REST API, the web UI, the runner protocol under /api/actions), except that while a fault is on, the requests it
 * matches get the fault's answer instead (a 500, or an HTML login page with status 200 as an SSO proxy would send).
 * Every request is recorded, so a test can count what the operator asked during an outage.
 */

export type Fault = "500" | "html";

export interface ProxiedRequest {
  /** When it arrived (ms since epoch). */
  at: number;
  method: string;
  /** Path and query. */
  path: string;
  status: number;
  /** Whether the fault answered it instead of Gitea. */
  faulted: boolean;
}

export interface FaultProxy {
  /** The proxy's base URL, ending in "/" like `GiteaHarness.url`. */
  readonly url: string;
  /** Answers the requests whose path matches `match` with `fault` from now on. */
  fail(fault: Fault, match: RegExp): void;
  /** Forwards everything again. */
  heal(): void;
  /** The requests seen so far, oldest first. */
  requests(): readonly ProxiedRequest[];
  stop(): Promise<void>;
}

/** Matches the Actions jobs lists of every scope (`/api/v1/.../actions/jobs`), not the runner protocol. */
export const jobsEndpoint = /^\/api\/v1\/.*\/actions\/jobs(\?|$)/;

const loginPage = '<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form action="/sso/login">' +
  '<input name="user"><input name="password" type="password"></form></body></html>\n';

// Hop-by-hop headers (RFC 9110, 7.6.1) belong to one connection, not to the request being forwarded.
const hopByHop = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"];

/** Starts the proxy on a free loopback port, forwarding to `upstream` (e.g. `http://127.0.0.1:3000/`). */
export function startFaultProxy(upstream: string): FaultProxy {
  const target = new URL(upstream);
  const log: ProxiedRequest[] = [];
  let fault: { kind: Fault; match: RegExp } | undefined;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    const path = `${url.pathname}${url.search}`;
    const entry: ProxiedRequest = { at: Date.now(), method: request.method, path, status: 0, faulted: false };
    log.push(entry);
    if (fault && fault.match.test(path)) {
      entry.faulted = true;
      // Drain the body so that the client sees a clean answer.
      await request.body?.cancel();
      if (fault.kind === "500") {
        entry.status = 500;
        return new Response("Internal Server Error\n", { status: 500, headers: { "content-type": "text/plain" } });
      }
      entry.status = 200;
      return new Response(loginPage, { status: 200, headers: { "content-type": "text/html; charset=utf-8" } });
    }
    const headers = new Headers(request.headers);
    for (const name of hopByHop) headers.delete(name);
    headers.set("host", target.host);
    // Uncompressed answers: fetch would decompress a gzip body but keep its content-encoding header.
    headers.set("accept-encoding", "identity");
    try {
      const answer = await fetch(new URL(path, target), {
        method: request.method,
        headers,
        body: request.body,
        redirect: "manual",
      });
      entry.status = answer.status;
      const answerHeaders = new Headers(answer.headers);
      for (const name of hopByHop) answerHeaders.delete(name);
      return new Response(answer.body, {
        status: answer.status,
        statusText: answer.statusText,
        headers: answerHeaders,
      });
    } catch (error) {
      entry.status = 502;
      return new Response(`The fault proxy cannot reach ${target.origin}: ${error}\n`, { status: 502 });
    }
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    fail(kind: Fault, match: RegExp): void {
      fault = { kind, match };
    },
    heal(): void {
      fault = undefined;
    },
    requests: () => log,
    async stop(): Promise<void> {
      // A runner's long-polling request may still be open; it is not waited for longer than a few seconds.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([server.shutdown(), new Promise((resolve) => (timer = setTimeout(resolve, 5_000)))]);
      clearTimeout(timer);
    },
  };
}
