import assert from "node:assert/strict";
import { KubeConfig } from "@kubernetes/client-node";
import { decodeSecretData, prepareKubeConfig } from "../../src/kube/client.ts";

const kubeconfig = (cluster: Record<string, unknown>): KubeConfig => {
  const config = new KubeConfig();
  config.loadFromString(JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c", cluster: { server: "https://127.0.0.1:6443", ...cluster } }],
    users: [{ name: "u", user: { token: "t" } }],
    contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
    "current-context": "x",
  }));
  return config;
};

Deno.test("a kubeconfig with insecure-skip-tls-verify is refused with a message saying what to do instead", () => {
  assert.throws(
    () => prepareKubeConfig(kubeconfig({ "insecure-skip-tls-verify": true })),
    /Cluster "c" has insecure-skip-tls-verify.*certificate-authority/,
  );
  const verified = prepareKubeConfig(kubeconfig({ "certificate-authority-data": btoa("not checked here") }));
  assert.equal(verified.getCurrentCluster()?.server, "https://127.0.0.1:6443");
});

Deno.test("Secret data is decoded as UTF-8", () => {
  assert.equal(decodeSecretData(btoa(String.fromCharCode(...new TextEncoder().encode("tök€n")))), "tök€n");
});
