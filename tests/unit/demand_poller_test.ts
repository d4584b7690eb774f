/** Demand pollers against a local HTTP server that answers like Gitea. */
import assert from "node:assert/strict";
import { DemandPollers, type ForgeTarget, targetKey } from "../../src/forge/demand_poller.ts";

const job = (id: number) => ({
  id,
  run_id: 1,
  name: `j${id}`,
  labels: ["linux"],
  status: "queued",
  url: `http://x/api/v1/repos/acme/app/actions/jobs/${id}`,
  html_url: "",
  created_at: "2026-01-01T00:00:00Z",
});

const until = async (condition: () => boolean, timeoutMs = 5000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("Timed out waiting for a condition");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

Deno.test("groups sharing a target share one poller: one jobs request per poll, and change-only notifications", async () => {
  let jobs = [job(1)];
  let jobRequests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/api/forgejo/v1/version") return new Response("Not Found", { status: 404 }); // as Gitea
    if (url.pathname === "/api/v1/version") return Response.json({ version: "1.26.0" });
    jobRequests++;
    return Response.json({ jobs, total_count: jobs.length });
  });
  const notified: string[][] = [];
  const pollers = new DemandPollers({ intervalMs: 100, timeoutMs: 1000, onChange: (keys) => notified.push(keys) });
  try {
    const target: ForgeTarget = {
      baseUrl: `http://127.0.0.1:${server.addr.port}`,
      endpoint: { scope: "repo", owner: "acme", repo: "app" },
      token: "shared-token-value",
    };
    const key = pollers.subscribe("ns/a", target);
    assert.equal(pollers.subscribe("other/b", { ...target }), key);
    assert.equal(pollers.size, 1);
    assert.ok(!key.includes("shared-token-value"), "target keys never contain the token");
    await until(() => notified.length === 1);
    assert.deepEqual(notified[0].sort(), ["ns/a", "other/b"]);
    assert.deepEqual(pollers.snapshot(key)?.jobs.map((j) => j.id), [1]);
    const before = jobRequests;
    await new Promise((resolve) => setTimeout(resolve, 350));
    assert.ok(jobRequests - before >= 2 && jobRequests - before <= 4, `${jobRequests - before} polls in 350 ms`);
    assert.equal(notified.length, 1, "an unchanged answer notifies nobody");
    jobs = [job(1), job(2)];
    await until(() => notified.length === 2);
    pollers.unsubscribe("ns/a");
    pollers.unsubscribe("other/b");
    assert.equal(pollers.size, 0, "a poller without groups stops");
    assert.notEqual(targetKey(target), targetKey({ ...target, token: "another-token" }));
  } finally {
    await pollers.stop();
    await server.shutdown();
  }
});

Deno.test("a failing forge is reported in the snapshot, backs off, and recovers", async () => {
  let failing = true;
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    requests++;
    if (failing) return new Response("down", { status: 503 });
    const url = new URL(request.url);
    if (url.pathname === "/api/forgejo/v1/version") return new Response("Not Found", { status: 404 }); // as Gitea
    if (url.pathname === "/api/v1/version") return Response.json({ version: "1.26.0" });
    return Response.json({ jobs: [job(5)], total_count: 1 });
  });
  // Ceilings of 40, 80, 160, 160 ... ms (delays in their upper half): the schedule is unit-tested with a fake clock in
  // failure_backoff_test.ts; here it runs against a real HTTP server.
  const pollers = new DemandPollers({
    intervalMs: 50,
    timeoutMs: 1000,
    onChange: () => {},
    failureBackoff: { initialMs: 40, maxMs: 160 },
  });
  try {
    const key = pollers.subscribe("ns/a", {
      baseUrl: `http://127.0.0.1:${server.addr.port}`,
      endpoint: { scope: "global" },
      token: "t",
    });
    await until(() => pollers.snapshot(key)?.error !== undefined);
    assert.equal(pollers.snapshot(key)?.error?.kind, "ServerError");
    const before = requests;
    await new Promise((resolve) => setTimeout(resolve, 800));
    // At least 80 ms apart once capped: at most 2 + 800 / 80 attempts, where the 50 ms interval would make 16.
    assert.ok(requests - before <= 12, `${requests - before} requests in 800 ms while failing`);
    assert.ok(requests - before >= 4, `${requests - before} requests in 800 ms while failing: it kept trying`);
    failing = false;
    await until(() => pollers.snapshot(key)?.error === undefined, 1000);
    assert.deepEqual(pollers.snapshot(key)?.jobs.map((j) => j.id), [5]);
    assert.equal(pollers.snapshot(key)?.version, "1.26.0");
  } finally {
    await pollers.stop();
    await server.shutdown();
  }
});

