import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { type Area, FileStore, OpenFile } from "../filestore.ts";
import { AlreadyExists, NotFound } from "../errors.ts";
import { command, type Runtime, RUNTIMES, sleep, start, tempDir } from "./_util.ts";

const WORKER = "tests/fixtures/filestore_worker.ts";

// Every file and directory under `dir` with its content, to show that a
// call left the directory exactly as it was.
function snapshot(dir: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const path = join(dir, name);
    const info = statSync(path);
    result[name] = info.isDirectory()
      ? "<dir>"
      : `${info.mtimeMs} ${readFileSync(path).toString("hex")}`;
  }
  return result;
}

describe("FileStore", () => {
  test("gocept.filestore's doctest, step by step (async API)", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    // So far nothing has happened.
    assert.deepEqual(readdirSync(tmp.path), []);
    // Prepare creates the tmp/new/cur directory structure; again changes nothing.
    await store.prepare();
    assert.deepEqual(readdirSync(tmp.path).sort(), ["cur", "new", "tmp"]);
    await store.prepare();
    assert.deepEqual(readdirSync(tmp.path).sort(), ["cur", "new", "tmp"]);
    // Files are created in the tmp area, open for writing.
    const f = await store.create("a-file");
    assert.ok(f instanceof OpenFile);
    assert.equal(f.path, join(tmp.path, "tmp", "a-file"));
    // list() gives full paths, ready to open.
    assert.deepEqual(await store.list("tmp"), [join(tmp.path, "tmp", "a-file")]);
    await f.write("Die Ente bleibt draussen!");
    await f.close();
    // Move to new for other programs to pick it up.
    await store.move("a-file", "tmp", "new");
    assert.deepEqual(await store.list("tmp"), []);
    assert.deepEqual(await store.list("new"), [join(tmp.path, "new", "a-file")]);
    // Another process works with it and moves it to cur.
    await store.move("a-file", "new", "cur");
    assert.deepEqual(await store.list("new"), []);
    assert.deepEqual(await store.list("cur"), [join(tmp.path, "cur", "a-file")]);
    // Files can be copied, too.
    await store.copy("a-file", "cur", "tmp");
    assert.deepEqual(await store.list("cur"), [join(tmp.path, "cur", "a-file")]);
    assert.deepEqual(await store.list("tmp"), [join(tmp.path, "tmp", "a-file")]);
    assert.equal(
      readFileSync(join(tmp.path, "tmp", "a-file"), "utf8"),
      "Die Ente bleibt draussen!",
    );
    // And removed.
    await store.remove("a-file", "tmp");
    assert.deepEqual(await store.list("tmp"), []);
  });

  test("gocept.filestore's doctest, step by step (sync API)", () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    store.prepareSync();
    store.prepareSync();
    assert.deepEqual(readdirSync(tmp.path).sort(), ["cur", "new", "tmp"]);
    const f = store.createSync("a-file");
    assert.deepEqual(store.listSync("tmp"), [join(tmp.path, "tmp", "a-file")]);
    f.writeSync("Die Ente bleibt draussen!");
    f.closeSync();
    assert.equal(store.moveSync("a-file", "tmp", "new"), join(tmp.path, "new", "a-file"));
    assert.deepEqual(store.listSync("tmp"), []);
    assert.deepEqual(store.listSync("new"), [join(tmp.path, "new", "a-file")]);
    store.moveSync("a-file", "new", "cur");
    assert.deepEqual(store.listSync("new"), []);
    assert.deepEqual(store.listSync("cur"), [join(tmp.path, "cur", "a-file")]);
    assert.equal(store.copySync("a-file", "cur", "tmp"), join(tmp.path, "tmp", "a-file"));
    assert.deepEqual(store.listSync("cur"), [join(tmp.path, "cur", "a-file")]);
    assert.deepEqual(store.listSync("tmp"), [join(tmp.path, "tmp", "a-file")]);
    store.removeSync("a-file", "tmp");
    assert.deepEqual(store.listSync("tmp"), []);
  });

  test("prepare() creates missing parents, and everything again after removal", async () => {
    using tmp = tempDir();
    const store = new FileStore(join(tmp.path, "a", "b", "queue"));
    await store.prepare();
    assert.deepEqual(readdirSync(store.path).sort(), ["cur", "new", "tmp"]);
    rmSync(join(tmp.path, "a"), { recursive: true });
    store.prepareSync();
    assert.deepEqual(readdirSync(store.path).sort(), ["cur", "new", "tmp"]);
  });

  test("a relative path is made absolute once, at construction", () => {
    const store = new FileStore("some/relative/dir");
    assert.equal(store.path, join(process.cwd(), "some/relative/dir"));
    assert.equal(store.pathOf("/x/y/a-file", "cur"), join(store.path, "cur", "a-file"));
  });

  test("a store that was not prepared throws NotFound", async () => {
    using tmp = tempDir();
    const store = new FileStore(join(tmp.path, "missing"));
    await assert.rejects(store.list("new"), NotFound);
    assert.throws(() => store.listSync("new"), NotFound);
    await assert.rejects(store.put("x"), NotFound);
    await assert.rejects(store.claim(), NotFound);
    assert.throws(() => store.createSync("a"), NotFound);
  });

  test("create() empties an existing file by default; mode 'wx' refuses it", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    await using first = await store.create("a-file");
    await first.write("long content");
    await first.close();
    await using second = await store.create("a-file");
    await second.close();
    assert.equal(readFileSync(second.path, "utf8"), "");
    await assert.rejects(store.create("a-file", { mode: "wx" }), AlreadyExists);
    assert.throws(() => store.createSync("a-file", { mode: "wx" }), AlreadyExists);
    using third = store.createSync("other", { mode: "wx" });
    third.writeSync("x");
    assert.deepEqual(store.listSync("tmp"), [
      join(tmp.path, "tmp", "a-file"),
      join(tmp.path, "tmp", "other"),
    ]);
  });

  test("create() gives a handle with a writable stream", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const file = await store.create("streamed");
    await new Blob(["one ", "two"]).stream().pipeTo(file.writable);
    assert.ok(file.closed);
    assert.equal(readFileSync(file.path, "utf8"), "one two");
  });

  test("move(), copy() and remove() take a full path from list()", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    (await store.create("a-file")).closeSync();
    const [inTmp] = await store.list("tmp");
    const inNew = await store.move(inTmp!, "tmp", "new");
    const copied = await store.copy(inNew, "new", "cur");
    assert.equal(copied, join(tmp.path, "cur", "a-file"));
    await store.remove(copied, "cur");
    store.removeSync(inNew, "new");
    for (const area of ["tmp", "new", "cur"] as const) {
      assert.deepEqual(await store.list(area), []);
    }
  });

  test("move() of a missing file throws NotFound", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    await assert.rejects(store.move("nothing", "new", "cur"), NotFound);
    assert.throws(() => store.moveSync("nothing", "new", "cur"), NotFound);
    await assert.rejects(store.remove("nothing", "cur"), NotFound);
  });

  test("copy() refuses to replace a file and leaves no staging file", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    writeFileSync(join(tmp.path, "cur", "a-file"), "source");
    writeFileSync(join(tmp.path, "new", "a-file"), "existing");
    await assert.rejects(store.copy("a-file", "cur", "new"), AlreadyExists);
    assert.throws(() => store.copySync("a-file", "cur", "cur"), AlreadyExists);
    await assert.rejects(store.copy("missing", "cur", "new"), NotFound);
    assert.equal(readFileSync(join(tmp.path, "new", "a-file"), "utf8"), "existing");
    assert.deepEqual(readdirSync(join(tmp.path, "tmp")), []);
    const copy = store.copySync("a-file", "cur", "tmp");
    assert.equal(readFileSync(copy, "utf8"), "source");
    assert.deepEqual(readdirSync(join(tmp.path, "tmp")), ["a-file"]);
  });

  test("put() delivers complete files under unique names sorted by time", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const paths: string[] = [];
    for (let i = 0; i < 50; i++) {
      paths.push(i % 2 ? store.putSync(`message ${i}`) : await store.put(`message ${i}`));
    }
    assert.equal(new Set(paths).size, 50);
    assert.deepEqual([...paths].sort(), paths);
    for (const [i, path] of paths.entries()) {
      assert.equal(dirname(path), join(tmp.path, "new"));
      assert.match(basename(path), /^\d{10}\.M\d{6}P\d+Q\d+R[0-9a-f]{8}\.[A-Za-z0-9._-]+$/);
      assert.equal(readFileSync(path, "utf8"), `message ${i}`);
    }
    assert.deepEqual(await store.list("tmp"), []);
    const bytes = new Uint8Array([0, 1, 2, 255]);
    const path = await store.put(bytes, { sync: false });
    assert.deepEqual(new Uint8Array(readFileSync(path)), bytes);
  });

  test("put() removes its file from tmp when delivery fails", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    rmSync(join(tmp.path, "new"), { recursive: true });
    await assert.rejects(store.put("lost"), NotFound);
    assert.throws(() => store.putSync("lost"), NotFound);
    assert.deepEqual(readdirSync(join(tmp.path, "tmp")), []);
  });

  test("put() refuses data that is neither a string nor bytes", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const before = snapshot(tmp.path);
    await assert.rejects(store.put(42 as unknown as string), {
      name: "TypeError",
      message: "Cannot put: 'data' must be a string or a Uint8Array, got 42",
    });
    assert.throws(() => store.putSync(null as unknown as string), TypeError);
    assert.deepEqual(snapshot(tmp.path), before);
  });

  test("claim() takes the oldest file first, then null when new is empty", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path, { recoverEvery: Infinity });
    await store.prepare();
    const names = [await store.put("1"), store.putSync("2"), await store.put("3")].map((p) =>
      basename(p)
    );
    assert.equal((await store.claim())?.path, join(tmp.path, "cur", names[0]!));
    assert.equal(store.claimSync()?.path, join(tmp.path, "cur", names[1]!));
    // A file arriving after the last reading of `new` is found too.
    const late = basename(await store.put("4"));
    assert.equal((await store.claim())?.path, join(tmp.path, "cur", names[2]!));
    assert.equal((await store.claim())?.path, join(tmp.path, "cur", late));
    assert.equal(await store.claim(), null);
    assert.equal(store.claimSync(), null);
    assert.equal(readFileSync(join(tmp.path, "cur", late), "utf8"), "4");
  });

  test("claim() skips files another consumer took since its last reading", async () => {
    using tmp = tempDir();
    const mine = new FileStore(tmp.path, { recoverEvery: Infinity });
    const theirs = new FileStore(tmp.path, { recoverEvery: Infinity });
    await mine.prepare();
    for (let i = 0; i < 10; i++) mine.putSync(String(i), { sync: false });
    const first = (await mine.claim())?.path; // reads all ten names
    const taken = [first];
    for (let i = 0; i < 4; i++) taken.push((await theirs.claim())?.path);
    for (let i = 0; i < 5; i++) taken.push((await mine.claim())?.path);
    assert.equal(await mine.claim(), null);
    assert.equal(await theirs.claim(), null);
    assert.equal(new Set(taken).size, 10);
    assert.ok(taken.every((path) => path !== undefined));
  });

  test("concurrent claim() calls in one process each take a different file", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    for (let i = 0; i < 5; i++) store.putSync(String(i), { sync: false });
    const results = await Promise.all(Array.from({ length: 10 }, () => store.claim()));
    const taken = results.filter((claim) => claim !== null).map((claim) => claim.path);
    assert.equal(taken.length, 5);
    assert.equal(new Set(taken).size, 5);
  });

  test("claim() throws when cur is gone rather than report an empty queue", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    store.putSync("x");
    rmSync(join(tmp.path, "cur"), { recursive: true });
    await assert.rejects(store.claim(), NotFound);
    assert.throws(() => store.claimSync(), NotFound);
    assert.equal(readdirSync(join(tmp.path, "new")).length, 1);
  });

  test("watch() yields files present and arriving, once each, until aborted", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const early = store.putSync("early");
    const controller = new AbortController();
    const seen: string[] = [];
    const expected: string[] = [early];
    const done = (async () => {
      for await (const path of store.watch("new", { signal: controller.signal, interval: 20 })) {
        seen.push(path);
        if (seen.length === 4) controller.abort();
      }
    })();
    await sleep(50);
    for (let i = 0; i < 3; i++) {
      expected.push(await store.put(`late ${i}`));
      await sleep(20);
    }
    await done;
    assert.deepEqual(seen.sort(), expected.sort());
  });

  test("watch() ends at once on an aborted signal, and when the loop breaks", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    store.putSync("x");
    const aborted = AbortSignal.abort();
    for await (const _ of store.watch("new", { signal: aborted })) assert.fail("no iteration");
    let count = 0;
    for await (const _ of store.watch("new")) {
      count++;
      break;
    }
    assert.equal(count, 1);
  });

  test("put() and claim() refuse options that are not booleans, before touching the disk", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const bad = { sync: "no" } as unknown as { sync: boolean };
    await assert.rejects(store.put("x", bad), /'sync' must be a boolean, got "no"/);
    assert.throws(() => store.putSync("x", bad), TypeError);
    assert.deepEqual(await store.list("tmp"), []);
    assert.deepEqual(await store.list("new"), []);
    const rescan = { rescan: 1 } as unknown as { rescan: boolean };
    await assert.rejects(store.claim(rescan), /'rescan' must be a boolean, got 1/);
  });

  test("watch() refuses an interval that no timer can wait for", () => {
    const store = new FileStore("/nonexistent/store");
    for (const interval of [0, -1, NaN, 2 ** 27, Infinity]) {
      assert.throws(() => store.watch("new", { interval }), RangeError, String(interval));
    }
  });

  test("watch() reports a file once however often it changes", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const controller = new AbortController();
    const seen: string[] = [];
    const done = (async () => {
      for await (const path of store.watch("tmp", { signal: controller.signal, interval: 20 })) {
        seen.push(path);
      }
    })();
    await using file = await store.create("growing");
    for (let i = 0; i < 5; i++) {
      await file.write("more ");
      await sleep(10);
    }
    (await store.create("second")).closeSync();
    await sleep(100);
    controller.abort();
    await done;
    assert.deepEqual(seen, [join(tmp.path, "tmp", "growing"), join(tmp.path, "tmp", "second")]);
  });

  test("cleanup() removes only tmp files older than the threshold", async () => {
    using tmp = tempDir();
    const store = new FileStore(tmp.path);
    await store.prepare();
    const old = join(tmp.path, "tmp", "old");
    const recent = join(tmp.path, "tmp", "recent");
    const hourAgo = join(tmp.path, "tmp", "hour-ago");
    writeFileSync(old, "x");
    writeFileSync(recent, "x");
    writeFileSync(hourAgo, "x");
    writeFileSync(join(tmp.path, "new", "old-but-delivered"), "x");
    const past = (ms: number) => new Date(Date.now() - ms);
    utimesSync(old, past(37 * 3600_000), past(37 * 3600_000));
    utimesSync(hourAgo, past(3600_000), past(3600_000));
    utimesSync(join(tmp.path, "new", "old-but-delivered"), past(1e9), past(1e9));
    assert.deepEqual(await store.cleanup(), [old]);
    assert.deepEqual(store.cleanupSync({ olderThan: 60_000 }), [hourAgo]);
    assert.deepEqual(await store.list("tmp"), [recent]);
    assert.equal((await store.list("new")).length, 1);
    assert.throws(() => store.cleanupSync({ olderThan: -1 }), RangeError);
    await assert.rejects(store.cleanup({ olderThan: NaN }), RangeError);
    const text = { olderThan: "1h" } as unknown as { olderThan: number };
    assert.throws(() => store.cleanupSync(text), TypeError);
  });

  describe("bad input throws and leaves the directory unchanged", () => {
    const names: [string, unknown, RegExp, typeof TypeError | typeof RangeError][] = [
      ["empty", "", /'name' must be .*\(it is empty\)/, RangeError],
      ["dot", ".", /\(it is '\.' or '\.\.'\)/, RangeError],
      ["dot-dot", "..", /\(it is '\.' or '\.\.'\)/, RangeError],
      ["slash", "a/b", /path separator/, RangeError],
      ["NUL", "a\0b", /NUL/, RangeError],
      ["too long", "x".repeat(256), /longer than 255 bytes/, RangeError],
      ["too long in UTF-8", "é".repeat(128), /longer than 255 bytes/, RangeError],
      ["a number", 7, /'name' must be one path component .*, got 7$/, TypeError],
    ];
    // Full paths are accepted by move/copy/remove, but the base name is still checked.
    const paths: [string, unknown, RegExp, typeof TypeError | typeof RangeError][] = [
      ["trailing slash", "/tmp/x/", /ends with a path separator/, RangeError],
      ["path to dot-dot", "/tmp/..", /\(it is '\.' or '\.\.'\)/, RangeError],
      ["empty", "", /\(it is empty\)/, RangeError],
      ["NUL", "a\0", /NUL/, RangeError],
      ["too long", "/a/" + "x".repeat(256), /longer than 255 bytes/, RangeError],
    ];
    const areas: unknown[] = ["inbox", "", "TMP", "../tmp", undefined, 1];

    function check(
      dir: string,
      calls: [string, () => unknown][],
      expect: RegExp,
      Class: typeof TypeError | typeof RangeError,
    ): Promise<void> {
      const before = snapshot(dir);
      return (async () => {
        for (const [label, call] of calls) {
          let result: unknown;
          try {
            result = call();
          } catch (e) {
            assert.ok(e instanceof Class, `${label}: ${e}`);
            assert.match((e as Error).message, expect, label);
            continue;
          }
          await assert.rejects(result as Promise<unknown>, (e: Error) => {
            assert.ok(e instanceof Class, `${label}: ${e}`);
            assert.match(e.message, expect, label);
            return true;
          });
        }
        assert.deepEqual(snapshot(dir), before);
      })();
    }

    function prepared(): { dir: string; store: FileStore; [Symbol.dispose](): void } {
      const tmp = tempDir();
      const store = new FileStore(tmp.path);
      store.prepareSync();
      // Something in each area, so that a wrong move or remove would show.
      for (const area of ["tmp", "new", "cur"]) writeFileSync(join(tmp.path, area, "x"), area);
      return { dir: tmp.path, store, [Symbol.dispose]: () => tmp[Symbol.dispose]() };
    }

    for (const [label, name, expect, Class] of names) {
      test(`a name that is ${label}`, async () => {
        using s = prepared();
        const n = name as string;
        const { store } = s;
        const creating: [string, () => unknown][] = [
          ["create", () => store.create(n)],
          ["createSync", () => store.createSync(n)],
          ["create wx", () => store.create(n, { mode: "wx" })],
        ];
        // move/copy/remove take a full path, so for them "a/b" is the file "b".
        await check(
          s.dir,
          label === "slash" ? creating : [
            ...creating,
            ["move", () => store.move(n, "tmp", "new")],
            ["moveSync", () => store.moveSync(n, "new", "cur")],
            ["copy", () => store.copy(n, "cur", "tmp")],
            ["copySync", () => store.copySync(n, "cur", "tmp")],
            ["remove", () => store.remove(n, "cur")],
            ["removeSync", () => store.removeSync(n, "tmp")],
            ["pathOf", () => store.pathOf(n, "tmp")],
          ],
          expect,
          Class,
        );
      });
    }

    for (const [label, name, expect, Class] of paths) {
      test(`a full path whose base name is ${label}`, async () => {
        using s = prepared();
        const n = name as string;
        const { store } = s;
        await check(
          s.dir,
          [
            ["move", () => store.move(n, "tmp", "new")],
            ["moveSync", () => store.moveSync(n, "new", "cur")],
            ["copy", () => store.copy(n, "cur", "tmp")],
            ["remove", () => store.remove(n, "cur")],
            ["removeSync", () => store.removeSync(n, "tmp")],
          ],
          expect,
          Class,
        );
      });
    }

    test("a path in create() is refused rather than shortened", () => {
      using s = prepared();
      assert.throws(() => s.store.createSync(join(s.dir, "new", "x")), {
        name: "RangeError",
        message:
          `Cannot create: 'name' must be one path component of at most 255 bytes (it contains a path separator), got ${
            JSON.stringify(join(s.dir, "new", "x"))
          }`,
      });
    });

    test("messages name the operation, the parameter and the value", () => {
      using s = prepared();
      assert.throws(() => s.store.createSync("a/b"), {
        message:
          `Cannot create: 'name' must be one path component of at most 255 bytes (it contains a path separator), got "a/b"`,
      });
      assert.throws(() => s.store.moveSync("x", "inbox" as Area, "new"), {
        name: "RangeError",
        message: `Cannot move: 'from' must be "tmp", "new" or "cur", got "inbox"`,
      });
      assert.throws(() => s.store.moveSync("x", "new", "done" as Area), {
        message: `Cannot move: 'to' must be "tmp", "new" or "cur", got "done"`,
      });
      assert.throws(() => s.store.moveSync("x", "new", 1 as unknown as Area), {
        name: "TypeError",
        message: `Cannot move: 'to' must be "tmp", "new" or "cur", got 1`,
      });
      assert.throws(() => s.store.createSync("x", { mode: "a" as "w" }), {
        name: "RangeError",
        message: `Cannot create: 'mode' must be "w" or "wx", got "a"`,
      });
    });

    for (const area of areas) {
      test(`an area ${JSON.stringify(area) ?? String(area)}`, async () => {
        using s = prepared();
        const a = area as Area;
        const { store } = s;
        await check(
          s.dir,
          [
            ["list", () => store.list(a)],
            ["listSync", () => store.listSync(a)],
            ["move from", () => store.move("x", a, "new")],
            ["move to", () => store.move("x", "tmp", a)],
            ["moveSync to", () => store.moveSync("x", "new", a)],
            ["copy from", () => store.copy("x", a, "tmp")],
            ["copySync to", () => store.copySync("x", "cur", a)],
            ["remove", () => store.remove("x", a)],
            ["removeSync", () => store.removeSync("x", a)],
            ["watch", () => store.watch(a)],
            ["pathOf", () => store.pathOf("x", a)],
          ],
          /must be "tmp", "new" or "cur"/,
          typeof area === "string" ? RangeError : TypeError,
        );
      });
    }

    test("a bad path or option for the constructor", () => {
      assert.throws(() => new FileStore(""), RangeError);
      assert.throws(() => new FileStore("a\0b"), RangeError);
      assert.throws(() => new FileStore(7 as unknown as string), TypeError);
      assert.throws(() => new FileStore("x", { permissions: 0o10000 }), RangeError);
      assert.throws(() => new FileStore("x", { permissions: 1.5 }), RangeError);
    });
  });

  describe("between processes", () => {
    test("four consumers on three runtimes claim 2,000 files from two producers exactly once", async () => {
      using tmp = tempDir();
      const dir = join(tmp.path, "queue");
      const stop = join(tmp.path, "stop");
      new FileStore(dir).prepareSync();
      const consumers = (
        [["deno", "sync"], ["bun", "async"], ["node", "sync"], ["deno", "async"]] as const
      ).map(([runtime, style]) => start(runtime, WORKER, ["consume", dir, stop, style]));
      const producers = ([["node", "sync"], ["bun", "async"]] as const).map(([runtime, style]) =>
        start(runtime, WORKER, ["produce", dir, "1000", style])
      );
      try {
        for (const producer of producers) await producer.line("produced", 40_000);
        writeFileSync(stop, "");
        for (const consumer of consumers) await consumer.line("consumed", 40_000);
        const claimed = consumers.flatMap((c) =>
          c.output().split("\n").filter((l) => l.startsWith("claimed ")).map((l) => l.slice(8))
        );
        assert.equal(claimed.length, 2000);
        assert.equal(new Set(claimed).size, 2000);
        assert.deepEqual(readdirSync(join(dir, "done")).sort(), [...claimed].sort());
        assert.deepEqual(readdirSync(join(dir, "cur")), []);
        assert.deepEqual(readdirSync(join(dir, "new")), []);
        assert.deepEqual(readdirSync(join(dir, "tmp")), []);
        // Every consumer got a share: the rename really is contended.
        for (const consumer of consumers) assert.ok(consumer.output().includes("claimed "));
      } finally {
        for (const child of [...consumers, ...producers]) child.kill("SIGKILL");
      }
    });

    for (const runtime of ["deno", "bun", "node"] as Runtime[]) {
      test(`a ${runtime} producer killed in the middle of put() leaves no partial file in new`, async () => {
        using tmp = tempDir();
        const store = new FileStore(tmp.path);
        store.prepareSync();
        const size = 256 * 1024;
        const producer = start(runtime, WORKER, ["flood", tmp.path, String(size)]);
        try {
          await producer.line("started");
          await sleep(150);
        } finally {
          producer.kill("SIGKILL");
        }
        assert.equal(await producer.exited, "SIGKILL");
        const delivered = store.listSync("new");
        assert.ok(delivered.length > 0);
        for (const path of delivered) assert.equal(statSync(path).size, size, path);
        // What it was writing stays in tmp, where cleanup() will find it.
        assert.ok(store.listSync("tmp").length <= 1);
        assert.ok(existsSync(join(tmp.path, "cur")));
      });
    }
  });

  test("prepare() into a path under a file throws and creates nothing", async () => {
    using tmp = tempDir();
    writeFileSync(join(tmp.path, "file"), "");
    const store = new FileStore(join(tmp.path, "file", "queue"));
    await assert.rejects(store.prepare());
    mkdirSync(join(tmp.path, "ok"));
    assert.deepEqual(readdirSync(tmp.path).sort(), ["file", "ok"]);
  });
});

