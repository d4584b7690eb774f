/**
 * The benchmark's instruments (tests/bench): what they report must be right before their figures mean anything.
 * The forge observer runs against a local stand-in for Gitea's jobs endpoint that pages like Gitea 1.26 does.
 */
import assert from "node:assert/strict";
import { AuditedCreates } from "../bench/audit_creates.ts";
import { parseBurstShape } from "../bench/burst.ts";
import { ForgeObserver } from "../bench/forge_observer.ts";
import { onePollPerInterval } from "../bench/idle_cost.ts";
import { parseBenchArgs } from "../bench/options.ts";
import { countAuditedRequests, metricByLabel, metricSum } from "../bench/probes.ts";
import { distribution, formatTable, percentile, unionMs } from "../bench/report.ts";
import { stepSlopes } from "../bench/resident_memory.ts";

Deno.test("percentiles are nearest-rank, and a distribution reports median, p95 and max", () => {
  const values = Array.from({ length: 20 }, (_, index) => 20 - index);
  assert.equal(percentile([...values].sort((a, b) => a - b), 95), 19);
  assert.deepEqual(distribution(values), { n: 20, median: 10, p95: 19, max: 20, min: 1 });
  assert.throws(() => percentile([], 50), /no samples/);
});

Deno.test("the table shows a missed target as MISS and a met one as PASS", () => {
  const table = formatTable([
    { part: "p", what: "met", unit: "ms", value: 50, target: { text: "≤ 100 ms", pass: true } },
    {
      part: "p",
      what: "missed",
      unit: "ms",
      distribution: distribution([1, 2.5, 300]),
      target: { text: "x", pass: false },
    },
  ]);
  assert.match(table, /\| met +\| +\| 50 ms +\| ≤ 100 ms \| PASS/);
  assert.match(table, /\| missed +\| 3 +\| 2\.50 \/ 300 \/ 300 ms +\| x +\| MISS/);
});

Deno.test("burst shapes and flags are parsed, bad ones rejected with the value quoted", () => {
  assert.deepEqual(parseBurstShape("5x20*3"), { groups: 5, jobsPerGroup: 20, rounds: 3 });
  assert.deepEqual(parseBurstShape("25x20"), { groups: 25, jobsPerGroup: 20, rounds: 1 });
  assert.throws(() => parseBurstShape("5y20"), /Cannot parse burst "5y20"/);
  const args = parseBenchArgs(["--", "--only", "burst", "--bursts", "2x3"]);
  assert.deepEqual(args.parts, ["burst"]);
  assert.deepEqual(parseBenchArgs(["--skip", "burst,latency,warm-pool"]).parts, [
    "raw",
    "backlog",
    "push",
    "idle",
    "memory",
  ]);
  // Three rounds of 5x100 by default, so that its verdict is a median too (one round ranged from 62 to 95 %).
  const defaultShapes = [{ groups: 5, jobsPerGroup: 20, rounds: 9 }, { groups: 5, jobsPerGroup: 100, rounds: 3 }];
  assert.deepEqual(args.backlogBursts, defaultShapes);
  assert.deepEqual(parseBenchArgs([]).bursts, defaultShapes);
  assert.deepEqual(parseBenchArgs(["--backlog-bursts", "1x100*2"]).backlogBursts, [
    { groups: 1, jobsPerGroup: 100, rounds: 2 },
  ]);
  assert.throws(() => parseBenchArgs(["--backlog-bursts", "lots"]), /Cannot parse burst "lots"/);
  assert.deepEqual(args.bursts, [{ groups: 2, jobsPerGroup: 3, rounds: 1 }]);
  assert.throws(() => parseBenchArgs(["--only", "bursts"]), /Unknown part "bursts"/);
  assert.throws(() => parseBenchArgs(["--raw-jobs", "many"]), /Invalid value "many" for --raw-jobs/);
  assert.equal(args.jobController, "paused");
  assert.equal(parseBenchArgs(["--job-controller", "running"]).jobController, "running");
  assert.throws(() => parseBenchArgs(["--job-controller", "off"]), /Invalid value "off" for --job-controller/);
});

