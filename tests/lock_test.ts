// Tests of lock.ts: ports of portalocker's scenarios, run on Deno, Bun and
// Node, with children of all three runtimes for the cross-process ones.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { open as openHandle } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import {
  AlreadyLocked,
  BoundedSemaphore,
  Lock,
  lock,
  LockException,
  LockFlags,
  lockSync,
  type LockTarget,
  NamedBoundedSemaphore,
  openAtomic,
  openAtomicSync,
  PidFileLock,
  RLock,
  TemporaryFileLock,
  unlock,
  unlockSync,
} from "../lock.ts";
import { AlreadyExists, IsADirectory, NotFound, PermissionDenied } from "../errors.ts";
import { type Child, command, runtimeName, RUNTIMES, sleep, start, tempDir } from "./_util.ts";
import { tmpdir } from "node:os";

const CHILD = "tests/fixtures/lock_child.ts";

// A file as the runtime itself hands it out: Deno.FsFile or a numeric fd.
function openNative(path: string): { file: LockTarget; close(): void } {
  if (runtimeName === "deno") {
    const file = Deno.openSync(path, { read: true, write: true, create: true });
    return { file, close: () => file.close() };
  }
  const fd = fs.openSync(path, "a+");
  return { file: fd, close: () => fs.closeSync(fd) };
}

async function holding(runtime: (typeof RUNTIMES)[number], kind: string, path: string) {
  const child = start(runtime, CHILD, [kind, path]);
  await child.line("locked");
  return child;
}

async function letGo(child: Child): Promise<void> {
  child.send("release");
  await child.line("released");
  assert.equal(await child.exited, 0);
}

// Whether `promise` is still pending after `ms` milliseconds.
async function pendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const marker = Symbol();
  const result = await Promise.race([promise.catch(() => undefined), sleep(ms).then(() => marker)]);
  return result === marker;
}

function isRefusal(e: unknown): boolean {
  assert.ok(e instanceof AlreadyLocked, `expected AlreadyLocked, got ${e}`);
  return true;
}

test("LockFlags has flock's values under portalocker's and C's names", () => {
  assert.deepEqual(
    [LockFlags.SHARED, LockFlags.EXCLUSIVE, LockFlags.NON_BLOCKING, LockFlags.UNBLOCK],
    [1, 2, 4, 8],
  );
  assert.deepEqual(
    [LockFlags.LOCK_SH, LockFlags.LOCK_EX, LockFlags.LOCK_NB, LockFlags.LOCK_UN],
    [1, 2, 4, 8],
  );
});

test("lock() with NON_BLOCKING refuses a second handle in the same process", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const a = openNative(path);
  const b = openNative(path);
  try {
    await lock(a.file, LockFlags.EXCLUSIVE);
    await assert.rejects(lock(b.file, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING), isRefusal);
    assert.throws(() => lockSync(b.file, LockFlags.SHARED | LockFlags.NON_BLOCKING), isRefusal);
    await unlock(a.file);
    await lock(b.file, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING);
    await lock(b.file, LockFlags.UNBLOCK);
  } finally {
    a.close();
    b.close();
  }
});

test("lock() with NON_BLOCKING alone takes an exclusive lock", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const a = openNative(path);
  const b = openNative(path);
  try {
    lockSync(a.file, LockFlags.NON_BLOCKING);
    assert.throws(() => lockSync(b.file, LockFlags.SHARED | LockFlags.NON_BLOCKING), isRefusal);
    unlockSync(a.file);
    lockSync(a.file, LockFlags.SHARED);
    lockSync(b.file, LockFlags.LOCK_SH | LockFlags.LOCK_NB);
    await assert.rejects(lock(b.file, LockFlags.LOCK_NB), isRefusal);
  } finally {
    a.close();
    b.close();
  }
});

