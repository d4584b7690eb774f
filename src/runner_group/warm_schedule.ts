/**
 * Scheduled warm pools: `spec.warmPoolSchedules` raises the warm pool while a window is open. A window opens at each
 * occurrence of a schedule's cron expression (in its time zone) and stays open for its duration, in elapsed time. The
 * pool is the largest `minIdleRunners` of the spec and the open windows, within `maxActiveRunners`.
 *
 * Pure: the time is passed in, so the rules are tested with a fake clock. Cron expressions are read by croner, with
 * Vixie cron's rules: day of month and day of week are OR-ed, and across a DST change a fixed-time expression
 * (`30 2 * * *`) fires once, in a skipped hour at the first time after the gap, in a repeated hour at its first pass.
 */
import { Cron } from "croner";
import { parseDuration } from "../duration.ts";
import type { RunnerGroupSpec, WarmPoolSchedule } from "./schema.ts";

/** The warm pool a group keeps now, and when (and to what) it next changes. */
export interface WarmPool {
  /** Idle runners to keep ready now, within maxActiveRunners. */
  size: number;
  /** When the size next changes (ms since epoch); undefined when it does not, as far as the search looks ahead. */
  nextChangeAt?: number;
  /** The size from `nextChangeAt` on. */
  nextSize?: number;
}

/** A problem with one schedule that the CRD schema cannot see, with the path below `spec.warmPoolSchedules`. */
export interface ScheduleIssue {
  path: [number, "cron" | "timeZone"];
  message: string;
}

interface CompiledSchedule {
  cron: Cron;
  durationMs: number;
  minIdleRunners: number;
}

/**
 * Cron calls one computation may make. A boundary that does not change the size (a window opening inside a larger
 * one) costs one or two; schedules whose windows overlap for ever (`* * * * *` for an hour) would walk without end.
 * Past the budget, no change is reported: the periodic resync computes again from its own time.
 */
const cronCallBudget = 128;

const defaultTimeZone = "UTC";

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

function makeCron(expression: string, timeZone: string): Cron {
  // 5 fields, or 6 with seconds first; no year field. Without a function, croner schedules no timer.
  return new Cron(expression, { timezone: timeZone, mode: "5-or-6-parts" });
}

/** Finds what the CRD schema cannot: cron expressions croner cannot read or that never occur, unknown time zones. */
export function warmPoolScheduleIssues(schedules: readonly WarmPoolSchedule[]): ScheduleIssue[] {
  const issues: ScheduleIssue[] = [];
  for (const [index, schedule] of schedules.entries()) {
    const timeZone = schedule.timeZone ?? defaultTimeZone;
    if (!isTimeZone(timeZone)) {
      issues.push({
        path: [index, "timeZone"],
        message: `unknown time zone "${timeZone}": expected an IANA name such as Europe/Berlin`,
      });
      continue;
    }
    let cron: Cron;
    try {
      cron = makeCron(schedule.cron, timeZone);
    } catch (error) {
      const reason = (error instanceof Error ? error.message : String(error)).replace(/^Cron\w*:\s*/, "");
      issues.push({
        path: [index, "cron"],
        message: `cannot parse cron expression "${schedule.cron}": ${reason.charAt(0).toLowerCase()}${reason.slice(1)}`,
      });
      continue;
    }
    // croner also takes a date as a one-off "pattern"; a schedule must repeat.
    if (cron.getOnce() !== null) {
      issues.push({ path: [index, "cron"], message: `"${schedule.cron}" is a date, not a cron expression` });
    } else if (cron.nextRun(new Date(0)) === null) {
      // Without a year field, an expression that occurs at all does so within any 28 years.
      issues.push({ path: [index, "cron"], message: `cron expression "${schedule.cron}" never occurs` });
    }
  }
  return issues;
}

function compile(schedule: WarmPoolSchedule): CompiledSchedule {
  const durationMs = parseDuration(schedule.duration);
  if (durationMs === undefined) throw new Error(`Cannot parse warm pool duration "${schedule.duration}"`);
  return {
    cron: makeCron(schedule.cron, schedule.timeZone ?? defaultTimeZone),
    durationMs,
    minIdleRunners: schedule.minIdleRunners,
  };
}

/**
 * The warm pool of a group at `now` (ms since epoch), and its next change. Expects a spec that passed validation
 * (`warmPoolScheduleIssues` found nothing); throws otherwise.
 */
export function effectiveWarmPool(
  spec: Pick<RunnerGroupSpec, "maxActiveRunners" | "minIdleRunners" | "warmPoolSchedules">,
  now: number,
): WarmPool {
  const base = spec.minIdleRunners ?? 0;
  const cap = (wanted: number): number => Math.min(spec.maxActiveRunners, wanted);
  const declared = spec.warmPoolSchedules ?? [];
  // Nothing to look up when no window can change the size (none larger than the base, or the limit caps them all).
  if (cap(Math.max(base, ...declared.map((schedule) => schedule.minIdleRunners))) === cap(base)) {
    return { size: cap(base) };
  }
  const schedules = declared.map(compile);
  let budget = cronCallBudget;

  /** The latest occurrence at or before `at`; croner's previousRuns excludes the reference itself. */
  const latestAtOrBefore = (schedule: CompiledSchedule, at: number): number | undefined => {
    budget--;
    return schedule.cron.previousRuns(1, new Date(at + 1))[0]?.getTime();
  };
  const isOpen = (schedule: CompiledSchedule, latest: number | undefined, at: number): boolean =>
    latest !== undefined && at < latest + schedule.durationMs;

  /** When the schedule's state at `at` may change: its window's end when open, else its next occurrence. */
  const boundaryAfter = (schedule: CompiledSchedule, latest: number | undefined, at: number): number | undefined => {
    if (isOpen(schedule, latest, at)) return latest! + schedule.durationMs;
    budget--;
    return schedule.cron.nextRun(new Date(at))?.getTime();
  };

  const sizeOf = (open: readonly boolean[]): number =>
    cap(Math.max(base, ...schedules.filter((_, index) => open[index]).map((schedule) => schedule.minIdleRunners)));

  // The size now is always exact; only the search for its next change is bounded.
  const latest = schedules.map((schedule) => latestAtOrBefore(schedule, now));
  const open = schedules.map((schedule, index) => isOpen(schedule, latest[index], now));
  const size = sizeOf(open);
  const boundaries = schedules.map((schedule, index) => boundaryAfter(schedule, latest[index], now));
  // A schedule's state holds until its boundary, so only the schedules at the next boundary are looked at again. A
  // window's end is no change when an occurrence within it opened the next one, or a larger window is open.
  while (budget > 0) {
    const known = boundaries.filter((at): at is number => at !== undefined);
    if (known.length === 0) break;
    const at = Math.min(...known);
    for (const [index, schedule] of schedules.entries()) {
      if (boundaries[index] !== at) continue;
      const latestThen = latestAtOrBefore(schedule, at);
      open[index] = isOpen(schedule, latestThen, at);
      boundaries[index] = boundaryAfter(schedule, latestThen, at);
    }
    const nextSize = sizeOf(open);
    if (nextSize !== size) return { size, nextChangeAt: at, nextSize };
  }
  return { size };
}
