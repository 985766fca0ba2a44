// Ports of zc.lockfile's own tests (its README example and tests.py), on
// Deno, Bun and Node, with child processes of all three runtimes and, where
// python3 is installed, Python's fcntl.flock as the other lock user.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { LockError, LockFile, readLockFile, SimpleLockFile } from "../lockfile.ts";
import { lockHolders } from "../lock.ts";
import { IsADirectory, NoSpace, NotFound, PermissionDenied } from "../errors.ts";
import { rt } from "../_runtime.ts";
import { type Child, type Runtime, RUNTIMES, start, tempDir } from "./_util.ts";

const CHILD = "tests/fixtures/lockfile_child.ts";
const COUNTER = "tests/fixtures/lockfile_counter.ts";

const hasPython = spawnSync("python3", ["-c", "import fcntl"]).status === 0;
const isRoot = process.getuid?.() === 0;

/** A lockfile_child.ts process, and the way to talk to it. */
interface LockChild {
  readonly child: Child;
  readonly pid: number;
  /** Sends a command; resolves with the answer, without its number. */
  ask(command: "lock" | "close"): Promise<string>;
  exit(): Promise<void>;
}

async function lockChild(runtime: Runtime, path: string, template?: string): Promise<LockChild> {
  const child = start(runtime, CHILD, template === undefined ? [path] : [path, template]);
  const pid = Number((await child.line(/^ready \d+$/)).split(" ")[1]);
  let seq = 0;
  return {
    child,
    pid,
    async ask(command) {
      const n = ++seq;
      child.send(command);
      return (await child.line(new RegExp(`^${n} `))).slice(String(n).length + 1);
    },
    async exit() {
      child.send("exit");
      await child.exited;
    },
  };
}

function content(path: string): string {
  return readFileSync(path, "utf8");
}

test("LockFile refuses a second lock, leaves the file behind on close() and locks again", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const lock = new LockFile(path);
  assert.throws(() => new LockFile(path), LockError);
  lock.close();
  assert.ok(existsSync(path));
  const again = new LockFile(path);
  again.close();
});

test("LockFile writes ' <pid>\\n', and a refused attempt leaves it unchanged", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  writeFileSync(path, " a much longer content from an earlier holder\n");
  using _lock = new LockFile(path);
  assert.equal(content(path), ` ${process.pid}\n`);
  assert.equal(content(path).slice(1).trim(), String(process.pid));
  const before = statSync(path);
  for (const attempt of [() => new LockFile(path), () => new SimpleLockFile(path)]) {
    assert.throws(attempt, (e) => {
      assert.ok(e instanceof LockError);
      assert.equal(e.path, path);
      assert.equal(e.pid, process.pid);
      assert.equal(e.hostname, undefined);
      assert.equal(e.message, `Cannot lock '${path}': held by pid ${process.pid}`);
      return true;
    });
  }
  assert.equal(content(path), ` ${process.pid}\n`);
  assert.equal(statSync(path).mtimeMs, before.mtimeMs);
});

test("LockFile fills in {hostname}, and LockError names the host", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const contentTemplate = "{pid}/{hostname}";
  using _lock = new LockFile(path, { contentTemplate });
  assert.equal(content(path), ` ${process.pid}/${hostname()}\n`);
  assert.throws(() => new LockFile(path, { contentTemplate }), (e) => {
    assert.ok(e instanceof LockError);
    assert.equal(e.pid, process.pid);
    assert.equal(e.hostname, hostname());
    assert.equal(
      e.message,
      `Cannot lock '${path}': held by pid ${process.pid} on host '${hostname()}'`,
    );
    return true;
  });
});

test("LockFile looks the hostname up only when the template uses it", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const original = rt.hostname;
  let lookups = 0;
  rt.hostname = () => {
    lookups++;
    return "example-host";
  };
  try {
    new LockFile(path).close();
    new LockFile(path, { contentTemplate: "pid {pid}" }).close();
    assert.equal(lookups, 0);
    new LockFile(path, { contentTemplate: "{hostname}:{pid}" }).close();
    assert.equal(lookups, 1);
    assert.equal(content(path), ` example-host:${process.pid}\n`);
  } finally {
    rt.hostname = original;
  }
});

test("LockFile takes {{ and }} for literal braces", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  new LockFile(path, { contentTemplate: "{{pid}}={pid}" }).close();
  assert.equal(content(path), ` {pid}=${process.pid}\n`);
});

