/**
 * Child processes of the test harness that never outlive the test run, whatever ends it: a bash watchdog tied to a
 * pipe from this process kills them when this process dies. Used for Gitea, the operator and runner processes.
 */

/** Finds a loopback port nobody listens on right now (see {@linkcode freeLoopbackPorts}). */
export function freeLoopbackPort(): number {
  return freeLoopbackPorts(1)[0];
}

/**
 * Finds `count` different loopback ports nobody listens on right now, for servers started in other processes. They
 * are picked below Linux's ephemeral range (`ip_local_port_range`), where outgoing connections take their local
 * ports: a port found by binding port 0 comes from that range, so any connection opened before the server binds it
 * may take it (seen once in CI: Gitea's port, taken while its database was set up). Each port is bound once to
 * check that it is free, and all are held until every one is picked; port 0 is the fallback.
 */
export function freeLoopbackPorts(count: number): number[] {
  const below = ephemeralRangeStart();
  const lowest = Math.max(1024, below - 16_384);
  const listeners: Deno.Listener[] = [];
  try {
    for (let attempt = 0; listeners.length < count && attempt < 200; attempt++) {
      const port = lowest + Math.floor(Math.random() * (below - lowest));
      try {
        listeners.push(Deno.listen({ hostname: "127.0.0.1", port }));
      } catch {
        // In use: pick another.
      }
    }
    while (listeners.length < count) listeners.push(Deno.listen({ hostname: "127.0.0.1", port: 0 }));
    return listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  } finally {
    for (const listener of listeners) listener.close();
  }
}

/** The first port of Linux's ephemeral range; 32768 (its default) when it cannot be read. */
function ephemeralRangeStart(): number {
  try {
    const start = Number(Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim().split(/\s+/)[0]);
    return Number.isInteger(start) && start > 2048 ? start : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * Runs `"$@"` under a bash watchdog tied to our stdin pipe. When this process dies in any way (even SIGKILL, or
 * `deno test` exiting on SIGINT without running listeners), the kernel closes the pipe and the watchdog SIGKILLs the
 * child. SIGTERM to the watchdog is forwarded to the child; the watchdog exits with the child's status.
 */
const lifeline = `
exec 3<&0
"$@" </dev/null & child=$!
(while read -r _; do :; done <&3; kill -KILL "$child" 2>/dev/null) &
watcher=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
code=0
while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
kill "$watcher" 2>/dev/null
exit "$code"
`;

/** A command running under the {@linkcode lifeline} watchdog. */
export interface TiedProcess {
  /** The watchdog process: read the command's output and exit status here; its stdin is the lifeline. */
  readonly process: Deno.ChildProcess;
  /** SIGTERM and SIGINT reach the command; SIGKILL cuts the lifeline, so the watchdog kills the command at once. */
  kill(signal?: "SIGTERM" | "SIGINT" | "SIGKILL"): void;
}

/** Spawns a command that cannot outlive this process (see {@linkcode lifeline}). */
export function spawnTiedToThisProcess(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): TiedProcess {
  const process = new Deno.Command("bash", {
    args: ["-c", lifeline, command, command, ...args],
    cwd: options.cwd,
    env: options.env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    process,
    kill(signal = "SIGTERM"): void {
      if (signal === "SIGKILL") {
        process.stdin.close().catch(() => {});
        return;
      }
      try {
        process.kill(signal);
      } catch {
        // Already exited.
      }
    },
  };
}

/** Appends a child's stdout and stderr to one file; resolves when both streams end. */
export async function captureOutput(child: Deno.ChildProcess, path: string): Promise<void> {
  const file = await Deno.open(path, { append: true, create: true });
  const copy = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
    for await (let chunk of stream) {
      while (chunk.length > 0) chunk = chunk.subarray(await file.write(chunk));
    }
  };
  try {
    await Promise.all([copy(child.stdout), copy(child.stderr)]);
  } finally {
    file.close();
  }
}

export function tail(path: string, lines: number): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
