import assert from "node:assert/strict";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { planRunnerJobs } from "../../src/runner_group/planner.ts";
import type { RunnerGroupSpec, WarmPoolSchedule } from "../../src/runner_group/schema.ts";
import { validateGroup } from "../../src/runner_group/validate.ts";
import { effectiveWarmPool, type WarmPool, warmPoolScheduleIssues } from "../../src/runner_group/warm_schedule.ts";

// A fake clock: every case passes its own time; nothing here reads the real one.
const at = (iso: string): number => Date.parse(iso);
const iso = (ms: number | undefined): string | undefined => ms === undefined ? undefined : new Date(ms).toISOString();

type PoolSpec = Pick<RunnerGroupSpec, "maxActiveRunners" | "minIdleRunners" | "warmPoolSchedules">;
const pool = (spec: PoolSpec, time: string): { size: number; next?: string; nextSize?: number } => {
  const result: WarmPool = effectiveWarmPool(spec, at(time));
  return {
    size: result.size,
    ...(result.nextChangeAt !== undefined ? { next: iso(result.nextChangeAt), nextSize: result.nextSize } : {}),
  };
};

Deno.test("without schedules the pool is minIdleRunners within maxActiveRunners, and never changes", () => {
  assert.deepEqual(pool({ maxActiveRunners: 4, minIdleRunners: 2 }, "2026-01-05T10:00:00Z"), { size: 2 });
  assert.deepEqual(pool({ maxActiveRunners: 1, minIdleRunners: 2 }, "2026-01-05T10:00:00Z"), { size: 1 });
  assert.deepEqual(pool({ maxActiveRunners: 4 }, "2026-01-05T10:00:00Z"), { size: 0 });
});

Deno.test("a window across midnight opens at its time, is open after midnight, and closes after its duration", () => {
  const spec: PoolSpec = {
    maxActiveRunners: 10,
    minIdleRunners: 1,
    warmPoolSchedules: [{ cron: "0 22 * * *", duration: "4h", minIdleRunners: 3 }],
  };
  assert.deepEqual(pool(spec, "2026-01-05T21:59:59Z"), { size: 1, next: "2026-01-05T22:00:00.000Z", nextSize: 3 });
  // The boundaries: open from the occurrence on (inclusive), closed from occurrence + duration on.
  assert.deepEqual(pool(spec, "2026-01-05T22:00:00Z"), { size: 3, next: "2026-01-06T02:00:00.000Z", nextSize: 1 });
  // After midnight the window opened the day before is still open: the look-back crosses the day.
  assert.deepEqual(pool(spec, "2026-01-06T01:59:59.999Z"), { size: 3, next: "2026-01-06T02:00:00.000Z", nextSize: 1 });
  assert.deepEqual(pool(spec, "2026-01-06T02:00:00Z"), { size: 1, next: "2026-01-06T22:00:00.000Z", nextSize: 3 });
});

Deno.test("overlapping windows: the largest open one applies; a weekend has none", () => {
  // 2026-01-09 is a Friday.
  const spec: PoolSpec = {
    maxActiveRunners: 10,
    warmPoolSchedules: [
      { cron: "0 8 * * 1-5", duration: "10h", minIdleRunners: 2 }, // working day
      { cron: "0 12 * * 1-5", duration: "2h", minIdleRunners: 4 }, // the midday rush, inside it
      { cron: "0 9 * * 1-5", duration: "1h", minIdleRunners: 1 }, // smaller than the day's: changes nothing
    ],
  };
  assert.deepEqual(pool(spec, "2026-01-09T07:00:00Z"), { size: 0, next: "2026-01-09T08:00:00.000Z", nextSize: 2 });
  // 09:00 and 10:00 (the small window's edges) are no change: the next one is at 12:00.
  assert.deepEqual(pool(spec, "2026-01-09T08:30:00Z"), { size: 2, next: "2026-01-09T12:00:00.000Z", nextSize: 4 });
  assert.deepEqual(pool(spec, "2026-01-09T13:00:00Z"), { size: 4, next: "2026-01-09T14:00:00.000Z", nextSize: 2 });
  assert.deepEqual(pool(spec, "2026-01-09T17:00:00Z"), { size: 2, next: "2026-01-09T18:00:00.000Z", nextSize: 0 });
  assert.deepEqual(pool(spec, "2026-01-09T18:00:00Z"), { size: 0, next: "2026-01-12T08:00:00.000Z", nextSize: 2 });
});

Deno.test("occurrences within a window extend it; windows that overlap for ever never change the pool", () => {
  const chained: PoolSpec = {
    maxActiveRunners: 10,
    warmPoolSchedules: [{ cron: "0 8-10 * * *", duration: "90m", minIdleRunners: 2 }],
  };
  assert.deepEqual(pool(chained, "2026-01-05T08:30:00Z"), { size: 2, next: "2026-01-05T11:30:00.000Z", nextSize: 0 });
  const endless: PoolSpec = {
    maxActiveRunners: 10,
    warmPoolSchedules: [{ cron: "*/10 * * * *", duration: "1h", minIdleRunners: 2 }],
  };
  assert.deepEqual(pool(endless, "2026-01-05T08:30:00Z"), { size: 2 });
});

