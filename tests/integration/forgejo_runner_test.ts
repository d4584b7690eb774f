/**
 * The test runner's Forgejo modes against the Forgejo-shaped server, through the real Connect client of the runner
 * (connectrpc.com/connect with the JSON codec): a job goes waiting -> running -> success, in both ways a Forgejo
 * runner pod connects (shared registration token on Forgejo 11 and 14; its own uuid and token, bound to one job by
 * its handle, on Forgejo 15).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ForgejoClient } from "../../src/forge/forgejo_client.ts";
import { parseForgeVersion } from "../../src/forge/forge_client.ts";
import { startForgejoServer } from "../harness/forgejo_server.ts";
import { ensureTools } from "../harness/tools.ts";

async function runRunner(
  binary: string,
  options: { args?: string[]; env: Record<string, string> },
): Promise<{ code: number; output: string }> {
  const result = await new Deno.Command(binary, {
    args: options.args ?? [],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...options.env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: result.code, output: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
}

for (const version of ["11.0.0", "14.0.0"]) {
  Deno.test(`Forgejo ${version}: a runner registered with the shared token takes the waiting job and runs it`, async () => {
    const tools = await ensureTools();
    const server = startForgejoServer(version);
    try {
      const admin = server.addUser("root", { admin: true });
      const acme = server.addOrg("acme", [admin]);
      const app = server.addRepo(acme, "app");
      const other = server.queueJob(app, { name: "other", runsOn: ["gpu"] });
      const job = server.queueJob(app, { name: "build", runsOn: ["linux"], steps: ["echo built > done.txt"] });
      const { code, output } = await runRunner(tools.testRunner, {
        env: {
          FORGEJO_INSTANCE_URL: server.url,
          FORGEJO_RUNNER_REGISTRATION_TOKEN: server.registrationToken(`owner:${acme.id}`),
          FORGEJO_RUNNER_NAME: "fj-1",
          FORGEJO_RUNNER_LABELS: "linux:host",
        },
      });
      assert.equal(code, 0, output);
      assert.equal(job.status, "success", output);
      assert.equal(other.status, "waiting", "a job the runner's labels do not match is left alone");
      const runner = [...server.runners.values()].find((r) => r.name === "fj-1");
      assert.ok(runner, "before v15 Forgejo keeps the registration");
      assert.deepEqual(runner.labels, ["linux"], "only label names are declared");
      assert.equal(runner.ephemeral, false, "there are no ephemeral runners before v15");
      assert.ok([...server.tasks.values()].some((task) => task.jobId === job.id && task.logRows > 0), "logs arrived");
    } finally {
      await server.stop();
    }
  });
}

Deno.test("Forgejo 15: a runner registered over the API, bound by the handle, runs exactly its job and is deleted", async () => {
  const tools = await ensureTools();
  const server = startForgejoServer("15.0.0");
  const dir = await Deno.makeTempDir({ prefix: "gro-forgejo-runner-" });
  try {
    const admin = server.addUser("root", { admin: true });
    const app = server.addRepo(admin, "app");
    const older = server.queueJob(app, { name: "older", runsOn: ["linux"] });
    const job = server.queueJob(app, { name: "build", runsOn: ["linux"] });
    const client = new ForgejoClient({
      baseUrl: server.url,
      token: admin.token,
      forge: parseForgeVersion("forgejo", server.shape.version),
    });
    const endpoint = { scope: "repo" as const, owner: "root", repo: "app" };
    const credentials = await client.registerRunner(endpoint, { name: "fj-2", description: "test" });
    await Deno.mkdir(join(dir, "var/run/forgejo-runner"), { recursive: true });
    await Deno.writeTextFile(join(dir, "var/run/forgejo-runner/token"), credentials.token);
    const { code, output } = await runRunner(tools.testRunner, {
      args: [
        "one-job",
        "--url",
        server.url,
        "--uuid",
        credentials.uuid,
        "--token-url",
        "file:/var/run/forgejo-runner/token",
        "--handle",
        job.handle,
        "--label",
        "linux:host",
        "--wait",
      ],
      env: { TEST_RUNNER_ROOT: dir, FORGEJO_RUNNER_NAME: "fj-2" },
    });
    assert.equal(code, 0, output);
    assert.equal(job.status, "success", output);
    assert.equal(older.status, "waiting", "the older job matches too, but the handle binds the runner to its own");
    assert.equal(server.runners.has(credentials.id), false, "Forgejo 15 deletes an ephemeral runner after its job");
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
