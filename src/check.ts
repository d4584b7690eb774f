/**
 * `check`: answers "why is my job still waiting?" for one RunnerGroup. It validates the spec, finds the tokens,
 * reaches Gitea with the group's API token, and says for each queued job whether this group would run it and, if
 * not, which labels are missing. Exit code 0 when the group can work.
 */
import type { Config } from "./config.ts";
import { ForgeError } from "./forge/errors.ts";
import { connectForge } from "./forge/connect.ts";
import { describeForge, type ForgeClient } from "./forge/forge_client.ts";
import { effectiveRunnerLabels, InvalidLabelError, missingLabels, type RunnerLabel } from "./forge/labels.ts";
import { apiMessage, apiStatus, decodeSecretData, type KubeClients } from "./kube/client.ts";
import { forgeTargetOf } from "./runner_group/demand.ts";
import { registrationTokenSource } from "./runner_group/token_selector.ts";
import {
  apiGroup,
  apiVersion,
  describeSpecIssues,
  isPaused,
  kind,
  parseRunnerGroupSpec,
  plural,
  type RunnerGroupSpec,
  type SecretKeySelector,
} from "./runner_group/schema.ts";
import { dryRunCreate, groupCheckJob } from "./runner_group/template_check.ts";
import { forgeKey } from "./runner_group/ownership.ts";
import { describeScheduleIssues } from "./runner_group/validate.ts";
import { describeError } from "./log.ts";
import { effectiveWarmPool } from "./runner_group/warm_schedule.ts";

type Manifest = {
  kind?: string;
  metadata?: { name?: string; namespace?: string; uid?: string };
  spec?: unknown;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
};

export interface CheckOptions {
  config: Config;
  print: (line: string) => void;
  /** Connects to the cluster; called only when the group or a Secret must be read from it. */
  kube: () => Promise<KubeClients>;
}

const ok = (text: string): string => `ok    ${text}`;
const bad = (text: string): string => `FAIL  ${text}`;
const note = (text: string): string => `note  ${text}`;