test("lock() waits for a holder in the same process without blocking the thread", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const a = openNative(path);
  const b = openNative(path);
  try {
    lockSync(a.file, LockFlags.EXCLUSIVE);
    const waiting = lock(b.file, LockFlags.EXCLUSIVE);
    assert.ok(await pendingAfter(waiting, 50));
    unlockSync(a.file);
    await waiting;
    assert.throws(() => lockSync(a.file, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING), isRefusal);
  } finally {
    a.close();
    b.close();
  }
});

test("lock() accepts a node:fs/promises FileHandle", {
  skip: runtimeName === "deno" && "Deno's own files are Deno.FsFile",
}, async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const a = await openHandle(path, "a+");
  const b = await openHandle(path, "a+");
  try {
    await lock(a, LockFlags.EXCLUSIVE);
    await assert.rejects(lock(b, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING), isRefusal);
    await unlock(a);
    await lock(b, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING);
  } finally {
    await a.close();
    await b.close();
  }
});

test("lock() rejects flags that are not a valid combination and things that are not files", async () => {
  using dir = tempDir();
  const a = openNative(join(dir.path, "a.lock"));
  try {
    const cases: [unknown, typeof TypeError | typeof RangeError][] = [
      [LockFlags.SHARED | LockFlags.EXCLUSIVE, RangeError],
      [0, RangeError],
      [16, RangeError],
      [1.5, RangeError],
      [LockFlags.UNBLOCK | LockFlags.NON_BLOCKING, RangeError],
      ["2", TypeError],
    ];
    for (const [flags, Error] of cases) {
      await assert.rejects(lock(a.file, flags as number), (e) => {
        assert.ok(e instanceof Error, `flags ${String(flags)}: ${e}`);
        assert.match(e.message, /^Cannot lock: 'flags' /);
        return true;
      });
      assert.throws(() => lockSync(a.file, flags as number), Error);
    }
    const expected = runtimeName === "deno"
      ? "a Deno.FsFile or an OpenFile (Deno cannot lock a descriptor or FileHandle)"
      : "a file descriptor, a FileHandle or an OpenFile";
    await assert.rejects(lock("a.lock" as unknown as number, LockFlags.EXCLUSIVE), {
      name: "TypeError",
      message: `Cannot lock: 'file' must be ${expected}, got "a.lock"`,
    });
    if (runtimeName === "deno") {
      // The type admits a descriptor everywhere; Deno refuses it at run time.
      await assert.rejects(lock(0, LockFlags.EXCLUSIVE), TypeError);
    }
  } finally {
    a.close();
  }
});

test("Lock.acquire() returns the same handle while held, and release() frees it", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const lock = new Lock(path);
  assert.equal(lock.locked, false);
  const file = await lock.acquire();
  assert.equal(await lock.acquire(), file);
  assert.ok(lock.locked);
  assert.equal(file.path, path);
  await assert.rejects(new Lock(path).acquire({ timeout: 0 }), isRefusal);
  await lock.release();
  await lock.release();
  assert.equal(lock.locked, false);
  assert.ok(file.closed);
  const other = new Lock(path, { failWhenLocked: true });
  await other.acquire();
  await other.release();
});

test("Two Lock instances on one path contend within one process", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  await using first = new Lock(path);
  await first.acquire();
  await assert.rejects(new Lock(path, { failWhenLocked: true }).acquire(), isRefusal);
  await assert.rejects(new Lock(path, { shared: true, timeout: 0 }).acquire(), isRefusal);
});

test("Lock with failWhenLocked fails at once, whatever the timeout", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  await using holder = new Lock(path);
  await holder.acquire();
  const started = performance.now();
  await assert.rejects(
    new Lock(path, { failWhenLocked: true, timeout: 10_000 }).acquire(),
    isRefusal,
  );
  assert.ok(performance.now() - started < 1000);
});

test("Lock.acquire() gives up with AlreadyLocked when the timeout runs out", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  await using holder = new Lock(path);
  await holder.acquire();
  const waiter = new Lock(path, { timeout: 150 });
  const started = performance.now();
  await assert.rejects(waiter.acquire(), (e) => {
    isRefusal(e);
    assert.match((e as Error).message, /\(gave up after 150 ms\)$/);
    return true;
  });
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 145 && elapsed < 2150, `elapsed ${elapsed} ms`);
  assert.equal(waiter.locked, false);
  await holder.release();
  // The abandoned wait may win the lock for a moment before it lets go.
  await waiter.acquire({ timeout: 5000 });
  await waiter.release();
});

