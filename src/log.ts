/**
 * Logging setup (LogTape) and the secret redactor. Log lines go to stderr as JSON lines or text. Every token the
 * operator reads is registered with {@linkcode registerSecret}, and the sink replaces it wherever it would appear,
 * so a secret cannot reach a log line even through an error message quoted from elsewhere.
 *
 * Lines reach stderr through a {@linkcode LineBuffer}: one write per few milliseconds instead of one per line. In a
 * burst each runner Job gets an info line; a CPU profile of the operator through a 100-job burst put logging at about
 * a tenth of its CPU, half of it in one synchronous write per line. `flushLogs()` writes what is pending; main.ts calls
 * it before exiting, and an uncaught error flushes too.
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

/** Where a {@linkcode LineBuffer} writes: like `Deno.stderr.writeSync`, returns how many bytes it took. */
export type WriteSync = (bytes: Uint8Array) => number;

export interface LineBufferOptions {
  /** Longest a line waits before it is written. Default 20 ms. */
  delayMs?: number;
  /** Pending characters past which the buffer is written at once. Default 64 Ki. */
  maxPending?: number;
}

/**
 * Collects lines and writes them together, in order: within `delayMs` of the first pending line, at once when more
 * than `maxPending` characters wait, and whenever `flush()` is called. A short write is continued until every byte is
 * out; a failing write drops that batch (stderr is gone, and there is nowhere to report it).
 */
export class LineBuffer {
  readonly #write: WriteSync;
  readonly #delayMs: number;
  readonly #maxPending: number;
  readonly #encoder = new TextEncoder();
  #pending: string[] = [];
  #pendingLength = 0;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(write: WriteSync, options: LineBufferOptions = {}) {
    this.#write = write;
    this.#delayMs = options.delayMs ?? 20;
    this.#maxPending = options.maxPending ?? 64 * 1024;
  }

  write(line: string): void {
    this.#pending.push(line);
    this.#pendingLength += line.length;
    if (this.#pendingLength > this.#maxPending) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), this.#delayMs);
  }

  /** Writes every pending line now. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.length === 0) return;
    const bytes = this.#encoder.encode(this.#pending.join(""));
    this.#pending = [];
    this.#pendingLength = 0;
    try {
      for (let offset = 0; offset < bytes.length;) offset += this.#write(bytes.subarray(offset));
    } catch {
      // Nowhere left to write.
    }
  }
}

let buffer: LineBuffer | undefined;

/** Writes the log lines still pending (before `Deno.exit`, which runs no timers). */
export function flushLogs(): void {
  buffer?.flush();
}

export interface LogOptions {
  level: "debug" | "info" | "warning" | "error";
  format: "json" | "text";
  /** Where formatted lines go, one call per line; stderr through a {@linkcode LineBuffer} by default. */
  write?: (line: string) => void;
}

function stderrBuffer(): LineBuffer {
  if (buffer) return buffer;
  const created = new LineBuffer((bytes) => Deno.stderr.writeSync(bytes));
  buffer = created;
  // Lines logged just before an uncaught error are written still (the pending timer keeps a loop that ends alive).
  for (const event of ["error", "unhandledrejection"]) {
    globalThis.addEventListener(event, () => created.flush());
  }
  return created;
}

/** Configures logging once for the process. */
export function configureLogging(options: LogOptions): void {
  flushLogs();
  const write = options.write ?? ((line: string) => stderrBuffer().write(line));
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
