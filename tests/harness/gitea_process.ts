/**
 * One Gitea server process and its files: app.ini, the sqlite database, repositories and the log, in a temporary
 * directory. `gitea.ts` builds the test-facing harness on it.
 */
import { userInfo } from "node:os";
import { join } from "node:path";
import { captureOutput, spawnTiedToThisProcess, tail, type TiedProcess } from "./process.ts";

export interface GiteaProcessOptions {
  /** The Gitea binary. */
  gitea: string;
  /** Gitea's source tree holding `templates/` and `options/`. */
  giteaSourceDir: string;
  /** Extra app.ini settings, merged over the defaults. */
  settings?: Record<string, Record<string, string>>;
  /** How long to wait for the API to answer after starting the process. Default 60 s. */
  readyTimeoutMs?: number;
}

/**
 * Gitea could not listen on its port: another process took it between the harness picking it (a free port then) and
 * Gitea binding it. Gitea 1.26.0 and 1.27.3 log the bind error and go on running without a listener until stopped
 * (seen in CI, and in tests/integration/gitea_harness_test.ts with either version).
 */
export class GiteaPortTakenError extends Error {
  override readonly name = "GiteaPortTakenError";
}

/** The Gitea process and its files. */
export class GiteaProcess {
  readonly configPath: string;
  readonly logPath: string;
  #port: number;
  #child: TiedProcess | undefined;
  #output: Promise<void> | undefined;
  #disposed = false;

