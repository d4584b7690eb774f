import assert from "node:assert/strict";
import { commands, flagReference, usage } from "../../src/config.ts";

const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));

/** The rows of the first table after `heading`, as trimmed cells, without the header and separator rows. */
function tableAfter(heading: string): string[][] {
  const lines = readme.slice(readme.indexOf(heading)).split("\n");
  const start = lines.findIndex((line) => line.startsWith("|"));
  assert.ok(start >= 0, `a table after ${heading}`);
  const end = lines.findIndex((line, index) => index > start && !line.startsWith("|"));
  return lines.slice(start + 2, end).map((line) => line.slice(1, -1).split("|").map((cell) => cell.trim()));
}

Deno.test("the README's flag table shows every flag with its variable, default and meaning from src/config.ts", () => {
  const rows = tableAfter("## Operator flags");
  const expected = flagReference().map((flag) => [flag.flag, flag.variable, flag.default, flag.meaning]);
  assert.deepEqual(rows, expected, "run the operator with --help and copy the flags into the README's table");
});

Deno.test("every flag has a meaning and a default people can read", () => {
  for (const flag of flagReference()) {
    assert.match(flag.meaning, /^\S.{10,}[.)]$/, `${flag.flag}: a sentence`);
    assert.ok(flag.default !== "" && flag.default !== "``", `${flag.flag}: an empty default needs shownDefault`);
  }
});

Deno.test("--help lists every command and every flag with its variable, meaning and default, in 120 columns", () => {
  const help = usage();
  for (const line of help.split("\n")) assert.ok(line.length <= 120, `too long: ${line}`);
  assert.equal(help.split("\n")[0], `Usage: gitea-runner-operator [${commands.join("|")}] [flags]`);
  for (const command of commands) assert.match(help, new RegExp(`^  ${command} +\\S`, "m"), `command ${command}`);
  const flat = help.replace(/\s+/g, " ");
  const plain = (markdown: string): string => markdown.replaceAll("`", "");
  for (const flag of flagReference()) {
    assert.ok(flat.includes(`${plain(flag.flag)} (${plain(flag.variable)})`), `${flag.flag} and its variable`);
    assert.ok(flat.includes(`${plain(flag.meaning)} Default: ${plain(flag.default)}.`), `${flag.flag}'s meaning`);
  }
  const readmeCommands = /^Commands: (.*)$/m.exec(readme)?.[1] ?? "";
  for (const command of commands) assert.ok(readmeCommands.includes(`\`${command}\``), `README names ${command}`);
});
