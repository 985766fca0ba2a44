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
import { type FSWatcher, watch as watchFs } from "node:fs";
import { resolve } from "node:path";
import { type OpenFlags, type RawFile, rt } from "./_runtime.ts";
import { type OpenFile, wrapFile } from "./_file.ts";
import { NotFound } from "./errors.ts";

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
const encoder = new TextEncoder();

// The store's logic is written once, as generators that yield the file
// operations they need; `runSync` and `run` carry those out with the
// runtime's sync or async calls and hand back results or errors.
type Call =
  | readonly ["open", string, OpenFlags]
  | readonly ["write", RawFile, Uint8Array]
  | readonly ["fsync", RawFile]
  | readonly ["close", RawFile]
  | readonly ["rename", string, string]
  | readonly ["link", string, string]
  | readonly ["unlink", string]
  | readonly ["mkdir", string]
  | readonly ["readDir", string]
  | readonly ["stat", string]
  | readonly ["copyFile", string, string]
  | readonly ["fsyncDir", string];
type Steps<T> = Generator<Call, T, unknown>;

function callSync(c: Call): unknown {
  switch (c[0]) {
    case "open":
      return rt.openSync(c[1], c[2]);
    case "write":
      return rt.writeSync(c[1], c[2]);
    case "fsync":
      return rt.fsyncSync(c[1]);
    case "close":
      return rt.closeSync(c[1]);
    case "rename":
      return rt.renameSync(c[1], c[2]);
    case "link":
      return rt.linkSync(c[1], c[2]);
    case "unlink":
      return rt.unlinkSync(c[1]);
    case "mkdir":
      return rt.mkdirSync(c[1], true);
    case "readDir":
      return rt.readDirSync(c[1]);
    case "stat":
      return rt.statSync(c[1]);
    case "copyFile":
      return rt.copyFileSync(c[1], c[2], true);
    case "fsyncDir":
      return rt.fsyncDirSync(c[1]);
  }
}

function callAsync(c: Call): unknown {
  switch (c[0]) {
    case "open":
      return rt.open(c[1], c[2]);
    case "write":
      return rt.write(c[1], c[2]);
    case "fsync":
      return rt.fsync(c[1]);
    case "close":
      return rt.closeSync(c[1]);
    case "rename":
      return rt.rename(c[1], c[2]);
    case "link":
      return rt.link(c[1], c[2]);
    case "unlink":
      return rt.unlink(c[1]);
    case "mkdir":
      return rt.mkdir(c[1], true);
    case "readDir":
      return rt.readDir(c[1]);
    case "stat":
      return rt.stat(c[1]);
    case "copyFile":
      return rt.copyFile(c[1], c[2], true);
    case "fsyncDir":
      return rt.fsyncDir(c[1]);
  }
}

function runSync<T>(steps: Steps<T>): T {
  let next = steps.next();
  while (!next.done) {
    let result: unknown;
    try {
      result = callSync(next.value);
    } catch (e) {
      next = steps.throw(e);
      continue;
    }
    next = steps.next(result);
  }
  return next.value;
}

async function run<T>(steps: Steps<T>): Promise<T> {
  let next = steps.next();
  while (!next.done) {
    let result: unknown;
    try {
      result = await callAsync(next.value);
    } catch (e) {
      next = steps.throw(e);
      continue;
    }
    next = steps.next(result);
  }
  return next.value;
}

// Typed wrappers, so that the generators read like straight-line code.
function* open(path: string, flags: OpenFlags): Steps<RawFile> {
  return (yield ["open", path, flags]) as RawFile;
}
function* readDir(path: string): Steps<string[]> {
  return (yield ["readDir", path]) as string[];
}
function* mtimeOf(path: string): Steps<number> {
  return ((yield ["stat", path]) as { mtimeMs: number }).mtimeMs;
}
function* closeQuietly(file: RawFile): Steps<void> {
  try {
    yield ["close", file];
  } catch { /* the first error is the one to report */ }
}
function* unlinkQuietly(path: string): Steps<void> {
  try {
    yield ["unlink", path];
  } catch { /* already gone, or the first error is the one to report */ }
}

function booleanOption(value: unknown, name: string, what: string): boolean | undefined {
  if (value === undefined || typeof value === "boolean") return value;
  throw new TypeError(`Cannot ${what}: ${name} must be a boolean, got ${quote(value)}`);
}

function quote(value: unknown): string {
  if (typeof value === "string") return `'${value}'`;
  // An object whose toString is not callable would throw from String().
  try {
    return String(value);
  } catch {
    return typeof value;
  }
}

