/**
 * Scheduled warm pools against a real API server, a real Gitea and real runner processes:
 *
 * - Schedules the CRD's schema can judge (a cron expression's shape, a duration's syntax and bounds, a time zone's
 *   shape) are rejected at admission, naming the field; those it cannot (a minute of 61, an unknown time zone) are
 *   reported in `SpecValid`, naming the field too.
 * - A window that opens seconds after the group is created (a seconds-field cron expression in a time zone 5:30 ahead
 *   of UTC) grows the pool to two registered idle runners; when it closes after 40 s, they are removed with their
 *   registrations once the grace period (5 s) has passed since the close. The operator runs with a 10-minute resync,
 *   so only its own wake-up at the window's edges can do this.
 */
import assert from "node:assert/strict";
import { parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import {
  createRunnerGroup,
  type Environment,
  getRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { isActiveJob, registrationNames, runnerJobsOf } from "../harness/queries.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "schedules";
const graceMs = 5_000;
const windowMs = 40_000;

type WarmPoolStatus = { size: number; nextChangeTime?: string; nextSize?: number };
type Condition = { type: string; status: string; reason: string; message: string };

async function activeWarmJobs(env: Environment, group: string): Promise<string[]> {
  return (await runnerJobsOf(env, namespace, group)).filter(isActiveJob).map((job) => job.metadata!.name!).sort();
}

async function registrations(env: Environment, group: string): Promise<string[]> {
  return (await registrationNames(env)).filter((name) => name.startsWith(`${group}-`));
}

async function warmPoolOf(env: Environment, group: string): Promise<WarmPoolStatus | undefined> {
  const object = await getRunnerGroup(env.custom, namespace, group);
  return (object.status as { warmPool?: WarmPoolStatus } | undefined)?.warmPool;
}

/** A daily cron expression with a seconds field for the instant `at`, read in a zone `offsetMinutes` ahead of UTC. */
function dailyCronAt(at: number, offsetMinutes: number): string {
  const local = new Date(at + offsetMinutes * 60_000);
  return `${local.getUTCSeconds()} ${local.getUTCMinutes()} ${local.getUTCHours()} * * *`;
}

Deno.test({
  name: "scheduled warm pools: admission, SpecValid, and a window that grows the pool and then shrinks it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const env = await startEnvironment();
    let operator: OperatorProcess | undefined;
    const detail = async (): Promise<string> =>
      `operator log:\n${await operator?.logTail(30)}\nstatus: ${
        JSON.stringify((await getRunnerGroup(env.custom, namespace, "office").catch(() => undefined))?.status)
      }`;
    try {
      await setUpRepository(env, { org: "acme", repo: "app", namespace });
      const base = repoGroupSpec(env, { org: "acme", repo: "app" }, { labels: ["office"], maxActiveRunners: 3 });
      const schedule = { cron: "0 8 * * 1-5", duration: "10h", minIdleRunners: 2, timeZone: "Europe/Berlin" };

      await t.step("schedules the schema can judge are rejected at admission, naming the field", async () => {
        const cases: [string, Record<string, unknown>, RegExp][] = [
          ["cron-shape", { cron: "every day" }, /spec\.warmPoolSchedules\[0\]\.cron: Invalid value/],
          ["cron-seven", { cron: "0 0 8 * * 1-5 2030" }, /spec\.warmPoolSchedules\[0\]\.cron: Invalid value/],
          ["duration-syntax", { duration: "8 hours" }, /spec\.warmPoolSchedules\[0\]\.duration: Invalid value/],
          ["duration-short", { duration: "5s" }, /spec\.warmPoolSchedules\[0\]\.duration: .*from 10s to 744h/],
          ["duration-long", { duration: "745h" }, /spec\.warmPoolSchedules\[0\]\.duration: .*from 10s to 744h/],
          ["zone-shape", { timeZone: "Europe Berlin" }, /spec\.warmPoolSchedules\[0\]\.timeZone: Invalid value/],
          ["no-pool", { minIdleRunners: 0 }, /spec\.warmPoolSchedules\[0\]\.minIdleRunners: Invalid value/],
        ];
        for (const [name, change, message] of cases) {
          const spec = { ...base, warmPoolSchedules: [{ ...schedule, ...change }] };
          const error = await createRunnerGroup(env.custom, namespace, name, spec).then(() => undefined, (e) => e);
          assert.ok(error, `${name} should be rejected`);
          assert.equal(error.code, 422, `${name}: ${error.body}`);
          assert.match(JSON.parse(String(error.body)).message, message, `${name}: ${error.body}`);
          assert.equal(parseRunnerGroupSpec(spec).success, false, `${name} passes the operator's own schema`);
        }
        // Compound durations, a seconds field and nicknames pass.
        for (
          const change of [{ duration: "1h30m" }, { cron: "30 0 8 * * 1-5" }, { cron: "@daily", timeZone: "UTC" }]
        ) {
          const spec = { ...base, maxActiveRunners: 0, warmPoolSchedules: [{ ...schedule, ...change }] };
          await createRunnerGroup(env.custom, namespace, "accepted", spec);
          await env.custom.deleteNamespacedCustomObject({
            group: "gitea.bpg.pw",
            version: "v1alpha1",
            plural: "runnergroups",
            namespace,
            name: "accepted",
          });
        }
      });

      operator = await startOperator({
        kubeconfigPath: env.cluster.kubeconfigPath,
        dir: env.dir,
        args: [
          "--namespaces",
          namespace,
          "--poll-interval",
          "2s",
          "--resync-interval",
          "10m",
          "--idle-runner-grace",
          `${graceMs / 1000}s`,
        ],
      });

      await t.step("what only the cron library can judge is reported in SpecValid, naming the field", async () => {
        await createRunnerGroup(env.custom, namespace, "typo", {
          ...base,
          labels: ["typo"],
          warmPoolSchedules: [schedule, { ...schedule, cron: "61 8 * * 1-5" }, { ...schedule, timeZone: "Mars/Base" }],
        });
        const condition = await eventually("SpecValid False on typo", async () => {
          const group = await getRunnerGroup(env.custom, namespace, "typo");
          return group.status?.conditions?.find((c: Condition) => c.type === "SpecValid" && c.status === "False");
        }, { timeoutMs: 30_000, detail });
        assert.equal(condition.reason, "InvalidSpec");
        assert.match(
          condition.message,
          /^spec\.warmPoolSchedules\[1\]\.cron: cannot parse cron expression "61 8 \* \* 1-5": .*minute.*; spec\.warmPoolSchedules\[2\]\.timeZone: unknown time zone "Mars\/Base"/,
        );
        assert.deepEqual(await activeWarmJobs(env, "typo"), [], "an invalid group starts no runner");
      });

      // The window opens 40 s from now, which leaves time to see the group's status before, even on a loaded
      // machine; Asia/Kolkata is 5:30 ahead of UTC all year, so a time zone that was ignored would put the window
      // hours away.
      const opensAt = Math.ceil((Date.now() + 40_000) / 1000) * 1000;
      const closesAt = opensAt + windowMs;
      await createRunnerGroup(env.custom, namespace, "office", {
        ...base,
        warmPoolSchedules: [
          {
            cron: dailyCronAt(opensAt, 330),
            duration: `${windowMs / 1000}s`,
            minIdleRunners: 2,
            timeZone: "Asia/Kolkata",
          },
        ],
      });

      await t.step("before the window, the pool is empty and the status says when it grows", async () => {
        await waitForFirstPoll(env.custom, namespace, "office");
        const pool = await eventually("status.warmPool", () => warmPoolOf(env, "office"), {
          timeoutMs: 10_000,
          detail,
        });
        assert.deepEqual(pool, { size: 0, nextChangeTime: new Date(opensAt).toISOString(), nextSize: 2 });
        assert.ok(Date.now() < opensAt, "the window is not open yet (the environment took too long to start)");
        assert.deepEqual(await activeWarmJobs(env, "office"), []);
      });

      await t.step("when the window opens, the pool grows to two registered idle runners", async () => {
        // Within the window: after it, the pool would be empty again.
        await eventually("two warm runners registered in Gitea", async () => {
          const jobs = await activeWarmJobs(env, "office");
          return jobs.length === 2 && (await registrations(env, "office")).join() === jobs.join() ? jobs : undefined;
        }, { timeoutMs: closesAt - Date.now() - 2_000, detail });
        assert.deepEqual(await activeWarmJobs(env, "office"), ["office-warm-0", "office-warm-1"]);
        const pool = await warmPoolOf(env, "office");
        assert.deepEqual(pool, { size: 2, nextChangeTime: new Date(closesAt).toISOString(), nextSize: 0 });
        const group = await getRunnerGroup(env.custom, namespace, "office");
        assert.equal((group.status as { idleRunners?: number }).idleRunners, 2);
      });

      await t.step("when it closes, the idle runners go after the grace period, with their registrations", async () => {
        // Until the grace period after the close has passed, both stay (checked all along). The clock is read after
        // each list: a removal the list shows happened before the list answered, so it is early only if the answer
        // came before the grace period ended; a list that was slow to answer proves nothing either way.
        for (;;) {
          const jobs = await activeWarmJobs(env, "office");
          const answeredAt = Date.now();
          if (answeredAt >= closesAt + graceMs) break;
          assert.equal(jobs.length, 2, `removed too early, ${answeredAt - closesAt} ms after the close: ${jobs}`);
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        await eventually("no warm runner Job and no registration left", async () => {
          return (await activeWarmJobs(env, "office")).length === 0 &&
            (await registrations(env, "office")).length === 0;
        }, { timeoutMs: 30_000, detail });
        const pool = await warmPoolOf(env, "office");
        assert.deepEqual(pool, {
          size: 0,
          nextChangeTime: new Date(opensAt + 86_400_000).toISOString(),
          nextSize: 2,
        });
        // Events are written in the background, after the removal they tell of.
        await eventually("events WarmRunnerCreated and IdleRunnerRemoved on office", async () => {
          const events = await env.core.listNamespacedEvent({ namespace });
          const reasons = events.items.filter((event) => event.involvedObject.name === "office").map((e) => e.reason);
          return reasons.includes("WarmRunnerCreated") && reasons.includes("IdleRunnerRemoved");
        }, { timeoutMs: 15_000, detail });
      });

      assert.equal(await operator.stop("SIGTERM"), 0);
    } finally {
      if (operator?.running()) await operator.stop("SIGKILL");
      await env.dispose();
    }
  },
});