Deno.test("the memory part's step slopes are each step's growth per 1,000 Jobs from the step before it", () => {
  const steps = [
    { cachedJobs: 3000, samplesMiB: [98, 97, 99] },
    { cachedJobs: 6000, samplesMiB: [116, 117, 150] },
  ];
  // 80 -> 98 over 3,000 Jobs, then 98 -> 117 (medians, the outlier ignored) over the next 3,000.
  assert.deepEqual(stepSlopes(80, steps).map((slope) => Number(slope.toFixed(3))), [6, 6.333]);
  assert.deepEqual(stepSlopes(80, []), []);
  assert.equal(parseBenchArgs([]).cachedJobs, 3000);
});

Deno.test("the busy time of a burst is the union of the jobs' intervals, without the gaps between them", () => {
  assert.equal(unionMs([[0, 10], [5, 20], [30, 40], [35, 36]]), 30);
  assert.equal(unionMs([[30, 40], [0, 10]]), 20);
  assert.equal(unionMs([]), 0);
});

Deno.test("one poll per target per interval allows a poll more or less in the window, not none or two", () => {
  assert.equal(onePollPerInterval(1, 12).pass, true);
  assert.equal(onePollPerInterval(13 / 12, 12).pass, true);
  assert.equal(onePollPerInterval(11 / 12, 12).pass, true);
  assert.equal(onePollPerInterval(14 / 12, 12).pass, false);
  assert.equal(onePollPerInterval(0, 12).pass, false);
  assert.equal(onePollPerInterval(2, 12).pass, false);
});

Deno.test("metricSum adds the series of a counter, optionally by label; metricByLabel sums them per label value", () => {
  const text = [
    "# HELP x_total x",
    'x_total{endpoint="/a/{owner}",code="2xx"} 3',
    'x_total{endpoint="/b",code="5xx"} 4',
    "x_total_created 99",
    "x_totally 5",
  ].join("\n");
  assert.equal(metricSum(text, "x_total"), 7);
  assert.equal(metricSum(text, "x_total", { code: "5xx" }), 4);
  assert.equal(metricSum(text, "x_total", { code: "2xx" }), 3);
  assert.deepEqual(metricByLabel(text + '\nx_total{code="2xx",endpoint="/a"} 2', "x_total", "endpoint"), {
    "/a/{owner}": 3,
    "/a": 2,
    "/b": 4,
  });
});

Deno.test("audited requests count one user's requests once each, within the window", () => {
  const event = (id: string, user: string, at: string, stage: string, verb = "get", resource = "secrets"): string =>
    JSON.stringify({
      auditID: id,
      stage,
      verb,
      user: { username: user },
      objectRef: { resource },
      requestURI: "/api/v1/x",
      requestReceivedTimestamp: at,
    });
  const text = [
    event("1", "op", "2026-01-01T00:00:01.000000Z", "ResponseComplete"),
    event("2", "op", "2026-01-01T00:00:02.000000Z", "ResponseStarted", "watch", "jobs"),
    event("2", "op", "2026-01-01T00:00:02.000000Z", "ResponseComplete", "watch", "jobs"),
    event("3", "admin", "2026-01-01T00:00:02.000000Z", "ResponseComplete"),
    event("4", "op", "2026-01-01T00:00:09.000000Z", "ResponseComplete"),
  ].join("\n") + "\n";
  const from = Date.parse("2026-01-01T00:00:00Z");
  assert.deepEqual(countAuditedRequests(text, "op", from, from + 5_000), {
    total: 2,
    byKind: { "get secrets": 1, "watch jobs": 1 },
  });
});

