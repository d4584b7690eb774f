/**
 * Logging setup (LogTape) and the secret redactor. Log lines go to stderr as JSON lines or text. Every token the
 * operator reads is registered with {@linkcode registerSecret}, and the sink replaces it wherever it would appear,
 * so a secret cannot reach a log line even through an error message quoted from elsewhere.
 */
import {
  configureSync,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  resetSync,
  type Sink,
} from "@logtape/logtape";

const secrets = new Set<string>();
const redacted = "[REDACTED]";

/** Remembers a secret value so that it is masked in every later log line. Values under 6 characters are ignored. */
export function registerSecret(value: string): void {
  if (value.length >= 6) secrets.add(value);
}

/** Replaces every registered secret in a text. */
export function redact(text: string): string {
  let result = text;
  for (const secret of secrets) result = result.replaceAll(secret, redacted);
  return result;
}

export interface LogOptions {
  level: "debug" | "info" | "warning" | "error";
  format: "json" | "text";
  /** Where formatted lines go; stderr by default. */
  write?: (line: string) => void;
}

/** Configures logging once for the process. */
export function configureLogging(options: LogOptions): void {
  const encoder = new TextEncoder();
  const write = options.write ?? ((line: string) => Deno.stderr.writeSync(encoder.encode(line)));
  const format = options.format === "json"
    ? getJsonLinesFormatter({ properties: "flatten" })
    : getTextFormatter({ timestamp: "date-time", value: (v) => (typeof v === "string" ? v : Deno.inspect(v)) });
  const sink: Sink = (record: LogRecord) => write(redact(format(record)));
  resetSync();
  configureSync({
    sinks: { main: sink },
    loggers: [
      { category: ["gitea-runner-operator"], lowestLevel: options.level, sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
}

/** A logger under the operator's category, e.g. `logger("reconcile")`. */
export function logger(...category: string[]): Logger {
  return getLogger(["gitea-runner-operator", ...category]);
}

/** A one-line description of an error, with its cause chain. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  let message = error.message;
  let cause = error.cause;
  for (let depth = 0; cause instanceof Error && depth < 3; depth++) {
    if (!message.includes(cause.message)) message += `: ${cause.message}`;
    cause = cause.cause;
  }
  return message;
}
