/**
 * A maildir-style file queue, after Python's gocept.filestore, grown into a
 * crash-safe one: producers write a file in `tmp` and publish it with one
 * atomic rename into `new`; a consumer claims it into `cur` and holds it
 * locked while it works, so that a consumer that dies loses its claim at
 * once and the file is handed out again (at least once, never lost).
 *
 * The protocol, for programs in other languages that share a store (every
 * lock is a BSD `flock` on the whole file, as Python's `fcntl.flock` and
 * `flock(1)` take it):
 * - put: write `tmp/NAME` (opened `O_CREAT | O_EXCL`), fsync, rename to
 *   `new/NAME`.
 * - claim: open `new/NAME` read-only, `flock(LOCK_EX | LOCK_NB)` (refused:
 *   another consumer is taking it; skip it), `link` it to `cur/NAME`
 *   (`EEXIST`: leave it) and unlink `new/NAME`; keep the descriptor, and
 *   with it the lock, while working.
 * - done: unlink (or move away) `cur/NAME` while still holding the lock,
 *   then close. release: move it back to `new/NAME`, then close.
 * - recover: for each file in `cur`, open it and `flock(LOCK_EX | LOCK_NB)`:
 *   granted means its consumer is gone; move it to `new/NAME.retryN`
 *   (N counts the recoveries) or, past the limit, to `failed/NAME`, then
 *   close. A refused lock means a live consumer: leave it.
 *
 * ```ts
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
 * try {
 *   const store = new FileStore(join(dir, "queue"));
 *   await store.prepare();
 *   await store.put("hello");
 *   await using claim = (await store.claim())!;
 *   assert.equal(await claim.text(), "hello");
 *   await claim.done();
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 *
 * @module
 */
import type { OpenFile } from "./_file.ts";
import type { Claim } from "./_claim.ts";
import { run, runSync } from "./_steps.ts";
import {
  type Area,
  claim,
  type ClaimOptions,
  cleanup,
  type CleanupOptions,
  copy,
  create,
  type CreateOptions,
  type FileStoreOptions,
  list,
  listSync,
  makeStore,
  move,
  pathOf,
  prepare,
  put,
  type PutOptions,
  recover,
  type Recovered,
  remove,
  type StoreState,
  watch,
  type WatchOptions,
} from "./_store.ts";

// The options and the logic live in _store.ts; this file is the class and
// its documentation.
export type {
  Area,
  ClaimOptions,
  CleanupOptions,
  CreateOptions,
  FileStoreOptions,
  PutOptions,
  Recovered,
  WatchOptions,
} from "./_store.ts";
export { Claim, type DoneOptions, type ReleaseOptions } from "./_claim.ts";
export { OpenFile } from "./_file.ts";
export type { FileInfo } from "./_runtime.ts";

