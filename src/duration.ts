/**
 * The one duration format of the operator, for flags and for RunnerGroup fields alike: Go's `time.ParseDuration`
 * (the format of Kubernetes' `metav1.Duration`) limited to the units `h`, `m`, `s` and `ms`, e.g. `10s`, `8h`,
 * `1h30m`, `1.5h`. Every string it accepts, Go and Kubernetes' CEL `duration()` accept with the same meaning.
 */

/** The accepted syntax, as a regular expression source that RE2 (the API server's `pattern`) reads the same way. */
export const durationPattern = String.raw`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`;

const durationRegex = new RegExp(durationPattern);
const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Parses a duration such as "500ms", "10s", "5m", "1h" or "1h30m" into milliseconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (!durationRegex.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount, unit] of trimmed.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)) {
    total += Number(amount) * unitMs[unit as keyof typeof unitMs];
  }
  return Math.round(total);
}
