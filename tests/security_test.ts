// Attacks on the package from another user (nobody, through setpriv(1)) and
// from a careless neighbour, in a sticky and in a group-writable directory:
// each ends with the victim's files byte for byte as they were. The victim
// is this test process (root here, the worst case: root may write anything
// a link points to). Run on Deno, Bun and Node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { FileStore } from "../filestore.ts";
import {
  BoundedSemaphore,
  Lock,
  openAtomic,
  PidFileLock,
  RLock,
  TemporaryFileLock,
} from "../lock.ts";
import { LockFile, readLockFile } from "../lockfile.ts";
import { AlreadyExists, IsADirectory, NotAFile, PermissionDenied } from "../errors.ts";
import { command, root, RUNTIMES, type TempDir, tempDir } from "./_util.ts";

const NOBODY = 65534;
const canAttack = process.getuid?.() === 0 &&
  spawnSync("setpriv", ["--version"]).status === 0;
const asAnotherUser = { skip: canAttack ? false : "needs root and setpriv(1) to act as nobody" };

// Runs `script` in sh as nobody, with no supplementary groups.
function asNobody(script: string): void {
  const r = spawnSync(
    "setpriv",
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "sh", "-c", script],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, `attacker's script failed: ${r.stderr}`);
}

// A directory that nobody may write: world-writable and sticky as /tmp, or
// group-writable with nobody's group.
function sharedDir(kind: "sticky" | "group"): TempDir {
  const dir = tempDir(`security-${kind}-`);
  if (kind === "sticky") {
    chmodSync(dir.path, 0o1777);
  } else {
    chownSync(dir.path, 0, NOBODY);
    chmodSync(dir.path, 0o2775);
  }
  return dir;
}

// A directory of root's that nobody may enter but not write, as /srv is.
function safeDir(): TempDir {
  const dir = tempDir("security-safe-");
  chmodSync(dir.path, 0o755);
  return dir;
}

// The victim's own files, which nobody may not even read.
interface Victim extends Disposable {
  readonly dir: string;
  readonly secret: string;
  snapshot(): Record<string, string>;
}

function victim(): Victim {
  const home = tempDir("security-victim-");
  chmodSync(home.path, 0o700);
  const secret = join(home.path, "secret");
  writeFileSync(secret, "precious\n", { mode: 0o600 });
  mkdirSync(join(home.path, "documents"));
  writeFileSync(join(home.path, "documents", "letter"), "dear ...\n");
  return {
    dir: home.path,
    secret,
    snapshot() {
      const result: Record<string, string> = {};
      for (const name of readdirSync(home.path, { recursive: true }) as string[]) {
        const path = join(home.path, name);
        const info = lstatSync(path);
        result[name] = info.isDirectory()
          ? `<dir ${info.mode.toString(8)}>`
          : `${info.mode.toString(8)} ${info.nlink} ${readFileSync(path).toString("hex")}`;
      }
      return result;
    },
    [Symbol.dispose]: () => home[Symbol.dispose](),
  };
}

// Runs `attempt`, which must fail or do nothing, and checks that the
// victim's files did not change.
async function unchanged(v: Victim, attempt: () => unknown): Promise<unknown> {
  const before = v.snapshot();
  let error: unknown;
  try {
    await attempt();
  } catch (e) {
    error = e;
  }
  assert.deepEqual(v.snapshot(), before, `victim's files changed (error: ${error})`);
  return error;
}

