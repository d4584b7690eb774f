/**
 * The failure schedule of the demand pollers, run on a fake clock: a real poller and a real Gitea client, with a fetch
 * that answers like Gitea (or like Gitea during an outage) at the fake time, so minutes of outage take milliseconds.
 */
import assert from "node:assert/strict";
import { DemandPollers, type PollerClock } from "../../src/forge/demand_poller.ts";
import {
  defaultFailureBackoff,
  failureCeiling,
  failureDelay,
  maxAttemptsDuring,
} from "../../src/forge/failure_backoff.ts";
import { GiteaClient } from "../../src/forge/gitea_client.ts";

/** Timers that fire only when the test advances the time. */
class FakeClock implements PollerClock {
  #now = 1_000_000;
  #nextId = 1;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, delayMs: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + delayMs, callback });
    return id;
  }

  clearTimeout(id: unknown): void {
    this.#timers.delete(id as number);
  }

  /** Fires the timers due until `at`, in order, letting each poll finish (it schedules the next) before going on. */
  async runUntil(at: number): Promise<void> {
    for (let fired = 0;; fired++) {
      // A schedule with no delay at all would never let the time move on.
      if (fired > 10_000) throw new Error(`More than 10000 timers fired before ${at}: a busy loop`);
      const due = [...this.#timers.entries()].sort((a, b) => a[1].at - b[1].at)[0];
      if (!due || due[1].at > at) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].callback();
      for (let tick = 0; tick < 200 && this.#timers.size === 0; tick++) {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    this.#now = at;
  }
}

type Answer = "ok" | "500" | "html" | "401" | { status: number; retryAfter: string };

interface Scenario {
  /** What the jobs endpoint answers at a time (ms since the poller started). */
  jobs: (elapsed: number) => Answer;
  /** What the version endpoint answers; "ok" unless given. */
  version?: (elapsed: number) => Answer;
  random?: () => number;
  intervalMs?: number;
  /** Times (ms since the start) at which a webhook pokes the poller. */
  pokes?: number[];
  /** Times at which a group asks for an answer fetched from then on (`answerAfter`). */
  asks?: number[];
}

interface Request {
  at: number;
  path: string;
  ok: boolean;
}

/** Runs a poller on the fake clock for `durationMs`; returns every request it made (times relative to its start). */
async function simulate(scenario: Scenario, durationMs: number): Promise<Request[]> {
  const clock = new FakeClock();
  const start = clock.now();
  const requests: Request[] = [];
  const respond = (answer: Answer): Response => {
    if (answer === "500") return new Response("Internal Server Error", { status: 500 });
    if (answer === "401") return new Response('{"message":"token is required"}', { status: 401 });
    if (answer === "html") return new Response("<!DOCTYPE html><title>Sign in</title>", { status: 200 });
    if (typeof answer === "object") {
      return new Response("busy", { status: answer.status, headers: { "retry-after": answer.retryAfter } });
    }
    throw new Error("unreachable");
  };
  const fakeFetch = (input: string | URL | Request, _init?: RequestInit): Promise<Response> => {
    const path = new URL(String(input)).pathname;
    const elapsed = clock.now() - start;
    const answer = path === "/api/v1/version" ? scenario.version?.(elapsed) ?? "ok" : scenario.jobs(elapsed);
    requests.push({ at: elapsed, path, ok: answer === "ok" });
    if (answer !== "ok") return Promise.resolve(respond(answer));
    if (path === "/api/v1/version") return Promise.resolve(Response.json({ version: "1.26.0" }));
    return Promise.resolve(Response.json({ jobs: [], total_count: 0 }));
  };
  const pollers = new DemandPollers({
    intervalMs: scenario.intervalMs ?? 10_000,
    timeoutMs: 1000,
    onChange: () => {},
    clock,
    random: scenario.random,
    client: (target, timeoutMs) =>
      new GiteaClient({ baseUrl: target.baseUrl, token: target.token, timeoutMs, fetch: fakeFetch as typeof fetch }),
  });
  try {
    const key = pollers.subscribe("ns/a", { baseUrl: "http://gitea.test", endpoint: { scope: "global" }, token: "t" });
    const actions = [
      ...(scenario.pokes ?? []).map((at) => ({ at, act: () => pollers.poke() })),
      ...(scenario.asks ?? []).map((at) => ({ at, act: () => pollers.answerAfter(key, clock.now()) })),
    ].sort((a, b) => a.at - b.at);
    for (const { at, act } of actions) {
      await clock.runUntil(start + at);
      act();
    }
    await clock.runUntil(start + durationMs);
  } finally {
    await pollers.stop();
  }
  return requests;
}

const jobsRequests = (requests: Request[]): Request[] => requests.filter((r) => r.path.endsWith("/actions/jobs"));
const gaps = (requests: Request[]): number[] => requests.slice(1).map((r, i) => r.at - requests[i].at);
const outage = (from: number, to: number, answer: Answer = "500") => (elapsed: number): Answer =>
  elapsed >= from && elapsed < to ? answer : "ok";

Deno.test("the failure delay doubles from 1 s to the 10 s cap, jittered within the upper half of its ceiling", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 50].map((n) => failureCeiling(n)), [
    1000,
    2000,
    4000,
    8000,
    10_000,
    10_000,
    10_000,
  ]);
  for (const failures of [1, 3, 5, 9]) {
    const ceiling = failureCeiling(failures);
    assert.equal(failureDelay(failures, undefined, defaultFailureBackoff, () => 0), ceiling / 2);
    assert.equal(failureDelay(failures, undefined, defaultFailureBackoff, () => 0.999999), ceiling);
    for (let i = 0; i < 200; i++) {
      const delay = failureDelay(failures, undefined);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `${delay} ms after ${failures} failures`);
    }
  }
  assert.equal(failureDelay(1, 30_000, defaultFailureBackoff, () => 0), 30_000, "Retry-After beyond the backoff");
  assert.equal(failureDelay(1, 3_600_000, defaultFailureBackoff, () => 0), 60_000, "Retry-After up to its bound");
  assert.equal(failureDelay(5, 2_000, defaultFailureBackoff, () => 1), 10_000, "a shorter Retry-After changes nothing");
});

