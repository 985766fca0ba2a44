// Issue 7's reliability scenarios at a small size, on each runtime; the
// same scenarios at full size run with `deno task stress`.
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import {
  BAD_INPUT_GROUPS,
  badInput,
  badLockPaths,
  canMountTmpfs,
  escapes,
  exactlyOnce,
  type Figures,
  fileSizeLimit,
  fullDisk,
  holders,
  killedConsumer,
  killedHolder,
  killedProducer,
  manyWaiters,
  mutualExclusion,
  resources,
  SHORT,
} from "./_reliability.ts";
import { RUNTIMES, tempDir } from "./_util.ts";

const isRoot = process.getuid?.() === 0;
const tmpfs = (() => {
  using dir = tempDir();
  return canMountTmpfs(dir.path);
})();

async function check(scenario: (dir: string) => Promise<Figures>): Promise<Figures> {
  using dir = tempDir("filestore-rel-");
  const f = await scenario(dir.path);
  assert.deepEqual(f.violations, [], `${f.scenario}: ${f.notes.join("; ")}`);
  assert.equal(f.losses, 0);
  return f;
}

test("Lock keeps a counter exact under processes of all three runtimes", async () => {
  await check((dir) => mutualExclusion(dir, "lock", SHORT.processes, SHORT.increments));
});

test("LockFile with retry keeps a counter exact under processes of all three runtimes", async () => {
  await check((dir) => mutualExclusion(dir, "lockfile", SHORT.processes, SHORT.increments));
});

test("Lock never lets a shared holder coexist with an exclusive one", async () => {
  await check((dir) => holders(dir, "rw", SHORT.processes, SHORT.holds));
});

test("BoundedSemaphore(3) never has more than three holders", async () => {
  await check((dir) => holders(dir, "sem", SHORT.processes + 1, SHORT.holds));
});

test("64 waiting locks do not stall other file operations of the process", async () => {
  await check((dir) => manyWaiters(dir, SHORT.waiters));
});

for (const kind of ["lock", "pid", "lockfile"] as const) {
  test(`a SIGKILLed holder hands the lock over (${kind})`, async () => {
    const f = await check((dir) => killedHolder(dir, kind, SHORT.holderKills));
    assert.equal(f.kills, SHORT.holderKills);
  });
}

test("a producer killed inside put() leaves only whole files in new, and cleanup() empties tmp", async () => {
  const f = await check((dir) => killedProducer(dir, SHORT.producerKills));
  assert.equal(f.kills, SHORT.producerKills);
});

test("a consumer killed inside claim() loses no message", async () => {
  await check((dir) => killedConsumer(dir, SHORT.consumerKills));
});

test("consumers of all three runtimes claim each message exactly once", async () => {
  await check((dir) => exactlyOnce(dir, SHORT.messages, SHORT.consumers));
});

test("put() on a full disk fails with NoSpace and leaves nothing half-written", {
  skip: tmpfs ? false : "cannot mount a tmpfs here (needs root and a permissive container)",
}, async () => {
  await check(fullDisk);
});

// Runs everywhere, root or not: a write past RLIMIT_FSIZE fails as one
// past the end of the disk does.
for (const runtime of RUNTIMES) {
  test(`put() past the file-size limit (${runtime}) fails with NoSpace and leaves nothing half-written`, async () => {
    const f = await check((dir) => fileSizeLimit(dir, runtime));
    assert.ok(f.operations > 0);
  });
}

for (const group of BAD_INPUT_GROUPS) {
  test(`bad arguments to ${group} functions name the parameter and change nothing`, async () => {
    const f = await check((dir) => badInput(dir, group, SHORT.runs));
    assert.ok(f.inputs > 0);
  });
}

test("names that try to leave the store touch nothing outside it", async () => {
  await check((dir) => escapes(dir, SHORT.runs));
});

test("a lock path that is a directory, a dangling symlink or below a file gives a clear error", async () => {
  await check((dir) => badLockPaths(dir, false));
});

test("a lock path that is unreadable gives a clear error", {
  skip: isRoot ? "root may open any file" : false,
}, async () => {
  await check((dir) => badLockPaths(dir, true));
});

test("acquire/release and put/claim cycles leak no descriptors and keep RSS flat", async () => {
  await check((dir) => resources(dir, SHORT.cycles, SHORT.putClaims));
});