test("Lock.acquire() is handed the lock when an in-process holder releases it", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const holder = new Lock(path);
  await holder.acquire();
  const waiter = new Lock(path);
  const waiting = waiter.acquire();
  assert.ok(await pendingAfter(waiting, 50));
  const again = waiter.acquire();
  await holder.release();
  const file = await waiting;
  assert.ok(waiter.locked);
  assert.equal(await again, file);
  await waiter.release();
});

// `promise` itself, once settled; fails instead of hanging if it is still
// pending after 2 s.
async function soon<T>(promise: Promise<T>): Promise<T> {
  assert.equal(await pendingAfter(promise, 2000), false, "still pending after 2000 ms");
  return await promise;
}

test("A second acquire() while one is pending keeps its own failWhenLocked, timeout and signal", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const holder = new Lock(path);
  await holder.acquire();
  const waiter = new Lock(path);
  const waiting = waiter.acquire();
  assert.ok(await pendingAfter(waiting, 30));
  await assert.rejects(soon(waiter.acquire({ failWhenLocked: true })), isRefusal);
  await assert.rejects(soon(waiter.acquire({ timeout: 0 })), isRefusal);
  await assert.rejects(soon(waiter.acquire({ timeout: 50 })), isRefusal);
  const controller = new AbortController();
  const aborted = waiter.acquire({ signal: controller.signal });
  assert.ok(await pendingAfter(aborted, 30));
  const reason = new Error("no longer needed");
  controller.abort(reason);
  await assert.rejects(soon(aborted), (e) => e === reason);
  await assert.rejects(
    soon(waiter.acquire({ timeout: 50, signal: AbortSignal.abort(reason) })),
    (e) => e === reason,
  );
  // The first caller's wait goes on, and gets the lock.
  assert.ok(await pendingAfter(waiting, 30));
  assert.equal(waiter.locked, false);
  const patient = waiter.acquire({ timeout: 60_000 });
  await holder.release();
  const file = await waiting;
  assert.equal(await patient, file);
  await waiter.release();
});

test("A second BoundedSemaphore.acquire() while one is pending keeps its own options", async () => {
  using dir = tempDir();
  const options = { name: "s", directory: dir.path };
  const holder = new BoundedSemaphore(1, options);
  await holder.acquire();
  const waiter = new BoundedSemaphore(1, options);
  const waiting = waiter.acquire();
  assert.ok(await pendingAfter(waiting, 30));
  await assert.rejects(soon(waiter.acquire({ failWhenLocked: true })), isRefusal);
  await assert.rejects(soon(waiter.acquire({ timeout: 0 })), isRefusal);
  await assert.rejects(
    soon(waiter.acquire({ timeout: 50, signal: AbortSignal.timeout(60_000) })),
    isRefusal,
  );
  const controller = new AbortController();
  const aborted = waiter.acquire({ signal: controller.signal });
  controller.abort(new Error("stop"));
  await assert.rejects(soon(aborted), { message: "stop" });
  assert.ok(await pendingAfter(waiting, 30));
  await holder.release();
  const file = await waiting;
  assert.equal(waiter.slot, 0);
  await file.close();
});

test("An AbortSignal cancels a wait, and the lock is not held afterwards", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const holder = new Lock(path);
  await holder.acquire();
  const controller = new AbortController();
  const waiter = new Lock(path, { signal: controller.signal });
  const waiting = waiter.acquire();
  assert.ok(await pendingAfter(waiting, 30));
  const reason = new Error("no longer needed");
  const started = performance.now();
  controller.abort(reason);
  await assert.rejects(waiting, (e) => e === reason);
  assert.ok(performance.now() - started < 1000);
  assert.equal(waiter.locked, false);
  await holder.release();
  const third = new Lock(path);
  await third.acquire({ timeout: 5000 });
  await third.release();
});

