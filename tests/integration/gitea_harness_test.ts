/**
 * The test harness's Gitea, started on a port another process holds (as when an outgoing connection takes the free
 * port the harness picked before Gitea binds it): Gitea 1.26.0 and 1.27.3 log the bind error and keep running without
 * a listener, so the harness must notice and move it to another port, not wait out its ready timeout.
 */
import assert from "node:assert/strict";
import { startGitea } from "../harness/gitea.ts";

Deno.test("the harness moves Gitea to another port when its port is taken", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const taken = (holder.addr as Deno.NetAddr).port;
  try {
    const gitea = await startGitea({ port: taken, readyTimeoutMs: 30_000 });
    try {
      const port = Number(new URL(gitea.url).port);
      assert.notEqual(port, taken, "Gitea must not claim the port another process holds");
      const version = await fetch(`${gitea.url}api/v1/version`);
      assert.equal(version.status, 200, `Gitea on its new port answers: ${await version.text()}`);
      assert.match(gitea.logTail(200), new RegExp(`${taken}: bind: address already in use`));
    } finally {
      await gitea.dispose();
    }
  } finally {
    holder.close();
  }
});
