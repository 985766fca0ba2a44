/**
 * A maildir-style file queue, after Python's gocept.filestore: producers
 * write a file in `tmp` and publish it with one atomic rename into `new`; a
 * consumer takes it by renaming it from `new` into `cur`, and the rename
 * decides which of several competing processes got it, without any lock.
 *
 * ```ts
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
 * try {
 *   const store = new FileStore(join(dir, "queue"));
 *   await store.prepare();
 *   await store.put("hello");
 *   const path = await store.claim();
 *   assert.equal(readFileSync(path!, "utf8"), "hello");
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 *
 * @module
 */
import { resolve } from "node:path";
import {
  checkBoolean,
  checkChoice,
  checkNumber,
  checkOptions,
  checkPath,
  checkPermissions,
  checkSignal,
  toBytes,
} from "./_check.ts";
import { type OpenFile, wrapFile } from "./_file.ts";
import { checkName, uniqueName } from "./_names.ts";
import { MAX_TIMER } from "./_wait.ts";
import { closeQuietly, type FileInfo, unlinkQuietly } from "./_runtime.ts";
import { run, runSync, step, type Steps } from "./_steps.ts";
import { openFile, sameFile, unlinkIfSame } from "./_open.ts";
import { checkStore, copyNoReplace, moveNoReplace } from "./_store_dir.ts";
import { watchDir } from "./_watch.ts";
import { AlreadyExists, NotAFile, NotFound } from "./errors.ts";

export { OpenFile } from "./_file.ts";
export type { FileInfo } from "./_runtime.ts";

/** One of the store's three directories: being written, delivered, taken. */
export type Area = "tmp" | "new" | "cur";

/** Options for {@linkcode FileStore}. */
export interface FileStoreOptions {
  /**
   * Permission bits for the files the store creates, before the umask.
   *
   * @default {0o666}
   */
  permissions?: number;
}

/** Options for {@linkcode FileStore.prototype.create}. */
export interface CreateOptions {
  /**
   * `"w"` creates the file or empties an existing one, as gocept.filestore
   * does; `"wx"` refuses an existing file with `AlreadyExists`.
   *
   * @default {"w"}
   */
  mode?: "w" | "wx";
}

/** Options for {@linkcode FileStore.prototype.put}. */
export interface PutOptions {
  /**
   * Flush the file and the `new` directory to the disk before resolving, so
   * that a delivered message survives a power loss. Turning it off is much
   * faster and still never shows a partial file in `new` to a reader.
   *
   * @default {true}
   */
  sync?: boolean;
}

/** Options for {@linkcode FileStore.prototype.claim}. */
export interface ClaimOptions {
  /**
   * Read the `new` directory again even if names from the last reading are
   * left to try.
   *
   * @default {false}
   */
  rescan?: boolean;
}

/** Options for {@linkcode FileStore.prototype.watch}. */
export interface WatchOptions {
  /** Ends the iteration when it aborts. */
  signal?: AbortSignal;
  /**
   * How often, in milliseconds, to read the directory where the runtime has
   * no file-system events for it; with events, it is read every 20
   * intervals in case some were lost.
   *
   * @default {250}
   */
  interval?: number;
}

/** Options for {@linkcode FileStore.prototype.cleanup}. */
export interface CleanupOptions {
  /**
   * Remove files in `tmp` last modified longer ago than this, in
   * milliseconds.
   *
   * @default {129600000} (36 hours, as the maildir convention says)
   */
  olderThan?: number;
}

const AREAS: readonly Area[] = ["tmp", "new", "cur"];
const DEFAULT_OLDER_THAN = 36 * 60 * 60 * 1000;

