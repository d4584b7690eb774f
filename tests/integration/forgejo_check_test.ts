/** `check` against the Forgejo-shaped server: the forge's kind and version, what each version can do, refusal. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCheck } from "../../src/check.ts";
import { parseConfig } from "../../src/config.ts";
import { startForgejoServer } from "../harness/forgejo_server.ts";

async function check(version: string, labels: string[]): Promise<{ code: number; lines: string[] }> {
  const server = startForgejoServer(version);
  const dir = await Deno.makeTempDir({ prefix: "gro-forgejo-check-" });
  try {
    const admin = server.addUser("root", { admin: true });
    const acme = server.addOrg("acme", [admin]);
    const app = server.addRepo(acme, "app");
    server.queueJob(app, { name: "build", runsOn: ["linux"] });
    server.queueJob(app, { name: "train", runsOn: ["linux", "gpu"] });
    const file = join(dir, "group.yaml");
    await Deno.writeTextFile(
      file,
      JSON.stringify({ apiVersion: "v1", kind: "Secret", metadata: { name: "fj" }, stringData: { api: admin.token } }) +
        "\n---\n" +
        JSON.stringify({
          apiVersion: "gitea.bpg.pw/v1alpha1",
          kind: "RunnerGroup",
          metadata: { name: "fj", namespace: "ci" },
          spec: {
            scope: "org",
            org: "acme",
            giteaURL: server.url,
            labels,
            defaultLabels: false,
            maxActiveRunners: 2,
            authToken: { name: "fj", key: "api" },
          },
        }),
    );
    const lines: string[] = [];
    const code = await runCheck({
      config: parseConfig(["check", "-f", file], () => undefined),
      print: (line) => lines.push(line),
      kube: () => {
        throw new Error("check -f with its Secrets in the file needs no cluster");
      },
    });
    return { code, lines };
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("check on Forgejo 15: kind and version, every job explained, runners registered on their own", async () => {
  const { code, lines } = await check("15.0.0", ["linux:host"]);
  const text = lines.join("\n");
  assert.equal(code, 0, text);
  assert.match(text, /^ok {4}Forgejo 15\.0\.0\+gitea-1\.22\.0 answers at http:\/\/127\.0\.0\.1:\d+$/m);
  assert.match(text, /^note {2}.* has no workflow_job webhook: push mode is Gitea's/m);
  assert.match(text, /job \d+ "build" of acme\/app \(runs-on: linux\): this group runs it/);
  assert.match(text, /job \d+ "train" of acme\/app \(runs-on: linux, gpu\): not this group, it lacks the label gpu/);
  assert.match(text, /^ok {4}The token can manage the scope's runners \(0 registered\)/m);
  assert.match(text, /registers each runner on its own with the API token/);
  assert.doesNotMatch(text, /registration token \(/, "no shared registration token is asked for");
});

Deno.test("check on Forgejo 11: only the jobs the labels match are listed, and no runners API", async () => {
  const { code, lines } = await check("11.0.0", ["linux:host"]);
  const text = lines.join("\n");
  assert.equal(code, 0, text);
  assert.match(text, /^ok {4}Forgejo 11\.0\.0\+gitea-1\.22\.0 answers/m);
  assert.match(text, /1 queued, 0 running/);
  assert.match(text, /lists only jobs this group's labels match \(Forgejo < 14\)/);
  assert.match(text, /has no runners API \(Forgejo >= 15\)/);
  assert.match(text, /^ok {4}The token can obtain the scope's runner registration token$/m);
});

Deno.test("check refuses Forgejo 10, naming the minimum", async () => {
  const { code, lines } = await check("10.0.3", ["linux:host"]);
  assert.equal(code, 1);
  assert.match(
    lines.at(-1)!,
    /^FAIL {2}UnsupportedVersion: Forgejo 10\.0\.3\+gitea-1\.22\.0 is not supported: .* Forgejo >= 11 \(runner jobs API\)$/,
  );
});
