// The FileStore's state and logic, written once for the sync and async
// twins (as steps, _steps.ts); filestore.ts holds the class and its
// documentation.
import { resolve } from "node:path";
import {
  checkBoolean,
  checkChoice,
  checkNumber,
  checkOptions,
  checkPath,
  checkPermissions,
  checkSignal,
  invalid,
  toBytes,
} from "./_check.ts";
import { type OpenFile, wrapFile } from "./_file.ts";
import { checkName, deliveriesOf, retried, uniqueName } from "./_names.ts";
import { openFile, openFileInfo, sameFile, unlinkIfSame } from "./_open.ts";
import { closeQuietly, type FileInfo, type RawFile, rt, unlinkQuietly } from "./_runtime.ts";
import { run, runSync, step, type Steps } from "./_steps.ts";
import { checkStore, copyNoReplace, moveNoReplace, useArea } from "./_store_dir.ts";
import { type Claim, grant } from "./_claim.ts";
import { MAX_TIMER } from "./_wait.ts";
import { watchDir } from "./_watch.ts";
import { AlreadyExists, NotAFile, NotFound } from "./errors.ts";

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
  /**
   * How often a file may be handed out: once it has been delivered this
   * many times and its consumer died with it again, `recover()` moves it
   * to the area `failed` instead of back to `new`, so that a message that
   * kills every consumer (a poison message) does not do so for ever.
   *
   * @default {Infinity}
   */
  maxDeliveries?: number;
  /**
   * `claim()` runs `recover()` by itself when it finds `new` empty, at
   * most once in this many milliseconds; `Infinity` leaves recovery to
   * explicit `recover()` calls.
   *
   * @default {1000}
   */
  recoverEvery?: number;
  /**
   * The host's name in the names that `put()` (and `copy()`, for its
   * staging file) makes up, which must be unique among the hosts that
   * share the directory. Giving it spares the lookup: on Deno, `Deno.hostname()`
   * needs `--allow-sys=hostname`, and without it the package reads
   * `/proc/sys/kernel/hostname` (`--allow-read` of that file), else uses
   * `"localhost"`.
   *
   * @default {the host's name}
   */
  hostname?: string;
}