for (const kind of ["sticky", "group"] as const) {
  test(
    `1. a store whose areas another user linked elsewhere is refused (${kind} directory)`,
    asAnotherUser,
    async () => {
      using shared = sharedDir(kind);
      using v = victim();
      const store = join(shared.path, "queue");
      asNobody(
        `mkdir ${store} && ln -s ${v.dir} ${store}/tmp && ln -s ${v.dir}/documents ${store}/cur && mkdir ${store}/new && echo evil > ${store}/new/letter`,
      );
      const error = await unchanged(v, async () => {
        const s = new FileStore(store);
        await s.prepare();
        await s.cleanup({ olderThan: 0 });
        await s.claim();
      });
      assert.ok(error instanceof PermissionDenied, String(error));
      // The store's directory is nobody's, or its parent lets a group rename it.
      assert.match(String(error), /belongs to uid 65534|lets group or others replace/);
    },
  );

  test(
    `1. areas that another user made before the store's owner came are refused (${kind})`,
    asAnotherUser,
    async () => {
      using base = safeDir();
      using v = victim();
      const store = join(base.path, "spool");
      mkdirSync(store);
      chmodSync(store, kind === "sticky" ? 0o1777 : 0o1775);
      chownSync(store, 0, NOBODY);
      asNobody(`mkdir ${store}/tmp ${store}/new ${store}/cur`);
      const error = await unchanged(v, () => new FileStore(store).prepareSync());
      assert.ok(error instanceof PermissionDenied, String(error));
      assert.match(String(error), /the area belongs to uid 65534/);
    },
  );

  test(
    `1. a store whose directory others may write is refused, even with real areas (${kind})`,
    asAnotherUser,
    async () => {
      using shared = sharedDir(kind);
      using v = victim();
      const path = join(shared.path, "queue");
      mkdirSync(path);
      chmodSync(path, kind === "sticky" ? 0o777 : 0o775);
      chownSync(path, 0, NOBODY);
      const error = await unchanged(v, () => new FileStore(path).prepareSync());
      assert.ok(error instanceof PermissionDenied, String(error));
      assert.match(String(error), /belongs to uid 65534|lets group or others replace/);
      // In a store that is the victim's own, an area that is a link (left by
      // whoever once could write there) is refused too.
      using base = safeDir();
      const own = join(base.path, "queue");
      new FileStore(own).prepareSync();
      renameSync(join(own, "cur"), join(own, "cur.old"));
      symlinkSync(v.dir, join(own, "cur"));
      const again = await unchanged(v, () => new FileStore(own).listSync("cur"));
      assert.ok(again instanceof NotAFile, String(again));
    },
  );

  test(
    `2. lock paths that another user linked to the victim's file are never opened through (${kind})`,
    asAnotherUser,
    async () => {
      using shared = sharedDir(kind);
      using v = victim();
      const at = (name: string) => join(shared.path, name);
      const names = ["w.lock", "tmp.lock", "app.pid", "app.lock", "sem.00.lock", "sem.01.lock"];
      asNobody(names.map((n) => `ln -s ${v.secret} ${at(n)}`).join(" && "));
      const attempts: [string, () => unknown][] = [
        ["Lock mode w", () => new Lock(at("w.lock"), { mode: "w", timeout: 0 }).acquire()],
        ["Lock mode a", () => new Lock(at("w.lock"), { timeout: 0 }).acquire()],
        [
          "TemporaryFileLock",
          () => new TemporaryFileLock(at("tmp.lock"), { timeout: 0 }).acquire(),
        ],
        ["PidFileLock", () => new PidFileLock(at("app.pid"), { timeout: 0 }).acquire()],
        ["LockFile", () => new LockFile(at("app.lock"))],
        ["readLockFile", () => readLockFile(at("app.lock"))],
        [
          "BoundedSemaphore",
          () =>
            new BoundedSemaphore(2, { name: "sem", directory: shared.path, timeout: 0 }).acquire(),
        ],
      ];
      for (const [label, attempt] of attempts) {
        const error = await unchanged(v, attempt);
        assert.ok(error instanceof NotAFile, `${label}: ${error}`);
        assert.match(String(error), /symbolic link/, label);
      }
      // The links are left as they were.
      for (const name of names) assert.ok(lstatSync(at(name)).isSymbolicLink(), name);
    },
  );

  test(
    `2. FileStore.create() never writes through a link in a shared tmp area (${kind})`,
    asAnotherUser,
    async () => {
      using base = safeDir();
      using v = victim();
      const path = join(base.path, "queue");
      const store = new FileStore(path);
      store.prepareSync();
      for (const area of ["tmp", "new", "cur"]) {
        chownSync(join(path, area), 0, NOBODY);
        chmodSync(join(path, area), kind === "sticky" ? 0o1777 : 0o2775);
      }
      asNobody(`ln -s ${v.secret} ${path}/tmp/report`);
      const error = await unchanged(v, () => new FileStore(path).create("report"));
      // A group-writable area is fine, and the link is refused; an area
      // that anybody may write is refused before anything is opened.
      if (kind === "group") assert.ok(error instanceof NotAFile, String(error));
      else assert.match(String(error), /lets anybody put and rearrange files in the area/);
    },
  );
}

