/** Builds the RunnerGroup CustomResourceDefinition from the zod schemas in `schema.ts`. */
import { z } from "zod";
import { apiGroup, apiVersion, kind, plural, runnerGroupSpecSchema, runnerGroupStatusSchema } from "./schema.ts";

type JsonSchema = { [key: string]: unknown };

/**
 * Turns zod's OpenAPI 3.0 output into a Kubernetes structural schema: maps with unknown values become
 * `x-kubernetes-preserve-unknown-fields`, and the integer bounds zod adds for safe integers are dropped.
 */
function toStructural(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(toStructural);
  if (schema === null || typeof schema !== "object") return schema;
  const input = schema as JsonSchema;
  const output: JsonSchema = {};
  for (const [key, value] of Object.entries(input)) {
    if (key === "$schema") continue;
    if (key === "maximum" && value === Number.MAX_SAFE_INTEGER) continue;
    if (key === "minimum" && value === Number.MIN_SAFE_INTEGER) continue;
    output[key] = toStructural(value);
  }
  if (input["x-kubernetes-preserve-unknown-fields"] === true) delete output.additionalProperties;
  const additional = output.additionalProperties;
  if (
    typeof additional === "object" && additional !== null && Object.keys(additional).length === 0
  ) {
    delete output.additionalProperties;
    output["x-kubernetes-preserve-unknown-fields"] = true;
  }
  return output;
}

function openApiSchema(schema: z.ZodType): JsonSchema {
  return toStructural(z.toJSONSchema(schema, { target: "openapi-3.0", io: "input" })) as JsonSchema;
}

/** The CRD as a plain object, ready to be printed as YAML or applied. */
export function buildRunnerGroupCrd(): Record<string, unknown> {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${plural}.${apiGroup}` },
    spec: {
      group: apiGroup,
      scope: "Namespaced",
      names: { kind, listKind: `${kind}List`, plural, singular: "runnergroup", shortNames: ["rg"] },
      versions: [{
        name: apiVersion,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          { name: "Scope", type: "string", jsonPath: ".spec.scope" },
          { name: "Org", type: "string", jsonPath: ".spec.org", priority: 1 },
          { name: "User", type: "string", jsonPath: ".spec.user", priority: 1 },
          { name: "Repo", type: "string", jsonPath: ".spec.repo" },
          { name: "Active", type: "integer", jsonPath: ".status.activeRunners" },
          { name: "Queued", type: "integer", jsonPath: ".status.queuedJobs" },
          { name: "Idle", type: "integer", jsonPath: ".status.idleRunners" },
          { name: "Warm", type: "integer", jsonPath: ".status.warmPool.size" },
          { name: "Max", type: "integer", jsonPath: ".spec.maxActiveRunners" },
          { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
          { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
        ],
        schema: {
          openAPIV3Schema: {
            type: "object",
            description: "RunnerGroup starts one ephemeral Gitea Actions runner as a Kubernetes Job for each " +
              "queued job it can run, up to maxActiveRunners at a time.",
            required: ["spec"],
            properties: {
              apiVersion: { type: "string" },
              kind: { type: "string" },
              metadata: { type: "object" },
              spec: openApiSchema(runnerGroupSpecSchema),
              status: openApiSchema(runnerGroupStatusSchema),
            },
          },
        },
      }],
    },
  };
}
