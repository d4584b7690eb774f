/**
 * The Kubernetes API calls the operator makes, with the method names and parameter shapes of `@kubernetes/client-node`'s
 * `CoreV1Api`, `BatchV1Api` and `CustomObjectsApi`, over {@linkcode RestClient}. Objects travel as the API server's
 * JSON (timestamps are strings, not `Date`s); client-node stays the source of their types only.
 */
import type { CoreV1Event, V1Job, V1JobList, V1Secret, V1SecretList, V1Status } from "@kubernetes/client-node";
import type { QueryValue, RestClient } from "./rest.ts";

/** The query parameters of a list, as client-node names them. */
export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  limit?: number;
  _continue?: string;
}

const listQuery = (options: ListOptions): Record<string, QueryValue> => ({
  labelSelector: options.labelSelector,
  fieldSelector: options.fieldSelector,
  resourceVersion: options.resourceVersion,
  limit: options.limit,
  continue: options._continue,
});

const segment = (value: string): string => encodeURIComponent(value);
const namespaced = (prefix: string, namespace: string, plural: string): string =>
  `${prefix}/namespaces/${segment(namespace)}/${plural}`;

export class CoreV1Api {
  constructor(readonly rest: RestClient) {}

  readNamespacedSecret(param: { name: string; namespace: string }): Promise<V1Secret> {
    return this.rest.request("GET", `${namespaced("/api/v1", param.namespace, "secrets")}/${segment(param.name)}`);
  }

  createNamespacedSecret(param: { namespace: string; body: V1Secret }): Promise<V1Secret> {
    return this.rest.request("POST", namespaced("/api/v1", param.namespace, "secrets"), { body: param.body });
  }

  replaceNamespacedSecret(param: { name: string; namespace: string; body: V1Secret }): Promise<V1Secret> {
    return this.rest.request("PUT", `${namespaced("/api/v1", param.namespace, "secrets")}/${segment(param.name)}`, {
      body: param.body,
    });
  }

  listNamespacedSecret(param: { namespace: string } & ListOptions): Promise<V1SecretList> {
    return this.rest.request("GET", namespaced("/api/v1", param.namespace, "secrets"), { query: listQuery(param) });
  }

  listSecretForAllNamespaces(param: ListOptions = {}): Promise<V1SecretList> {
    return this.rest.request("GET", "/api/v1/secrets", { query: listQuery(param) });
  }

  deleteNamespacedSecret(param: { name: string; namespace: string }): Promise<V1Status> {
    return this.rest.request("DELETE", `${namespaced("/api/v1", param.namespace, "secrets")}/${segment(param.name)}`);
  }

  createNamespacedEvent(param: { namespace: string; body: CoreV1Event }): Promise<CoreV1Event> {
    return this.rest.request("POST", namespaced("/api/v1", param.namespace, "events"), { body: param.body });
  }

  /** Patches an Event with a JSON Patch (RFC 6902), as client-node sends an array body by default. */
  patchNamespacedEvent(param: { name: string; namespace: string; body: unknown[] }): Promise<CoreV1Event> {
    return this.rest.request("PATCH", `${namespaced("/api/v1", param.namespace, "events")}/${segment(param.name)}`, {
      body: param.body,
      contentType: "application/json-patch+json",
    });
  }
}

export class BatchV1Api {
  constructor(readonly rest: RestClient) {}

  /** `dryRun: "All"` runs admission and validation and stores nothing; `fieldValidation: "Strict"` refuses unknown fields. */
  createNamespacedJob(
    param: { namespace: string; body: V1Job; dryRun?: string; fieldValidation?: string },
  ): Promise<V1Job> {
    return this.rest.request("POST", namespaced("/apis/batch/v1", param.namespace, "jobs"), {
      body: param.body,
      query: { dryRun: param.dryRun, fieldValidation: param.fieldValidation },
    });
  }

  readNamespacedJob(param: { name: string; namespace: string }): Promise<V1Job> {
    return this.rest.request("GET", `${namespaced("/apis/batch/v1", param.namespace, "jobs")}/${segment(param.name)}`);
  }

  deleteNamespacedJob(param: {
    name: string;
    namespace: string;
    propagationPolicy?: string;
    gracePeriodSeconds?: number;
  }): Promise<V1Status> {
    return this.rest.request(
      "DELETE",
      `${namespaced("/apis/batch/v1", param.namespace, "jobs")}/${segment(param.name)}`,
      { query: { propagationPolicy: param.propagationPolicy, gracePeriodSeconds: param.gracePeriodSeconds } },
    );
  }

  listNamespacedJob(param: { namespace: string } & ListOptions): Promise<V1JobList> {
    return this.rest.request("GET", namespaced("/apis/batch/v1", param.namespace, "jobs"), { query: listQuery(param) });
  }

  listJobForAllNamespaces(param: ListOptions = {}): Promise<V1JobList> {
    return this.rest.request("GET", "/apis/batch/v1/jobs", { query: listQuery(param) });
  }
}

/** Names a custom resource type, as client-node's custom objects calls take it. */
export interface CustomResource {
  group: string;
  version: string;
  plural: string;
}

const customPath = (param: CustomResource & { namespace?: string; name?: string }): string =>
  `/apis/${segment(param.group)}/${segment(param.version)}` +
  (param.namespace === undefined ? "" : `/namespaces/${segment(param.namespace)}`) +
  `/${segment(param.plural)}` +
  (param.name === undefined ? "" : `/${segment(param.name)}`);

export class CustomObjectsApi {
  constructor(readonly rest: RestClient) {}

  getNamespacedCustomObject(param: CustomResource & { namespace: string; name: string }): Promise<unknown> {
    return this.rest.request("GET", customPath(param));
  }

  createNamespacedCustomObject(param: CustomResource & { namespace: string; body: unknown }): Promise<unknown> {
    return this.rest.request("POST", customPath(param), { body: param.body });
  }

  replaceNamespacedCustomObject(
    param: CustomResource & { namespace: string; name: string; body: unknown },
  ): Promise<unknown> {
    return this.rest.request("PUT", customPath(param), { body: param.body });
  }

  listNamespacedCustomObject(param: CustomResource & { namespace: string } & ListOptions): Promise<unknown> {
    return this.rest.request("GET", customPath(param), { query: listQuery(param) });
  }

  listClusterCustomObject(param: CustomResource & ListOptions): Promise<unknown> {
    return this.rest.request("GET", customPath(param), { query: listQuery(param) });
  }

  /** Patches an object with a JSON merge patch (RFC 7386), e.g. its finalizers with the resourceVersion read. */
  patchNamespacedCustomObject(
    param: CustomResource & { namespace: string; name: string; body: unknown },
  ): Promise<unknown> {
    return this.rest.request("PATCH", customPath(param), {
      body: param.body,
      contentType: "application/merge-patch+json",
    });
  }

  /**
   * Patches the status subresource with a JSON merge patch (RFC 7386): `body` holds the fields to set, `null`
   * removes one. Merge patches are the only kind the operator sends to custom objects, so there is no patch-type
   * option as in client-node.
   */
  patchNamespacedCustomObjectStatus(
    param: CustomResource & { namespace: string; name: string; body: unknown },
  ): Promise<unknown> {
    return this.rest.request("PATCH", `${customPath(param)}/status`, {
      body: param.body,
      contentType: "application/merge-patch+json",
    });
  }
}
