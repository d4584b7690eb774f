/**
 * Creates rendered manifests (kustomize, Helm) in a test cluster exactly as written, for real or as a server-side dry
 * run, so that the API server's own validation, defaulting and admission judge them.
 *
 * ```ts
 * const client = cluster.kubeConfig.makeApiClient(WireObjectApi);
 * for (const object of parseObjects(rendered, "helm template")) await createObject(client, object, { dryRun: true });
 * ```
 */
import { HttpMethod, type KubernetesObject, KubernetesObjectApi } from "@kubernetes/client-node";
import YAML from "yaml";
import { apiMessage } from "../../src/kube/client.ts";
import { eventually } from "./wait.ts";

/**
 * Sends objects exactly as written. `KubernetesObjectApi.create` re-encodes a body through the typed models, which
 * silently drops every field a model does not know by its wire name: a CRD would lose its `x-kubernetes-validations`
 * and most `x-kubernetes-preserve-unknown-fields`, and a misspelt field in a manifest would vanish instead of being
 * rejected. Strict field validation makes the server reject unknown fields.
 */
export class WireObjectApi extends KubernetesObjectApi {
  async createAsWritten(object: KubernetesObject, options: { dryRun: boolean }): Promise<void> {
    const request = this.configuration.baseServer.makeRequestContext(
      await this.specUriPath(object, "create"),
      HttpMethod.POST,
    );
    request.setHeaderParam("Accept", "application/json");
    request.setHeaderParam("Content-Type", "application/json");
    request.setQueryParam("fieldValidation", "Strict");
    if (options.dryRun) request.setQueryParam("dryRun", "All");
    request.setBody(JSON.stringify(object));
    await this.requestPromise(request);
  }
}

/** `Kind namespace/name`, for messages. */
export function describeObject(object: KubernetesObject): string {
  const namespace = object.metadata?.namespace ? `${object.metadata.namespace}/` : "";
  return `${object.kind} ${namespace}${object.metadata?.name}`;
}

/** The objects of a multi-document YAML text; empty documents (as Helm leaves for disabled templates) are skipped. */
export function parseObjects(text: string, source: string): KubernetesObject[] {
  const objects: KubernetesObject[] = [];
  for (const document of YAML.parseAllDocuments(text)) {
    if (document.errors.length > 0) throw new Error(`Cannot parse ${source}: ${document.errors[0].message}`);
    const object = document.toJS() as KubernetesObject | null;
    if (object !== null) objects.push(object);
  }
  return objects;
}

export async function readObjects(path: string): Promise<KubernetesObject[]> {
  return parseObjects(await Deno.readTextFile(path), path);
}

/** Creates the object (or dry-runs it); an API error is rethrown with the server's message and the object named. */
export async function createObject(
  client: WireObjectApi,
  object: KubernetesObject,
  options: { dryRun: boolean },
): Promise<void> {
  try {
    await client.createAsWritten(object, options);
  } catch (error) {
    throw new Error(`The API server rejected ${describeObject(object)}: ${apiMessage(error)}`, { cause: error });
  }
}

/** Creates a CustomResourceDefinition for real and waits until the API server serves its resource. */
export async function installCustomResourceDefinition(client: WireObjectApi, crd: KubernetesObject): Promise<void> {
  await createObject(client, crd, { dryRun: false });
  const { group, names, versions } = (crd as KubernetesObject & {
    spec: { group: string; names: { kind: string }; versions: { name: string; served: boolean }[] };
  }).spec;
  const version = versions.find((candidate) => candidate.served)?.name;
  await eventually(`the ${names.kind} API to be served`, async () => {
    const served = await client.read<
      KubernetesObject & { status?: { conditions?: { type: string; status: string }[] } }
    >({
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: crd.metadata!.name! },
    });
    if (!served.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) return false;
    await client.list(`${group}/${version}`, names.kind);
    return true;
  }, { timeoutMs: 30_000, intervalMs: 200 });
}