for (const contentTemplate of ["{pidd}", "{}", "{0}", "{pid:>8}", "{PID}", "{pid", "pid}"]) {
  test(`LockFile rejects the template '${contentTemplate}' before touching the disk`, () => {
    using dir = tempDir();
    const path = join(dir.path, "lock");
    assert.throws(() => new LockFile(path, { contentTemplate }), SyntaxError);
    assert.throws(() => readLockFile(path, { contentTemplate }), SyntaxError);
    assert.ok(!existsSync(path));
  });
}

test("SimpleLockFile locks without writing", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const lock = new SimpleLockFile(path);
  assert.equal(content(path), "");
  assert.throws(() => new SimpleLockFile(path), LockError);
  assert.throws(() => new LockFile(path), (e) => {
    assert.ok(e instanceof LockError);
    assert.equal(e.pid, undefined);
    assert.equal(e.message, `Cannot lock '${path}': held by an unknown owner`);
    return true;
  });
  lock.close();
  writeFileSync(path, " 12345\n");
  new SimpleLockFile(path).close();
  assert.equal(content(path), " 12345\n");
});

test("LockFile.close() can be called twice, and `using` closes it", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  {
    using lock = new LockFile(path);
    assert.ok(lock instanceof SimpleLockFile);
    assert.equal(lock.path, path);
    lock.close();
    lock.close();
    using _other = new LockFile(path);
  }
  new LockFile(path).close();
});

test("LockFile takes a lock whose last holder is gone, and names nobody", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  writeFileSync(path, " 999999999/gone-host\n");
  using _lock = new LockFile(path);
  assert.equal(content(path), ` ${process.pid}\n`);
});

test("LockFile gives NotFound for a missing directory", () => {
  using dir = tempDir();
  const path = join(dir.path, "missing", "lock");
  assert.throws(() => new LockFile(path), (e) => {
    assert.ok(e instanceof NotFound && !(e instanceof LockError));
    assert.ok(e.message.includes(path), e.message);
    return true;
  });
  assert.throws(() => readLockFile(path), NotFound);
});

test("LockFile gives IsADirectory for a directory at the path", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  mkdirSync(path);
  assert.throws(() => new LockFile(path), (e) => {
    assert.ok(e instanceof IsADirectory);
    assert.ok(e.message.includes(path), e.message);
    return true;
  });
  assert.throws(() => new SimpleLockFile(path), IsADirectory);
  assert.throws(() => readLockFile(path), IsADirectory);
});

test("LockFile gives PermissionDenied for a file it may not write", {
  skip: isRoot ? "root may write anything" : false,
}, () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  writeFileSync(path, "");
  chmodSync(path, 0o444);
  assert.throws(() => new LockFile(path), (e) => {
    assert.ok(e instanceof PermissionDenied);
    assert.ok(e.message.includes(path), e.message);
    return true;
  });
});

test("LockFile releases the lock when writing its content fails", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const original = rt.writeSync;
  rt.writeSync = (f) => {
    throw new NoSpace("ENOSPC", "write", f.path, "no space left on device");
  };
  try {
    assert.throws(() => new LockFile(path), (e) => {
      assert.ok(e instanceof NoSpace && !(e instanceof LockError), String(e));
      return true;
    });
  } finally {
    rt.writeSync = original;
  }
  const f = rt.openSync(path, { read: true });
  try {
    assert.equal(rt.tryLockSync(f, true), true);
    rt.unlockSync(f);
  } finally {
    rt.closeSync(f);
  }
  new SimpleLockFile(path).close();
});

test("readLockFile() tells a held lock from a free one, without changing the file", () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const contentTemplate = "{hostname} {pid}";
  const lock = new LockFile(path, { contentTemplate });
  const written = content(path);
  assert.deepEqual(readLockFile(path, { contentTemplate }), {
    locked: true,
    pid: process.pid,
    hostname: hostname(),
    content: `${hostname()} ${process.pid}`,
  });
  lock.close();
  assert.deepEqual(readLockFile(path), {
    locked: false,
    content: `${hostname()} ${process.pid}`,
  });
  assert.equal(content(path), written);
  writeFileSync(path, " 4321\n");
  assert.deepEqual(readLockFile(path), { locked: false, pid: 4321, content: "4321" });
  writeFileSync(path, "");
  assert.deepEqual(readLockFile(path), { locked: false, content: "" });
  new LockFile(path).close();
});