test(
  "2. a Lock taken again after another user swapped its file for a link never opens the target",
  asAnotherUser,
  async () => {
    // Opening what a link points at is harm enough, even if the file is
    // closed at once: a FIFO's reader wakes, a terminal becomes the
    // caller's controlling one, a process's POSIX locks on the file go.
    // So the target here is root's FIFO with a reader blocked in open(),
    // which only an open for writing would release.
    using shared = sharedDir("group");
    using v = victim();
    // Beside the victim's files, whose snapshot would read it.
    using pipes = tempDir("security-fifo-");
    chmodSync(pipes.path, 0o700);
    const fifo = join(pipes.path, "fifo");
    assert.equal(spawnSync("mkfifo", ["-m", "600", fifo]).status, 0);
    const reader = spawn("cat", [fifo], { stdio: "ignore" });
    try {
      for (const mode of ["a", "r+"] as const) {
        const path = join(shared.path, `job-${mode}.lock`);
        writeFileSync(path, "");
        const lock = new Lock(path, { mode, timeout: 0 });
        for (let i = 0; i < 3; i++) {
          await lock.acquire();
          await lock.release();
        }
        for (const target of [v.secret, fifo]) {
          asNobody(`rm -f ${path} && ln -s ${target} ${path}`);
          const error = await unchanged(v, () => lock.acquire());
          assert.ok(error instanceof NotAFile && error.code === "ELOOP", String(error));
          assert.equal(lock.locked, false);
        }
        // Once the link is gone, a new file at the path is taken.
        asNobody(`rm ${path}`);
        writeFileSync(path, "");
        await lock.acquire();
        assert.equal(lock.locked, true);
        await lock.release();
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(reader.exitCode, null, "the FIFO was opened through the link");
    } finally {
      reader.kill("SIGKILL");
    }
  },
);

test("2. a lock file with another name (hard link) is not truncated or overwritten", async () => {
  // The kernel's protected_hardlinks stops nobody from linking root's file,
  // so the link is made here, as a neighbour with access would make it.
  using dir = tempDir();
  using v = victim();
  const writable = join(dir.path, "mine");
  writeFileSync(writable, "keep me\n");
  const lockPath = join(dir.path, "job.lock");
  linkSync(writable, lockPath);
  const before = readFileSync(writable, "utf8");
  for (
    const attempt of [
      () => new Lock(lockPath, { mode: "w", timeout: 0 }).acquire(),
      () => new PidFileLock(lockPath, { timeout: 0 }).acquire(),
      () => new LockFile(lockPath),
    ]
  ) {
    const error = await unchanged(v, attempt);
    assert.ok(error instanceof NotAFile && error.code === "EMLINK", String(error));
  }
  assert.equal(readFileSync(writable, "utf8"), before);
});

test(
  "3. a message that is a link to the consumer's file is never handed out or copied",
  asAnotherUser,
  async () => {
    using shared = sharedDir("sticky");
    using v = victim();
    const path = join(shared.path, "queue");
    mkdirSync(path, { mode: 0o755 });
    const store = new FileStore(path);
    store.prepareSync();
    chownSync(join(path, "new"), 0, NOBODY);
    chmodSync(join(path, "new"), 0o2775);
    asNobody(`ln -s ${v.secret} ${path}/new/passwd && echo hello > ${path}/new/real`);
    await unchanged(v, async () => {
      assert.equal((await store.claim())?.path, join(path, "cur", "real"));
      assert.equal(await store.claim(), null);
      assert.equal(store.claimSync({ rescan: true }), null);
    });
    const error = await unchanged(v, () => store.copy("passwd", "new", "cur"));
    assert.ok(error instanceof NotAFile, String(error));
    assert.deepEqual(readdirSync(join(path, "cur")), ["real"]);
    assert.ok(lstatSync(join(path, "new", "passwd")).isSymbolicLink());
  },
);

test("4. two messages delivered under one name: the second claim never replaces the first", () => {
  using dir = tempDir();
  const store = new FileStore(dir.path);
  store.prepareSync();
  for (const text of ["message 1", "message 2"]) {
    const file = store.createSync("same");
    file.writeSync(text);
    file.closeSync();
    if (text === "message 1") {
      store.moveSync("same", "tmp", "new");
      assert.equal(store.claimSync()?.path, join(dir.path, "cur", "same"));
    } else {
      store.moveSync("same", "tmp", "new");
    }
  }
  // The second waits in new while the first holds the name in cur.
  assert.equal(store.claimSync(), null);
  assert.equal(readFileSync(join(dir.path, "cur", "same"), "utf8"), "message 1");
  assert.equal(readFileSync(join(dir.path, "new", "same"), "utf8"), "message 2");
  // move() refuses to replace, too.
  assert.throws(() => store.moveSync("same", "new", "cur"), AlreadyExists);
  assert.equal(readFileSync(join(dir.path, "cur", "same"), "utf8"), "message 1");
  store.removeSync("same", "cur");
  assert.equal(store.claimSync()?.path, join(dir.path, "cur", "same"));
  assert.equal(readFileSync(join(dir.path, "cur", "same"), "utf8"), "message 2");
});

test("5. TemporaryFileLock.release() never removes a file that replaced its own", async () => {
  using dir = tempDir();
  const path = join(dir.path, "job.lock");
  const lock = new TemporaryFileLock(path);
  await lock.acquire();
  writeFileSync(join(dir.path, "other"), "the new owner's\n");
  renameSync(join(dir.path, "other"), path);
  await lock.release();
  assert.equal(readFileSync(path, "utf8"), "the new owner's\n");
});

test("13. a directory in a store's areas: cleanup() skips it and remove() refuses it on every runtime", async () => {
  using dir = tempDir();
  const store = new FileStore(dir.path);
  store.prepareSync();
  mkdirSync(join(dir.path, "tmp", "subdir"));
  mkdirSync(join(dir.path, "new", "subdir"));
  writeFileSync(join(dir.path, "tmp", "old"), "x");
  const old = new Date(Date.now() - 48 * 3600_000);
  utimesSync(join(dir.path, "tmp", "old"), old, old);
  utimesSync(join(dir.path, "tmp", "subdir"), old, old);
  assert.deepEqual(await store.cleanup(), [join(dir.path, "tmp", "old")]);
  assert.throws(() => store.removeSync("subdir", "new"), IsADirectory);
  await assert.rejects(store.remove("subdir", "tmp"), IsADirectory);
  assert.ok(existsSync(join(dir.path, "tmp", "subdir")));
  assert.ok(existsSync(join(dir.path, "new", "subdir")));
  assert.equal(store.claimSync(), null);
});

test("14. openAtomic() takes a name of 255 bytes", async () => {
  using dir = tempDir();
  const path = join(dir.path, "x".repeat(255));
  await openAtomic(path, (file) => file.write("whole"));
  assert.equal(readFileSync(path, "utf8"), "whole");
  assert.deepEqual(readdirSync(dir.path), ["x".repeat(255)]);
});

test("14. a claimed name with a backslash can be removed and moved", () => {
  using dir = tempDir();
  const store = new FileStore(dir.path);
  store.prepareSync();
  writeFileSync(join(dir.path, "new", "a\\b"), "x");
  const path = store.claimSync()!.path;
  assert.equal(path, join(dir.path, "cur", "a\\b"));
  store.moveSync(path, "cur", "tmp");
  store.removeSync("a\\b", "tmp");
  assert.deepEqual(readdirSync(join(dir.path, "tmp")), []);
});

test("11. RLock.acquire() racing release() counts before the release sees it", async () => {
  using dir = tempDir();
  const lock = new RLock(join(dir.path, "r.lock"));
  await lock.acquire();
  const again = lock.acquire();
  lock.releaseSync();
  const file = await again;
  assert.equal(file.closed, false);
  assert.equal(lock.locked, true);
  assert.equal(lock.count, 1);
  lock.releaseSync();
  assert.equal(lock.locked, false);
  assert.equal(file.closed, true);
});

const canUnshare = process.getuid?.() === 0 &&
  spawnSync("unshare", ["--pid", "--fork", "--mount-proc", "true"]).status === 0;

for (const runtime of RUNTIMES) {
  test(`12. readLockFile() in another pid namespace (${runtime}) never calls a held lock free`, {
    skip: canUnshare ? false : "needs root and unshare(1) for a pid namespace",
  }, () => {
    using dir = tempDir();
    const path = join(dir.path, "app.lock");
    const holder = new LockFile(path);
    const [bin, args] = command(runtime, "tests/fixtures/read_lockfile.ts", [path]);
    const inside = () => {
      const r = spawnSync("unshare", ["--pid", "--fork", "--mount-proc", bin, ...args], {
        encoding: "utf8",
        cwd: root,
      });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as { locked: boolean; pid?: number };
    };
    try {
      // /proc/locks there leaves this process's lock out.
      const view = spawnSync("unshare", ["--pid", "--fork", "--mount-proc", "cat", "/proc/locks"], {
        encoding: "utf8",
      }).stdout;
      assert.ok(!view.includes(` ${process.pid} `), "the namespace sees the holder after all");
      assert.deepEqual(inside(), { locked: true, pid: process.pid, content: String(process.pid) });
    } finally {
      holder.close();
    }
    assert.deepEqual(inside(), { locked: false, pid: process.pid, content: String(process.pid) });
  });
}

test("1. a store under a directory that another user owns is refused", asAnotherUser, async () => {
  using shared = sharedDir("sticky");
  using v = victim();
  const theirs = join(shared.path, "att");
  asNobody(`mkdir -m 755 ${theirs}`);
  const error = await unchanged(v, () => new FileStore(join(theirs, "store")).prepareSync());
  assert.ok(error instanceof PermissionDenied, String(error));
  assert.match(String(error), /belongs to uid 65534/);
  assert.deepEqual(readdirSync(theirs), []);
});

test("1. the root directory, whose tmp anybody may write, is no store", () => {
  assert.throws(() => new FileStore("/"), (e) => {
    assert.ok(e instanceof PermissionDenied, String(e));
    assert.match(String(e), /lets anybody put and rearrange files in the area/);
    return true;
  });
});

test(
  "2. openAtomic() publishes nothing when its closed temporary file is swapped for a link",
  asAnotherUser,
  async () => {
    using shared = sharedDir("group");
    using v = victim();
    const target = join(shared.path, "app.conf");
    const error = await unchanged(v, () =>
      openAtomic(target, async (file) => {
        await file.write("setting=1\n");
        await file.close();
        const temporary = readdirSync(shared.path).find((n) => n.startsWith(".app.conf."))!;
        asNobody(
          `mv ${join(shared.path, temporary)} ${shared.path}/moved && ln -s ${v.secret} ${
            join(shared.path, temporary)
          }`,
        );
      }));
    assert.ok(error instanceof NotAFile, String(error));
    assert.ok(!existsSync(target) && !lstatExists(target), "a link was published");
  },
);

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

const hasMkfifo = spawnSync("mkfifo", ["--version"]).status === 0;

test("2. a FIFO at a lock path is refused at once, never waited on", {
  skip: hasMkfifo ? false : "needs mkfifo(1)",
}, async () => {
  using dir = tempDir();
  const path = join(dir.path, "app.lock");
  spawnSync("mkfifo", [path]);
  assert.throws(() => readLockFile(path), NotAFile);
  assert.throws(() => new LockFile(path), NotAFile);
  await assert.rejects(new Lock(path, { timeout: 0 }).acquire(), NotAFile);
  await assert.rejects(new PidFileLock(path, { timeout: 0 }).acquire(), NotAFile);
});