function checkArea(value: unknown, op: string, param: string): Area {
  if (typeof value !== "string" || !(AREAS as readonly string[]).includes(value)) {
    throw new TypeError(
      `Cannot ${op}: ${param} must be "tmp", "new" or "cur", got ${quote(value)}`,
    );
  }
  return value as Area;
}

// A name that is safe to join to an area's directory: one path component,
// never "." or "..", no NUL, and short enough for the file system.
function checkName(value: unknown, op: string, acceptPath: boolean): string {
  if (typeof value !== "string") {
    throw new TypeError(`Cannot ${op}: name must be a string, got ${typeof value}`);
  }
  const name = acceptPath ? value.slice(value.lastIndexOf("/") + 1) : value;
  const problem = name === ""
    ? (value === "" ? "name is empty" : "name ends with a path separator")
    : name === "." || name === ".."
    ? "name must not be '.' or '..'"
    : name.includes("/") || name.includes("\\")
    ? "name contains a path separator"
    : name.includes("\0")
    ? "name contains a NUL character"
    : undefined;
  if (problem !== undefined) throw new TypeError(`Cannot ${op} ${quote(value)}: ${problem}`);
  // A UTF-16 unit is at most 3 UTF-8 bytes, so short names need no encoding.
  if (name.length > 85 && encoder.encode(name).length > 255) {
    throw new RangeError(
      `Cannot ${op} ${quote(value)}: name is longer than 255 bytes in UTF-8`,
    );
  }
  return name;
}

function toBytes(data: unknown, op: string): Uint8Array {
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  throw new TypeError(
    `Cannot ${op}: data must be a string or a Uint8Array, got ${
      data === null ? "null" : typeof data
    }`,
  );
}

function checkOlderThan(options: CleanupOptions | undefined): number {
  const olderThan = options?.olderThan ?? DEFAULT_OLDER_THAN;
  if (typeof olderThan !== "number" || !(olderThan >= 0)) {
    throw new RangeError(
      `Cannot clean up: olderThan must be a number of milliseconds >= 0, got ${quote(olderThan)}`,
    );
  }
  return olderThan;
}

function checkCreateMode(options: CreateOptions | undefined): "w" | "wx" {
  const mode = options?.mode ?? "w";
  if (mode !== "w" && mode !== "wx") {
    throw new TypeError(`Cannot create: mode must be "w" or "wx", got ${quote(mode)}`);
  }
  return mode;
}

// The host part of a delivered name. Maildir escapes "/" and ":" as octal
// with a backslash; a backslash is refused in names here, so the escape
// drops it. Anything else outside a conservative set becomes "_", and the
// length is capped so that the whole name stays far below 255 bytes.
function hostPart(host: string): string {
  return host
    .replaceAll("/", "057")
    .replaceAll(":", "072")
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .slice(0, 64) || "localhost";
}

let counter = 0;
let host: string | undefined;