test("Lock.acquire() rejects at once with a signal that has already aborted", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const reason = new Error("stop");
  await assert.rejects(
    new Lock(path).acquire({ signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  assert.equal(fs.existsSync(path), false);
});

test("await using releases the Lock at the end of the scope, and closing the handle does too", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  {
    await using lock = new Lock(path);
    await lock.acquire();
  }
  const lock = new Lock(path);
  const file = await lock.acquire({ timeout: 0 });
  await file.close();
  assert.equal(lock.locked, false);
  await new Lock(path).acquire({ timeout: 0 }).then((f) => f.close());
});

test("Lock in mode w truncates the file only once the lock is held", async () => {
  using dir = tempDir();
  const path = join(dir.path, "data.txt");
  fs.writeFileSync(path, "the holder's data");
  const child = await holding("bun", "lock", path);
  try {
    const writer = new Lock(path, { mode: "w" });
    const waiting = writer.acquire();
    assert.ok(await pendingAfter(waiting, 100));
    assert.equal(fs.readFileSync(path, "utf8"), "the holder's data");
    await letGo(child);
    const file = await waiting;
    assert.equal(fs.readFileSync(path, "utf8"), "");
    await file.write("new");
    await writer.release();
    assert.equal(fs.readFileSync(path, "utf8"), "new");
  } finally {
    child.kill();
  }
});

test("Lock in mode a appends, and in mode r+ writes from the start of an existing file", async () => {
  using dir = tempDir();
  const path = join(dir.path, "log.txt");
  fs.writeFileSync(path, "one\n");
  {
    await using lock = new Lock(path);
    await (await lock.acquire()).write("two\n");
  }
  assert.equal(fs.readFileSync(path, "utf8"), "one\ntwo\n");
  {
    await using lock = new Lock(path, { mode: "r+" });
    await (await lock.acquire()).write("ONE");
  }
  assert.equal(fs.readFileSync(path, "utf8"), "ONE\ntwo\n");
  {
    // Mode "r" needs only read access, as flock(1) with a lock file it may
    // not write: the lock is the same, and the file is left as it was.
    await using lock = new Lock(path, { mode: "r" });
    await lock.acquire();
    await assert.rejects(new Lock(path, { failWhenLocked: true }).acquire(), AlreadyLocked);
  }
  assert.equal(fs.readFileSync(path, "utf8"), "ONE\ntwo\n");
});

test("Lock failures that are not contention say what happened, with the path", async () => {
  using dir = tempDir();
  const cases: [string, string, Partial<{ mode: "r+" | "r" }>, new (...a: never[]) => Error][] = [
    ["a missing directory", join(dir.path, "missing", "a.lock"), {}, NotFound],
    ["a directory at the path", dir.path, {}, IsADirectory],
    ["a missing file in mode r+", join(dir.path, "absent"), { mode: "r+" }, NotFound],
    ["a missing file in mode r", join(dir.path, "absent"), { mode: "r" }, NotFound],
  ];
  for (const [what, path, options, Class] of cases) {
    await assert.rejects(new Lock(path, options).acquire(), (e) => {
      assert.ok(e instanceof Class, `${what}: ${e}`);
      assert.ok(!(e instanceof AlreadyLocked), what);
      assert.ok((e as Error).message.includes(path), `${what}: ${(e as Error).message}`);
      return true;
    });
  }
});

test("Lock reports a file it may not open as PermissionDenied", {
  skip: process.getuid?.() === 0 && "root may open any file",
}, async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  fs.writeFileSync(path, "");
  fs.chmodSync(path, 0o000);
  await assert.rejects(new Lock(path).acquire(), PermissionDenied);
});