export async function runCheck(options: CheckOptions): Promise<number> {
  const { config, print, kube } = options;
  const secretsInFile = new Map<string, Record<string, string>>();
  let group: Manifest;
  if (config.file !== "") {
    let documents: Manifest[];
    try {
      const { default: YAML } = await import("yaml");
      documents = YAML.parseAllDocuments(await Deno.readTextFile(config.file)).map((d) => d.toJS()).filter(Boolean);
    } catch (error) {
      print(bad(`Cannot read ${config.file}: ${error instanceof Error ? error.message : error}`));
      return 1;
    }
    const found = documents.find((document) => document.kind === kind);
    if (!found) {
      print(bad(`${config.file} holds no ${kind}`));
      return 1;
    }
    group = found;
    for (const document of documents.filter((d) => d.kind === "Secret" && d.metadata?.name)) {
      const values: Record<string, string> = {};
      for (const [key, value] of Object.entries(document.data ?? {})) values[key] = decodeSecretData(value);
      Object.assign(values, document.stringData ?? {});
      secretsInFile.set(document.metadata!.name!, values);
    }
  } else {
    const [namespace, name] = config.group.split("/");
    try {
      group = await (await kube()).custom.getNamespacedCustomObject({
        group: apiGroup,
        version: apiVersion,
        namespace,
        plural,
        name,
      }) as Manifest;
    } catch (error) {
      print(bad(`Cannot read ${kind} ${config.group}: ${apiMessage(error)}`));
      return 1;
    }
  }
  const namespace = group.metadata?.namespace ?? "default";
  print(`${kind} ${namespace}/${group.metadata?.name ?? "(unnamed)"}`);

  const parsed = parseRunnerGroupSpec(group.spec);
  if (!parsed.success) {
    print(bad(`The spec is invalid: ${describeSpecIssues(parsed.error)}`));
    return 1;
  }
  const spec = parsed.data;
  const scheduleIssues = describeScheduleIssues(spec);
  if (scheduleIssues !== undefined) {
    print(bad(`The spec is invalid: ${scheduleIssues}`));
    return 1;
  }
  print(ok(`The spec is valid (scope ${spec.scope}, at most ${spec.maxActiveRunners} runners)`));
  if (spec.warmPoolSchedules?.length) {
    const pool = effectiveWarmPool(spec, Date.now());
    const next = pool.nextChangeAt === undefined
      ? "no window changes it"
      : `${pool.nextSize} from ${new Date(pool.nextChangeAt).toISOString()}`;
    print(ok(`Warm pool: ${pool.size} idle runners now; ${next}`));
  }
  if (isPaused(spec)) print(note("maxActiveRunners is 0: the group is paused and starts no runner"));
  let labels;
  try {
    labels = effectiveRunnerLabels(spec.labels ?? [], spec.defaultLabels ?? true);
  } catch (error) {
    if (!(error instanceof InvalidLabelError)) throw error;
    print(bad(error.message));
    return 1;
  }
  print(ok(`Runner labels: ${labels.map((label) => label.name).join(", ")}`));

  /** The key's value, or undefined when it is missing (printed as `missing`: a failure unless the key is optional). */
  const readKey = async (selector: SecretKeySelector, field: string, missing = bad): Promise<string | undefined> => {
    const inFile = secretsInFile.get(selector.name);
    let value = inFile?.[selector.key];
    let where = `Secret ${selector.name} in ${config.file}`;
    if (inFile === undefined) {
      where = `Secret ${namespace}/${selector.name}`;
      try {
        const secret = await (await kube()).core.readNamespacedSecret({ namespace, name: selector.name });
        const encoded = secret.data?.[selector.key];
        value = encoded === undefined ? undefined : decodeSecretData(encoded);
      } catch (error) {
        const status = apiStatus(error);
        print((status === 404 ? missing : bad)(
          `spec.${field}: cannot read ${where}: ${status === 404 ? "not found" : apiMessage(error)}`,
        ));
        return undefined;
      }
    }
    if (value === undefined || value.trim() === "") {
      print(missing(`spec.${field}: ${where} has no non-empty key "${selector.key}"`));
      return undefined;
    }
    print(ok(`spec.${field}: found in ${where}`));
    return value.trim();
  };
  const token = await readKey(spec.authToken, "authToken");
  let registration: string | undefined = "kept by the operator";
  if (spec.registrationToken) {
    const optional = spec.registrationToken.optional === true;
    registration = await readKey(spec.registrationToken, "registrationToken", optional ? note : bad);
  }
  const source = registrationTokenSource(
    group.metadata?.name ?? "",
    spec.registrationToken,
    { ok: registration !== undefined },
  );
  if (source.managed) {
    registration = "kept by the operator";
    print(note(
      `${spec.registrationToken ? "spec.registrationToken is optional" : "No spec.registrationToken"}: the ` +
        `operator obtains one with the API token and keeps it in Secret ${namespace}/${source.secret.name}`,
    ));
  }
  if (token === undefined || registration === undefined) return 1;

  const target = forgeTargetOf(spec, token);
  let client: ForgeClient;
  try {
    client = await connectForge({ baseUrl: spec.giteaURL, token, timeoutMs: config.forgeTimeout });
    print(ok(`${describeForge(client.forge)} answers at ${spec.giteaURL}`));
    const features = client.features;
    if (!features.workflowJobWebhooks) {
      print(
        note(`${describeForge(client.forge)} has no workflow_job webhook: push mode is Gitea's; this forge is polled`),
      );
    }
    const user = await client.currentUser();
    print(ok(`The API token belongs to ${user.login}${user.isAdmin ? " (site administrator)" : ""}`));
    if (spec.scope === "global" && !user.isAdmin) {
      print(bad("Scope global lists every repository's jobs: the API token must belong to a site administrator"));
      return 1;
    }
    if (target.expectedUser !== undefined && user.login.toLowerCase() !== target.expectedUser.toLowerCase()) {
      print(bad(`Scope user lists the token owner's jobs: the token must belong to ${target.expectedUser}`));
      return 1;
    }
    const open = await client.listOpenJobs(target.endpoint, { labels: labels.map((label) => label.name) });
    print(ok(`The token can list the scope's jobs: ${open.queued.length} queued, ${open.running.length} running`));
    if (features.jobsNeedLabels) {
      print(note(`${describeForge(client.forge)} lists only jobs this group's labels match (Forgejo < 14)`));
    }
    for (const job of open.queued) {
      const missing = missingLabels(labels, job.runsOn);
      const what = `job ${job.id} "${job.name}" of ${job.owner}/${job.repo} (runs-on: ${job.runsOn.join(", ") || "-"})`;
      print(
        missing.length === 0
          ? `      ${what}: this group runs it (unless a group with a more specific scope does)`
          : `      ${what}: not this group, it lacks the label${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`,
      );
    }
    // The runners API needs what the registration token needs: the scope's owner (or a site administrator).
    if (!features.runnersApi) {
      print(note(
        `${describeForge(client.forge)} has no runners API (Forgejo >= 15): idle runners are not removed, and the ` +
          "registrations of finished runners stay in Forgejo",
      ));
    } else {
      try {
        const runners = await client.listRunners(target.endpoint);
        print(
          ok(`The token can manage the scope's runners (${runners.length} registered): ghost runners are cleaned up`),
        );
      } catch (error) {
        if (!(error instanceof ForgeError)) throw error;
        print(note(
          `The token cannot manage the scope's runners (${error.kind}): idle runners and stale registrations ` +
            "will not be cleaned up",
        ));
      }
    }
    if (features.runnerRegistration) {
      print(note(
        `${describeForge(client.forge)} registers each runner on its own with the API token: no shared registration ` +
          "token reaches a pod",
      ));
    } else if (source.managed) {
      try {
        await client.createRegistrationToken(target.endpoint);
        print(ok("The token can obtain the scope's runner registration token"));
      } catch (error) {
        if (!(error instanceof ForgeError)) throw error;
        print(bad(
          `The token cannot obtain the scope's runner registration token (${error.kind}): set ` +
            "spec.registrationToken, or use a token of the scope's owner or a site administrator",
        ));
        return 1;
      }
    }
    if (!await checkRunnerJob({ ...options, group, spec, labels, client, registrationToken: source.secret })) return 1;
  } catch (error) {
    if (!(error instanceof ForgeError)) throw error;
    print(bad(`${error.kind}: ${error.message}`));
    return 1;
  }
  return 0;
}