test("LockError describes what it knows", () => {
  for (
    const [holder, text] of [
      [{ pid: 7, hostname: "h" }, "held by pid 7 on host 'h'"],
      [{ pid: 7 }, "held by pid 7"],
      [{ hostname: "h" }, "held by a process on host 'h'"],
      [{}, "held by an unknown owner"],
    ] as const
  ) {
    const error = new LockError("/x/y.lock", holder);
    assert.equal(error.message, `Cannot lock '/x/y.lock': ${text}`);
    assert.equal(error.name, "LockError");
    assert.equal(error.path, "/x/y.lock");
  }
});

for (const runtime of RUNTIMES) {
  test(`LockFile held by a ${runtime} process is refused here, and the other way round`, async () => {
    using dir = tempDir();
    const path = join(dir.path, "lock");
    const other = await lockChild(runtime, path, "{pid}/{hostname}");
    try {
      assert.equal(await other.ask("lock"), "locked");
      assert.equal(content(path), ` ${other.pid}/${hostname()}\n`);
      assert.throws(() => new LockFile(path, { contentTemplate: "{pid}/{hostname}" }), (e) => {
        assert.ok(e instanceof LockError);
        assert.equal(e.pid, other.pid);
        assert.equal(e.hostname, hostname());
        return true;
      });
      assert.deepEqual(readLockFile(path), {
        locked: true,
        pid: other.pid,
        content: `${other.pid}/${hostname()}`,
      });
      assert.equal(content(path), ` ${other.pid}/${hostname()}\n`);
      assert.equal(await other.ask("close"), "closed");

      using _lock = new LockFile(path);
      assert.equal(
        await other.ask("lock"),
        `refused ${process.pid} Cannot lock '${path}': held by pid ${process.pid}`,
      );
      assert.equal(content(path), ` ${process.pid}\n`);
    } finally {
      await other.exit();
    }
  });
}

test("LockFile unlocks and relocks while child processes are alive", async () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  let lock = new LockFile(path);
  const children = await Promise.all(RUNTIMES.map((r) => lockChild(r, path)));
  try {
    lock.close();
    lock = new LockFile(path);
    for (const child of children) {
      assert.equal(child.child.process.exitCode, null);
      assert.match(await child.ask("lock"), new RegExp(`^refused ${process.pid} `));
    }
    lock.close();
    for (const child of children) {
      assert.equal(await child.ask("lock"), "locked");
      assert.equal(await child.ask("close"), "closed");
    }
  } finally {
    lock.close();
    await Promise.all(children.map((c) => c.exit()));
  }
});

test("50 contenders in 6 processes each add one to a counter under the LockFile", async () => {
  using dir = tempDir();
  const lockPath = join(dir.path, "lock");
  const counterPath = join(dir.path, "counter");
  writeFileSync(counterPath, "0");
  const shares = [9, 9, 8, 8, 8, 8];
  const children = shares.map((n, i) =>
    start(RUNTIMES[i % RUNTIMES.length]!, COUNTER, [lockPath, counterPath, String(n)])
  );
  try {
    const pids = await Promise.all(
      children.map(async (c) => Number((await c.line(/^ready \d+$/)).split(" ")[1])),
    );
    for (const c of children) c.send("go");
    await Promise.all(children.map((c) => c.line(/^done \d+$/)));
    assert.deepEqual(await Promise.all(children.map((c) => c.exited)), shares.map(() => 0));
    assert.equal(content(counterPath), "50");
    const match = /^ (\d+)\n$/.exec(content(lockPath));
    assert.ok(match, `one pid in ${JSON.stringify(content(lockPath))}`);
    assert.ok(pids.includes(Number(match[1])));
  } finally {
    for (const c of children) if (c.process.exitCode === null) c.kill();
  }
});

// zc.lockfile's own algorithm, in Python: open without truncating, flock
// LOCK_EX | LOCK_NB, then write " <pid>\n" and truncate.
const ZC_LOCKFILE = `
import fcntl, os, sys
path = sys.argv[1]
try:
    fp = open(path, "r+")
except OSError:
    fp = open(path, "a+")
try:
    fcntl.flock(fp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    fp.seek(1)
    print("refused " + fp.read().strip(), flush=True)
    sys.exit(0)
fp.write(" %s\\n" % os.getpid())
fp.truncate()
fp.flush()
print("locked %s" % os.getpid(), flush=True)
sys.stdin.readline()
`;