// watch() where file-system events cannot be had: a user whose inotify
// instances are all taken (fs.inotify.max_user_instances, 128 by default)
// gets an error from fs.watch, and watch() reads the directory every
// `interval` ms instead. The watcher runs as nobody, after a Python
// process of nobody's has taken every instance; the watcher then holds no
// inotify descriptor, which shows that the readings did the work.
const INOTIFY_HOG = `
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init()
    if fd < 0:
        break
    fds.append(fd)
print(len(fds), flush=True)
sys.stdin.read()
`;
const canStarveInotify = process.getuid?.() === 0 &&
  spawnSync("setpriv", ["--version"]).status === 0 &&
  existsSync("/usr/bin/python3") &&
  existsSync("/proc/sys/fs/inotify/max_user_instances");

for (const runtime of RUNTIMES) {
  test(`watch() on ${runtime} without inotify reads the directory and still sees each arrival`, {
    skip: canStarveInotify ? false : "needs root, setpriv(1) and python3 to take nobody's inotify",
  }, async () => {
    using tmp = tempDir();
    chmodSync(tmp.path, 0o755);
    const store = new FileStore(join(tmp.path, "q"));
    store.prepareSync();
    const cache = mkdtempSync(join(tmpdir(), "nobody-cache-"));
    chmodSync(cache, 0o777);
    const env = { ...process.env, HOME: cache, DENO_DIR: cache, BUN_INSTALL_CACHE_DIR: cache };
    const nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    const hog = spawn("setpriv", [...nobody, "/usr/bin/python3", "-c", INOTIFY_HOG], { env });
    const [bin, args] = command(runtime, "tests/fixtures/watch_child.ts", [store.path, "50"]);
    let watcher: ReturnType<typeof spawn> | undefined;
    try {
      const hogOut = linesOf(hog);
      const taken = Number(await hogOut.next());
      assert.ok(taken > 0, "the hog took no inotify instance");
      watcher = spawn("setpriv", [...nobody, bin, ...args], { env });
      const out = linesOf(watcher);
      assert.equal(await out.next(), "watching");
      const expected: string[] = [];
      for (let i = 0; i < 3; i++) {
        expected.push(store.putSync(`message ${i}`));
        assert.equal(await out.next(), expected[i]);
      }
      const fds = readdirSync(`/proc/${watcher.pid}/fd`).map((fd) => {
        try {
          return readlinkSync(`/proc/${watcher!.pid}/fd/${fd}`);
        } catch {
          return "";
        }
      });
      assert.ok(!fds.includes("anon_inode:inotify"), `the watcher holds inotify: ${fds}`);
    } finally {
      watcher?.kill("SIGKILL");
      hog.kill("SIGKILL");
      rmSync(cache, { recursive: true, force: true });
    }
  });
}

// The lines a child prints, one at a time; fails after 30 s without one
// (a guard against a hang, not a measure of speed).
function linesOf(child: ReturnType<typeof spawn>): { next(): Promise<string> } {
  const lines: string[] = [];
  let partial = "";
  let wake: (() => void) | undefined;
  let ended = false;
  let err = "";
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => err += chunk);
  child.stdout!.on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    wake?.();
  });
  child.on("exit", () => {
    ended = true;
    wake?.();
  });
  return {
    async next() {
      const limit = Date.now() + 30_000;
      while (lines.length === 0) {
        if (ended) assert.fail(`the child ended: ${err}`);
        if (Date.now() > limit) assert.fail(`no line from the child in 30 s: ${err}`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100);
        });
      }
      return lines.shift()!;
    },
  };
}
