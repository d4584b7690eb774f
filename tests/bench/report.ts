/**
 * The benchmark's figures: distributions (median, p95, max), single values, the target each is checked against, and
 * the table and JSON they are reported as. Targets are checked here, by the benchmark, never by timed assertions in
 * tests.
 */

export interface Distribution {
  n: number;
  median: number;
  p95: number;
  max: number;
  min: number;
}

/** Nearest-rank percentile of sorted values (p95 of 20 samples is the 19th). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error("Cannot take a percentile of no samples");
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)];
}

export function distribution(values: readonly number[]): Distribution {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    median: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    max: sorted[sorted.length - 1],
    min: sorted[0],
  };
}

/** A distribution-free interval for the median: order statistics picked with the binomial distribution. */
export interface MedianInterval {
  low: number;
  high: number;
  /** The interval's exact coverage, at least the confidence asked for (0.961 for 9 samples at 0.95). */
  coverage: number;
}

/**
 * The narrowest interval [x(k), x(n+1-k)] of the sorted samples that holds the population's median with at least
 * `confidence`, whatever the distribution: the median lies below x(k) only when fewer than k samples do, which has the
 * probability P(B <= k - 1) for B ~ Binomial(n, 1/2), and likewise above. Undefined when no such interval exists
 * (fewer than 6 samples at 0.95: even [min, max] covers only 1 - 2 / 2^n).
 */
export function medianInterval(values: readonly number[], confidence = 0.95): MedianInterval | undefined {
  if (!(confidence > 0 && confidence < 1)) throw new RangeError(`A confidence is between 0 and 1: ${confidence}`);
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  // P(B <= i), summed in log space so that 2^-n does not underflow for large n; k is the largest with
  // P(B <= k - 1) <= (1 - confidence) / 2, tail that probability.
  let logTerm = -n * Math.LN2;
  let cdf = 0;
  let k = 0;
  let tail = 0;
  for (let i = 0; i < Math.floor(n / 2); i++) {
    if (i > 0) logTerm += Math.log(n - i + 1) - Math.log(i);
    cdf += Math.exp(logTerm);
    if (cdf > (1 - confidence) / 2) break;
    k = i + 1;
    tail = cdf;
  }
  if (k === 0) return undefined;
  return { low: sorted[k - 1], high: sorted[n - k], coverage: 1 - 2 * tail };
}

export interface Target {
  /** What is expected, as printed: `≤ 100 ms`. */
  text: string;
  pass: boolean;
}

/** One row of the table: a distribution or a single value, in `unit`, with its target if it has one. */
export interface Figure {
  part: string;
  what: string;
  unit: string;
  distribution?: Distribution;
  value?: number;
  target?: Target;
  /** A short remark printed after the table (how it was measured, why a figure is missing). */
  note?: string;
}

/** `value <= limit`, printed as `≤ limit unit`. */
export function atMost(value: number, limit: number, unit: string): Target {
  return { text: `≤ ${limit} ${unit}`.trim(), pass: value <= limit };
}

/** `value >= limit`, printed as `≥ limit unit`. */
export function atLeast(value: number, limit: number, unit: string): Target {
  return { text: `≥ ${limit} ${unit}`.trim(), pass: value >= limit };
}

/** Rounds for printing: three significant digits, at most three decimals. */
export function round(value: number): string {
  if (!Number.isFinite(value) || Number.isInteger(value)) return String(value);
  const magnitude = Math.abs(value);
  const decimals = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : magnitude >= 1 ? 2 : 3;
  return value.toFixed(decimals);
}

function describe(figure: Figure): { n: string; value: string } {
  const unit = figure.unit ? ` ${figure.unit}` : "";
  if (figure.distribution) {
    const { n, median, p95, max } = figure.distribution;
    return { n: String(n), value: `${round(median)} / ${round(p95)} / ${round(max)}${unit}` };
  }
  if (figure.value !== undefined) return { n: "", value: `${round(figure.value)}${unit}` };
  return { n: "", value: "(not measured)" };
}

/** A Markdown table: part, figure, samples, median / p95 / max (or the value), target and PASS or MISS. */
export function formatTable(figures: readonly Figure[]): string {
  const header = ["part", "figure", "n", "median / p95 / max, or value", "target", "result"];
  const rows = figures.map((figure) => {
    const { n, value } = describe(figure);
    return [
      figure.part,
      figure.what,
      n,
      value,
      figure.target?.text ?? "",
      figure.target ? (figure.target.pass ? "PASS" : "MISS") : "",
    ];
  });
  const notes = figures.filter((figure) => figure.note).map((figure) =>
    `- ${figure.part}, ${figure.what}: ${figure.note}`
  );
  return [markdownTable(header, rows), ...(notes.length > 0 ? ["", ...notes] : [])].join("\n");
}

/** A Markdown table whose columns are padded to their widest cell. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)].join("\n");
}

/** The length of the union of intervals, in their unit. */
export function unionMs(intervals: readonly (readonly [number, number])[]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let [start, end] = sorted[0] ?? [0, 0];
  for (const [from, to] of sorted.slice(1)) {
    if (from > end) {
      total += end - start;
      [start, end] = [from, to];
    } else end = Math.max(end, to);
  }
  return total + end - start;
}