/**
 * The group's runner Job as the operator would build it for this forge, created in a server-side dry run (admission
 * and validation run, nothing is stored), as the operator does before a group's first runner (template_check.ts).
 * False when the API server rejects it; without a cluster to ask, or when it cannot answer, a note.
 */
async function checkRunnerJob(
  input: CheckOptions & {
    group: Manifest;
    spec: RunnerGroupSpec;
    labels: RunnerLabel[];
    client: ForgeClient;
    registrationToken: SecretKeySelector;
  },
): Promise<boolean> {
  const { print, group, client } = input;
  const namespace = group.metadata?.namespace ?? "default";
  const job = groupCheckJob({
    group: {
      metadata: {
        name: group.metadata?.name ?? "",
        namespace,
        // A group read from a file has no uid yet; the owner reference only needs one.
        uid: group.metadata?.uid ?? "00000000-0000-0000-0000-000000000000",
      },
    },
    spec: input.spec,
    labels: input.labels,
    forge: forgeKey(input.spec.giteaURL),
    runnerKind: client.forge.kind,
    ownRegistration: client.features.runnerRegistration,
    runnerImage: input.config.runnerImage,
    registrationToken: input.registrationToken,
  });
  let result;
  try {
    result = await dryRunCreate((await input.kube()).batch, job);
  } catch (error) {
    print(note(`Cannot ask the API server whether it accepts the group's runner Jobs: ${describeError(error)}`));
    return true;
  }
  if (!result.ok) {
    print(bad(result.message));
    return false;
  }
  print(ok(`The API server accepts the group's runner Jobs in namespace ${namespace} (a dry run)`));
  return true;
}
