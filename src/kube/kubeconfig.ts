/**
 * Loads a kubeconfig without `@kubernetes/client-node`'s runtime (which loads its whole generated API, about 80 MiB
 * resident): the current context's cluster (server, CA, proxy) and user (client certificate, token, token file,
 * basic auth, impersonation), or the in-cluster service account. Users that authenticate through an `exec` plugin or
 * an `auth-provider` (OIDC, cloud providers) get their credentials from the full client, loaded only then
 * (`credentials.ts`). Semantics follow client-go (v0.35): several files in `KUBECONFIG` merge with the first file
 * winning, relative paths are relative to the file naming them, a token file wins over a token and is re-read.
 */
import { dirname, isAbsolute, join } from "node:path";
import {
  type CredentialSource,
  FullClientCredentials,
  type RequestCredentials,
  StaticCredentials,
  TokenFileCredentials,
} from "./credentials.ts";

export type { RequestCredentials } from "./credentials.ts";

export const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

/** A loaded kubeconfig: where the API server is, how to trust it, and how to authenticate each request. */
export class KubeConfig {
  constructor(
    /** `https://host:port` (and any path prefix), without a trailing slash. */
    readonly server: string,
    /** Extra CA certificates (PEM) to trust the API server with; none means the system's roots. */
    readonly caCerts: readonly string[],
    readonly credentialSource: CredentialSource,
    /** Names the cluster and user in messages. */
    readonly description: string,
    readonly proxyUrl?: string,
  ) {}

  /** Headers and client certificate for the next request. */
  credentials(): Promise<RequestCredentials> {
    return this.credentialSource.credentials();
  }

  /** The API server answered 401 to a request started at `startedAt`: credentials read before then are stale. */
  unauthorized(startedAt: number): void {
    this.credentialSource.unauthorized?.(startedAt);
  }
}

export interface LoadOptions {
  /** The service account directory for the in-cluster configuration (tests use a fake one). */
  serviceAccountDir?: string;
}

/**
 * Loads the kubeconfig: the given path (or `:`-separated paths, merged), else the in-cluster service account when
 * running in a pod, else `KUBECONFIG`, else `~/.kube/config`.
 */
export async function loadKubeConfig(
  path: string,
  env: (name: string) => string | undefined,
  options: LoadOptions = {},
): Promise<KubeConfig> {
  if (path !== "") return await fromFiles(path.split(":").filter(Boolean));
  if (env("KUBERNETES_SERVICE_HOST")) return inCluster(env, options.serviceAccountDir ?? serviceAccountDir);
  const fromEnv = env("KUBECONFIG");
  if (fromEnv) return await fromFiles(fromEnv.split(":").filter(Boolean));
  const home = env("HOME");
  if (home) return await fromFiles([join(home, ".kube", "config")]);
  throw new Error("Cannot find a kubeconfig: give --kubeconfig, set KUBECONFIG, or run the operator in a cluster");
}

/** The pod's service account, as client-go's InClusterConfig reads it (the token file is re-read). */
export function inCluster(env: (name: string) => string | undefined, dir: string): KubeConfig {
  const host = env("KUBERNETES_SERVICE_HOST") ?? "";
  const port = env("KUBERNETES_SERVICE_PORT") ?? "";
  if (host === "" || port === "") {
    throw new Error(
      "Cannot use the in-cluster configuration: KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is unset",
    );
  }
  const caPath = join(dir, "ca.crt");
  const tokenPath = join(dir, "token");
  const ca = readText(caPath, "the service account's CA");
  const credentials = new TokenFileCredentials(tokenPath, {});
  credentials.readNow();
  const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return new KubeConfig(server, [ca], credentials, `the in-cluster service account (${dir})`);
}

type Document = Record<string, unknown>;
type Named = { name: string; value: Document };