  constructor(
    readonly options: GiteaProcessOptions,
    readonly dir: string,
    port: number,
  ) {
    this.#port = port;
    this.configPath = join(dir, "app.ini");
    this.logPath = join(dir, "gitea.log");
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}/`;
  }

  /**
   * Moves a Gitea that is not running to another port, rewriting only the port and root URL of its app.ini (its
   * secrets stay). For a first start whose port was taken meanwhile; a restart keeps its port, as its users expect.
   */
  async movePort(port: number): Promise<void> {
    if (this.#child) throw new Error(`Cannot move Gitea at ${this.url} to port ${port} while it runs`);
    const newUrl = `http://127.0.0.1:${port}/`;
    const ini = await Deno.readTextFile(this.configPath);
    const moved = ini.replace(/^HTTP_PORT = \d+$/m, `HTTP_PORT = ${port}`).replace(
      `ROOT_URL = ${this.url}\n`,
      `ROOT_URL = ${newUrl}\n`,
    );
    if (!moved.includes(`HTTP_PORT = ${port}\n`) || !moved.includes(`ROOT_URL = ${newUrl}\n`)) {
      throw new Error(`Cannot move Gitea to port ${port}: ${this.configPath} has no HTTP_PORT or ROOT_URL line`);
    }
    await Deno.writeTextFile(this.configPath, moved);
    this.#port = port;
  }

  appIni(): string {
    const data = join(this.dir, "data");
    const root: Record<string, string> = {
      APP_NAME: "gitea-runner-operator tests",
      RUN_MODE: "prod",
      RUN_USER: userInfo().username,
      WORK_PATH: this.dir,
    };
    // Gitea refuses to run as root unless told; test containers often run as root.
    if (Deno.uid() === 0) root.I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = "true";
    const sections: Record<string, Record<string, string>> = {
      "": root,
      server: {
        PROTOCOL: "http",
        HTTP_ADDR: "127.0.0.1",
        HTTP_PORT: String(this.port),
        ROOT_URL: this.url,
        DOMAIN: "127.0.0.1",
        APP_DATA_PATH: data,
        // Built without bindata: templates and options are read from the source tree.
        STATIC_ROOT_PATH: this.options.giteaSourceDir,
        DISABLE_SSH: "true",
        START_SSH_SERVER: "false",
        OFFLINE_MODE: "true",
        LFS_START_SERVER: "false",
      },
      database: { DB_TYPE: "sqlite3", PATH: join(data, "gitea.db"), SQLITE_JOURNAL_MODE: "WAL" },
      repository: { ROOT: join(this.dir, "repositories"), DEFAULT_BRANCH: "main" },
      security: { INSTALL_LOCK: "true", SECRET_KEY: randomSecret(), INTERNAL_TOKEN: randomSecret() },
      service: {
        DISABLE_REGISTRATION: "true",
        REQUIRE_SIGNIN_VIEW: "false",
        DEFAULT_ALLOW_CREATE_ORGANIZATION: "true",
      },
      oauth2: { ENABLED: "false" },
      mailer: { ENABLED: "false" },
      session: { PROVIDER: "memory" },
      cache: { ADAPTER: "memory" },
      indexer: { ISSUE_INDEXER_TYPE: "db", REPO_INDEXER_ENABLED: "false" },
      actions: { ENABLED: "true" },
      // Operator tests deliver webhooks to loopback listeners.
      webhook: { ALLOWED_HOST_LIST: "*" },
      "cron.update_checker": { ENABLED: "false" },
      // Logs go to stderr so that CLI commands print only their result on stdout.
      log: { MODE: "console", LEVEL: "Info" },
      "log.console": { STDERR: "true" },
    };
    for (const [section, values] of Object.entries(this.options.settings ?? {})) {
      sections[section] = { ...sections[section], ...values };
    }
    return Object.entries(sections).map(([section, values]) =>
      (section ? `[${section}]\n` : "") +
      Object.entries(values).map(([key, value]) => `${key} = ${value}\n`).join("")
    ).join("\n");
  }

  /** Runs a Gitea CLI command to completion and returns its stdout; its stderr goes to the log. */
  async cli(args: string[]): Promise<string> {
    const output = await new Deno.Command(this.options.gitea, {
      args: ["--config", this.configPath, "--work-path", this.dir, ...args],
      cwd: this.dir,
      env: { GITEA_WORK_DIR: this.dir, HOME: this.dir },
      stdin: "null",
    }).output();
    const decoder = new TextDecoder();
    // Only the subcommand: later arguments may be passwords.
    const command = `gitea ${args.slice(0, 3).join(" ")}`;
    await Deno.writeTextFile(this.logPath, `$ ${command}\n${decoder.decode(output.stderr)}`, { append: true });
    if (!output.success) {
      throw new Error(
        `Cannot run "${command}": exit code ${output.code}\n${tail(this.logPath, 20)}`,
      );
    }
    return decoder.decode(output.stdout);
  }

  async start(): Promise<void> {
    if (this.#disposed) throw new Error(`Cannot start Gitea at ${this.url}: the harness was disposed`);
    if (this.#child) return;
    const child = spawnTiedToThisProcess(this.options.gitea, [
      "--config",
      this.configPath,
      "--work-path",
      this.dir,
      "web",
    ], {
      cwd: this.dir,
      env: { GITEA_WORK_DIR: this.dir, HOME: this.dir },
    });
    this.#child = child;
    const logStart = logSize(this.logPath);
    this.#output = captureOutput(child.process, this.logPath);
    let exited = false;
    child.process.status.then(() => exited = true);
    const deadline = Date.now() + (this.options.readyTimeoutMs ?? 60_000);
    while (Date.now() < deadline) {
      if (exited) break;
      if (logSince(this.logPath, logStart).includes(`${this.port}: bind: address already in use`)) {
        await this.stop();
        throw new GiteaPortTakenError(`Cannot start Gitea at ${this.url}: another process has its port`);
      }
      try {
        const response = await fetch(`${this.url}api/v1/version`, { signal: AbortSignal.timeout(2_000) });
        await response.body?.cancel();
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await this.stop();
    throw new Error(
      `Cannot start Gitea at ${this.url}: ${exited ? "the process exited" : "its API did not answer in time"}\n` +
        tail(this.logPath, 30),
    );
  }

  /** Terminates Gitea (SIGTERM, then SIGKILL after 10 s) and waits until it and its output are gone. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await child.process.status;
    clearTimeout(timer);
    await this.#output;
    this.#child = undefined;
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.stop();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

function randomSecret(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function logSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

/** What the log got from byte `start` on (the log file is appended to by every start); only that part is read. */
function logSince(path: string, start: number): string {
  let file: Deno.FsFile | undefined;
  try {
    file = Deno.openSync(path);
    file.seekSync(start, Deno.SeekMode.Start);
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let text = "";
    for (let read = file.readSync(buffer); read !== null; read = file.readSync(buffer)) {
      text += decoder.decode(buffer.subarray(0, read), { stream: true });
    }
    return text + decoder.decode();
  } catch {
    return "";
  } finally {
    file?.close();
  }
}