Deno.test("a seconds field opens windows within the minute", () => {
  const spec: PoolSpec = {
    maxActiveRunners: 10,
    warmPoolSchedules: [{ cron: "30 0 9 * * *", duration: "40s", minIdleRunners: 2 }],
  };
  assert.deepEqual(pool(spec, "2026-01-05T09:00:10Z"), { size: 0, next: "2026-01-05T09:00:30.000Z", nextSize: 2 });
  assert.deepEqual(pool(spec, "2026-01-05T09:00:45Z"), { size: 2, next: "2026-01-05T09:01:10.000Z", nextSize: 0 });
});

Deno.test("a time zone moves the windows; DST in Europe/Berlin: a 02:30 window in a skipped and a repeated hour", () => {
  const berlin: PoolSpec = {
    maxActiveRunners: 10,
    warmPoolSchedules: [{ cron: "30 2 * * *", duration: "1h", minIdleRunners: 2, timeZone: "Europe/Berlin" }],
  };
  // Winter (CET, UTC+1): 02:30 is 01:30Z.
  assert.deepEqual(pool(berlin, "2026-03-28T01:00:00Z"), { size: 0, next: "2026-03-28T01:30:00.000Z", nextSize: 2 });
  // 2026-03-29: clocks go from 02:00 to 03:00, so 02:30 does not exist; the window opens at 03:00 CEST (01:00Z),
  // once, and lasts one real hour.
  assert.deepEqual(pool(berlin, "2026-03-28T03:00:00Z"), { size: 0, next: "2026-03-29T01:00:00.000Z", nextSize: 2 });
  assert.deepEqual(pool(berlin, "2026-03-29T01:00:00Z"), { size: 2, next: "2026-03-29T02:00:00.000Z", nextSize: 0 });
  // Summer (CEST, UTC+2): 02:30 is 00:30Z.
  assert.deepEqual(pool(berlin, "2026-03-29T03:00:00Z"), { size: 0, next: "2026-03-30T00:30:00.000Z", nextSize: 2 });
  // 2026-10-25: clocks go from 03:00 back to 02:00, so 02:30 happens twice (00:30Z and 01:30Z); the window opens at
  // the first only, and does not open again an hour later.
  assert.deepEqual(pool(berlin, "2026-10-25T00:00:00Z"), { size: 0, next: "2026-10-25T00:30:00.000Z", nextSize: 2 });
  assert.deepEqual(pool(berlin, "2026-10-25T00:45:00Z"), { size: 2, next: "2026-10-25T01:30:00.000Z", nextSize: 0 });
  assert.deepEqual(pool(berlin, "2026-10-25T01:30:00Z"), { size: 0, next: "2026-10-26T01:30:00.000Z", nextSize: 2 });
  // Without timeZone the expression is read in UTC.
  const utc: PoolSpec = { ...berlin, warmPoolSchedules: [{ cron: "30 2 * * *", duration: "1h", minIdleRunners: 2 }] };
  assert.deepEqual(pool(utc, "2026-10-25T00:00:00Z"), { size: 0, next: "2026-10-25T02:30:00.000Z", nextSize: 2 });
});

Deno.test("maxActiveRunners caps a window; a window the cap hides is no change", () => {
  const schedules: WarmPoolSchedule[] = [{ cron: "0 8 * * *", duration: "8h", minIdleRunners: 5 }];
  assert.deepEqual(
    pool({ maxActiveRunners: 3, minIdleRunners: 1, warmPoolSchedules: schedules }, "2026-01-05T09:00:00Z"),
    {
      size: 3,
      next: "2026-01-05T16:00:00.000Z",
      nextSize: 1,
    },
  );
  assert.deepEqual(
    pool({ maxActiveRunners: 2, minIdleRunners: 2, warmPoolSchedules: schedules }, "2026-01-05T09:00:00Z"),
    {
      size: 2,
    },
  );
  // A paused group keeps no pool, whatever the schedules say.
  assert.deepEqual(pool({ maxActiveRunners: 0, warmPoolSchedules: schedules }, "2026-01-05T09:00:00Z"), { size: 0 });
});