Deno.test("a poller facing a jobs endpoint answering 500 backs off 1, 2, 4, 8 s, then every 10 s at most", async () => {
  // Healthy until 5 s (a poll at 0 s), down from 5 s to 125 s; random 1 picks the longest delays, 0 the shortest.
  for (
    const [random, expected] of [[() => 0.999999, [1000, 2000, 4000, 8000, 10_000]], [() => 0, [
      500,
      1000,
      2000,
      4000,
      5000,
    ]]] as const
  ) {
    const requests = jobsRequests(await simulate({ jobs: outage(5_000, 125_000), random }, 100_000));
    assert.equal(requests[0].at, 0);
    assert.equal(requests[1].at, 10_000, "the first poll after the outage began came at the interval");
    const failing = requests.filter((r) => !r.ok);
    assert.deepEqual(gaps(failing).slice(0, 5), expected);
    assert.ok(gaps(failing).slice(4).every((gap) => gap === expected[4]), `capped: ${gaps(failing)}`);
  }
});

Deno.test("recovery is noticed within the 10 s cap, whatever the error was (500, an HTML login page, 401)", async () => {
  for (const answer of ["500", "html", "401"] as const) {
    for (const end of [65_000, 77_000, 93_000]) {
      for (const random of [() => 0, () => 0.5, () => 0.999999, Math.random]) {
        const jobs = jobsRequests(await simulate({ jobs: outage(5_000, end, answer), random }, end + 60_000));
        const firstAfter = jobs.find((r) => r.at >= end)!;
        assert.ok(firstAfter.ok, `${answer}: the first request after the outage succeeds`);
        const late = firstAfter.at - end;
        assert.ok(late <= 10_000, `${answer}: recovery at ${end} ms noticed ${late} ms later`);
        const after = gaps(jobs.filter((r) => r.at >= firstAfter.at));
        assert.ok(after.length >= 4 && after.every((gap) => gap === 10_000), `then back on the interval: ${after}`);
      }
    }
  }
});