/** Reads and merges kubeconfig files: for each named entry and for current-context, the first file wins. */
async function fromFiles(paths: string[]): Promise<KubeConfig> {
  const clusters = new Map<string, Document>();
  const users = new Map<string, Document>();
  const contexts = new Map<string, Document>();
  let currentContext = "";
  const where = paths.length === 1 ? `"${paths[0]}"` : `"${paths.join(":")}"`;
  let found = 0;
  for (const path of paths) {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (error) {
      // client-go skips missing files of a KUBECONFIG list; a single named file must exist.
      if (error instanceof Deno.errors.NotFound && paths.length > 1) continue;
      throw new Error(`Cannot read the kubeconfig "${path}": ${(error as Error).message}`, { cause: error });
    }
    found++;
    let document: unknown;
    try {
      document = await parseYamlOrJson(text);
    } catch (error) {
      throw new Error(`Cannot parse the kubeconfig "${path}": ${(error as Error).message}`, { cause: error });
    }
    if (document === null || document === undefined) continue;
    if (typeof document !== "object" || Array.isArray(document)) {
      throw new Error(`Cannot parse the kubeconfig "${path}": it is not a mapping`);
    }
    const base = dirname(path);
    for (const { name, value } of namedList(document as Document, "clusters", "cluster", path)) {
      if (!clusters.has(name)) clusters.set(name, resolvePaths(value, ["certificate-authority"], base));
    }
    for (const { name, value } of namedList(document as Document, "users", "user", path)) {
      if (!users.has(name)) {
        users.set(name, resolvePaths(value, ["client-certificate", "client-key", "tokenFile"], base));
      }
    }
    for (const { name, value } of namedList(document as Document, "contexts", "context", path)) {
      if (!contexts.has(name)) contexts.set(name, value);
    }
    const current = (document as Document)["current-context"];
    if (currentContext === "" && typeof current === "string") currentContext = current;
  }
  if (found === 0) throw new Error(`Cannot read the kubeconfig ${where}: no such file`);
  if (currentContext === "") throw new Error(`The kubeconfig ${where} has no current-context`);
  const context = contexts.get(currentContext);
  if (!context) throw new Error(`The kubeconfig ${where} has no context "${currentContext}" (its current-context)`);
  const clusterName = stringField(context, "cluster", `context "${currentContext}"`);
  const cluster = clusters.get(clusterName);
  if (!cluster) {
    throw new Error(`The kubeconfig ${where} has no cluster "${clusterName}" (of context "${currentContext}")`);
  }
  const userName = typeof context.user === "string" ? context.user : "";
  const user = userName === "" ? {} : users.get(userName);
  if (!user) throw new Error(`The kubeconfig ${where} has no user "${userName}" (of context "${currentContext}")`);

  const server = stringField(cluster, "server", `cluster "${clusterName}"`).replace(/\/+$/, "");
  if (!/^https?:\/\//.test(server)) {
    throw new Error(`The server "${server}" of cluster "${clusterName}" is not an http(s) URL`);
  }
  if (truthy(cluster["insecure-skip-tls-verify"])) {
    // Every request runs on Deno's fetch, which always verifies the server's certificate.
    throw new Error(
      `Cluster "${clusterName}" has insecure-skip-tls-verify, which the operator does not support: give its CA ` +
        "(certificate-authority or certificate-authority-data) instead",
    );
  }
  if (typeof cluster["tls-server-name"] === "string" && cluster["tls-server-name"] !== "") {
    throw new Error(
      `Cluster "${clusterName}" has tls-server-name "${cluster["tls-server-name"]}", which the operator does not ` +
        `support: use a server URL whose host name the API server's certificate names`,
    );
  }
  const ca = pemFrom(cluster, "certificate-authority", `cluster "${clusterName}"`);
  const proxyUrl = typeof cluster["proxy-url"] === "string" && cluster["proxy-url"] !== ""
    ? cluster["proxy-url"]
    : undefined;
  const description = `cluster "${clusterName}", user "${userName}" of ${where}`;
  return new KubeConfig(
    server,
    ca === undefined ? [] : [ca],
    credentialSourceOf(user, userName, { clusters, users, contexts, currentContext }),
    description,
    proxyUrl,
  );
}