test("Lock checks its options, naming the option and the value", async () => {
  const cases: [Record<string, unknown>, typeof TypeError | typeof RangeError, string][] = [
    [{ timeout: -1 }, RangeError, "'timeout' must be a number of milliseconds >= 0, got -1"],
    [{ timeout: NaN }, RangeError, "'timeout' must be a number of milliseconds >= 0, got NaN"],
    [{ timeout: "1" }, TypeError, `'timeout' must be a number of milliseconds >= 0, got "1"`],
    [{ checkInterval: 0 }, RangeError, "'checkInterval' must be a number of milliseconds above 0"],
    [{ failWhenLocked: 1 }, TypeError, "'failWhenLocked' must be a boolean, got 1"],
    [{ shared: "yes" }, TypeError, `'shared' must be a boolean, got "yes"`],
    [{ mode: "x" }, RangeError, `'mode' must be "a", "w", "r+" or "r", got "x"`],
    [{ signal: {} }, TypeError, "'signal' must be an AbortSignal, got an object"],
    [{ mode: 1 }, TypeError, `'mode' must be "a", "w", "r+" or "r", got 1`],
    [
      { mode: "w", shared: true },
      RangeError,
      `'mode' must be "a", "r+" or "r" when 'shared' is true`,
    ],
  ];
  for (const [options, Error, text] of cases) {
    assert.throws(() => new Lock("/tmp/x.lock", options), (e) => {
      assert.ok(e instanceof Error, `${JSON.stringify(options)}: ${e}`);
      assert.ok(e.message.startsWith(`Cannot create Lock: ${text}`), e.message);
      return true;
    });
  }
  assert.throws(() => new Lock(""), {
    name: "RangeError",
    message: `Cannot create Lock: 'path' must be a non-empty string without NUL, got ""`,
  });
  assert.throws(() => new Lock(1 as unknown as string), {
    name: "TypeError",
    message: `Cannot create Lock: 'path' must be a non-empty string without NUL, got 1`,
  });
  await assert.rejects(new Lock("/tmp/x.lock").acquire({ timeout: -1 }), {
    name: "RangeError",
    message: "Cannot acquire Lock: 'timeout' must be a number of milliseconds >= 0, got -1",
  });
});

test("RLock counts acquisitions and refuses a release more than acquired", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const lock = new RLock(path);
  const file = await lock.acquire();
  assert.equal(await lock.acquire(), file);
  assert.equal(lock.count, 2);
  await lock.release();
  assert.ok(lock.locked);
  await assert.rejects(new Lock(path, { failWhenLocked: true }).acquire(), isRefusal);
  await lock.release();
  assert.equal(lock.locked, false);
  await assert.rejects(lock.release(), (e) => {
    assert.ok(e instanceof LockException);
    assert.ok(!(e instanceof AlreadyLocked));
    assert.match(e.message, /^Cannot release RLock '.*': it is not acquired$/);
    return true;
  });
  assert.throws(() => lock.releaseSync(), LockException);
  await new Lock(path).acquire({ timeout: 0 }).then((f) => f.close());
});

test("Shared holders coexist across processes and keep an exclusive one out", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const child = await holding("node", "shared", path);
  try {
    await using reader = new Lock(path, { shared: true, failWhenLocked: true });
    await reader.acquire();
    await assert.rejects(new Lock(path, { failWhenLocked: true }).acquire(), isRefusal);
    await reader.release();
    await assert.rejects(new Lock(path, { timeout: 50 }).acquire(), isRefusal);
    await letGo(child);
    await new Lock(path, { failWhenLocked: true }).acquire().then((f) => f.close());
  } finally {
    child.kill();
  }
});

for (const runtime of RUNTIMES) {
  test(`Lock is exclusive across processes, and a waiter here gets it from a ${runtime} holder`, async () => {
    using dir = tempDir();
    const path = join(dir.path, "a.lock");
    const child = await holding(runtime, "lock", path);
    try {
      await assert.rejects(new Lock(path, { failWhenLocked: true }).acquire(), isRefusal);
      const waiter = new Lock(path);
      const waiting = waiter.acquire();
      assert.ok(await pendingAfter(waiting, 50));
      await letGo(child);
      await waiting;
      assert.ok(waiter.locked);
      await waiter.release();
    } finally {
      child.kill();
    }
  });
}