/** What {@linkcode FileStore.prototype.recover} did. */
export interface Recovered {
  /** The paths in `new` of the files given back for another delivery. */
  requeued: string[];
  /** The paths in `failed` of the files that reached `maxDeliveries`. */
  failed: string[];
  /**
   * The paths in `cur` of files that also had another name: a move that a
   * dead process cut short, finished by removing the name in `cur`.
   */
  finished: string[];
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

/** What one FileStore instance knows. */
export interface StoreState {
  readonly path: string;
  readonly permissions: number;
  /** Names from the last reading of `new` that claim() has not tried yet. */
  backlog: string[];
  next: number;
  /** Whether checkStore() has passed on the existing directory. */
  checked: boolean;
  readonly maxDeliveries: number;
  readonly recoverEvery: number;
  /** The hostname option; undefined: the host's own name, looked up when needed. */
  readonly hostname: string | undefined;
  /** When claim() last ran recover() by itself (performance.now()). */
  recovered: number;
}

/** The state of a new FileStore: the arguments checked, the directory looked at. */
export function makeStore(path: string, options: FileStoreOptions | undefined): StoreState {
  const what = "make a FileStore";
  const { permissions, maxDeliveries, recoverEvery, hostname } = checkOptions(options, what) ??
    {};
  const s: StoreState = {
    path: resolve(checkPath(path, what)),
    permissions: checkPermissions(permissions, what, "permissions") ?? 0o666,
    backlog: [],
    next: 0,
    checked: false,
    maxDeliveries: checkNumber(maxDeliveries, what, "maxDeliveries", "a whole number >= 1", {
      min: 1,
      integer: false,
    }) ?? Infinity,
    recoverEvery: checkNumber(
      recoverEvery,
      what,
      "recoverEvery",
      "a number of milliseconds >= 0",
      { min: 0 },
    ) ?? 1000,
    hostname: hostname === undefined ? undefined : checkPath(hostname, what, "hostname"),
    recovered: -Infinity,
  };
  if (s.maxDeliveries !== Infinity && !Number.isInteger(s.maxDeliveries)) {
    throw invalid(RangeError, what, "maxDeliveries", "a whole number >= 1", s.maxDeliveries);
  }
  s.checked = runSync(checkStore(s.path, AREAS));
  return s;
}

function inArea(s: StoreState, area: Area, name: string): string {
  return `${s.path}/${area}/${name}`;
}

/** FileStore.pathOf. */
export function pathOf(s: StoreState, name: string, area: Area): string {
  checkArea(area, "get a path", "area");
  return inArea(s, area, checkName(name, "get a path", true));
}

/** Checks the store once per instance (checkStore), on first use. */
export function* check(s: StoreState): Steps<void> {
  if (!s.checked) s.checked = yield* checkStore(s.path, AREAS);
}

/** FileStore.prepare: the directory and its areas, checked before and after. */
export function* prepare(s: StoreState): Steps<void> {
  // Checked before anything is made in it, and again once it all exists.
  yield* checkStore(s.path, AREAS);
  for (const area of AREAS) yield* step("mkdir", `${s.path}/${area}`, true);
  s.checked = yield* checkStore(s.path, AREAS);
}

/** FileStore.create: a file in tmp, never through a link. */
export function* create(
  s: StoreState,
  name: string,
  options: CreateOptions | undefined,
): Steps<OpenFile> {
  const checked = checkName(name, "create", false);
  const mode = checkChoice(checkOptions(options, "create")?.mode ?? "w", "create", "mode", [
    "w",
    "wx",
  ]);
  if (!s.checked) yield* check(s);
  const file = yield* openFile(inArea(s, "tmp", checked), {
    read: true,
    write: true,
    create: mode === "w",
    truncate: mode === "w",
    createNew: mode === "wx",
    mode: s.permissions,
  });
  return wrapFile(file);
}

// FileStore.list and listSync are written out rather than as steps: a
// listing is one read, and running steps costs about a microsecond a
// call, a tenth of reading a small directory (issue 16).

/** FileStore.listSync: the full paths in an area, sorted. */
export function listSync(s: StoreState, area: Area): string[] {
  checkArea(area, "list", "area");
  if (!s.checked) runSync(check(s));
  const dir = `${s.path}/${area}`;
  return sortedPaths(dir, rt.readDirSync(dir));
}

/** FileStore.list: the full paths in an area, sorted. */
export async function list(s: StoreState, area: Area): Promise<string[]> {
  checkArea(area, "list", "area");
  if (!s.checked) await run(check(s));
  const dir = `${s.path}/${area}`;
  return sortedPaths(dir, await rt.readDir(dir));
}

// The `names` read from `dir`, sorted and made full paths, in place.
function sortedPaths(dir: string, names: string[]): string[] {
  names.sort();
  const prefix = `${dir}/`;
  for (let i = 0; i < names.length; i++) names[i] = prefix + names[i];
  return names;
}

/** FileStore.move: never over another file. */
export function* move(s: StoreState, name: string, from: Area, to: Area): Steps<string> {
  checkArea(from, "move", "from");
  checkArea(to, "move", "to");
  const checked = checkName(name, "move", true);
  const target = inArea(s, to, checked);
  if (!s.checked) yield* check(s);
  if (!(yield* moveNoReplace(inArea(s, from, checked), target))) {
    throw new NotFound(
      "ENOENT",
      "rename",
      inArea(s, from, checked),
      "another process moved it first",
    );
  }
  return target;
}

/** FileStore.copy: of a regular file, never over another file. */
export function* copy(s: StoreState, name: string, from: Area, to: Area): Steps<string> {
  checkArea(from, "copy", "from");
  checkArea(to, "copy", "to");
  const checked = checkName(name, "copy", true);
  const target = inArea(s, to, checked);
  if (!s.checked) yield* check(s);
  // A hidden name that cleanup() removes if this process dies before the end.
  const staging = inArea(s, "tmp", `.copy-${uniqueName(s.hostname)}`);
  yield* copyNoReplace(inArea(s, from, checked), staging, target, s.permissions);
  return target;
}

/** FileStore.remove. */
export function* remove(s: StoreState, name: string, area: Area): Steps<void> {
  checkArea(area, "remove", "area");
  const path = inArea(s, area, checkName(name, "remove", true));
  if (!s.checked) yield* check(s);
  yield* step("unlink", path);
}

/** FileStore.put: written in tmp, flushed, renamed into new, checked. */
export function* put(
  s: StoreState,
  data: string | Uint8Array,
  options: PutOptions | undefined,
): Steps<string> {
  const bytes = toBytes(data, "put");
  const sync = checkBoolean(checkOptions(options, "put")?.sync, "put", "sync") ?? true;
  const name = uniqueName(s.hostname);
  const staging = inArea(s, "tmp", name);
  const target = inArea(s, "new", name);
  if (!s.checked) yield* check(s);
  // O_EXCL: never through a link, never over a file.
  const file = yield* step("open", staging, {
    write: true,
    createNew: true,
    mode: s.permissions,
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
  if (sync) yield* step("fsyncDir", `${s.path}/new`);
  return target;
}

/** FileStore.claim: the oldest regular file in new, moved into cur. */
export function* claim(s: StoreState, options: ClaimOptions | undefined): Steps<Claim | null> {
  if (checkBoolean(checkOptions(options, "claim")?.rescan, "claim", "rescan")) s.backlog = [];
  if (!s.checked) yield* check(s);
  const claimed = yield* take(s);
  if (claimed !== null || s.recoverEvery === Infinity) return claimed;
  // `new` is empty: bring back the files of dead consumers, now and then.
  const now = performance.now();
  if (now - s.recovered < s.recoverEvery) return null;
  s.recovered = now;
  const { requeued } = yield* recover(s);
  if (requeued.length === 0) return null;
  s.backlog = [];
  return yield* take(s);
}

// The protocol, for every implementation (module doc of filestore.ts): the
// file is opened in `new` and locked (LOCK_EX | LOCK_NB: a consumer that
// is taking it holds the lock), then moved into `cur` without replacing
// anything, and kept open, locked, until done or released.
function* take(s: StoreState): Steps<Claim | null> {
  let fresh = false;
  for (;;) {
    if (s.next >= s.backlog.length) {
      if (fresh) break;
      // Regular files only: a link, directory or FIFO in `new` is left there.
      s.backlog = (yield* step("readFiles", `${s.path}/new`)).sort();
      s.next = 0;
      fresh = true;
    }
    // Taken before the move, so that concurrent claims in this process
    // try different names.
    const name = s.backlog[s.next++]!;
    const source = inArea(s, "new", name);
    const target = inArea(s, "cur", name);
    let raw: RawFile;
    let identity: FileInfo;
    try {
      [raw, identity] = yield* openFileInfo(source, { read: true });
    } catch (e) {
      // Taken by another consumer since the reading, or swapped for
      // something that is not a regular file.
      if (e instanceof NotFound || e instanceof NotAFile) continue;
      throw e;
    }
    try {
      if (!(yield* step("tryLock", raw, true))) {
        closeQuietly(raw);
        continue;
      }
      // The lock is on the file opened; only if that file is still the one
      // at `new/NAME` does the lock stand for it: a consumer that took and
      // finished it meanwhile, and a new file delivered under the same
      // name, would otherwise be moved without anybody's lock on it.
      let current: FileInfo | undefined;
      try {
        current = yield* step("lstat", source);
      } catch (e) {
        if (!(e instanceof NotFound)) throw e;
      }
      if (current === undefined || !sameFile(current, identity)) {
        closeQuietly(raw);
        continue;
      }
      let moved;
      try {
        moved = yield* moveNoReplace(source, target);
      } catch (e) {
        // Another file already has the name in `cur`: this one waits in
        // `new` until the name is free.
        closeQuietly(raw);
        if (e instanceof NotFound || e instanceof AlreadyExists) continue;
        throw e;
      }
      // A claim cut short by its consumer's death (the file was in `cur`
      // already): that consumer's, finished here and left to recover().
      if (!moved) {
        closeQuietly(raw);
        continue;
      }
      return grant(raw, s.path, name, deliveriesOf(name));
    } catch (e) {
      closeQuietly(raw);
      throw e;
    }
  }
  // Every move failed: another consumer won each race, unless `cur`
  // itself is gone, which must not pass for an empty queue.
  if (s.backlog.length > 0) yield* step("stat", `${s.path}/cur`);
  return null;
}

// Whether the file `identity` also has, in an area of the store other than
// `cur` (the areas are the store's subdirectories), the name NAME or the
// name recover() gives it when it requeues it (NAME.retryN): a recover()
// killed between its link into `new` and its unlink leaves that second
// name, under which the file may have been claimed and finished since.
function* otherName(s: StoreState, name: string, identity: FileInfo): Steps<boolean> {
  const names = new Set([name, retried(name)]);
  for (const area of yield* step("readDir", s.path)) {
    if (area === "cur") continue;
    for (const other of names) {
      try {
        if (sameFile(yield* step("lstat", `${s.path}/${area}/${other}`), identity)) return true;
      } catch { /* not there, or not a directory */ }
    }
  }
  return false;
}

/**
 * FileStore.recover: every regular file in `cur` that nobody holds locked
 * (its consumer died) goes back to `new` under its next retry name, or to
 * `failed` once it has been delivered `maxDeliveries` times. A file that a
 * live consumer holds is never touched: the lock answers, not a timeout.
 */
export function* recover(s: StoreState): Steps<Recovered> {
  if (!s.checked) yield* check(s);
  const result: Recovered = { requeued: [], failed: [], finished: [] };
  for (const name of (yield* step("readFiles", `${s.path}/cur`)).sort()) {
    const source = inArea(s, "cur", name);
    let raw: RawFile;
    try {
      raw = yield* openFile(source, { read: true });
    } catch (e) {
      if (e instanceof NotFound || e instanceof NotAFile) continue;
      throw e;
    }
    try {
      if (!(yield* step("tryLock", raw, true))) continue;
      const identity = yield* step("fstat", raw);
      let current: FileInfo | undefined;
      try {
        current = yield* step("lstat", source);
      } catch (e) {
        if (!(e instanceof NotFound)) throw e;
      }
      // Recovered by another process between our open and our lock.
      if (current === undefined || !sameFile(current, identity)) continue;
      // A second name in another area of the store means a move that a
      // dead process cut short between its link and its unlink (a claim
      // from new, a release back to it, done into an area, a recover() into
      // new under the retry name): the file is at its other name already,
      // so that move is finished instead of the file handed out again. A
      // link elsewhere (a user's) does not count.
      if (identity.nlink > 1 && (yield* otherName(s, name, identity))) {
        yield* unlinkIfSame(source, identity);
        result.finished.push(source);
        continue;
      }
      const failed = deliveriesOf(name) >= s.maxDeliveries;
      if (failed) yield* useArea(s.path, "failed");
      const target = failed ? `${s.path}/failed/${name}` : inArea(s, "new", retried(name));
      try {
        if (!(yield* moveNoReplace(source, target))) continue;
      } catch (e) {
        if (e instanceof NotFound || e instanceof AlreadyExists) continue;
        throw e;
      }
      (failed ? result.failed : result.requeued).push(target);
    } finally {
      closeQuietly(raw);
    }
  }
  return result;
}

/** FileStore.cleanup: old regular files in tmp. */
export function* cleanup(s: StoreState, options: CleanupOptions | undefined): Steps<string[]> {
  const olderThan = checkNumber(
    checkOptions(options, "clean up")?.olderThan,
    "clean up",
    "olderThan",
    "a number of milliseconds >= 0",
    { min: 0 },
  ) ?? DEFAULT_OLDER_THAN;
  const limit = Date.now() - olderThan;
  const removed: string[] = [];
  if (!s.checked) yield* check(s);
  // Regular files only; a link is judged by its own time, never its target's.
  for (const name of (yield* step("readFiles", `${s.path}/tmp`)).sort()) {
    const path = inArea(s, "tmp", name);
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

/** FileStore.watch. */
export function watch(
  s: StoreState,
  area: Area,
  options: WatchOptions | undefined,
): AsyncIterableIterator<string> {
  checkArea(area, "watch", "area");
  if (!s.checked) runSync(check(s));
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
  return watchDir(`${s.path}/${area}`, interval, checkSignal(signal, "watch"));
}