/** How the user of the current context authenticates; exec and auth-provider users go to the full client. */
function credentialSourceOf(
  user: Document,
  userName: string,
  merged: {
    clusters: Map<string, Document>;
    users: Map<string, Document>;
    contexts: Map<string, Document>;
    currentContext: string;
  },
): CredentialSource {
  const what = `user "${userName}"`;
  if (user.exec || user["auth-provider"]) {
    const toList = (map: Map<string, Document>, key: string): Named[] =>
      [...map].map(([name, value]) => ({ name, [key]: value }) as unknown as Named);
    return new FullClientCredentials({
      apiVersion: "v1",
      kind: "Config",
      clusters: toList(merged.clusters, "cluster"),
      users: toList(merged.users, "user"),
      contexts: toList(merged.contexts, "context"),
      "current-context": merged.currentContext,
    }, user.exec ? `the exec plugin of ${what}` : `the auth-provider of ${what}`);
  }
  const headers: Record<string, string> = {};
  if (typeof user.username === "string" || typeof user.password === "string") {
    const bytes = new TextEncoder().encode(`${user.username ?? ""}:${user.password ?? ""}`);
    headers.authorization = `Basic ${btoa(String.fromCharCode(...bytes))}`;
  }
  if (typeof user.as === "string" && user.as !== "") headers["impersonate-user"] = user.as;
  for (const key of ["as-uid", "as-groups", "as-user-extra"]) {
    // The API server wants one header line per group or extra value, which Deno's fetch joins into one.
    if (user[key] !== undefined) {
      throw new Error(`The kubeconfig's ${what} has ${key}, which the operator does not support`);
    }
  }
  const cert = pemFrom(user, "client-certificate", what);
  const key = pemFrom(user, "client-key", what);
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error(`The kubeconfig's ${what} has a client certificate without a key, or a key without a certificate`);
  }
  const tls = cert !== undefined && key !== undefined ? { cert, key } : {};
  const token = typeof user.token === "string" && user.token !== "" ? user.token : undefined;
  const tokenFile = typeof user.tokenFile === "string" && user.tokenFile !== "" ? user.tokenFile : undefined;
  if (tokenFile !== undefined) {
    const source = new TokenFileCredentials(tokenFile, { headers, ...tls, fallbackToken: token });
    source.readNow();
    return source;
  }
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  return new StaticCredentials({ headers, ...tls });
}

function namedList(document: Document, key: string, inner: string, path: string): Named[] {
  const list = document[key];
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new Error(`Cannot parse the kubeconfig "${path}": ${key} is not a list`);
  return list.map((entry, index) => {
    const name = (entry as Document)?.name;
    if (typeof name !== "string" || name === "") {
      throw new Error(`Cannot parse the kubeconfig "${path}": ${key}[${index}] has no name`);
    }
    const value = (entry as Document)[inner] ?? {};
    if (typeof value !== "object" || Array.isArray(value)) {
      throw new Error(`Cannot parse the kubeconfig "${path}": ${key}[${index}] ("${name}") has no ${inner} mapping`);
    }
    return { name, value: value as Document };
  });
}

/** Makes the entry's file paths absolute, relative to `base`; an exec command only when it is a path, as client-go. */
function resolvePaths(entry: Document, keys: string[], base: string): Document {
  const resolved = { ...entry };
  const absolute = (value: unknown): unknown =>
    typeof value === "string" && value !== "" && !isAbsolute(value) ? join(base, value) : value;
  for (const key of keys) resolved[key] = absolute(resolved[key]);
  const exec = resolved.exec as Document | undefined;
  if (exec && typeof exec.command === "string" && exec.command.includes("/")) {
    resolved.exec = { ...exec, command: absolute(exec.command) };
  }
  return resolved;
}

function stringField(entry: Document, key: string, what: string): string {
  const value = entry[key];
  if (typeof value !== "string" || value === "") throw new Error(`The kubeconfig's ${what} has no ${key}`);
  return value;
}

/**
 * Parses a kubeconfig. JSON (which YAML includes, and which generated kubeconfigs often are) needs no YAML library; the
 * library (about 2 MiB resident) is loaded only for a file that is not JSON.
 */
async function parseYamlOrJson(text: string): Promise<unknown> {
  try {
    return JSON.parse(text);
  } catch {
    const { default: YAML } = await import("yaml");
    return YAML.parse(text);
  }
}

/** YAML 1.1 booleans too, as client-go's YAML reader takes them (`yes`, `on`). */
function truthy(value: unknown): boolean {
  return value === true || (typeof value === "string" && /^(true|yes|on|y)$/i.test(value));
}

/** A PEM from `<key>-data` (base64) or the file `<key>`; client-go refuses both at once. */
function pemFrom(entry: Document, key: string, what: string): string | undefined {
  const data = entry[`${key}-data`];
  const file = entry[key];
  const hasData = typeof data === "string" && data !== "";
  const hasFile = typeof file === "string" && file !== "";
  if (hasData && hasFile) throw new Error(`The kubeconfig's ${what} has both ${key} and ${key}-data: keep one`);
  if (hasData) {
    try {
      return new TextDecoder().decode(Uint8Array.from(atob(data.replace(/\s+/g, "")), (c) => c.charCodeAt(0)));
    } catch (error) {
      throw new Error(`The kubeconfig's ${what} has ${key}-data that is not base64`, { cause: error });
    }
  }
  if (hasFile) return readText(file, `the ${key} of ${what}`);
  return undefined;
}

function readText(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    throw new Error(`Cannot read ${what} from "${path}": ${(error as Error).message}`, { cause: error });
  }
}
