// The runtime layer: flock semantics, cross-runtime exclusion, abandoned
// waits and error classes, on whichever runtime runs this file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { rt } from "../_runtime.ts";
import { lockWait } from "../_wait.ts";
import { AlreadyExists, IsADirectory, NotADirectory, NotFound } from "../errors.ts";
import { runtimeName, RUNTIMES, sleep, start, tempDir } from "./_util.ts";

const hasFlock = spawnSync("flock", ["--version"]).status === 0;

function open(path: string) {
  return rt.openSync(path, { read: true, write: true, create: true });
}

/** Polls until `check` is true; flock has no event to wait on from outside. */
async function eventually(check: () => boolean, what: string, ms = 5000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`Not within ${ms} ms: ${what}`);
    await sleep(5);
  }
}

function freeFor(path: string): boolean {
  const f = open(path);
  try {
    const got = rt.tryLockSync(f, true);
    if (got) rt.unlockSync(f);
    return got;
  } finally {
    rt.closeSync(f);
  }
}

test(`rt.tryLockSync() refuses a second descriptor in the same process (${runtimeName})`, () => {
  using dir = tempDir();
  const path = join(dir.path, "a.lock");
  const a = open(path);
  const b = open(path);
  try {
    assert.equal(rt.tryLockSync(a, true), true);
    assert.equal(rt.tryLockSync(b, true), false);
    assert.equal(rt.tryLockSync(b, false), false);
    rt.unlockSync(a);
    assert.equal(rt.tryLockSync(b, true), true);
  } finally {
    rt.closeSync(a);
    rt.closeSync(b);
  }
});

test("rt.tryLockSync() lets shared holders coexist and keeps an exclusive one out", () => {
  using dir = tempDir();
  const path = join(dir.path, "s.lock");
  const [a, b, c] = [open(path), open(path), open(path)];
  try {
    assert.equal(rt.tryLockSync(a, false), true);
    assert.equal(rt.tryLockSync(b, false), true);
    assert.equal(rt.tryLockSync(c, true), false);
    rt.unlockSync(a);
    assert.equal(rt.tryLockSync(c, true), false);
    rt.unlockSync(b);
    assert.equal(rt.tryLockSync(c, true), true);
  } finally {
    for (const f of [a, b, c]) rt.closeSync(f);
  }
});

test("rt.closeSync() drops the lock held through the descriptor", () => {
  using dir = tempDir();
  const path = join(dir.path, "c.lock");
  const a = open(path);
  assert.equal(rt.tryLockSync(a, true), true);
  rt.closeSync(a);
  assert.equal(freeFor(path), true);
});

for (const other of RUNTIMES) {
  test(`a lock held by a ${other} process excludes ${runtimeName}, and the other way round`, async () => {
    using dir = tempDir();
    const path = join(dir.path, "x.lock");
    const holder = start(other, "tests/fixtures/hold.ts", [path, "exclusive"]);
    try {
      await holder.line("locked");
      const mine = open(path);
      try {
        assert.equal(rt.tryLockSync(mine, true), false);
        assert.equal(rt.tryLockSync(mine, false), false);
        if (hasFlock) {
          assert.notEqual(spawnSync("flock", ["-n", path, "true"]).status, 0);
        }
        holder.send("release");
        await holder.line("released");
        await holder.exited;
        assert.equal(rt.tryLockSync(mine, true), true);

        // Now this process holds it: the other runtime's try fails and its
        // blocking wait ends only once this process lets go.
        const tryer = start(other, "tests/fixtures/hold.ts", [path, "exclusive", "try"]);
        assert.equal(await tryer.line(/locked|busy/), "busy");
        tryer.process.stdin?.end();
        await tryer.exited;
        const waiter = start(other, "tests/fixtures/hold.ts", [path, "exclusive"]);
        try {
          await waiter.line("waiting");
          await sleep(200);
          assert.ok(!waiter.output().includes("locked"), `${other} waiter got a held lock`);
          rt.unlockSync(mine);
          await waiter.line("locked");
          assert.equal(rt.tryLockSync(mine, true), false);
        } finally {
          waiter.process.stdin?.end();
          await waiter.exited;
        }
      } finally {
        rt.closeSync(mine);
      }
    } finally {
      holder.process.stdin?.end();
      await holder.exited;
    }
  });
}