function checkArea(value: unknown, what: string, param: string): Area {
  return checkChoice(value, what, param, AREAS);
}

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
  #path: string;
  #permissions: number;
  // Names from the last reading of `new` that claim() has not tried yet.
  #backlog: string[] = [];
  #next = 0;
  // Whether checkStore() has passed on the existing directory.
  #checked = false;

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
    const what = "make a FileStore";
    const permissions = checkOptions(options, what)?.permissions;
    this.#path = resolve(checkPath(path, what));
    this.#permissions = checkPermissions(permissions, what, "permissions") ?? 0o666;
    this.#checked = runSync(checkStore(this.#path, AREAS));
  }

  // Every operation that touches the areas starts here.
  *#check(): Steps<void> {
    if (!this.#checked) this.#checked = yield* checkStore(this.#path, AREAS);
  }

  /**
   * The store's directory, as an absolute path.
   *
   * @returns The path.
   */
  get path(): string {
    return this.#path;
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
    checkArea(area, "get a path", "area");
    return this.#in(area, checkName(name, "get a path", true));
  }

  #in(area: Area, name: string): string {
    return `${this.#path}/${area}/${name}`;
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
    return run(this.#prepare());
  }

  /**
   * Creates the store's directory and its areas, synchronously; see
   * {@linkcode FileStore.prototype.prepare}.
   *
   * @throws {FsError} When a directory cannot be made.
   */
  prepareSync(): void {
    runSync(this.#prepare());
  }

  *#prepare(): Steps<void> {
    // Checked before anything is made in it, and again once it all exists.
    yield* checkStore(this.#path, AREAS);
    for (const area of AREAS) yield* step("mkdir", `${this.#path}/${area}`, true);
    this.#checked = yield* checkStore(this.#path, AREAS);
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
    return run(this.#create(name, options));
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
    return runSync(this.#create(name, options));
  }

  *#create(name: string, options: CreateOptions | undefined): Steps<OpenFile> {
    const checked = checkName(name, "create", false);
    const mode = checkChoice(checkOptions(options, "create")?.mode ?? "w", "create", "mode", [
      "w",
      "wx",
    ]);
    if (!this.#checked) yield* this.#check();
    const file = yield* openFile(this.#in("tmp", checked), {
      read: true,
      write: true,
      create: mode === "w",
      truncate: mode === "w",
      createNew: mode === "wx",
      mode: this.#permissions,
    });
    return wrapFile(file);
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
    return run(this.#list(area));
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
    return runSync(this.#list(area));
  }

  *#list(area: Area): Steps<string[]> {
    checkArea(area, "list", "area");
    if (!this.#checked) yield* this.#check();
    const names = yield* step("readDir", `${this.#path}/${area}`);
    return names.sort().map((name) => this.#in(area, name));
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
    return run(this.#move(name, from, to));
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
    return runSync(this.#move(name, from, to));
  }

  *#move(name: string, from: Area, to: Area): Steps<string> {
    checkArea(from, "move", "from");
    checkArea(to, "move", "to");
    const checked = checkName(name, "move", true);
    const target = this.#in(to, checked);
    if (!this.#checked) yield* this.#check();
    yield* moveNoReplace(this.#in(from, checked), target);
    return target;
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
   *   const path = (await store.claim())!;
   *   const copy = await store.copy(path, "cur", "tmp");
   *   assert.equal(readFileSync(copy, "utf8"), "hello");
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  copy(name: string, from: Area, to: Area): Promise<string> {
    return run(this.#copy(name, from, to));
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
    return runSync(this.#copy(name, from, to));
  }

  *#copy(name: string, from: Area, to: Area): Steps<string> {
    checkArea(from, "copy", "from");
    checkArea(to, "copy", "to");
    const checked = checkName(name, "copy", true);
    const target = this.#in(to, checked);
    if (!this.#checked) yield* this.#check();
    // A hidden name that cleanup() removes if this process dies before the end.
    const staging = this.#in("tmp", `.copy-${uniqueName()}`);
    yield* copyNoReplace(this.#in(from, checked), staging, target, this.#permissions);
    return target;
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
    return run(this.#remove(name, area));
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
    runSync(this.#remove(name, area));
  }

  *#remove(name: string, area: Area): Steps<void> {
    checkArea(area, "remove", "area");
    const path = this.#in(area, checkName(name, "remove", true));
    if (!this.#checked) yield* this.#check();
    yield* step("unlink", path);
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
    return run(this.#put(data, options));
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
    return runSync(this.#put(data, options));
  }

  *#put(data: string | Uint8Array, options: PutOptions | undefined): Steps<string> {
    const bytes = toBytes(data, "put");
    const sync = checkBoolean(checkOptions(options, "put")?.sync, "put", "sync") ?? true;
    const name = uniqueName();
    const staging = this.#in("tmp", name);
    const target = this.#in("new", name);
    if (!this.#checked) yield* this.#check();
    // O_EXCL: never through a link, never over a file.
    const file = yield* step("open", staging, {
      write: true,
      createNew: true,
      mode: this.#permissions,
    });
    let identity: FileInfo;
    try {
      yield* step("write", file, bytes);
      if (sync) yield* step("fsync", file);
      identity = yield* step("fstat", file);
    } catch (e) {
      closeQuietly(file);
      unlinkQuietly(staging);
      throw e;
    }
    try {
      yield* step("close", file);
      yield* step("rename", staging, target);
    } catch (e) {
      yield* unlinkIfSame(staging, identity);
      throw e;
    }
    // A user who may write `tmp` could have swapped the file for another
    // or a link before the rename: then that is not delivered. (Gone
    // already is fine: a consumer took it.)
    let delivered: FileInfo | undefined;
    try {
      delivered = yield* step("lstat", target);
    } catch (e) {
      if (!(e instanceof NotFound)) throw e;
    }
    if (delivered !== undefined && !sameFile(delivered, identity)) {
      unlinkQuietly(target);
      throw new NotAFile(
        "EAGAIN",
        "rename",
        staging,
        "it was replaced by another file before delivery",
      );
    }
    if (sync) yield* step("fsyncDir", `${this.#path}/new`);
    return target;
  }

  /**
   * Takes the oldest file in `new` by renaming it into `cur`. With any
   * number of competing consumers, in this process or others, each file is
   * taken exactly once: a file another consumer took first is skipped.
   *
   * "Oldest" is by name, which for files from
   * {@linkcode FileStore.prototype.put} is their delivery time (to the
   * microsecond, by each host's clock). To stay fast on a large queue, the
   * store remembers the names of its last reading of `new` and reads the
   * directory again only when they are used up, so a file that arrives
   * meanwhile waits for the next reading even if its name sorts first.
   *
   * @param options `rescan: true` reads `new` again now.
   * @returns The taken file's full path in `cur`, or `null` when `new` is
   * empty.
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
   *   await store.put("first");
   *   await store.put("second");
   *   assert.equal(readFileSync((await store.claim())!, "utf8"), "first");
   *   assert.equal(readFileSync((await store.claim())!, "utf8"), "second");
   *   assert.equal(await store.claim(), null);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  claim(options?: ClaimOptions): Promise<string | null> {
    return run(this.#claim(options));
  }

  /**
   * Takes the oldest file in `new`, synchronously; see
   * {@linkcode FileStore.prototype.claim}.
   *
   * @param options `rescan: true` reads `new` again now.
   * @returns The taken file's full path in `cur`, or `null` when `new` is
   * empty.
   * @throws {NotFound} When the store is not prepared.
   */
  claimSync(options?: ClaimOptions): string | null {
    return runSync(this.#claim(options));
  }

  *#claim(options: ClaimOptions | undefined): Steps<string | null> {
    let fresh = false;
    if (checkBoolean(checkOptions(options, "claim")?.rescan, "claim", "rescan")) this.#backlog = [];
    if (!this.#checked) yield* this.#check();
    for (;;) {
      if (this.#next >= this.#backlog.length) {
        if (fresh) break;
        // Regular files only: a link, directory or FIFO in `new` is left there.
        this.#backlog = (yield* step("readFiles", `${this.#path}/new`)).sort();
        this.#next = 0;
        fresh = true;
      }
      // Taken before the move, so that concurrent claims in this process
      // try different names.
      const name = this.#backlog[this.#next++]!;
      const source = this.#in("new", name);
      const target = this.#in("cur", name);
      try {
        yield* moveNoReplace(source, target);
      } catch (e) {
        // Another consumer won the race, or another file already has the
        // name in `cur`: this one waits in `new` until the name is free.
        if (e instanceof NotFound || e instanceof AlreadyExists) continue;
        throw e;
      }
      // What was listed as a regular file may have been replaced by a link
      // since: that is never handed out, but put back.
      if ((yield* step("lstat", target)).isFile) return target;
      try {
        yield* moveNoReplace(target, source);
      } catch { /* then it stays in cur, still not handed out */ }
    }
    // Every rename failed: another consumer won each race, unless `cur`
    // itself is gone, which must not pass for an empty queue.
    if (this.#backlog.length > 0) yield* step("stat", `${this.#path}/cur`);
    return null;
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
    checkArea(area, "watch", "area");
    if (!this.#checked) runSync(this.#check());
    const o = checkOptions(options, "watch");
    const signal = o?.signal;
    // Timers take at most 2^31-1 ms (and fire at once above it), and the
    // slow reading runs every 20 intervals.
    const interval = checkNumber(
      o?.interval,
      "watch",
      "interval",
      "a number of milliseconds above 0 and at most 107374182",
      {
        above: 0,
        max: Math.floor(MAX_TIMER / 20),
      },
    ) ?? 250;
    return watchDir(`${this.#path}/${area}`, interval, checkSignal(signal, "watch"));
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
    return run(this.#cleanup(options));
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
    return runSync(this.#cleanup(options));
  }

  *#cleanup(options: CleanupOptions | undefined): Steps<string[]> {
    const olderThan = checkNumber(
      checkOptions(options, "clean up")?.olderThan,
      "clean up",
      "olderThan",
      "a number of milliseconds >= 0",
      { min: 0 },
    ) ?? DEFAULT_OLDER_THAN;
    const limit = Date.now() - olderThan;
    const removed: string[] = [];
    if (!this.#checked) yield* this.#check();
    // Regular files only; a link is judged by its own time, never its target's.
    for (const name of (yield* step("readFiles", `${this.#path}/tmp`)).sort()) {
      const path = this.#in("tmp", name);
      try {
        const info = yield* step("lstat", path);
        if (!info.isFile || info.mtimeMs >= limit) continue;
        yield* step("unlink", path);
        removed.push(path);
      } catch (e) {
        // Delivered or removed meanwhile: nothing left to clean.
        if (!(e instanceof NotFound)) throw e;
      }
    }
    return removed;
  }
}
