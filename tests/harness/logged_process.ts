/**
 * Child processes of the test harness (the control plane, Gitea, runners): each logs to a file, runs in a session of
 * its own and dies with the test process, however that ends. `waitUntil` waits for one to be ready and gives up as
 * soon as it exits.
 */
import { tail } from "./process.ts";

/**
 * Polls `check` until it returns true. Fails early when one of `processes` exits, and at `deadline` with the last
 * error seen, so a startup failure names its cause.
 */
export async function waitUntil(
  what: string,
  deadline: number,
  processes: LoggedProcess | LoggedProcess[],
  check: () => Promise<boolean>,
): Promise<void> {
  const watched = Array.isArray(processes) ? processes : [processes];
  let lastError: unknown;
  let delayMs = 50;
  while (true) {
    const dead = watched.find((process) => process.exited);
    if (dead) throw new Error(`Gave up waiting until ${what}: ${dead.name} exited`);
    try {
      if (await check()) return;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`Timed out waiting until ${what}${reason}`, { cause: lastError });
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 500);
  }
}

export interface LoggedProcessOptions {
  name: string;
  command: string;
  args?: string[];
  logPath: string;
  cwd?: string;
  /** When set, the child sees only these variables. */
  env?: Record<string, string>;
  /** Also copy the output to this process's stderr, each line prefixed with the name. */
  echo?: boolean;
}

/**
 * A child process whose stdout and stderr go to a log file, registered for cleanup if the test process dies. It runs
 * in its own session, so signals reach everything it started (like a container's processes), and its leftovers are
 * killed when it exits.
 */
export interface LoggedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  readonly exited: boolean;
  /** Resolves when the process has exited and its output is flushed to the log file. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Sends SIGTERM, then SIGKILL after `graceMs`; resolves with the exit status. */
  stop(graceMs: number): Promise<Deno.CommandStatus>;
  /** The name, state and the log's last lines, for error messages. */
  describe(): string;
}

/** How long output may keep flowing after a process exits (from a child that escaped its process group). */
const outputDrainMs = 1_000;

/** Starts a child process that logs to a file. */
export function startLoggedProcess(options: LoggedProcessOptions): LoggedProcess {
  const log = Deno.openSync(options.logPath, { create: true, append: true });
  const { setpriv, setsid } = wrappers();
  // setpriv: if this process dies without running its unload handler (SIGKILL, a crash), the kernel kills the child.
  // That is safe because Deno spawns from the main thread, which lives as long as the process. setsid: a new process
  // group, so that one signal reaches the child's own children too.
  const prefix = [...setpriv ? ["setpriv", "--pdeathsig", "KILL", "--"] : [], ...setsid ? ["setsid"] : []];
  const argv = [...prefix, options.command, ...options.args ?? []];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: options.cwd,
      env: options.env,
      clearEnv: options.env !== undefined,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    log.close();
    throw new Error(`Cannot start ${options.name} (${options.command})`, { cause: error });
  }
  const signalAll = (name: Deno.Signal): void => {
    try {
      // setsid without a fork keeps the pid, which is now also the process group id.
      if (setsid) Deno.kill(-child.pid, name);
      else child.kill(name);
    } catch {
      // Already gone.
    }
  };
  const killNow = (): void => signalAll("SIGKILL");
  liveProcesses.add(killNow);
  installLeakGuards();

  const echoPrefix = options.echo ? new TextEncoder().encode(`[${options.name}] `) : undefined;
  const readers = [child.stdout.getReader(), child.stderr.getReader()];
  const pump = async (reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> => {
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) return;
        await writeAll(log, value);
        if (echoPrefix) {
          await writeAll(Deno.stderr, echoPrefix);
          await writeAll(Deno.stderr, value);
        }
      }
    } catch {
      // Cancelled after the drain timeout.
    }
  };
  const pumps = Promise.all(readers.map(pump));
  let exited = false;
  const status = child.status.then(async (result) => {
    exited = true;
    signalAll("SIGKILL");
    let drainTimer: ReturnType<typeof setTimeout> | undefined;
    const drained = new Promise<void>((resolve) => drainTimer = setTimeout(resolve, outputDrainMs));
    await Promise.race([pumps, drained]);
    clearTimeout(drainTimer);
    await Promise.all(readers.map((reader) => reader.cancel().catch(() => {})));
    await pumps;
    log.close();
    liveProcesses.delete(killNow);
    removeLeakGuardsIfIdle();
    return result;
  });
  return {
    name: options.name,
    pid: child.pid,
    logPath: options.logPath,
    get exited(): boolean {
      return exited;
    },
    status,
    stop: async (graceMs: number): Promise<Deno.CommandStatus> => {
      if (exited) return status;
      signalAll("SIGTERM");
      const timer = setTimeout(() => signalAll("SIGKILL"), graceMs);
      try {
        return await status;
      } finally {
        clearTimeout(timer);
      }
    },
    describe: (): string => {
      const state = exited ? "exited" : `running as pid ${child.pid}`;
      return `--- ${options.name} (${state}), last lines of ${options.logPath}:\n${tail(options.logPath, 15)}`;
    },
  };
}

let availableWrappers: { setpriv: boolean; setsid: boolean } | undefined;

/** Which util-linux wrappers exist here; without them processes still run, with weaker cleanup. */
function wrappers(): { setpriv: boolean; setsid: boolean } {
  const works = (command: string): boolean => {
    try {
      return new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success;
    } catch {
      return false;
    }
  };
  availableWrappers ??= { setpriv: works("setpriv"), setsid: works("setsid") };
  return availableWrappers;
}

async function writeAll(writer: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await writer.write(bytes.subarray(offset));
}

// ---------------------------------------------------------------------------------------------------------------
// Leak guards: a test run that is interrupted or crashes must not leave an apiserver or runner behind.

const liveProcesses = new Set<() => void>();
/** Temporary folders to remove if the test process is interrupted. */
export const liveDirs = new Set<string>();
let guardsInstalled = false;
let signalGuards = true;

/**
 * For programs that stop the harness themselves on SIGINT/SIGTERM (the sandbox): the harness then leaves those
 * signals alone. Its children still die with this process (pdeathsig), and `unload` still cleans up.
 */
export function leaveSignalsToCaller(): void {
  signalGuards = false;
  if (guardsInstalled) {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    Deno.removeSignalListener("SIGTERM", onTerminate);
  }
}

function killAllNow(): void {
  for (const kill of liveProcesses) kill();
}

function cleanUpNow(): void {
  killAllNow();
  for (const dir of liveDirs) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Best effort: a process may still be writing into it.
    }
  }
}

function onInterrupt(): void {
  cleanUpNow();
  Deno.exit(130);
}

function onTerminate(): void {
  cleanUpNow();
  Deno.exit(143);
}

function installLeakGuards(): void {
  if (guardsInstalled) return;
  guardsInstalled = true;
  globalThis.addEventListener("unload", cleanUpNow);
  if (!signalGuards) return;
  Deno.addSignalListener("SIGINT", onInterrupt);
  Deno.addSignalListener("SIGTERM", onTerminate);
}

function removeLeakGuardsIfIdle(): void {
  if (!guardsInstalled || liveProcesses.size > 0) return;
  guardsInstalled = false;
  globalThis.removeEventListener("unload", cleanUpNow);
  if (!signalGuards) return;
  Deno.removeSignalListener("SIGINT", onInterrupt);
  Deno.removeSignalListener("SIGTERM", onTerminate);
}