/**
 * A directory with the three areas `tmp`, `new` and `cur`, used as a queue
 * of files between processes. Write a file in `tmp` (with
 * {@linkcode FileStore.prototype.create} or in one call with
 * {@linkcode FileStore.prototype.put}), move it to `new` to deliver it, and
 * let a consumer move it from `new` to `cur` to take it
 * ({@linkcode FileStore.prototype.claim}). Every rename is atomic, so a
 * reader never sees a half-written file in `new`, and each file is taken
 * by exactly one consumer.
 *
 * Every method has a sync twin (`prepareSync`, `createSync`, ...) except
 * {@linkcode FileStore.prototype.watch}. Arguments are checked before the
 * disk is touched: a bad area or name is a `TypeError` or `RangeError`.
 * Failed file-system operations throw the classes of
 * `@filestore/filestore/errors`.
 *
 * @example Usage
 * ```ts
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
 * try {
 *   const store = new FileStore(dir);
 *   store.prepareSync();
 *   const file = store.createSync("a-file");
 *   file.writeSync("Die Ente bleibt draussen!");
 *   file.closeSync();
 *   store.moveSync("a-file", "tmp", "new");
 *   store.moveSync("a-file", "new", "cur");
 *   assert.deepEqual(store.listSync("cur"), [join(dir, "cur", "a-file")]);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class FileStore {
  #s: StoreState;

  /**
   * Makes a store for the directory `path`; nothing happens on the disk
   * until {@linkcode FileStore.prototype.prepare}.
   *
   * @param path The store's directory, made absolute against the current
   * directory now.
   * @param options The permissions of created files.
   * @throws {TypeError} When `path` is not a non-empty string without NUL.
   * @throws {RangeError} When `permissions` is not an integer from 0 to 0o7777.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   *
   * const store = new FileStore("/var/spool/app");
   * assert.equal(store.path, "/var/spool/app");
   * ```
   */
  constructor(path: string, options?: FileStoreOptions) {
    this.#s = makeStore(path, options);
  }

  /**
   * The store's directory, as an absolute path.
   *
   * @returns The path.
   */
  get path(): string {
    return this.#s.path;
  }

  /**
   * The full path of `name` in `area`, without touching the disk.
   *
   * @param name A bare name, or a full path whose directory part is dropped.
   * @param area The area.
   * @returns The path.
   * @throws {TypeError} When the area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   *
   * const store = new FileStore("/var/spool/app");
   * assert.equal(store.pathOf("a-file", "new"), "/var/spool/app/new/a-file");
   * ```
   */
  pathOf(name: string, area: Area): string {
    return pathOf(this.#s, name, area);
  }

  /**
   * Creates the store's directory (with missing parents) and its areas
   * `tmp`, `new` and `cur`. Calling it again changes nothing; after the
   * directory was removed, it creates it all again.
   *
   * @returns Once the directories exist.
   * @throws {FsError} When a directory cannot be made (`PermissionDenied`,
   * `NotADirectory`, ...).
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, readdirSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   await new FileStore(dir).prepare();
   *   assert.deepEqual(readdirSync(dir).sort(), ["cur", "new", "tmp"]);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  prepare(): Promise<void> {
    return run(prepare(this.#s));
  }

  /**
   * Creates the store's directory and its areas, synchronously; see
   * {@linkcode FileStore.prototype.prepare}.
   *
   * @throws {FsError} When a directory cannot be made.
   */
  prepareSync(): void {
    runSync(prepare(this.#s));
  }

  /**
   * Creates the file `name` in `tmp` and opens it for writing (and
   * reading). Write it, close it, then
   * {@linkcode FileStore.prototype.move} it to `new` to deliver it.
   *
   * @param name The file's name: one path component.
   * @param options `mode: "wx"` refuses an existing file.
   * @returns The open file.
   * @throws {TypeError} When `name` is empty, `.`, `..`, or contains a
   * path separator or NUL, or `mode` is not `"w"` or `"wx"`.
   * @throws {RangeError} When `name` is longer than 255 bytes in UTF-8.
   * @throws {AlreadyExists} With `mode: "wx"`, when the file exists.
   * @throws {NotFound} When the store is not prepared.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   await using file = await store.create("a-file");
   *   await file.write("Die Ente bleibt draussen!");
   *   assert.equal(file.path, join(dir, "tmp", "a-file"));
   *   assert.equal(readFileSync(file.path, "utf8"), "Die Ente bleibt draussen!");
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  create(name: string, options?: CreateOptions): Promise<OpenFile> {
    return run(create(this.#s, name, options));
  }

  /**
   * Creates the file `name` in `tmp` and opens it, synchronously; see
   * {@linkcode FileStore.prototype.create}.
   *
   * @param name The file's name: one path component.
   * @param options `mode: "wx"` refuses an existing file.
   * @returns The open file.
   * @throws {TypeError} When `name` or `mode` is not valid.
   * @throws {RangeError} When `name` is longer than 255 bytes in UTF-8.
   * @throws {AlreadyExists} With `mode: "wx"`, when the file exists.
   * @throws {NotFound} When the store is not prepared.
   */
  createSync(name: string, options?: CreateOptions): OpenFile {
    return runSync(create(this.#s, name, options));
  }

  /**
   * The full paths of the files in `area`, sorted, ready to hand to other
   * programs or back to {@linkcode FileStore.prototype.move}.
   *
   * @param area `"tmp"`, `"new"` or `"cur"`.
   * @returns The paths.
   * @throws {TypeError} When `area` is not one of the three.
   * @throws {NotFound} When the store is not prepared.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   (await store.create("a-file")).closeSync();
   *   assert.deepEqual(await store.list("tmp"), [join(dir, "tmp", "a-file")]);
   *   assert.deepEqual(await store.list("new"), []);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  list(area: Area): Promise<string[]> {
    return list(this.#s, area);
  }

  /**
   * The full paths of the files in `area`, sorted, synchronously; see
   * {@linkcode FileStore.prototype.list}.
   *
   * @param area `"tmp"`, `"new"` or `"cur"`.
   * @returns The paths.
   * @throws {TypeError} When `area` is not one of the three.
   * @throws {NotFound} When the store is not prepared.
   */
  listSync(area: Area): string[] {
    return listSync(this.#s, area);
  }

  /**
   * Moves the file `name` from one area to another with one atomic rename,
   * replacing a file of that name in `to`.
   *
   * @param name A bare name, or a full path (as from
   * {@linkcode FileStore.prototype.list}) whose directory part is dropped.
   * @param from The area it is in.
   * @param to The area to move it to.
   * @returns The file's new full path.
   * @throws {TypeError} When an area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes in UTF-8.
   * @throws {NotFound} When the file is not in `from` (for instance because
   * another process moved it first).
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   (await store.create("a-file")).closeSync();
   *   const [path] = await store.list("tmp");
   *   assert.equal(await store.move(path!, "tmp", "new"), join(dir, "new", "a-file"));
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  move(name: string, from: Area, to: Area): Promise<string> {
    return run(move(this.#s, name, from, to));
  }

  /**
   * Moves the file `name` from one area to another, synchronously; see
   * {@linkcode FileStore.prototype.move}.
   *
   * @param name A bare name, or a full path whose directory part is dropped.
   * @param from The area it is in.
   * @param to The area to move it to.
   * @returns The file's new full path.
   * @throws {TypeError} When an area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes in UTF-8.
   * @throws {NotFound} When the file is not in `from`.
   */
  moveSync(name: string, from: Area, to: Area): string {
    return runSync(move(this.#s, name, from, to));
  }

  /**
   * Copies the file `name` from one area to another. Unlike
   * gocept.filestore, it never replaces a file: an existing target is an
   * `AlreadyExists` error. The copy appears at once, complete, so a copy
   * into `new` is a safe delivery: the bytes go to a hidden file in `tmp`
   * first, which is then linked into place.
   *
   * @param name A bare name, or a full path whose directory part is dropped.
   * @param from The area it is in.
   * @param to The area to copy it to.
   * @returns The copy's full path.
   * @throws {TypeError} When an area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes in UTF-8.
   * @throws {NotFound} When the file is not in `from`.
   * @throws {AlreadyExists} When `to` has a file of that name.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   await store.put("hello");
   *   await using claim = (await store.claim())!;
   *   const copy = await store.copy(claim.path, "cur", "tmp");
   *   assert.equal(readFileSync(copy, "utf8"), "hello");
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  copy(name: string, from: Area, to: Area): Promise<string> {
    return run(copy(this.#s, name, from, to));
  }

  /**
   * Copies the file `name` from one area to another, synchronously; see
   * {@linkcode FileStore.prototype.copy}.
   *
   * @param name A bare name, or a full path whose directory part is dropped.
   * @param from The area it is in.
   * @param to The area to copy it to.
   * @returns The copy's full path.
   * @throws {TypeError} When an area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes in UTF-8.
   * @throws {NotFound} When the file is not in `from`.
   * @throws {AlreadyExists} When `to` has a file of that name.
   */
  copySync(name: string, from: Area, to: Area): string {
    return runSync(copy(this.#s, name, from, to));
  }

  /**
   * Removes the file `name` from `area`.
   *
   * @param name A bare name, or a full path whose directory part is dropped.
   * @param area The area it is in.
   * @returns Once the file is gone.
   * @throws {TypeError} When the area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes in UTF-8.
   * @throws {NotFound} When the file is not there.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   (await store.create("a-file")).closeSync();
   *   await store.remove("a-file", "tmp");
   *   assert.deepEqual(await store.list("tmp"), []);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  remove(name: string, area: Area): Promise<void> {
    return run(remove(this.#s, name, area));
  }

  /**
   * Removes the file `name` from `area`, synchronously; see
   * {@linkcode FileStore.prototype.remove}.
   *
   * @param name A bare name, or a full path whose directory part is dropped.
   * @param area The area it is in.
   * @throws {TypeError} When the area or the name is not valid.
   * @throws {RangeError} When the name is longer than 255 bytes in UTF-8.
   * @throws {NotFound} When the file is not there.
   */
  removeSync(name: string, area: Area): void {
    runSync(remove(this.#s, name, area));
  }

  /**
   * Delivers `data` as a new file in one call that survives a crash: under
   * a unique maildir-style name (time, pid, a counter, randomness and the
   * host), written in `tmp`, flushed to the disk, renamed into `new`, and
   * the directory flushed. A reader never sees a partial file in `new`; if
   * anything fails before the rename, the file in `tmp` is removed.
   *
   * @param data The file's content (strings as UTF-8).
   * @param options `sync: false` skips the flushes.
   * @returns The delivered file's full path in `new`, as `claim()`, `move()` and `copy()`
   * return paths.
   * @throws {TypeError} When `data` is not a string or a Uint8Array.
   * @throws {NotFound} When the store is not prepared.
   * @throws {NoSpace} When the disk is full.
   * @throws {FsError} When flushing `new` fails after the rename: the file
   * was delivered, but may not survive a power loss.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { basename, join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   const path = await store.put("hello");
   *   assert.equal(path, join(dir, "new", basename(path)));
   *   assert.equal(readFileSync(path, "utf8"), "hello");
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  put(data: string | Uint8Array, options?: PutOptions): Promise<string> {
    return run(put(this.#s, data, options));
  }

  /**
   * Delivers `data` as a new file, synchronously; see
   * {@linkcode FileStore.prototype.put}.
   *
   * @param data The file's content (strings as UTF-8).
   * @param options `sync: false` skips the flushes.
   * @returns The delivered file's full path in `new`.
   * @throws {TypeError} When `data` is not a string or a Uint8Array.
   * @throws {NotFound} When the store is not prepared.
   * @throws {NoSpace} When the disk is full.
   * @throws {FsError} When flushing `new` fails after the rename.
   */
  putSync(data: string | Uint8Array, options?: PutOptions): string {
    return runSync(put(this.#s, data, options));
  }

  /**
   * Takes the oldest file in `new` for this consumer and holds it: the file
   * is locked (`flock`), moved into `cur`, and handed out as a
   * {@link Claim} that stays locked until the consumer calls `done()` (the
   * file leaves the queue) or `release()` (back to `new`). With any number
   * of competing consumers, in this process or others, on any runtime,
   * each file is held by one consumer at a time. A consumer that dies
   * holding a claim loses its lock at once, and the file goes back to
   * `new` with the next {@linkcode FileStore.prototype.recover}, which
   * `claim()` itself runs when it finds `new` empty (at most once every
   * `recoverEvery` ms): at-least-once delivery, with no lease to time out.
   *
   * "Oldest" is by name, which for files from
   * {@linkcode FileStore.prototype.put} is their delivery time (to the
   * microsecond, by each host's clock). To stay fast on a large queue, the
   * store remembers the names of its last reading of `new` and reads the
   * directory again only when they are used up, so a file that arrives
   * meanwhile waits for the next reading even if its name sorts first.
   *
   * @param options `rescan: true` reads `new` again now.
   * @returns The claim, or `null` when `new` is empty.
   * @throws {NotFound} When the store is not prepared.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   await store.put("first");
   *   await store.put("second");
   *   const first = (await store.claim())!;
   *   assert.equal(await first.text(), "first");
   *   await first.done();
   *   const second = (await store.claim())!;
   *   await second.release(); // back to new, for somebody else
   *   assert.equal(await (await store.claim())!.text(), "second");
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  claim(options?: ClaimOptions): Promise<Claim | null> {
    return run(claim(this.#s, options));
  }

  /**
   * Takes the oldest file in `new` and holds it, synchronously; see
   * {@linkcode FileStore.prototype.claim}.
   *
   * @param options `rescan: true` reads `new` again now.
   * @returns The claim, or `null` when `new` is empty.
   * @throws {NotFound} When the store is not prepared.
   */
  claimSync(options?: ClaimOptions): Claim | null {
    return runSync(claim(this.#s, options));
  }

  /**
   * Gives the files of dead consumers back: every file in `cur` that
   * nobody holds locked goes back to `new` (named `NAME.retryN`, N being
   * how often it came back), or to the area `failed` once it has been
   * delivered `maxDeliveries` times. A file that also has another name
   * was being moved (link, then unlink) when its process died: that move
   * is finished instead. It may run at any time, from any process or
   * runtime, while consumers work: a live consumer's file is locked, and
   * never taken, however long the work takes. Every unlocked file in `cur`
   * counts as a dead consumer's, also one put there with `move()` in the
   * style of gocept.filestore: a store used that way wants
   * `recoverEvery: Infinity` and no `recover()` calls. A name too long to
   * take one more `.retryN` (above about 245 bytes) keeps its count, so
   * `maxDeliveries` cannot stop it; a producer's name ending in `.retryN`
   * counts as N+1 deliveries.
   *
   * @returns The paths given back to `new`, moved to `failed`, and finished.
   * @throws {NotFound} When the store is not prepared.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir, { recoverEvery: Infinity });
   *   await store.prepare();
   *   // What a consumer that died leaves: a file in cur that nobody holds.
   *   writeFileSync(join(dir, "cur", "order-1"), "order 1");
   *   await store.put("order 2");
   *   const held = (await store.claim())!; // a live consumer's claim
   *   const { requeued } = await store.recover();
   *   assert.deepEqual(requeued, [join(dir, "new", "order-1.retry1")]);
   *   assert.equal((await store.claim())!.deliveries, 2);
   *   await held.done();
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  recover(): Promise<Recovered> {
    return run(recover(this.#s));
  }

  /**
   * Gives the files of dead consumers back, synchronously; see
   * {@linkcode FileStore.prototype.recover}.
   *
   * @returns The paths given back to `new` and moved to `failed`.
   * @throws {NotFound} When the store is not prepared.
   */
  recoverSync(): Recovered {
    return runSync(recover(this.#s));
  }

  /**
   * The full paths of files arriving in `area`, as they arrive: first the
   * files already there, then each new one once. It uses file-system events
   * where the runtime has them and reads the directory every `interval`
   * milliseconds where it does not (and every 20 intervals where it does,
   * in case events were lost). Changes to a file do not report it
   * again; a name is forgotten once a reading of the directory finds it
   * gone, so a file that leaves and comes back under the same name between
   * two readings is not reported twice.
   *
   * @param area `"tmp"`, `"new"` or `"cur"`.
   * @param options `signal` ends the iteration; `interval` is the polling
   * period.
   * @returns An async iterable of paths.
   * @throws {TypeError} When `area` is not one of the three.
   * @throws {RangeError} When `interval` is not a positive number of at most
   * 107374182 ms (a twentieth of the longest timer).
   * @throws {NotFound} When the store is not prepared (on the first `next()`).
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   const controller = new AbortController();
   *   setTimeout(() => store.put("hello"), 10);
   *   for await (const path of store.watch("new", { signal: controller.signal })) {
   *     assert.ok(path.startsWith(join(dir, "new")));
   *     controller.abort();
   *   }
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  watch(area: Area, options?: WatchOptions): AsyncIterableIterator<string> {
    return watch(this.#s, area, options);
  }

  /**
   * Removes the files that crashed producers left in `tmp`, those last
   * modified more than `olderThan` milliseconds ago.
   *
   * @param options `olderThan`, 36 hours by default.
   * @returns The full paths of the removed files.
   * @throws {RangeError} When `olderThan` is not a number >= 0.
   * @throws {NotFound} When the store is not prepared.
   *
   * @example Usage
   * ```ts
   * import { FileStore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync, utimesSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   const file = await store.create("left-over");
   *   await file.close();
   *   const twoDaysAgo = new Date(Date.now() - 48 * 3600_000);
   *   utimesSync(file.path, twoDaysAgo, twoDaysAgo);
   *   assert.deepEqual(await store.cleanup(), [file.path]);
   *   assert.deepEqual(await store.list("tmp"), []);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  cleanup(options?: CleanupOptions): Promise<string[]> {
    return run(cleanup(this.#s, options));
  }

  /**
   * Removes old files from `tmp`, synchronously; see
   * {@linkcode FileStore.prototype.cleanup}.
   *
   * @param options `olderThan`, 36 hours by default.
   * @returns The full paths of the removed files.
   * @throws {RangeError} When `olderThan` is not a number >= 0.
   * @throws {NotFound} When the store is not prepared.
   */
  cleanupSync(options?: CleanupOptions): string[] {
    return runSync(cleanup(this.#s, options));
  }
}