for (const runtime of RUNTIMES) {
  const others = RUNTIMES.filter((r) => r !== runtime);
  test(`${others.join(" and ")} waiters get the lock in turn from a ${runtime} holder`, async () => {
    using dir = tempDir();
    const path = join(dir.path, "a.lock");
    const holder = await holding(runtime, "lock", path);
    const waiters = others.map((r) => start(r, CHILD, ["lock", path, "auto"]));
    try {
      await Promise.all(waiters.map((w) => w.line("waiting")));
      await sleep(100);
      for (const w of waiters) assert.ok(!w.output().includes("locked"), w.output());
      await letGo(holder);
      for (const w of waiters) {
        await w.line("released");
        assert.equal(await w.exited, 0);
      }
    } finally {
      holder.kill();
      for (const w of waiters) w.kill();
    }
  });
}

test("BoundedSemaphore refuses holder N+1 across processes and hands over a freed slot", async () => {
  using dir = tempDir();
  const kind = "semaphore:2:jobs";
  const a = await holding("deno", kind, dir.path);
  const b = await holding("node", kind, dir.path);
  try {
    const slots = [a, b].map((c) => Number(/slot (\d+)/.exec(c.output())![1]));
    assert.deepEqual(slots.sort(), [0, 1]);
    const options = { name: "jobs", directory: dir.path };
    await assert.rejects(
      new BoundedSemaphore(2, { ...options, failWhenLocked: true }).acquire(),
      isRefusal,
    );
    const started = performance.now();
    await assert.rejects(new BoundedSemaphore(2, options).acquire({ timeout: 100 }), isRefusal);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 95 && elapsed < 2100, `elapsed ${elapsed} ms`);
    await using semaphore = new BoundedSemaphore(2, { ...options, checkInterval: 10 });
    const waiting = semaphore.acquire();
    assert.ok(await pendingAfter(waiting, 50));
    const freed = Number(/slot (\d+)/.exec(b.output())![1]);
    await letGo(b);
    await waiting;
    assert.equal(semaphore.slot, freed);
  } finally {
    a.kill();
    b.kill();
  }
});

test("BoundedSemaphore never has more than N holders at once", async () => {
  using dir = tempDir();
  const maximum = 2;
  let holders = 0;
  let most = 0;
  await Promise.all(Array.from({ length: 6 }, async () => {
    const semaphore = new NamedBoundedSemaphore(maximum, "pool", {
      directory: dir.path,
      checkInterval: 5,
    });
    for (let round = 0; round < 4; round++) {
      await semaphore.acquire({ timeout: 20_000 });
      holders++;
      most = Math.max(most, holders);
      assert.ok(holders <= maximum, `${holders} holders`);
      await sleep(5);
      holders--;
      await semaphore.release();
    }
  }));
  assert.equal(most, maximum);
  assert.deepEqual(fs.readdirSync(dir.path).sort(), ["pool.00.lock", "pool.01.lock"]);
});

test("BoundedSemaphore's wait can be aborted, and leaves no slot held", async () => {
  using dir = tempDir();
  const options = { name: "s", directory: dir.path };
  await using holder = new BoundedSemaphore(1, options);
  await holder.acquire();
  const controller = new AbortController();
  const waiter = new BoundedSemaphore(1, { ...options, signal: controller.signal });
  const waiting = waiter.acquire();
  assert.ok(await pendingAfter(waiting, 30));
  controller.abort(new Error("stop"));
  await assert.rejects(waiting, { message: "stop" });
  await holder.release();
  await new BoundedSemaphore(1, options).acquire({ timeout: 5000 }).then((f) => f.close());
});