// `${seconds}.M${micros}P${pid}Q${counter}R${random}.${host}`: time first so
// that sorting by name sorts by delivery time (micros zero-padded for that);
// pid, counter and randomness make it unique on this host; the host makes
// it unique among hosts sharing the directory.
function uniqueName(): string {
  const now = performance.timeOrigin + performance.now();
  const seconds = Math.floor(now / 1000);
  const micros = Math.floor((now - seconds * 1000) * 1000);
  const random = crypto.getRandomValues(new Uint32Array(1))[0]!;
  host ??= hostPart(rt.hostname());
  return `${seconds}.M${String(micros).padStart(6, "0")}P${rt.pid}Q${++counter}R${
    random.toString(16).padStart(8, "0")
  }.${host}`;
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
    if (typeof path !== "string" || path === "" || path.includes("\0")) {
      throw new TypeError(
        `Cannot make a FileStore: path must be a non-empty string without NUL, got ${quote(path)}`,
      );
    }
    const permissions = options?.permissions ?? 0o666;
    if (!Number.isInteger(permissions) || permissions < 0 || permissions > 0o7777) {
      throw new RangeError(
        `Cannot make a FileStore: permissions must be an integer from 0 to 0o7777, got ${
          quote(permissions)
        }`,
      );
    }
    this.#path = resolve(path);
    this.#permissions = permissions;
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
    return this.#in(area, checkName(name, "get a path for", true));
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
   *   new FileStore(dir).prepareSync();
   *   assert.deepEqual(readdirSync(dir).sort(), ["cur", "new", "tmp"]);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  prepareSync(): void {
    runSync(this.#prepare());
  }

  *#prepare(): Steps<void> {
    for (const area of AREAS) yield ["mkdir", `${this.#path}/${area}`];
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
   *   using file = store.createSync("a-file", { mode: "wx" });
   *   file.writeSync("hello");
   *   assert.throws(() => store.createSync("a-file", { mode: "wx" }));
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  createSync(name: string, options?: CreateOptions): OpenFile {
    return runSync(this.#create(name, options));
  }

  *#create(name: string, options: CreateOptions | undefined): Steps<OpenFile> {
    const checked = checkName(name, "create", false);
    const mode = checkCreateMode(options);
    const file = yield* open(this.#in("tmp", checked), {
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
   *   assert.deepEqual(store.listSync("cur"), []);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  listSync(area: Area): string[] {
    return runSync(this.#list(area));
  }

  *#list(area: Area): Steps<string[]> {
    checkArea(area, "list", "area");
    const names = yield* readDir(`${this.#path}/${area}`);
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
   *   store.createSync("a-file").closeSync();
   *   store.moveSync("a-file", "tmp", "new");
   *   assert.deepEqual(store.listSync("new"), [join(dir, "new", "a-file")]);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  moveSync(name: string, from: Area, to: Area): string {
    return runSync(this.#move(name, from, to));
  }

  *#move(name: string, from: Area, to: Area): Steps<string> {
    checkArea(from, "move", "from");
    checkArea(to, "move", "to");
    const checked = checkName(name, "move", true);
    const target = this.#in(to, checked);
    yield ["rename", this.#in(from, checked), target];
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
   *   store.createSync("a-file").closeSync();
   *   store.copySync("a-file", "tmp", "new");
   *   assert.deepEqual(store.listSync("new"), [join(dir, "new", "a-file")]);
   *   assert.deepEqual(store.listSync("tmp"), [join(dir, "tmp", "a-file")]);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  copySync(name: string, from: Area, to: Area): string {
    return runSync(this.#copy(name, from, to));
  }

  *#copy(name: string, from: Area, to: Area): Steps<string> {
    checkArea(from, "copy", "from");
    checkArea(to, "copy", "to");
    const checked = checkName(name, "copy", true);
    const target = this.#in(to, checked);
    // A hidden name that cleanup() removes if this process dies before the end.
    const staging = this.#in("tmp", `.copy-${uniqueName()}`);
    yield ["copyFile", this.#in(from, checked), staging];
    try {
      // link(2), unlike rename(2), refuses an existing target.
      yield ["link", staging, target];
    } finally {
      yield* unlinkQuietly(staging);
    }
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
   *   store.putSync("hello");
   *   for (const path of store.listSync("new")) store.removeSync(path, "new");
   *   assert.deepEqual(store.listSync("new"), []);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  removeSync(name: string, area: Area): void {
    runSync(this.#remove(name, area));
  }

  *#remove(name: string, area: Area): Steps<void> {
    checkArea(area, "remove", "area");
    yield ["unlink", this.#in(area, checkName(name, "remove", true))];
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
   * @returns The file's name (in `new`).
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
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "filestore-"));
   * try {
   *   const store = new FileStore(dir);
   *   await store.prepare();
   *   const name = await store.put("hello");
   *   assert.equal(readFileSync(join(dir, "new", name), "utf8"), "hello");
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
   * @returns The file's name (in `new`).
   * @throws {TypeError} When `data` is not a string or a Uint8Array.
   * @throws {NotFound} When the store is not prepared.
   * @throws {NoSpace} When the disk is full.
   * @throws {FsError} When flushing `new` fails after the rename.
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
   *   const name = store.putSync(new Uint8Array([1, 2, 3]));
   *   assert.deepEqual(store.listSync("new"), [join(dir, "new", name)]);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  putSync(data: string | Uint8Array, options?: PutOptions): string {
    return runSync(this.#put(data, options));
  }

  *#put(data: string | Uint8Array, options: PutOptions | undefined): Steps<string> {
    const bytes = toBytes(data, "put");
    const sync = booleanOption(options?.sync, "sync", "put") ?? true;
    const name = uniqueName();
    const staging = this.#in("tmp", name);
    const file = yield* open(staging, {
      write: true,
      createNew: true,
      mode: this.#permissions,
    });
    try {
      yield ["write", file, bytes];
      if (sync) yield ["fsync", file];
    } catch (e) {
      yield* closeQuietly(file);
      yield* unlinkQuietly(staging);
      throw e;
    }
    try {
      yield ["close", file];
      yield ["rename", staging, this.#in("new", name)];
    } catch (e) {
      yield* unlinkQuietly(staging);
      throw e;
    }
    if (sync) yield ["fsyncDir", `${this.#path}/new`];
    return name;
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
   *   const name = store.putSync("hello");
   *   assert.equal(store.claimSync(), join(dir, "cur", name));
   *   assert.equal(store.claimSync(), null);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  claimSync(options?: ClaimOptions): string | null {
    return runSync(this.#claim(options));
  }

  *#claim(options: ClaimOptions | undefined): Steps<string | null> {
    let fresh = false;
    if (booleanOption(options?.rescan, "rescan", "claim")) this.#backlog = [];
    for (;;) {
      if (this.#next >= this.#backlog.length) {
        if (fresh) break;
        this.#backlog = (yield* readDir(`${this.#path}/new`)).sort();
        this.#next = 0;
        fresh = true;
      }
      // Taken before the rename, so that concurrent claims in this process
      // try different names.
      const name = this.#backlog[this.#next++]!;
      const target = this.#in("cur", name);
      try {
        yield ["rename", this.#in("new", name), target];
        return target;
      } catch (e) {
        if (!(e instanceof NotFound)) throw e;
      }
    }
    // Every rename failed: another consumer won each race, unless `cur`
    // itself is gone, which must not pass for an empty queue.
    if (this.#backlog.length > 0) yield ["stat", `${this.#path}/cur`];
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
    const interval = options?.interval ?? 250;
    // Timers take at most 2^31-1 ms (and fire at once above it), and the
    // slow reading runs every 20 intervals.
    if (typeof interval !== "number" || !(interval > 0 && interval * 20 <= 2 ** 31 - 1)) {
      throw new RangeError(
        `Cannot watch: interval must be a number of milliseconds > 0 and at most 107374182, got ${
          quote(interval)
        }`,
      );
    }
    return this.#watch(area, interval, options?.signal);
  }

  async *#watch(area: Area, interval: number, signal?: AbortSignal): AsyncGenerator<string> {
    if (signal?.aborted) return;
    const dir = `${this.#path}/${area}`;
    const seen = new Set<string>();
    // Set when something may have arrived; a wake-up resolves the wait.
    let dirty = true;
    let wake: (() => void) | undefined;
    const poke = () => {
      dirty = true;
      wake?.();
    };
    let watcher: FSWatcher | undefined;
    // Events can be lost (a full kernel queue), so a slow reading runs even
    // while they arrive; without them, readings every `interval` ms.
    let timer = setInterval(poke, interval * 20);
    const poll = () => {
      clearInterval(timer);
      timer = setInterval(poke, interval);
    };
    signal?.addEventListener("abort", poke, { once: true });
    try {
      try {
        watcher = watchFs(dir, { persistent: true }, poke);
        watcher.on("error", () => {
          watcher?.close();
          watcher = undefined;
          poll();
        });
      } catch {
        poll();
      }
      while (!signal?.aborted) {
        if (!dirty) {
          await new Promise<void>((resolve) => wake = resolve);
          wake = undefined;
          continue;
        }
        dirty = false;
        // One reading of the directory answers every event that came before
        // it, and keeps `seen` to the files that are still there.
        const names = await rt.readDir(dir);
        const present = new Set(names);
        for (const name of seen) if (!present.has(name)) seen.delete(name);
        names.sort();
        for (const name of names) {
          if (seen.has(name)) continue;
          seen.add(name);
          yield `${dir}/${name}`;
          if (signal?.aborted) return;
        }
      }
    } finally {
      signal?.removeEventListener("abort", poke);
      watcher?.close();
      clearInterval(timer);
    }
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
   *   store.createSync("fresh").closeSync();
   *   assert.deepEqual(store.cleanupSync(), []);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  cleanupSync(options?: CleanupOptions): string[] {
    return runSync(this.#cleanup(options));
  }

  *#cleanup(options: CleanupOptions | undefined): Steps<string[]> {
    const limit = Date.now() - checkOlderThan(options);
    const removed: string[] = [];
    for (const name of (yield* readDir(`${this.#path}/tmp`)).sort()) {
      const path = this.#in("tmp", name);
      try {
        if ((yield* mtimeOf(path)) >= limit) continue;
        yield ["unlink", path];
        removed.push(path);
      } catch (e) {
        // Delivered or removed meanwhile: nothing left to clean.
        if (!(e instanceof NotFound)) throw e;
      }
    }
    return removed;
  }
}
