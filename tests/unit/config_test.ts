import assert from "node:assert/strict";
import { parseConfig, parseDuration, UsageError } from "../../src/config.ts";
import { leaseName } from "../../src/manager.ts";
import { defaultRunnerImage } from "../../src/runner_group/runner_job.ts";

const noEnv = (): undefined => undefined;

Deno.test("defaults give a working config for the run command", () => {
  const config = parseConfig([], noEnv);
  assert.equal(config.command, "run");
  assert.deepEqual(config.namespaces, []);
  assert.equal(config.workers, 32);
  assert.equal(config.pollInterval, 10_000);
  assert.equal(config.resyncInterval, 60_000);
  assert.equal(config.healthPort, 8081);
  assert.equal(config.runnerImage, defaultRunnerImage);
  assert.equal(config.logFormat, "json");
});

Deno.test("flags win over their environment twins, which win over defaults", () => {
  const env = (name: string): string | undefined =>
    ({ GRO_WORKERS: "8", GRO_NAMESPACES: "ci, build", GRO_POLL_INTERVAL: "2s", KUBECONFIG: "/k" } as Record<
      string,
      string
    >)[name];
  const config = parseConfig(["run", "--workers", "2", "--log-format=text"], env);
  assert.equal(config.workers, 2);
  assert.equal(parseConfig(["run", "--workers", "256"], env).workers, 256);
  assert.deepEqual(config.namespaces, ["ci", "build"]);
  assert.equal(config.pollInterval, 2000);
  assert.equal(config.logFormat, "text");
  assert.equal(config.kubeconfig, "/k");
  assert.equal(parseConfig(["--kubeconfig", "/x"], env).kubeconfig, "/x");
});

Deno.test("a bad value is a one-line error naming the flag, its variable and the accepted values", () => {
  const cases: [string[], RegExp][] = [
    [["--workers", "0"], /^Invalid value "0" for --workers \(GRO_WORKERS\): expected a whole number from 1 to 256$/],
    [
      ["--workers", "257"],
      /^Invalid value "257" for --workers \(GRO_WORKERS\): expected a whole number from 1 to 256$/,
    ],
    [["--poll-interval", "fast"], /--poll-interval \(GRO_POLL_INTERVAL\): expected a duration such as 10s/],
    [["--log-level", "loud"], /--log-level \(GRO_LOG_LEVEL\): expected one of debug, info, warning, error/],
    [["--runner-image", "gitea/act_runner:nightly"], /--runner-image .*pinned image tag/],
    [["--namespaces", "Bad_NS"], /--namespaces .*namespace names/],
    [["deploy"], /^Unknown command "deploy": expected one of run, check, crds, version$/],
    [["--nope"], /Unknown option '--nope'/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(() => parseConfig(args, noEnv), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, pattern);
      assert.ok(!error.message.includes("\n"), "one line");
      return true;
    });
  }
  assert.throws(() => parseConfig([], (name) => (name === "GRO_HEALTH_PORT" ? "http" : undefined)), /GRO_HEALTH_PORT/);
});

Deno.test("durations", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("2m"), 120_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("1h30m"), 5_400_000, "Go's compound form, as in a warm pool window");
  assert.equal(parseDuration("1m30"), undefined);
  assert.equal(parseDuration("10"), undefined);
});

Deno.test("check takes exactly one of -f/--file or --group", () => {
  assert.equal(parseConfig(["check", "-f", "group.yaml"], noEnv).file, "group.yaml");
  assert.equal(parseConfig(["check", "--group", "ci/app"], noEnv).group, "ci/app");
  assert.throws(() => parseConfig(["check"], noEnv), /check needs exactly one of -f\/--file/);
  assert.throws(() => parseConfig(["check", "-f", "a.yaml", "--group", "ci/app"], noEnv), /exactly one/);
  assert.throws(
    () => parseConfig(["check", "--group", "app"], noEnv),
    /--group \(GRO_GROUP\): expected namespace\/name/,
  );
});

Deno.test("--group-selector takes Kubernetes label selectors and rejects anything else", () => {
  for (const selector of ["tier=ci", "tier==ci,!legacy", "team in (a, b),env notin (prod)", "gitea.bpg.pw/shard!=2"]) {
    assert.equal(parseConfig(["run", "--group-selector", selector], () => undefined).groupSelector, selector);
  }
  assert.equal(parseConfig(["run", "--group-selector", "tier="], () => undefined).groupSelector, "tier=");
  for (const selector of ["=ci", "tier in a,b", "tier=ci,", "tier ~ ci"]) {
    assert.throws(
      () => parseConfig(["run", "--group-selector", selector], () => undefined),
      (error: Error) => error instanceof UsageError && /--group-selector/.test(error.message),
      selector,
    );
  }
});

Deno.test("each shard of a split installation elects its own leader; an explicit id wins", () => {
  const config = (args: string[]) => parseConfig(["run", ...args], () => undefined);
  assert.equal(leaseName(config([])), "gitea-runner-operator");
  const a = leaseName(config(["--group-selector", "shard=a"]));
  const b = leaseName(config(["--group-selector", "shard=b"]));
  assert.match(a, /^gitea-runner-operator-[0-9a-f]{10}$/);
  assert.notEqual(a, b);
  assert.equal(
    leaseName(config(["--namespaces", "x,y"])),
    leaseName(config(["--namespaces", "y,x"])),
    "the order of the namespaces does not matter",
  );
  assert.equal(leaseName(config(["--group-selector", "shard=a", "--leader-election-id", "mine"])), "mine");
});