Deno.test("audited creates: one user's stored Job creates in one namespace, read as the log grows", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/audit.log`;
  const create = (
    name: string,
    at: string,
    extra: { user?: string; namespace?: string; code?: number; uri?: string },
  ) =>
    JSON.stringify({
      verb: "create",
      requestURI: extra.uri ?? "/apis/batch/v1/namespaces/ci/jobs",
      user: { username: extra.user ?? "op" },
      objectRef: { resource: "jobs", namespace: extra.namespace ?? "ci", name, apiGroup: "batch" },
      responseStatus: { code: extra.code ?? 201 },
      stageTimestamp: at,
    }) + "\n";
  try {
    // What the log held before the observer started is not its business.
    await Deno.writeTextFile(path, create("before", "2026-01-01T00:00:00.500000Z", {}));
    const creates = await AuditedCreates.follow(path, "op", "ci");
    const first = create("a", "2026-01-01T00:00:02.250000Z", {});
    await Deno.writeTextFile(
      path,
      create("b", "2026-01-01T00:00:01.000000Z", {}) +
        create("other-user", "2026-01-01T00:00:01.000000Z", { user: "raw" }) +
        create("other-namespace", "2026-01-01T00:00:01.000000Z", { namespace: "elsewhere" }) +
        create("exists", "2026-01-01T00:00:01.000000Z", { code: 409 }) +
        create("dry-run", "2026-01-01T00:00:01.000000Z", { uri: "/apis/batch/v1/namespaces/ci/jobs?dryRun=All" }) +
        // A line the API server is still writing: taken once it is complete.
        first.slice(0, 40),
      { append: true },
    );
    await creates.read();
    const from = Date.parse("2026-01-01T00:00:00Z");
    assert.deepEqual(creates.since(from), [{ name: "b", at: from + 1_000 }]);
    await Deno.writeTextFile(path, first.slice(40), { append: true });
    await creates.waitFor(2, from, 1_000);
    assert.deepEqual(creates.since(from).map((job) => job.name), ["b", "a"]);
    assert.deepEqual(creates.since(from + 2_000), [{ name: "a", at: from + 2_250 }]);
    await assert.rejects(creates.waitFor(3, from, 300), /Only 2 of 3 Jobs were created in ci/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the forge observer forwards unchanged and marks a job seen when the poll that listed it ends", async () => {
  // Gitea's paging: `limit` entries per page, `total_count` of all pages.
  const queued = Array.from({ length: 60 }, (_, index) => ({ id: index + 1, status: "queued" }));
  const pageTimes: number[] = [];
  const gitea = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    if (!url.pathname.endsWith("/actions/jobs")) {
      return new Response(`${request.method} ${url.pathname} ${await request.text()}`, { status: 418 });
    }
    const page = Number(url.searchParams.get("page"));
    const limit = Number(url.searchParams.get("limit"));
    // Page 2 comes a little later, so that the end of the poll is told apart from its start.
    if (page === 2) await new Promise((resolve) => setTimeout(resolve, 50));
    pageTimes.push(Date.now());
    const jobs = queued.slice((page - 1) * limit, page * limit);
    return Response.json({ jobs, total_count: queued.length });
  });
  const observer = ForgeObserver.start(`http://127.0.0.1:${gitea.addr.port}/`);
  try {
    const jobsUrl = (page: number): string =>
      `${observer.url}/api/v1/repos/o/r/actions/jobs?status=queued&status=in_progress&limit=50&page=${page}`;
    const other = await fetch(`${observer.url}/api/v1/version`, { method: "POST", body: "hello" });
    assert.equal(other.status, 418);
    assert.equal(await other.text(), "POST /api/v1/version hello");

    assert.equal((await (await fetch(jobsUrl(1))).json()).jobs.length, 50);
    assert.equal(observer.seenAt(1), undefined, "a job is not seen before its poll has read every page");
    await (await fetch(jobsUrl(2))).body?.cancel();
    const end = observer.seenAt(1);
    assert.ok(end !== undefined && end >= pageTimes[1], "seen at the end of the poll, after its last page");
    assert.equal(observer.seenAt(60), end);
    assert.equal(observer.seenAt(61), undefined);

    // A later poll does not move the moment a job was first seen.
    await new Promise((resolve) => setTimeout(resolve, 20));
    await (await fetch(jobsUrl(1))).body?.cancel();
    await (await fetch(jobsUrl(2))).body?.cancel();
    assert.equal(observer.seenAt(1), end);
    assert.equal(observer.requests, 5);
  } finally {
    await observer.stop();
    await gitea.shutdown();
  }
});
