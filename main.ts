/**
 * gitea-runner-operator: starts one ephemeral Gitea Actions runner as a Kubernetes Job for each queued job.
 *
 * Composition root: parse the config, set up logging, build the parts, run, and stop cleanly on SIGTERM or SIGINT.
 */
import { runCheck } from "./src/check.ts";
import { parseConfig, usage, UsageError } from "./src/config.ts";
import { loadKubeConfig, makeClients } from "./src/kube/client.ts";
import { configureLogging, describeError, flushLogs, logger } from "./src/log.ts";
import { Manager } from "./src/manager.ts";
import { buildRunnerGroupCrd } from "./src/runner_group/crd.ts";

export const version = "0.1.0";

const encoder = new TextEncoder();
const print = (text: string): void => void Deno.stdout.writeSync(encoder.encode(`${text}\n`));
const printError = (text: string): void => void Deno.stderr.writeSync(encoder.encode(`${text}\n`));

async function main(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    print(usage());
    return 0;
  }
  let config;
  try {
    config = parseConfig(args, (name) => Deno.env.get(name));
  } catch (error) {
    if (error instanceof UsageError) {
      printError(`gitea-runner-operator: ${error.message}`);
      return 2;
    }
    throw error;
  }
  switch (config.command) {
    case "version":
      print(`gitea-runner-operator ${version}`);
      return 0;
    case "crds": {
      // Loaded here only: the running operator does not need a YAML library (about 2 MiB resident).
      const { default: YAML } = await import("yaml");
      print(`---\n${YAML.stringify(buildRunnerGroupCrd()).trimEnd()}`);
      return 0;
    }
    case "check": {
      configureLogging({ level: "warning", format: "text" });
      let clients: ReturnType<typeof makeClients> | undefined;
      return await runCheck({
        config,
        print,
        kube: async () => (clients ??= makeClients(
          await loadKubeConfig(config.kubeconfig, (name) => Deno.env.get(name)),
        )),
      });
    }
    case "run":
      break;
  }

  configureLogging({ level: config.logLevel, format: config.logFormat });
  const log = logger("main");
  let manager: Manager;
  try {
    manager = new Manager(config, makeClients(await loadKubeConfig(config.kubeconfig, (name) => Deno.env.get(name))));
  } catch (error) {
    log.error("Cannot start: {error}", { error: describeError(error) });
    return 1;
  }
  const stopped = Promise.withResolvers<string>();
  manager.onFatal = (error) => stopped.reject(error);
  for (const signal of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(signal, () => stopped.resolve(signal));
  log.info("Starting gitea-runner-operator {version}", {
    version,
    namespaces: config.namespaces.length > 0 ? config.namespaces.join(",") : "(all)",
  });
  const started = manager.start().catch((error) => stopped.reject(error));
  // A stop that hangs must not outlive the pod's termination grace period (30 s by default).
  const stopWithin = async (ms: number): Promise<void> => {
    const timer = setTimeout(() => {
      log.error("Stopping took longer than {ms} ms; exiting now", { ms });
      flushLogs();
      Deno.exit(1);
    }, ms);
    await manager.stop();
    clearTimeout(timer);
  };
  try {
    const signal = await stopped.promise;
    log.info("Received {signal}; stopping", { signal });
  } catch (error) {
    log.error("Stopped by an error: {error}", { error: describeError(error) });
    await stopWithin(20_000);
    return 1;
  }
  // Stopping first also ends a start that still waits for the caches to sync.
  await stopWithin(20_000);
  await started;
  return 0;
}

if (import.meta.main) {
  const code = await main(Deno.args);
  flushLogs();
  Deno.exit(code);
}
