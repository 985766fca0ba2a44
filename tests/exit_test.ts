// The host process is the user's: a lock wait, given up or pending, never
// ends, delays or changes the exit of the program that waits, on any
// thread. Each case is a child program whose status, output and timing are
// checked, on each runtime, while this process holds the lock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lock } from "../lock.ts";
import { type Child, command, root, RUNTIMES, sleep, start, tempDir } from "./_util.ts";
import { blockedInFlock } from "./_child.ts";
import { spawnSync } from "node:child_process";
import process from "node:process";

const HOST = "tests/fixtures/exit_host.ts";

// The child's exit status, or "still running" if it has not ended after a
// generous 30 s: a guard against a hang (the lock is held all along), not
// a claim about speed.
async function exitOf(child: Child): Promise<number | string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<string>((resolve) =>
    timer = setTimeout(() => resolve("still running"), 30_000)
  );
  try {
    return await Promise.race([child.exited, hang]);
  } finally {
    clearTimeout(timer);
  }
}

// Runs `fn` while this process holds a lock on a new file; `fn` may let
// `holder` go earlier.
async function holding<T>(fn: (path: string, holder: Lock) => Promise<T>): Promise<T> {
  using dir = tempDir();
  const path = join(dir.path, "held.lock");
  await using holder = new Lock(path);
  await holder.acquire();
  return await fn(path, holder);
}

for (const runtime of RUNTIMES) {
  test(`6. a ${runtime} Worker that gave a wait up ends without ending its host`, async () => {
    await holding(async (path) => {
      const child = start(runtime, HOST, [path, "worker"]);
      assert.equal(await exitOf(child), 3, child.output());
      const lines = child.output().trim().split("\n");
      assert.deepEqual(lines, [
        "worker gave up: AlreadyLocked",
        "worker ended",
        "main timer ran",
        "exit listener ran",
      ]);
    });
  });

  test(`7. a ${runtime} program that gave a wait up keeps its own exit code and listeners`, async () => {
    await holding(async (path) => {
      const child = start(runtime, HOST, [path, "listener"]);
      assert.equal(await exitOf(child), 3, child.output());
      assert.deepEqual(child.output().trim().split("\n"), [
        "gave up AlreadyLocked",
        "later exit listener ran",
      ]);
    });
  });

  test(`7. a ${runtime} program that waits again after giving a wait up lives until it holds the lock`, async () => {
    await holding(async (path, holder) => {
      const child = start(runtime, HOST, [path, "again"]);
      await child.line("waiting again");
      await blockedInFlock(child.pid);
      // Long enough for a program that nothing keeps alive to have ended.
      await sleep(300);
      holder.release();
      assert.equal(await exitOf(child), 0, child.output());
      assert.deepEqual(child.output().trim().split("\n"), [
        "gave up AlreadyLocked",
        "waiting again",
        "locked",
      ]);
    });
  });

  test(`8. process.exit() from a ${runtime} SIGTERM handler ends a program that waits for a lock`, async () => {
    await holding(async (path) => {
      const child = start(runtime, HOST, [path, "sigterm"]);
      await child.line("waiting");
      await blockedInFlock(child.pid);
      // process.kill, not child.kill: Deno's child_process reports a child it
      // signalled as ended by that signal, whatever its handler did.
      process.kill(child.pid, "SIGTERM");
      assert.equal(await exitOf(child), 0, child.output());
      assert.deepEqual(child.output().trim().split("\n"), ["waiting", "terminating"]);
    });
  });
}

// On Deno the package learns its lock op's id with Deno's op leak tracing,
// for the one call that starts the op; the host's own code must not be
// mistaken for it.
const OP_IDS = "tests/fixtures/deno_op_ids.ts";

test("a deno host's Error.prepareStackTrace that starts an op never makes a wait hold a lock that is not free", async () => {
  await holding((path, holder) =>
    holding(async (other, second) => {
      const child = start("deno", OP_IDS, [path, other, "hook"]);
      await child.line("waiting");
      await blockedInFlock(child.pid);
      // The hook's own wait ends first; the lock must not come with it.
      second.release();
      await sleep(300);
      assert.ok(!child.output().includes("held"), child.output());
      holder.release();
      assert.equal(await exitOf(child), 0, child.output());
      assert.match(child.output(), /^held; another descriptor could take it: false$/m);
    })
  );
});

test("a deno wrapper around FsFile.lock keeps its own op when a wait is given up", async () => {
  await holding((path, holder) =>
    holding(async (other, second) => {
      const child = start("deno", OP_IDS, [path, other, "wrapped"]);
      await child.line("gave up");
      // The given-up wait ends when its holder lets go; the program's own
      // op must still keep it alive, however long that takes.
      holder.release();
      await sleep(300);
      second.release();
      assert.equal(await exitOf(child), 0, child.output());
      assert.deepEqual(child.output().trim().split("\n"), [
        "gave up AlreadyLocked",
        "own lock done",
      ]);
    })
  );
});

test("7. a Node program that gave a wait up still writes its V8 coverage", async () => {
  const coverage = mkdtempSync(join(tmpdir(), "coverage-"));
  try {
    await holding(async (path) => {
      const child = start("node", HOST, [path, "listener"], { NODE_V8_COVERAGE: coverage });
      assert.equal(await exitOf(child), 3, child.output());
    });
    assert.ok(readdirSync(coverage).some((name) => name.endsWith(".json")));
  } finally {
    rmSync(coverage, { recursive: true, force: true });
  }
});

for (const runtime of RUNTIMES) {
  test(`9. ${runtime}: 40 waits under 'ulimit -n 64' end in errors, never in a dead process`, {
    skip: runtime === "deno"
      ? "Deno waits on its own thread pool, with no descriptors per wait"
      : false,
  }, async () => {
    using dir = tempDir();
    const held: Lock[] = [];
    try {
      for (let i = 0; i < 40; i++) {
        const lock = new Lock(join(dir.path, `${i}.lock`), { timeout: 0 });
        await lock.acquire();
        held.push(lock);
      }
      const [bin, args] = command(runtime, "tests/fixtures/many_waits.ts", [dir.path, "40", "300"]);
      const quoted = [bin, ...args].map((a) => `'${a}'`).join(" ");
      const child = spawnSync("sh", ["-c", `ulimit -n 64 && exec ${quoted}`], {
        encoding: "utf8",
        cwd: root,
      });
      assert.equal(child.status, 0, `${child.stdout}\n${child.stderr}`);
      const counts = JSON.parse(child.stdout.trim().split("\n").at(-1)!) as Record<string, number>;
      assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), 40, child.stdout);
      // Each wait ran out of time, or was refused for want of descriptors
      // (by the package, or by Node when a thread would not start).
      for (const how of Object.keys(counts)) {
        assert.ok(
          ["AlreadyLocked", "FsError EMFILE", "Error ERR_WORKER_INIT_FAILED"].includes(how),
          how,
        );
      }
    } finally {
      for (const lock of held) lock.releaseSync();
    }
  });
}
