import assert from "node:assert/strict";
import { join } from "node:path";
import { FullClientCredentials, StaticCredentials, TokenFileCredentials } from "../../src/kube/credentials.ts";
import { loadKubeConfig } from "../../src/kube/kubeconfig.ts";
import { makeClients } from "../../src/kube/client.ts";

const caPem = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
const certPem = "-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n";
const keyPem = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n";
const noEnv = (): undefined => undefined;

type Entry = Record<string, unknown>;
function document(cluster: Entry, user: Entry, extra: Entry = {}): Entry {
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c", cluster: { server: "https://127.0.0.1:6443/", ...cluster } }],
    users: [{ name: "u", user }],
    contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
    "current-context": "x",
    ...extra,
  };
}

async function withDir<T>(run: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "gro-kubeconfig-test-" });
  try {
    return await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes a kubeconfig (YAML is a superset of JSON) and returns its path. */
async function write(dir: string, content: Entry, name = "config"): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, JSON.stringify(content, null, 2));
  return path;
}

/** A local API server stand-in that records the Authorization header of each request. */
async function withServer(
  handle: (request: Request) => Response,
  run: (server: string, seen: (string | null)[]) => Promise<void>,
): Promise<void> {
  const seen: (string | null)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    seen.push(request.headers.get("authorization"));
    return handle(request);
  });
  try {
    await run(`http://127.0.0.1:${server.addr.port}`, seen);
  } finally {
    await server.shutdown();
  }
}

const okJson = (): Response => Response.json({ kind: "Secret", metadata: { name: "s" } });

Deno.test("client certificate and CA as data: PEM decoded, trailing slash of the server dropped", async () => {
  await withDir(async (dir) => {
    const config = await loadKubeConfig(
      await write(
        dir,
        document({ "certificate-authority-data": btoa(caPem) }, {
          "client-certificate-data": btoa(certPem),
          "client-key-data": btoa(keyPem),
        }),
      ),
      noEnv,
    );
    assert.equal(config.server, "https://127.0.0.1:6443");
    assert.deepEqual(config.caCerts, [caPem]);
    const credentials = await config.credentials();
    assert.equal(credentials.cert, certPem);
    assert.equal(credentials.key, keyPem);
    assert.equal(credentials.headers.authorization, undefined);
    assert.ok(config.credentialSource instanceof StaticCredentials);
  });
});

Deno.test("client certificate and CA as files, relative to the kubeconfig's folder", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(join(dir, "kube", "pki"), { recursive: true });
    await Deno.writeTextFile(join(dir, "kube", "pki", "ca.crt"), caPem);
    await Deno.writeTextFile(join(dir, "kube", "pki", "client.crt"), certPem);
    await Deno.writeTextFile(join(dir, "kube", "pki", "client.key"), keyPem);
    const path = join(dir, "kube", "config");
    await Deno.writeTextFile(
      path,
      JSON.stringify(document({ "certificate-authority": "pki/ca.crt" }, {
        "client-certificate": "pki/client.crt",
        "client-key": join(dir, "kube", "pki", "client.key"),
      })),
    );
    const config = await loadKubeConfig(path, noEnv);
    assert.deepEqual(config.caCerts, [caPem]);
    const credentials = await config.credentials();
    assert.equal(credentials.cert, certPem);
    assert.equal(credentials.key, keyPem);
  });
});

Deno.test("a token is sent as a bearer token; YAML kubeconfigs are read too", async () => {
  await withServer(okJson, async (server, seen) => {
    await withDir(async (dir) => {
      const path = join(dir, "config");
      await Deno.writeTextFile(
        path,
        [
          "apiVersion: v1",
          "kind: Config",
          "current-context: x",
          "clusters:",
          `- name: c\n  cluster:\n    server: ${server}`,
          "users:",
          "- name: u\n  user:\n    token: static-token-123",
          "contexts:",
          "- name: x\n  context: {cluster: c, user: u}",
        ].join("\n"),
      );
      const clients = makeClients(await loadKubeConfig(path, noEnv));
      const secret = await clients.core.readNamespacedSecret({ namespace: "ns", name: "s" });
      assert.equal(secret.metadata?.name, "s");
      assert.deepEqual(seen, ["Bearer static-token-123"]);
    });
  });
});