Deno.test("cron expressions the library cannot read, never-occurring ones and unknown time zones are named", () => {
  const schedule = (extra: Partial<WarmPoolSchedule>): WarmPoolSchedule => ({
    cron: "0 8 * * 1-5",
    duration: "8h",
    minIdleRunners: 2,
    ...extra,
  });
  assert.deepEqual(warmPoolScheduleIssues([schedule({}), schedule({ timeZone: "America/New_York" })]), []);
  const issues = warmPoolScheduleIssues([
    schedule({}),
    schedule({ cron: "61 * * * *" }),
    schedule({ timeZone: "Mars/Olympus" }),
    schedule({ cron: "0 0 30 2 *" }),
    schedule({ cron: "2026-01-01T00:00:00" }),
    schedule({ cron: "0 0 0 1 1 * 2030" }),
    schedule({ cron: "@reboot" }),
  ]);
  assert.deepEqual(issues.map((issue) => issue.path), [
    [1, "cron"],
    [2, "timeZone"],
    [3, "cron"],
    [4, "cron"],
    [5, "cron"],
    [6, "cron"],
  ]);
  assert.match(issues[0].message, /^cannot parse cron expression "61 \* \* \* \*": invalid value for minute: 61$/);
  assert.match(issues[1].message, /^unknown time zone "Mars\/Olympus": expected an IANA name such as Europe\/Berlin$/);
  assert.match(issues[2].message, /^cron expression "0 0 30 2 \*" never occurs$/);
  assert.match(issues[3].message, /is a date, not a cron expression/);
});

Deno.test("validation reports schedule problems in SpecValid's message, naming the field", () => {
  const spec = (schedules: unknown[]): { spec: unknown } => ({
    spec: {
      scope: "org",
      org: "acme",
      giteaURL: "https://git.example.com",
      maxActiveRunners: 4,
      authToken: { name: "t", key: "api" },
      warmPoolSchedules: schedules,
    },
  });
  const good = { cron: "0 8 * * 1-5", duration: "1h30m", minIdleRunners: 2 };
  const valid = validateGroup(spec([good, { ...good, cron: "*/30 * * * * *", timeZone: "Europe/Berlin" }]));
  assert.equal(valid.ok, true, valid.ok ? "" : valid.message);
  const cases: [unknown, RegExp][] = [
    [
      { ...good, cron: "61 * * * *" },
      /^spec\.warmPoolSchedules\[1\]\.cron: cannot parse cron expression "61 \* \* \* \*"/,
    ],
    [
      { ...good, timeZone: "Mars/Olympus" },
      /^spec\.warmPoolSchedules\[1\]\.timeZone: unknown time zone "Mars\/Olympus"/,
    ],
    // What the CRD's schema also rejects, for clusters whose CRD is older than the operator.
    [{ ...good, cron: "every day" }, /^spec\.warmPoolSchedules\[1\]\.cron: expected a cron expression of 5 fields/],
    [{ ...good, duration: "8 hours" }, /^spec\.warmPoolSchedules\[1\]\.duration: expected a duration such as 8h/],
    [{ ...good, duration: "5s" }, /^spec\.warmPoolSchedules\[1\]\.duration: expected a duration from 10s to 744h$/],
    [{ ...good, duration: "745h" }, /^spec\.warmPoolSchedules\[1\]\.duration: expected a duration from 10s to 744h$/],
    [{ ...good, minIdleRunners: 0 }, /^spec\.warmPoolSchedules\[1\]\.minIdleRunners: /],
    [{ ...good, timeZone: "Europe Berlin" }, /^spec\.warmPoolSchedules\[1\]\.timeZone: expected an IANA time zone/],
  ];
  for (const [bad, message] of cases) {
    const result = validateGroup(spec([good, bad]));
    assert.equal(result.ok, false, JSON.stringify(bad));
    if (!result.ok) {
      assert.equal(result.reason, "InvalidSpec");
      assert.match(result.message, message);
    }
  }
});

Deno.test("when a window closes, idle runners beyond the smaller pool get the grace period from the close", () => {
  const spec: PoolSpec = {
    maxActiveRunners: 4,
    warmPoolSchedules: [{ cron: "0 9 * * *", duration: "1h", minIdleRunners: 2 }],
  };
  const closedAt = at("2026-01-05T10:00:00Z");
  const warm = (slot: number) => ({ name: `g-warm-${slot}`, attempt: 0, state: "active" as const });
  const plan = (now: number) =>
    planRunnerJobs({
      groupKey: "ci/g",
      maxActiveRunners: spec.maxActiveRunners,
      minIdleRunners: effectiveWarmPool(spec, now).size,
      warmPoolShrunkAt: closedAt,
      // Idle since the window opened, an hour before it closed.
      idleSince: () => at("2026-01-05T09:00:05Z"),
      idleGraceMs: 5_000,
      labels: effectiveRunnerLabels(["linux:host"], false),
      demand: { jobs: [], fetchedAt: now, busyRunners: new Set() },
      ownerOf: () => "ci/g",
      runnerJobs: [warm(0), warm(1)],
      activeElsewhere: new Set(),
      now,
      retry: { limit: 3, baseDelayMs: 10_000, maxDelayMs: 300_000 },
      settleMs: 3_000,
    });
  assert.deepEqual(plan(closedAt - 1).remove, [], "the pool of 2 keeps both while the window is open");
  const justClosed = plan(closedAt);
  assert.deepEqual(justClosed.remove, [], "both are beyond the pool, but only since the close");
  assert.equal(justClosed.wakeAt, closedAt + 5_000);
  assert.deepEqual(plan(closedAt + 5_000).remove.sort(), ["g-warm-0", "g-warm-1"]);
});