function python(path: string): { line(): Promise<string>; end(): Promise<void> } {
  const child = spawn("python3", ["-c", ZC_LOCKFILE, path], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdout.setEncoding("utf8");
  let out = "";
  const first = new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (chunk: string) => {
      out += chunk;
      if (out.includes("\n")) resolve(out.slice(0, out.indexOf("\n")));
    });
    child.on("close", () => reject(new Error(`python3 ended early: ${out}`)));
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return {
    line: () => first,
    end() {
      child.stdin.end();
      return exited;
    },
  };
}

test("LockFile and a zc.lockfile-style Python process refuse each other", {
  skip: hasPython ? false : "needs python3",
}, async () => {
  using dir = tempDir();
  const path = join(dir.path, "lock");
  const holder = python(path);
  try {
    const pid = Number((await holder.line()).split(" ")[1]);
    assert.throws(() => new LockFile(path), (e) => {
      assert.ok(e instanceof LockError);
      assert.equal(e.pid, pid);
      return true;
    });
    assert.deepEqual(readLockFile(path), { locked: true, pid, content: String(pid) });
  } finally {
    await holder.end();
  }
  using _lock = new LockFile(path);
  const contender = python(path);
  try {
    assert.equal(await contender.line(), `refused ${process.pid}`);
  } finally {
    await contender.end();
  }
});

test(
  "readLockFile() takes no lock where /proc/locks tells who holds one",
  { skip: !existsSync("/proc/locks") && "no /proc/locks" },
  () => {
    using dir = tempDir();
    const path = join(dir.path, "quiet.lock");
    const holder = new LockFile(path);
    const original = rt.tryLockSync;
    let tries = 0;
    rt.tryLockSync = (f, exclusive) => {
      tries++;
      return original(f, exclusive);
    };
    try {
      assert.equal(readLockFile(path).locked, true);
      holder.close();
      assert.equal(readLockFile(path).locked, false);
      assert.equal(tries, 0);
    } finally {
      rt.tryLockSync = original;
      holder.close();
    }
  },
);

test("LockFile names 'path' for a value that cannot even be turned into a string", () => {
  const path = { toString: [] } as unknown as string;
  assert.throws(
    () => new LockFile(path),
    /'path' must be a non-empty string without NUL, got an object/,
  );
});

// btrfs gives each subvolume a device number of its own for stat(), while
// /proc/locks names the file system's device, and the first file of each
// subvolume has the same inode number (257): readLockFile() and
// lockHolders() must still tell the held file from its namesake. Runs on a
// loop-mounted btrfs image, as root, where mkfs.btrfs is installed.
const mkfsBtrfs = ["/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs", "/usr/bin/mkfs.btrfs"].find(
  existsSync,
);
const btrfsCapable = isRoot && mkfsBtrfs !== undefined && existsSync("/proc/locks") &&
  spawnSync("btrfs", ["--version"]).status === 0;

test("on btrfs, a held lock is seen as held and its namesake in another subvolume as free", {
  skip: btrfsCapable ? false : "needs root, mkfs.btrfs and a loop device for a btrfs image",
}, async (t) => {
  using dir = tempDir();
  const image = join(dir.path, "btrfs.img");
  const mount = join(dir.path, "mnt");
  mkdirSync(mount);
  spawnSync("truncate", ["-s", "128M", image]);
  const made = spawnSync(mkfsBtrfs!, ["-q", "-f", image], { encoding: "utf8" });
  const mounted = made.status === 0 &&
    spawnSync("mount", ["-o", "loop", image, mount], { encoding: "utf8" }).status === 0;
  if (!mounted) {
    t.skip(`no btrfs image could be made and mounted here: ${made.stderr}`);
    return;
  }
  try {
    assert.equal(spawnSync("btrfs", ["subvolume", "create", join(mount, "sub")]).status, 0);
    const held = join(mount, "held.lock");
    const namesake = join(mount, "sub", "namesake.lock");
    writeFileSync(held, "");
    writeFileSync(namesake, "");
    const a = statSync(held);
    const b = statSync(namesake);
    assert.equal(a.ino, b.ino, "the first file of each subvolume has the same inode number");
    assert.notEqual(a.dev, b.dev, "each subvolume has a device of its own");
    const lock = new LockFile(held);
    try {
      assert.equal(readLockFile(held).locked, true);
      assert.equal(readLockFile(namesake).locked, false);
      assert.deepEqual(lockHolders(held)?.map((h) => h.pid), [process.pid]);
      assert.deepEqual(lockHolders(namesake), []);
    } finally {
      lock.close();
    }
    assert.equal(readLockFile(held).locked, false);
  } finally {
    spawnSync("umount", [mount]);
  }
});