Deno.test("a token file wins over a token, and is read again after a 401 (a rotated service account token)", async () => {
  await withDir(async (dir) => {
    const tokenPath = join(dir, "token");
    await Deno.writeTextFile(tokenPath, "first-token\n");
    let accepted = "first-token";
    await withServer(
      (request) =>
        request.headers.get("authorization") === `Bearer ${accepted}`
          ? okJson()
          : Response.json({ kind: "Status", code: 401, message: "Unauthorized" }, { status: 401 }),
      async (server, seen) => {
        const path = await write(dir, document({ server }, { token: "static-token-123", tokenFile: "token" }));
        const clients = makeClients(await loadKubeConfig(path, noEnv));
        await clients.core.readNamespacedSecret({ namespace: "ns", name: "s" });
        // The kubelet rotates the token; the old one is refused from now on.
        await Deno.writeTextFile(tokenPath, "second-token\n");
        accepted = "second-token";
        await assert.rejects(clients.core.readNamespacedSecret({ namespace: "ns", name: "s" }), /answered 401/);
        await clients.core.readNamespacedSecret({ namespace: "ns", name: "s" });
        assert.deepEqual(seen, ["Bearer first-token", "Bearer first-token", "Bearer second-token"]);
      },
    );
  });
});

Deno.test("a token file is read again once its token is 50 s old, and a failed read keeps the last token", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "token");
    await Deno.writeTextFile(path, "first-token");
    let now = 1_000_000;
    const source = new TokenFileCredentials(path, { now: () => now });
    source.readNow();
    await Deno.writeTextFile(path, "second-token");
    now += 49_000;
    assert.equal((await source.credentials()).headers.authorization, "Bearer first-token");
    now += 1_000;
    assert.equal((await source.credentials()).headers.authorization, "Bearer second-token");
    await Deno.remove(path);
    now += 60_000;
    assert.equal((await source.credentials()).headers.authorization, "Bearer second-token");
  });
});

Deno.test("in a pod: the service account's CA and token file, the server from the service environment", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "ca.crt"), caPem);
    await Deno.writeTextFile(join(dir, "token"), "sa-token-123\n");
    const env = (name: string): string | undefined =>
      ({ KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443" } as Record<string, string>)[name];
    const config = await loadKubeConfig("", env, { serviceAccountDir: dir });
    assert.equal(config.server, "https://10.0.0.1:443");
    assert.deepEqual(config.caCerts, [caPem]);
    assert.equal((await config.credentials()).headers.authorization, "Bearer sa-token-123");
    assert.ok(config.credentialSource instanceof TokenFileCredentials);

    const ipv6 = (name: string): string | undefined =>
      ({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "6443" } as Record<string, string>)[name];
    assert.equal((await loadKubeConfig("", ipv6, { serviceAccountDir: dir })).server, "https://[fd00::1]:6443");

    await Deno.remove(join(dir, "token"));
    await assert.rejects(loadKubeConfig("", env, { serviceAccountDir: dir }), /Cannot read the token file ".*token"/);
  });
});

Deno.test("an exec plugin gets its credentials from the full client, loaded only then", async () => {
  await withDir(async (dir) => {
    const plugin = join(dir, "credential-plugin.sh");
    await Deno.writeTextFile(
      plugin,
      "#!/bin/sh\necho '" + JSON.stringify({
        apiVersion: "client.authentication.k8s.io/v1beta1",
        kind: "ExecCredential",
        status: { token: "exec-token-123" },
      }) + "'\n",
    );
    await Deno.chmod(plugin, 0o755);
    const config = await loadKubeConfig(
      await write(
        dir,
        document({ "certificate-authority-data": btoa(caPem) }, {
          exec: { apiVersion: "client.authentication.k8s.io/v1beta1", command: "./credential-plugin.sh" },
        }),
      ),
      noEnv,
    );
    assert.ok(config.credentialSource instanceof FullClientCredentials);
    // A relative command path is relative to the kubeconfig's folder, as in client-go.
    assert.equal((await config.credentials()).headers.authorization, "Bearer exec-token-123");
  });
});