Deno.test("Retry-After is honoured, up to 60 s", async () => {
  for (const [header, expectedGap] of [["30", 30_000], ["3600", 60_000]] as const) {
    for (const status of [429, 503]) {
      const requests = jobsRequests(
        await simulate(
          { jobs: outage(5_000, 200_000, { status, retryAfter: header }), random: () => 0.999999 },
          150_000,
        ),
      );
      const failing = requests.filter((r) => !r.ok);
      assert.equal(gaps(failing)[0], expectedGap, `${status} with Retry-After: ${header}`);
    }
  }
});

Deno.test("requests during a 1- and a 5-minute outage are bounded by the schedule: at most 15 and 63", async () => {
  for (const [minutes, bound] of [[1, 15], [5, 63]] as const) {
    const durationMs = minutes * 60_000;
    assert.equal(maxAttemptsDuring(durationMs), bound, "the bound computed from the schedule");
    // The outage starts right after a successful poll, so the next poll (10 s later) is its first failed attempt.
    const from = 1;
    const to = from + durationMs;
    for (
      const [dice, random] of [["shortest", () => 0], ["longest", () => 0.999999], ["random", Math.random]] as const
    ) {
      const requests = await simulate({ jobs: outage(from, to), random }, to + 30_000);
      const during = requests.filter((r) => r.at >= from && r.at < to);
      // The shortest delays after each failure in a row, from the first failed attempt on, until the outage ends.
      let expectedMost = 0;
      for (let at = 10_000, failures = 1; at < to; failures++) {
        expectedMost++;
        at += failureDelay(failures, undefined, defaultFailureBackoff, () => 0);
      }
      assert.ok(during.every((r) => r.path.endsWith("/actions/jobs")), "one request per attempt: no version re-check");
      assert.ok(during.length <= expectedMost, `${during.length} requests in ${minutes} min, at most ${expectedMost}`);
      assert.ok(during.length <= bound);
      if (dice === "shortest") assert.equal(during.length, expectedMost, "the shortest delays make exactly that many");
      if (dice === "longest") assert.ok(during.length >= expectedMost / 2, `${during.length}: it kept trying`);
    }
  }
});

Deno.test("a whole forge down (the version check fails too) costs one request per attempt", async () => {
  const down = outage(0, 60_000);
  const requests = await simulate({ jobs: down, version: down, random: () => 0 }, 60_000);
  assert.ok(requests.every((r) => r.path === "/api/v1/version"), "the jobs are not asked while the version fails");
  assert.equal(requests.filter((r) => r.at < 60_000).length, maxAttemptsDuring(60_000 - 1));
});

Deno.test("webhooks and settle checks during an outage add no requests: the failing target keeps its schedule", async () => {
  const times = Array.from({ length: 200 }, (_, i) => 20_000 + i * 100);
  const quiet = await simulate({ jobs: outage(5_000, 65_000), random: () => 0 }, 90_000);
  const poked = await simulate({ jobs: outage(5_000, 65_000), random: () => 0, pokes: times }, 90_000);
  const asked = await simulate({ jobs: outage(5_000, 65_000), random: () => 0, asks: times }, 90_000);
  const during = (requests: Request[]) => requests.filter((r) => r.at >= 5_000 && r.at < 65_000).length;
  assert.equal(during(poked), during(quiet), "200 pokes in 20 s during the outage");
  assert.equal(during(asked), during(quiet), "200 answerAfter calls in 20 s during the outage");
  // Once healthy again, a poke polls at once, as before the outage.
  const healthy = await simulate({ jobs: outage(5_000, 65_000), random: () => 0, pokes: [80_000] }, 90_000);
  assert.ok(jobsRequests(healthy).some((r) => r.at === 80_000 && r.ok), "a poke after recovery polls at once");
});