test(
  "flock(1) and this runtime see each other's locks",
  { skip: !hasFlock && "no flock(1)" },
  async () => {
    using dir = tempDir();
    const path = join(dir.path, "f.lock");
    const mine = open(path);
    try {
      assert.equal(rt.tryLockSync(mine, true), true);
      assert.equal(spawnSync("flock", ["-n", path, "true"]).status, 1);
      rt.unlockSync(mine);
      assert.equal(spawnSync("flock", ["-n", path, "true"]).status, 0);
    } finally {
      rt.closeSync(mine);
    }
    // util-linux holds it while its command runs: this runtime is refused.
    const util = spawn("flock", ["-n", path, "sh", "-c", "echo held; read line"], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    await new Promise((resolve) => util.stdout.once("data", resolve));
    const other = open(path);
    try {
      assert.equal(rt.tryLockSync(other, true), false);
      util.stdin.end("done\n");
      await new Promise((resolve) => util.once("exit", resolve));
      assert.equal(rt.tryLockSync(other, true), true);
    } finally {
      rt.closeSync(other);
    }
  },
);

test("lockWait() waits without blocking the thread and is handed the lock on release", async () => {
  using dir = tempDir();
  const path = join(dir.path, "w.lock");
  const a = open(path);
  const b = open(path);
  try {
    assert.equal(rt.tryLockSync(a, true), true);
    let held = false;
    const waiting = lockWait(b, true).then(() => held = true);
    await sleep(100);
    assert.equal(held, false);
    rt.unlockSync(a);
    await waiting;
    assert.equal(held, true);
    assert.equal(rt.tryLockSync(a, true), false);
  } finally {
    rt.closeSync(a);
    rt.closeSync(b);
  }
});

test("lockWait() abandoned by its signal never holds the lock afterwards", async () => {
  using dir = tempDir();
  const path = join(dir.path, "ab.lock");
  const holder = open(path);
  assert.equal(rt.tryLockSync(holder, true), true);
  const waiter = open(path);
  const controller = new AbortController();
  const wait = lockWait(waiter, true, controller.signal);
  await sleep(50);
  controller.abort(new Error("gave up"));
  await assert.rejects(wait, /gave up/);
  rt.unlockSync(holder);
  rt.closeSync(holder);
  // The blocked call may still be granted the lock for a moment before the
  // layer drops it: it must end up free.
  await eventually(() => freeFor(path), "the abandoned wait let the lock go");
  // And it stays free: nothing re-takes it later.
  await sleep(100);
  assert.equal(freeFor(path), true);
});

test("lockWait() with an already aborted signal rejects at once and leaves the lock free", async () => {
  using dir = tempDir();
  const path = join(dir.path, "pre.lock");
  const holder = open(path);
  assert.equal(rt.tryLockSync(holder, true), true);
  const f = open(path);
  await assert.rejects(lockWait(f, true, AbortSignal.abort(new Error("no"))), /no/);
  rt.closeSync(holder);
  await eventually(() => freeFor(path), "the lock is free");
});

test("16 waiting locks do not stall fs.promises.readFile", async () => {
  using dir = tempDir();
  const path = join(dir.path, "many.lock");
  const data = join(dir.path, "data.txt");
  writeFileSync(data, "payload");
  const holder = open(path);
  assert.equal(rt.tryLockSync(holder, true), true);
  const files = Array.from({ length: 16 }, () => open(path));
  let granted = 0;
  const waits = files.map((f) => lockWait(f, false).then(() => granted++));
  try {
    await sleep(100);
    const { readFile } = await import("node:fs/promises");
    for (let i = 0; i < 8; i++) assert.equal(await readFile(data, "utf8"), "payload");
    assert.equal(granted, 0, "a waiter got the lock while it was held");
  } finally {
    rt.unlockSync(holder);
    rt.closeSync(holder);
    await Promise.all(waits);
    for (const f of files) rt.closeSync(f);
  }
  assert.equal(granted, 16);
});

for (const other of RUNTIMES) {
  test(`a ${other} process that abandoned 6 waits still exits, and holds nothing`, async () => {
    using dir = tempDir();
    const path = join(dir.path, "exit.lock");
    const holder = open(path);
    assert.equal(rt.tryLockSync(holder, true), true);
    const child = start(other, "tests/fixtures/abandon.ts", [path, "100", "6"]);
    try {
      assert.equal(await child.line("abandoned"), "abandoned TimeoutError");
      if (other === "deno") {
        // Deno keeps a process alive while a lock() call is pending, and
        // offers no way to cancel it: the child ends once the lock is free.
        rt.unlockSync(holder);
        assert.equal(await child.exited, 0);
      } else {
        assert.equal(await child.exited, 0);
        rt.unlockSync(holder);
      }
      await eventually(() => freeFor(path), "the lock is free after the child is gone");
    } finally {
      rt.closeSync(holder);
    }
  });
}

test("rt reports missing directories, directories and files in the way with its own classes", () => {
  using dir = tempDir();
  const missing = join(dir.path, "nope", "x.lock");
  assert.throws(() => open(missing), (e) => {
    assert.ok(e instanceof NotFound);
    assert.equal(e.code, "ENOENT");
    assert.ok(e.message.includes(missing), e.message);
    return true;
  });
  mkdirSync(join(dir.path, "d"));
  assert.throws(() => open(join(dir.path, "d")), IsADirectory);
  writeFileSync(join(dir.path, "plain"), "x");
  assert.throws(() => open(join(dir.path, "plain", "x")), NotADirectory);
  assert.equal(readFileSync(join(dir.path, "plain"), "utf8"), "x");
});

test("rt.copyFile() and copyFileSync(), exclusive: the content and mode, and an existing target refused and kept", async () => {
  using dir = tempDir();
  const from = join(dir.path, "from");
  writeFileSync(from, "x".repeat(100_000), { mode: 0o640 });
  chmodSync(from, 0o640);
  const taken = join(dir.path, "taken");
  writeFileSync(taken, "keep");
  for (
    const [name, copy] of [
      ["sync", (a: string, b: string) => rt.copyFileSync(a, b, true)],
      ["async", (a: string, b: string) => rt.copyFile(a, b, true)],
    ] as const
  ) {
    const to = join(dir.path, `to-${name}`);
    await copy(from, to);
    assert.equal(readFileSync(to, "utf8"), "x".repeat(100_000), name);
    assert.equal(statSync(to).mode & 0o777, 0o640, name);
    await assert.rejects(async () => await copy(from, taken), AlreadyExists, name);
    assert.equal(readFileSync(taken, "utf8"), "keep", name);
    await assert.rejects(async () => await copy(join(dir.path, "missing"), to + "-2"), NotFound);
    assert.equal(existsSync(to + "-2"), false, name);
  }
});