Deno.test("a kubeconfig without current-context, or naming a missing context, is refused clearly", async () => {
  await withDir(async (dir) => {
    const none = await write(dir, document({}, { token: "t" }, { "current-context": undefined }), "none");
    await assert.rejects(loadKubeConfig(none, noEnv), /The kubeconfig ".*none" has no current-context/);
    const missing = await write(dir, document({}, { token: "t" }, { "current-context": "gone" }), "missing");
    await assert.rejects(
      loadKubeConfig(missing, noEnv),
      /The kubeconfig ".*missing" has no context "gone" \(its current-context\)/,
    );
    await assert.rejects(loadKubeConfig(join(dir, "absent"), noEnv), /Cannot read the kubeconfig ".*absent"/);
  });
});

Deno.test("a kubeconfig with insecure-skip-tls-verify is refused with a message saying what to do instead", async () => {
  await withDir(async (dir) => {
    for (const value of [true, "yes"]) {
      const path = await write(dir, document({ "insecure-skip-tls-verify": value }, { token: "t" }));
      await assert.rejects(
        loadKubeConfig(path, noEnv),
        /Cluster "c" has insecure-skip-tls-verify, which the operator does not support: give its CA \(certificate-authority or certificate-authority-data\) instead/,
      );
    }
    const both = await write(
      dir,
      document({ "certificate-authority": "ca.crt", "certificate-authority-data": "eA==" }, {}),
    );
    await assert.rejects(loadKubeConfig(both, noEnv), /has both certificate-authority and certificate-authority-data/);
  });
});

Deno.test("several kubeconfig files merge: the first file to name an entry or a current-context wins", async () => {
  await withDir(async (dir) => {
    const first = await write(dir, {
      users: [{ name: "u", user: { token: "first-token" } }],
      "current-context": "x",
    }, "first");
    const second = await write(
      dir,
      document({ server: "https://10.1.2.3:6443" }, { token: "second-token" }, {
        "current-context": "other",
      }),
      "second",
    );
    const config = await loadKubeConfig(`${first}:${join(dir, "not-there")}:${second}`, noEnv);
    assert.equal(config.server, "https://10.1.2.3:6443");
    assert.equal((await config.credentials()).headers.authorization, "Bearer first-token");
    // Without a path: KUBECONFIG, then ~/.kube/config.
    const env = (name: string): string | undefined =>
      ({ KUBECONFIG: `${first}:${second}` } as Record<string, string>)[name];
    assert.equal((await loadKubeConfig("", env)).server, "https://10.1.2.3:6443");
  });
});

Deno.test("the operator's modules load no runtime part of @kubernetes/client-node (only its types, and lazily), nor yaml", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("../../main.ts", import.meta.url).href],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  type Dependency = { specifier: string; code?: { specifier: string }; isDynamic?: boolean };
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { specifier: string; dependencies?: Dependency[] }[];
  };
  const modules = new Map(info.modules.map((module) => [module.specifier, module]));
  // Walk the static runtime imports from main.ts; type-only imports have no `code`, lazy ones are dynamic.
  const seen = new Set<string>();
  const pending = [new URL("../../main.ts", import.meta.url).href];
  const offenders: string[] = [];
  while (pending.length > 0) {
    const specifier = pending.pop()!;
    if (seen.has(specifier)) continue;
    seen.add(specifier);
    for (const dependency of modules.get(specifier)?.dependencies ?? []) {
      if (!dependency.code || dependency.isDynamic) continue;
      const target = dependency.code.specifier;
      if (/^npm:(@kubernetes\/client-node|undici|yaml)@/.test(target)) offenders.push(`${specifier} imports ${target}`);
      if (target.startsWith("file:")) pending.push(target);
    }
  }
  assert.ok(seen.size > 20, `walked only ${seen.size} modules`);
  assert.deepEqual(offenders, []);
});