test("BoundedSemaphore checks its arguments", () => {
  assert.throws(() => new BoundedSemaphore(0), {
    name: "RangeError",
    message: "Cannot create BoundedSemaphore: 'maximum' must be an integer from 1 to 100000, got 0",
  });
  assert.throws(() => new BoundedSemaphore("2" as unknown as number), TypeError);
  assert.throws(() => new BoundedSemaphore(2, { name: "a/b" }), {
    name: "RangeError",
    message:
      `Cannot create BoundedSemaphore: 'name' must be a non-empty file name without path separators, got "a/b"`,
  });
  assert.throws(
    () => new NamedBoundedSemaphore(2, undefined as unknown as string),
    /^TypeError: Cannot create NamedBoundedSemaphore: 'name'/,
  );
  assert.equal(
    new BoundedSemaphore(3, { directory: "/d" }).pathOf(1),
    "/d/bounded_semaphore.01.lock",
  );
});

test("TemporaryFileLock creates its file on acquire and removes it on release", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const lock = new TemporaryFileLock(path);
  await lock.acquire();
  assert.ok(fs.existsSync(path));
  await assert.rejects(new TemporaryFileLock(path, { timeout: 0 }).acquire(), isRefusal);
  await lock.release();
  assert.equal(fs.existsSync(path), false);
});

test("TemporaryFileLock stays exclusive when the holder unlinks under waiters (portalocker issue 115)", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const first = await holding("deno", "temporary", path);
  const waiters = [
    start("bun", CHILD, ["temporary", path]),
    start("node", CHILD, ["temporary", path]),
  ];
  try {
    await Promise.all(waiters.map((w) => w.line("waiting")));
    await sleep(100);
    await letGo(first);
    // One of the two holds the file now at the path; the other waits on it.
    const winner = await Promise.race(waiters.map((w) => w.line("locked").then(() => w)));
    const loser = waiters.find((w) => w !== winner)!;
    const ino = Number(/ino (\d+)/.exec(winner.output())![1]);
    assert.equal(fs.statSync(path).ino, ino);
    await assert.rejects(
      new TemporaryFileLock(path, { failWhenLocked: true }).acquire(),
      isRefusal,
    );
    await sleep(100);
    assert.ok(!loser.output().includes("locked"), loser.output());
    await letGo(winner);
    await loser.line("locked");
    await letGo(loser);
    assert.equal(fs.existsSync(path), false);
  } finally {
    first.kill();
    for (const w of waiters) w.kill();
  }
});

for (const runtime of RUNTIMES) {
  test(`PidFileLock's refusal names the pid of a ${runtime} holder`, async () => {
    using dir = tempDir();
    const path = join(dir.path, "app.pid");
    const child = await holding(runtime, "pid", path);
    try {
      const pid = Number(/pid (\d+)/.exec(child.output())![1]);
      assert.equal(fs.readFileSync(path, "utf8"), `${pid}\n`);
      await assert.rejects(new PidFileLock(path, { failWhenLocked: true }).acquire(), (e) => {
        isRefusal(e);
        assert.equal((e as AlreadyLocked).holderPid, pid);
        assert.match((e as Error).message, new RegExp(`: held by pid ${pid}$`));
        assert.equal((e as AlreadyLocked).pid, pid);
        assert.equal((e as AlreadyLocked).path, path);
        return true;
      });
      await letGo(child);
      assert.equal(fs.readFileSync(path, "utf8"), "");
      await using mine = new PidFileLock(path);
      await mine.acquire({ timeout: 0 });
      assert.equal(fs.readFileSync(path, "utf8"), `${process.pid}\n`);
    } finally {
      child.kill();
    }
  });
}

test("openAtomic publishes a whole file, never replaces one, and leaves no temporary file", async () => {
  using dir = tempDir();
  const path = join(dir.path, "out.txt");
  assert.equal(
    await openAtomic(path, async (file) => {
      await file.write("all ");
      assert.equal(fs.existsSync(path), false);
      await file.write("or nothing");
      return 42;
    }),
    42,
  );
  assert.equal(fs.readFileSync(path, "utf8"), "all or nothing");
  await assert.rejects(openAtomic(path, (file) => file.write("other")), AlreadyExists);
  assert.throws(() => openAtomicSync(path, (file) => file.writeSync("other")), AlreadyExists);
  assert.equal(fs.readFileSync(path, "utf8"), "all or nothing");
  assert.deepEqual(fs.readdirSync(dir.path), ["out.txt"]);
});