Deno.test("a poke during an in-flight poll is not lost: one more poll follows at once, however many pokes came", async () => {
  let jobs = [job(1)];
  let jobRequests = 0;
  let inFlight = 0;
  let mostInFlight = 0;
  const requestArrived: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/api/forgejo/v1/version") return new Response("Not Found", { status: 404 }); // as Gitea
    if (url.pathname === "/api/v1/version") return Response.json({ version: "1.26.0" });
    jobRequests++;
    mostInFlight = Math.max(mostInFlight, ++inFlight);
    // A slow forge: the answer is what was queued when the request arrived, sent 300 ms later.
    const answer = { jobs: [...jobs], total_count: jobs.length };
    requestArrived.splice(0).forEach((resolve) => resolve());
    await new Promise((resolve) => setTimeout(resolve, 300));
    inFlight--;
    return Response.json(answer);
  });
  const notified: number[] = [];
  // A one-minute interval: within this test, only the pokes can make the poller ask again.
  const pollers = new DemandPollers({ intervalMs: 60_000, timeoutMs: 5000, onChange: () => notified.push(Date.now()) });
  try {
    const key = pollers.subscribe("ns/a", {
      baseUrl: `http://127.0.0.1:${server.addr.port}`,
      endpoint: { scope: "repo", owner: "acme", repo: "app" },
      token: "t",
    });
    await until(() => notified.length === 1);
    const arrived = new Promise<void>((resolve) => requestArrived.push(resolve));
    pollers.poke();
    await arrived;
    // The poll is in flight with an answer that predates job 2; its webhooks arrive now.
    jobs = [job(1), job(2)];
    for (let i = 0; i < 5; i++) {
      pollers.poke();
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    await until(() => pollers.snapshot(key)?.jobs.some((j) => j.id === 2) ?? false, 3000);
    assert.equal(jobRequests, 3, "the first poll, the poked one, and one more for the pokes during it");
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.equal(jobRequests, 3, "five pokes during one poll made exactly one more poll");
    assert.equal(mostInFlight, 1, "never two polls of one target at once");
  } finally {
    await pollers.stop();
    await server.shutdown();
  }
});

Deno.test("answerAfter polls at that time, well before the interval, and tells the groups even when nothing changed", async () => {
  let jobRequests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/api/forgejo/v1/version") return new Response("Not Found", { status: 404 }); // as Gitea
    if (url.pathname === "/api/v1/version") return Response.json({ version: "1.26.0" });
    jobRequests++;
    return Response.json({ jobs: [job(1)], total_count: 1 });
  });
  const notified: number[] = [];
  const pollers = new DemandPollers({
    intervalMs: 60_000,
    timeoutMs: 1000,
    onChange: () => notified.push(Date.now()),
  });
  try {
    const key = pollers.subscribe("ns/a", {
      baseUrl: `http://127.0.0.1:${server.addr.port}`,
      endpoint: { scope: "repo", owner: "acme", repo: "app" },
      token: "t",
    });
    await until(() => notified.length === 1);
    const firstFetch = pollers.snapshot(key)!.fetchedAt;
    // An answer already fetched late enough: no poll.
    pollers.answerAfter(key, firstFetch);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(jobRequests, 1);
    const at = Date.now() + 200;
    pollers.answerAfter(key, at);
    await until(() => notified.length === 2);
    assert.equal(jobRequests, 2, "one poll for the request");
    assert.ok(pollers.snapshot(key)!.fetchedAt >= at, "the answer was fetched at or after the time asked for");
    assert.ok(notified[1] >= at, "not before the time asked for");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(jobRequests, 2, "then back to the interval");
    assert.equal(notified.length, 2);
  } finally {
    await pollers.stop();
    await server.shutdown();
  }
});
