/** Renders manifests with the pinned kustomize and Helm binaries of {@linkcode ensureTools}. */
import type { KubernetesObject } from "@kubernetes/client-node";
import { parseObjects } from "./apply.ts";
import { ensureTools } from "./tools.ts";

export interface CommandResult {
  success: boolean;
  stdout: string;
  stderr: string;
}

async function run(binary: string, args: string[]): Promise<CommandResult> {
  const output = await new Deno.Command(binary, { args, stdout: "piped", stderr: "piped", stdin: "null" }).output();
  const decoder = new TextDecoder();
  return { success: output.success, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** `kustomize build <dir>`; throws with kustomize's message when it fails. */
export async function kustomizeBuild(dir: string): Promise<KubernetesObject[]> {
  const result = await run((await ensureTools()).kustomize, ["build", dir]);
  if (!result.success) throw new Error(`kustomize build ${dir} failed: ${result.stderr.trim()}`);
  return parseObjects(result.stdout, `kustomize build ${dir}`);
}

/** Runs helm with the given arguments; the caller judges success, since some tests expect a failure. */
export async function helm(...args: string[]): Promise<CommandResult> {
  return await run((await ensureTools()).helm, args);
}
