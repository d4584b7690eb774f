/**
 * Runs the operator as its own process, through the same entry point (`main.ts`) and with the same Deno permission
 * flags as the `run` task in deno.json, so tests exercise what users run.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnTiedToThisProcess, type TiedProcess } from "./process.ts";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The permission flags of the `run` task: everything between `deno run` and `main.ts`. */
export async function runTaskFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(join(repoRoot, "deno.json")));
  const words = String(config.tasks.run).split(/\s+/);
  const start = words.indexOf("run");
  const end = words.indexOf("main.ts");
  if (words[0] !== "deno" || start !== 1 || end < 0) throw new Error(`Unexpected run task: ${config.tasks.run}`);
  return words.slice(start + 1, end);
}

export interface OperatorProcess {
  readonly logPath: string;
  /** Log lines so far, parsed from JSON. */
  logs(): Promise<Record<string, unknown>[]>;
  logTail(lines?: number): Promise<string>;
  /** SIGTERM (graceful) or SIGKILL (the watchdog kills it at once). Resolves with the exit code. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<number>;
  readonly exited: Promise<number>;
  /** Whether the process is still running. */
  running(): boolean;
  /** The port of its HTTP server (health, metrics, webhooks), from its log. */
  port(): Promise<number>;
  /** The operator's own process id (not its watchdog's), for CPU and memory figures; undefined once it exited. */
  pid(): number | undefined;
}

export interface StartOperatorOptions {
  kubeconfigPath: string;
  /** Where the log file goes. */
  dir: string;
  /** Extra flags, e.g. `["--poll-interval", "2s"]`. */
  args?: string[];
  /** A name for the log file. */
  name?: string;
}

/** Starts the operator; its JSON log goes to `<dir>/<name>.log`. */
export async function startOperator(options: StartOperatorOptions): Promise<OperatorProcess> {
  const logPath = join(options.dir, `${options.name ?? "operator"}.log`);
  const flags = await runTaskFlags();
  // GRO_OPERATOR_CPU=1 runs the operator on those CPUs only (taskset's list), e.g. apart from a control plane pinned
  // elsewhere; taskset execs Deno, so the process and its pid stay the operator's.
  const cpus = Deno.env.get("GRO_OPERATOR_CPU");
  const child: TiedProcess = spawnTiedToThisProcess(cpus ? "taskset" : Deno.execPath(), [
    ...(cpus ? ["-c", cpus, Deno.execPath()] : []),
    "run",
    ...flags,
    join(repoRoot, "main.ts"),
    "run",
    "--kubeconfig",
    options.kubeconfigPath,
    "--health-port",
    "0",
    "--log-format",
    "json",
    "--log-level",
    "debug",
    ...(options.args ?? []),
  ], { cwd: repoRoot, env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "/tmp" } });
  const file = await Deno.open(logPath, { append: true, create: true });
  const copy = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
    for await (let chunk of stream) {
      while (chunk.length > 0) chunk = chunk.subarray(await file.write(chunk));
    }
  };
  const copied = Promise.all([copy(child.process.stdout), copy(child.process.stderr)]).finally(() => file.close());
  let done = false;
  const exited = Promise.all([child.process.status, copied]).then(([status]) => {
    done = true;
    return status.code;
  });
  const readLines = async (): Promise<string[]> => (await Deno.readTextFile(logPath)).split("\n").filter(Boolean);
  return {
    logPath,
    exited,
    running: () => !done,
    pid: () => (done ? undefined : denoChildOf(child.process.pid)),
    async port(): Promise<number> {
      for (let attempt = 0; attempt < 300; attempt++) {
        const line = (await readLines()).map((text) => {
          try {
            return JSON.parse(text);
          } catch {
            return {};
          }
        }).find((entry) => typeof entry.port === "number");
        if (line) return line.port;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error(`The operator logged no port in 30 s (${logPath})`);
    },
    async logs(): Promise<Record<string, unknown>[]> {
      return (await readLines()).flatMap((line) => {
        try {
          return [JSON.parse(line)];
        } catch {
          return [{ message: line }];
        }
      });
    },
    async logTail(lines = 40): Promise<string> {
      return (await readLines()).slice(-lines).join("\n");
    },
    stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<number> {
      child.kill(signal);
      return exited;
    },
  };
}

/** The Deno process among the children of `parent` (the watchdog also runs a bash subshell), from Linux's /proc. */
function denoChildOf(parent: number): number | undefined {
  let children: string;
  try {
    children = Deno.readTextFileSync(`/proc/${parent}/task/${parent}/children`);
  } catch {
    return undefined;
  }
  return children.trim().split(/\s+/).filter(Boolean).map(Number).find((pid) => {
    try {
      return Deno.readTextFileSync(`/proc/${pid}/comm`).trim() === "deno";
    } catch {
      return false;
    }
  });
}