test("openAtomic leaves nothing behind when writing fails", async () => {
  using dir = tempDir();
  const path = join(dir.path, "out.txt");
  const failure = new Error("disk on fire");
  await assert.rejects(
    openAtomic(path, async (file) => {
      await file.write("half");
      throw failure;
    }),
    (e) => e === failure,
  );
  assert.throws(() =>
    openAtomicSync(path, () => {
      throw failure;
    }), (e) => e === failure);
  assert.throws(() => openAtomicSync(path, async () => {}), TypeError);
  assert.deepEqual(fs.readdirSync(dir.path), []);
  await assert.rejects(openAtomic(join(dir.path, "no", "x"), () => {}), NotFound);
  openAtomicSync(path, (file) => file.closeSync());
  assert.deepEqual(fs.readdirSync(dir.path), ["out.txt"]);
});

test("flock(1) sees our locks, and we see its locks", async () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const lock = new Lock(path);
  await lock.acquire();
  assert.equal(spawnSync("flock", ["-n", path, "true"]).status, 1);
  await lock.release();
  assert.equal(spawnSync("flock", ["-n", path, "true"]).status, 0);
  const shell = spawn("flock", [path, "-c", "echo locked; cat"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  try {
    await new Promise<void>((resolve) => shell.stdout!.once("data", () => resolve()));
    await assert.rejects(new Lock(path, { failWhenLocked: true }).acquire(), isRefusal);
    const waiting = new Lock(path).acquire({ timeout: 10_000 });
    assert.ok(await pendingAfter(waiting, 50));
    shell.stdin!.end();
    const file = await waiting;
    await file.close();
  } finally {
    shell.kill();
  }
});

test("Lock names 'mode' for a value that cannot even be turned into a string", () => {
  const mode = { toString: [] } as unknown as "a";
  assert.throws(() => new Lock("/tmp/never-created.lock", { mode }), (e) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /'mode' must be "a", "w", "r\+" or "r", got an object/);
    return true;
  });
});

// Root may open any file: the refusals are shown by a child that runs as
// nobody (setpriv), of each runtime.
const canDrop = process.getuid?.() === 0 &&
  spawnSync("setpriv", ["--version"]).status === 0;

for (const runtime of RUNTIMES) {
  test(
    `${runtime} as an unprivileged user: Lock, LockFile and readLockFile refuse with PermissionDenied`,
    {
      skip: canDrop ? false : "needs root and setpriv(1) to run a child as nobody",
    },
    () => {
      using dir = tempDir();
      fs.chmodSync(dir.path, 0o755);
      fs.writeFileSync(join(dir.path, "unreadable"), "");
      fs.chmodSync(join(dir.path, "unreadable"), 0o000);
      fs.writeFileSync(join(dir.path, "read-only"), "");
      fs.chmodSync(join(dir.path, "read-only"), 0o444);
      const cache = fs.mkdtempSync(join(tmpdir(), "nobody-cache-"));
      fs.chmodSync(cache, 0o777);
      try {
        const [bin, args] = command(runtime, "tests/fixtures/denied.ts", [dir.path]);
        const r = spawnSync(
          "setpriv",
          ["--reuid=65534", "--regid=65534", "--clear-groups", bin, ...args],
          {
            encoding: "utf8",
            env: { ...process.env, HOME: cache, DENO_DIR: cache, BUN_INSTALL_CACHE_DIR: cache },
          },
        );
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").at(-1)!), {
          lockUnreadable: "PermissionDenied EACCES",
          lockFileReadOnly: "PermissionDenied EACCES",
          readLockFileUnreadable: "PermissionDenied EACCES",
        });
      } finally {
        fs.rmSync(cache, { recursive: true, force: true });
      }
    },
  );
}
