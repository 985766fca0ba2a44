/**
 * Advisory file locks between processes, after Python's `portalocker`: the
 * low-level {@link lock}/{@link unlock} on a file you opened, and classes
 * that open the file, lock it and hand it back ({@link Lock}, {@link RLock},
 * {@link TemporaryFileLock}, {@link PidFileLock}), semaphores made of lock
 * files ({@link BoundedSemaphore}), and {@link openAtomic} for files that
 * appear whole or not at all. Every lock is a BSD `flock(2)` lock, so Deno,
 * Bun, Node, Python's `fcntl.flock` and util-linux `flock(1)` all see the
 * same locks. A waiting acquirer is woken by the kernel when the holder lets
 * go: nothing polls, except a semaphore watching its other slots.
 *
 * ```ts
 * import { AlreadyLocked, Lock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "lock-"));
 * try {
 *   await using lock = new Lock(join(dir, "cache.lock"));
 *   const file = await lock.acquire();
 *   await file.write("rebuilding the cache\n");
 *   const other = new Lock(join(dir, "cache.lock"), { failWhenLocked: true });
 *   await assert.rejects(other.acquire(), AlreadyLocked);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileOf, OpenFile, wrapFile } from "./_file.ts";
import { closeQuietly, type OpenFlags, type RawFile, rt } from "./_runtime.ts";
import { AlreadyExists, NotFound } from "./errors.ts";

// The handle that acquire() resolves to, for users of this entry point alone.
export { OpenFile } from "./_file.ts";
export type { FileInfo } from "./_runtime.ts";

/**
 * The flags of {@link lock} and {@link lockSync}: `flock(2)`'s numbers, the
 * same on every platform, under portalocker's names and under the C names.
 * Combine with `|`: `LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING`.
 * `NON_BLOCKING` on its own means an exclusive lock.
 *
 * @example Usage
 * ```ts
 * import { LockFlags } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 *
 * assert.equal(LockFlags.EXCLUSIVE, LockFlags.LOCK_EX);
 * assert.equal(LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING, 6);
 * ```
 */
export const LockFlags = {
  /** A shared (read) lock: any number of shared holders at once. */
  SHARED: 1,
  /** An exclusive (write) lock: one holder, and no shared ones. */
  EXCLUSIVE: 2,
  /** Do not wait: throw {@link AlreadyLocked} when somebody holds a conflicting lock. */
  NON_BLOCKING: 4,
  /** Release the lock. */
  UNBLOCK: 8,
  /** Alias of `SHARED`. */
  LOCK_SH: 1,
  /** Alias of `EXCLUSIVE`. */
  LOCK_EX: 2,
  /** Alias of `NON_BLOCKING`. */
  LOCK_NB: 4,
  /** Alias of `UNBLOCK`. */
  LOCK_UN: 8,
} as const;

/**
 * The base class of this module's lock errors; `cause` holds the underlying
 * error, if any. File-system failures (no such directory, permission
 * denied, a directory at the path) are not `LockException`s but the
 * package's `FsError` subclasses, which name the path.
 *
 * @example Usage
 * ```ts
 * import { LockException } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 *
 * const error = new LockException("Cannot release RLock '/tmp/x': it is not acquired");
 * assert.ok(error instanceof Error);
 * assert.equal(error.name, "LockException");
 * ```
 */
export class LockException extends Error {
  /**
   * Creates the error.
   *
   * @param message What went wrong.
   * @param options The underlying error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Options of {@link AlreadyLocked}. */
export interface AlreadyLockedOptions extends ErrorOptions {
  /** The holder's process id, where known ({@link PidFileLock}). */
  holderPid?: number | undefined;
}

/**
 * Somebody else holds the lock: a non-blocking attempt or `failWhenLocked`
 * was refused, or `timeout` ran out. `holderPid` is the holder's pid where
 * the lock file says it ({@link PidFileLock}), and `undefined` otherwise.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, LockException } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 *
 * const error = new AlreadyLocked("Cannot lock '/tmp/x': it is locked by pid 42", {
 *   holderPid: 42,
 * });
 * assert.ok(error instanceof LockException);
 * assert.equal(error.holderPid, 42);
 * ```
 */
export class AlreadyLocked extends LockException {
  /** The holder's process id, or `undefined` if unknown. */
  readonly holderPid: number | undefined;

  /**
   * Creates the error.
   *
   * @param message What was refused.
   * @param options `holderPid` where known, and `cause`.
   */
  constructor(message: string, options?: AlreadyLockedOptions) {
    super(message, options);
    this.holderPid = options?.holderPid;
  }
}

/**
 * A file {@link lock} accepts: a `Deno.FsFile` on Deno, a numeric file
 * descriptor or a `node:fs/promises` `FileHandle` on Bun and Node, or the
 * package's own {@link OpenFile}.
 */
export type LockTarget = OpenFile | Deno.FsFile | FileHandle | number;

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value === null) return "null";
  if (typeof value === "object") return value.constructor?.name ?? "an object";
  return typeof value;
}

function targetOf(file: unknown, what: string): RawFile {
  if (file instanceof OpenFile) return fileOf(file);
  const raw = rt.adopt(file);
  if (raw === undefined) {
    throw new TypeError(
      `Cannot ${what}: 'file' must be an open file of the runtime or an OpenFile, got ${
        show(file)
      }`,
    );
  }
  return raw;
}

interface Operation {
  readonly unlock: boolean;
  readonly exclusive: boolean;
  readonly wait: boolean;
}

function operationOf(flags: unknown, what: string): Operation {
  const { SHARED, EXCLUSIVE, NON_BLOCKING, UNBLOCK } = LockFlags;
  const bad = (why: string) => new RangeError(`Cannot ${what}: 'flags' ${why}, got ${show(flags)}`);
  if (typeof flags !== "number") {
    throw new TypeError(
      `Cannot ${what}: 'flags' must be a number of LockFlags, got ${show(flags)}`,
    );
  }
  if (!Number.isInteger(flags) || flags <= 0 || (flags & ~15) !== 0) {
    throw bad("must combine LockFlags");
  }
  if (flags & UNBLOCK) {
    if (flags !== UNBLOCK) throw bad("must be UNBLOCK alone to unlock");
    return { unlock: true, exclusive: false, wait: false };
  }
  if ((flags & SHARED) && (flags & EXCLUSIVE)) throw bad("cannot be both SHARED and EXCLUSIVE");
  return { unlock: false, exclusive: (flags & SHARED) === 0, wait: (flags & NON_BLOCKING) === 0 };
}

function refusal(path: string, holderPid?: number, waited?: number): AlreadyLocked {
  const who = holderPid === undefined ? "another holder" : `pid ${holderPid}`;
  const after = waited === undefined ? "" : ` after ${waited} ms`;
  return new AlreadyLocked(`Cannot lock '${path}': it is locked by ${who}${after}`, {
    holderPid,
  });
}

/**
 * Locks or unlocks a file you opened yourself, waiting for the lock unless
 * `flags` has `NON_BLOCKING`. The wait does not block the JavaScript thread.
 * Closing the file releases the lock too.
 *
 * @param file The runtime's own open file, or an {@link OpenFile}.
 * @param flags `EXCLUSIVE` or `SHARED`, optionally with `NON_BLOCKING`; or
 * `UNBLOCK` to unlock.
 * @returns A promise that resolves once the lock is held (or released).
 * @throws {AlreadyLocked} `NON_BLOCKING` and somebody holds a conflicting lock.
 * @throws {FsError} The underlying `flock(2)` call failed (a bad descriptor, no lock resources).
 * @throws {TypeError} `file` is not an open file, or `flags` is not a number.
 * @throws {RangeError} `flags` is not a valid combination.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, lock, LockFlags, unlock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { open } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "lock-fn-"));
 * try {
 *   const path = join(dir, "data.lock");
 *   const first = await Deno.open(path, { create: true, write: true });
 *   const second = await Deno.open(path, { write: true });
 *   await lock(first, LockFlags.EXCLUSIVE);
 *   await assert.rejects(lock(second, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING), AlreadyLocked);
 *   await unlock(first);
 *   await lock(second, LockFlags.NON_BLOCKING);
 *   first.close();
 *   second.close();
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export async function lock(file: LockTarget, flags: number): Promise<void> {
  const raw = targetOf(file, "lock");
  const op = operationOf(flags, "lock");
  if (op.unlock) return rt.unlockSync(raw);
  if (rt.tryLockSync(raw, op.exclusive)) return;
  if (!op.wait) throw refusal(raw.path);
  await rt.lock(raw, op.exclusive);
}

/**
 * Locks or unlocks a file you opened yourself, synchronously. Without
 * `NON_BLOCKING` it blocks the whole thread until the lock is held: prefer
 * {@link lock} wherever you can await.
 *
 * @param file The runtime's own open file, or an {@link OpenFile}.
 * @param flags `EXCLUSIVE` or `SHARED`, optionally with `NON_BLOCKING`; or
 * `UNBLOCK` to unlock.
 * @throws {AlreadyLocked} `NON_BLOCKING` and somebody holds a conflicting lock.
 * @throws {FsError} The underlying `flock(2)` call failed (a bad descriptor, no lock resources).
 * @throws {TypeError} `file` is not an open file, or `flags` is not a number.
 * @throws {RangeError} `flags` is not a valid combination.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, LockFlags, lockSync, unlockSync } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "lock-sync-"));
 * try {
 *   const path = join(dir, "data.lock");
 *   using a = Deno.openSync(path, { create: true, write: true });
 *   using b = Deno.openSync(path, { read: true });
 *   lockSync(a, LockFlags.SHARED);
 *   lockSync(b, LockFlags.SHARED | LockFlags.NON_BLOCKING);
 *   assert.throws(() => lockSync(a, LockFlags.LOCK_EX | LockFlags.LOCK_NB), AlreadyLocked);
 *   unlockSync(b);
 *   lockSync(a, LockFlags.LOCK_EX | LockFlags.LOCK_NB);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function lockSync(file: LockTarget, flags: number): void {
  const raw = targetOf(file, "lock");
  const op = operationOf(flags, "lock");
  if (op.unlock) return rt.unlockSync(raw);
  if (rt.tryLockSync(raw, op.exclusive)) return;
  if (!op.wait) throw refusal(raw.path);
  rt.lockSync(raw, op.exclusive);
}

/**
 * Releases the lock on a file you locked with {@link lock}. The file stays
 * open.
 *
 * @param file The runtime's own open file, or an {@link OpenFile}.
 * @returns A promise that resolves once the lock is released.
 * @throws {TypeError} `file` is not an open file.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, lock, LockFlags, unlock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "unlock-"));
 * try {
 *   const path = join(dir, "a.lock");
 *   using file = await Deno.open(path, { create: true, write: true });
 *   using other = await Deno.open(path, { write: true });
 *   const tryOther = () => lock(other, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING);
 *   await lock(file, LockFlags.EXCLUSIVE);
 *   await assert.rejects(tryOther(), AlreadyLocked);
 *   await unlock(file);
 *   await assert.doesNotReject(tryOther());
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function unlock(file: LockTarget): Promise<void> {
  return settled(() => rt.unlockSync(targetOf(file, "unlock")));
}

/**
 * Releases the lock on a file you locked, synchronously. The file stays
 * open.
 *
 * @param file The runtime's own open file, or an {@link OpenFile}.
 * @throws {TypeError} `file` is not an open file.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, LockFlags, lockSync, unlockSync } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "unlock-sync-"));
 * try {
 *   const path = join(dir, "a.lock");
 *   using file = Deno.openSync(path, { create: true, write: true });
 *   using other = Deno.openSync(path, { write: true });
 *   const tryOther = () => lockSync(other, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING);
 *   lockSync(file, LockFlags.EXCLUSIVE);
 *   assert.throws(tryOther, AlreadyLocked);
 *   unlockSync(file);
 *   assert.doesNotThrow(tryOther);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function unlockSync(file: LockTarget): void {
  rt.unlockSync(targetOf(file, "unlock"));
}

/** How {@link Lock} opens its file. */
export type LockMode = "a" | "w" | "r+";

/** Options of one {@link Lock.prototype.acquire} call, overriding the lock's own. */
export interface AcquireOptions {
  /**
   * How long to wait for the lock, in milliseconds; `0` tries once, and
   * `Infinity` waits for as long as it takes. When it runs out, the acquire
   * rejects with {@link AlreadyLocked}.
   *
   * @default {Infinity}
   */
  timeout?: number;
  /**
   * Milliseconds between looks at the other slots while a
   * {@link BoundedSemaphore} waits on one of them. Plain locks never poll:
   * the kernel wakes the waiter.
   *
   * @default {50}
   */
  checkInterval?: number;
  /**
   * Reject with {@link AlreadyLocked} at once if the lock is held, whatever
   * `timeout` says.
   *
   * @default {false}
   */
  failWhenLocked?: boolean;
  /**
   * Gives up the wait when it aborts: the acquire rejects with the signal's
   * reason and the lock is not held afterwards. (The kernel may still hand
   * the abandoned wait the lock when the holder lets go, and it lets go at
   * once; a `timeout: 0` attempt in that instant can be refused. The same
   * holds for a wait that timed out.)
   */
  signal?: AbortSignal;
}

/** Options of {@link Lock}. */
export interface LockOptions extends AcquireOptions {
  /**
   * How to open the file: `"a"` creates it if needed and appends, `"w"`
   * creates it if needed and truncates it once the lock is held (never
   * before), and `"r+"` opens an existing file for reading and writing at
   * its start.
   *
   * @default {"a"}
   */
  mode?: LockMode;
  /**
   * Take a shared lock, which other shared holders may hold at the same
   * time, instead of an exclusive one.
   *
   * @default {false}
   */
  shared?: boolean;
}

interface Settings {
  timeout: number;
  checkInterval: number;
  failWhenLocked: boolean;
  signal: AbortSignal | undefined;
}

const DEFAULTS: Settings = {
  timeout: Infinity,
  checkInterval: 50,
  failWhenLocked: false,
  signal: undefined,
};

function settingsOf(base: Settings, o: AcquireOptions | undefined, what: string): Settings {
  if (o === undefined) return base;
  if (o === null || typeof o !== "object") {
    throw new TypeError(`${what}: options must be an object, got ${show(o)}`);
  }
  const s = { ...base };
  if (o.timeout !== undefined) {
    if (typeof o.timeout !== "number" || !(o.timeout >= 0)) {
      const E = typeof o.timeout === "number" ? RangeError : TypeError;
      throw new E(`${what}: 'timeout' must be a non-negative number, got ${show(o.timeout)}`);
    }
    s.timeout = o.timeout;
  }
  if (o.checkInterval !== undefined) {
    if (
      typeof o.checkInterval !== "number" || !(o.checkInterval > 0 && o.checkInterval < 2 ** 31)
    ) {
      const E = typeof o.checkInterval === "number" ? RangeError : TypeError;
      throw new E(
        `${what}: 'checkInterval' must be a positive number of milliseconds, got ${
          show(o.checkInterval)
        }`,
      );
    }
    s.checkInterval = o.checkInterval;
  }
  if (o.failWhenLocked !== undefined) {
    if (typeof o.failWhenLocked !== "boolean") {
      throw new TypeError(
        `${what}: 'failWhenLocked' must be a boolean, got ${show(o.failWhenLocked)}`,
      );
    }
    s.failWhenLocked = o.failWhenLocked;
  }
  if (o.signal !== undefined) {
    if (!(o.signal instanceof AbortSignal)) {
      throw new TypeError(`${what}: 'signal' must be an AbortSignal, got ${show(o.signal)}`);
    }
    s.signal = o.signal;
  }
  return s;
}

// Runs a synchronous step as a promise: its throw becomes a rejection.
// (Promise.try would do, but Node 22 does not have it.)
function settled(step: () => void): Promise<void> {
  try {
    step();
    return Promise.resolve();
  } catch (e) {
    return Promise.reject(e);
  }
}

function checkPath(path: unknown, what: string): string {
  if (typeof path !== "string" || path === "") {
    throw new TypeError(`${what}: 'path' must be a non-empty string, got ${show(path)}`);
  }
  if (path.includes("\0")) {
    throw new TypeError(`${what}: 'path' must not contain NUL, got ${show(path)}`);
  }
  return path;
}

// Calls `fn` once `ms` milliseconds have passed, also beyond setTimeout's
// 24.8-day limit; returns the cancel function.
function after(ms: number, fn: () => void): () => void {
  const end = performance.now() + ms;
  let id: ReturnType<typeof setTimeout>;
  const arm = (left: number) => {
    id = setTimeout(() => {
      const rest = end - performance.now();
      if (rest > 2 ** 31 - 1) arm(rest);
      else fn();
    }, Math.min(left, 2 ** 31 - 1));
  };
  arm(ms);
  return () => clearTimeout(id);
}

type Outcome = "held" | "timeout" | "aborted";

// Waits with rt.lock until the lock is held, `ms` run out or `signal`
// aborts. Unless it resolves "held", `raw` is closed (by the runtime layer,
// which owns it from the abort on) and the lock is not held.
async function waitFor(
  raw: RawFile,
  exclusive: boolean,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<Outcome> {
  if (ms === Infinity && signal === undefined) {
    try {
      await rt.lock(raw, exclusive);
    } catch (e) {
      closeQuietly(raw);
      throw e;
    }
    return "held";
  }
  const controller = new AbortController();
  let outcome: Outcome = "held";
  const cancel = ms === Infinity ? undefined : after(ms, () => {
    outcome = "timeout";
    controller.abort();
  });
  const onAbort = () => {
    outcome = "aborted";
    controller.abort(signal!.reason);
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await rt.lock(raw, exclusive, controller.signal);
    return "held";
  } catch (e) {
    // The runtime layer closed `raw` only if it gave up for the abort.
    if (controller.signal.aborted && e === controller.signal.reason) return outcome;
    closeQuietly(raw);
    throw e;
  } finally {
    cancel?.();
    signal?.removeEventListener("abort", onAbort);
  }
}

// Opens `path` and takes the lock if nobody holds a conflicting one; on
// failure, the file is closed.
function openAndTry(
  path: string,
  flags: OpenFlags,
  exclusive: boolean,
): { raw: RawFile; held: boolean } {
  const raw = rt.openSync(path, flags);
  try {
    return { raw, held: rt.tryLockSync(raw, exclusive) };
  } catch (e) {
    closeQuietly(raw);
    throw e;
  }
}

// Joins another call's pending acquire under this call's own rules: it is
// refused at once (failWhenLocked, timeout 0) or when its timeout runs out,
// and rejects with its signal's reason when that aborts. The shared wait
// goes on for the call that started it.
function share<T>(
  pending: Promise<T>,
  s: Settings,
  refuse: (waited?: number) => AlreadyLocked,
): Promise<T> {
  if (s.failWhenLocked || s.timeout === 0) return Promise.reject(refuse());
  if (s.timeout === Infinity && s.signal === undefined) return pending;
  return new Promise<T>((resolve, reject) => {
    const settle = (fn: () => void) => {
      cancel?.();
      s.signal?.removeEventListener("abort", onAbort);
      fn();
    };
    const onAbort = () => settle(() => reject(s.signal!.reason));
    const cancel = s.timeout === Infinity
      ? undefined
      : after(s.timeout, () => settle(() => reject(refuse(s.timeout))));
    s.signal?.addEventListener("abort", onAbort, { once: true });
    pending.then((file) => settle(() => resolve(file)), (e) => settle(() => reject(e)));
  });
}

// What sets the lock classes apart: how the file is opened, and what is
// done once it is locked and before it is unlocked.
interface Kind {
  flags(mode: LockMode): OpenFlags;
  /** False when the path no longer names the locked file: try again. */
  check?(raw: RawFile, path: string): boolean;
  ready(raw: RawFile, mode: LockMode): void;
  leave?(raw: RawFile, path: string): void;
  holder?(path: string): number | undefined;
}

const OPEN_FLAGS: Record<LockMode, OpenFlags> = {
  "a": { read: true, append: true, create: true },
  "w": { read: true, write: true, create: true },
  "r+": { read: true, write: true },
};

const plainKind: Kind = {
  flags: (mode) => OPEN_FLAGS[mode],
  ready(raw, mode) {
    if (mode === "w") rt.truncateSync(raw, 0);
  },
};

const temporaryKind: Kind = {
  ...plainKind,
  check(raw, path) {
    const held = rt.fstatSync(raw);
    try {
      const now = rt.statSync(path);
      return now.ino === held.ino && now.dev === held.dev;
    } catch (e) {
      if (e instanceof NotFound) return false;
      throw e;
    }
  },
  leave(_raw, path) {
    // Unlinked while still locked, so that whoever locks the old inode next
    // sees it is gone (check) and starts again on a new file.
    try {
      rt.unlinkSync(path);
    } catch (e) {
      if (!(e instanceof NotFound)) throw e;
    }
  },
};

const encoder = new TextEncoder();

const pidKind: Kind = {
  flags: () => OPEN_FLAGS.w,
  ready(raw) {
    rt.truncateSync(raw, 0);
    rt.writeSync(raw, encoder.encode(`${rt.pid}\n`), 0);
  },
  leave(raw) {
    rt.truncateSync(raw, 0);
  },
  holder(path) {
    try {
      const raw = rt.openSync(path, { read: true });
      try {
        const buf = new Uint8Array(32);
        const n = rt.readSync(raw, buf, 0);
        const text = new TextDecoder().decode(buf.subarray(0, n)).trim();
        return /^\d+$/.test(text) ? Number(text) : undefined;
      } finally {
        rt.closeSync(raw);
      }
    } catch {
      return undefined;
    }
  },
};

// The file that a Lock or BoundedSemaphore instance holds locked; closing
// its handle gives it up just as releasing does.
class Held {
  raw: RawFile | undefined;
  file: OpenFile | undefined;

  // Holds the locked `raw`: the handle that an acquire resolves to.
  hold(raw: RawFile): OpenFile {
    const file = wrapFile(raw, () => {
      if (this.raw === raw) {
        this.raw = undefined;
        this.file = undefined;
      }
    });
    this.raw = raw;
    this.file = file;
    return file;
  }

  // Unlocks and closes the held file, if any, after `leave` (while it is
  // still locked); the file is closed even if that fails.
  drop(leave?: (raw: RawFile) => void): void {
    const { file, raw } = this;
    if (file === undefined || raw === undefined) return;
    this.file = undefined;
    this.raw = undefined;
    try {
      leave?.(raw);
      rt.unlockSync(raw);
    } finally {
      file.closeSync();
    }
  }
}

let setKind: (lock: Lock, kind: Kind) => void;

/**
 * An exclusive (or shared) lock on a file, held through an open handle:
 * portalocker's `Lock`. {@link Lock.prototype.acquire} opens the file,
 * locks it and resolves to the handle; {@link Lock.prototype.release}
 * unlocks and closes it. A free lock is taken synchronously, without
 * leaving the JavaScript thread; a held one is waited for until the kernel
 * hands it over, `timeout` runs out or `signal` aborts. Locks are per
 * `Lock` instance: two instances on one path contend, in one process as in
 * two. Use it with `await using` to release it at the end of a scope.
 *
 * @example Usage
 * ```ts
 * import { Lock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "lock-class-"));
 * try {
 *   const path = join(dir, "report.txt");
 *   {
 *     await using lock = new Lock(path, { mode: "w", timeout: 1000 });
 *     const file = await lock.acquire();
 *     await file.write("done\n");
 *     assert.ok(lock.locked);
 *   }
 *   assert.equal(readFileSync(path, "utf8"), "done\n");
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class Lock implements AsyncDisposable, Disposable {
  #path: string;
  #mode: LockMode;
  #exclusive: boolean;
  #settings: Settings;
  #kind: Kind = plainKind;
  #name: string;
  #held = new Held();
  #pending: Promise<OpenFile> | undefined;

  static {
    setKind = (lock, kind) => {
      lock.#kind = kind;
    };
  }

  /**
   * Makes a lock on `path`; nothing is opened until
   * {@link Lock.prototype.acquire}.
   *
   * @param path The file to lock.
   * @param options The mode, the waiting rules and whether it is shared.
   * @throws {TypeError} `path` is not a non-empty string, or an option has the wrong type.
   * @throws {RangeError} `mode`, `timeout` or `checkInterval` is out of range.
   */
  constructor(path: string, options: LockOptions = {}) {
    this.#name = new.target.name;
    const what = `Cannot create ${this.#name}`;
    this.#path = checkPath(path, what);
    this.#settings = settingsOf(DEFAULTS, options, what);
    const mode = options.mode ?? "a";
    if (typeof mode !== "string" || !Object.hasOwn(OPEN_FLAGS, mode)) {
      throw new RangeError(`${what}: 'mode' must be "a", "w" or "r+", got ${show(mode)}`);
    }
    this.#mode = mode;
    const shared = options.shared ?? false;
    if (typeof shared !== "boolean") {
      throw new TypeError(`${what}: 'shared' must be a boolean, got ${show(shared)}`);
    }
    if (shared && mode === "w") {
      throw new RangeError(
        `${what}: 'mode' "w" truncates the file, which needs an exclusive lock, got 'shared' true`,
      );
    }
    this.#exclusive = !shared;
    // A lock that may wait gets its waiter thread (Bun, Node) started now,
    // in the background, rather than at its first contended acquire.
    if (!this.#settings.failWhenLocked && this.#settings.timeout !== 0) rt.prepareWait();
  }

  /** The locked file's path. */
  get path(): string {
    return this.#path;
  }

  /** Whether this instance holds the lock now. */
  get locked(): boolean {
    return this.#held.file !== undefined;
  }

  /**
   * Opens the file and locks it, waiting as the options say. While the
   * lock is held, another call resolves to the same handle; while one is
   * pending, another call shares its wait, yet keeps to its own
   * `failWhenLocked`, `timeout` and `signal` (giving up leaves the shared
   * wait going on). Closing the handle releases the lock just as
   * {@link Lock.prototype.release} does.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The open, locked file.
   * @throws {AlreadyLocked} `failWhenLocked` or `timeout: 0` and the lock is
   * held, or `timeout` ran out.
   * @throws {NotFound} The directory does not exist, or the file with mode `"r+"`.
   * @throws {IsADirectory} A directory is at the path.
   * @throws {PermissionDenied} The file may not be opened.
   * @throws {TypeError} An override has the wrong type.
   * @throws {RangeError} An override is out of range.
   *
   * @example Usage
   * ```ts
   * import { AlreadyLocked, Lock } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "lock-acquire-"));
   * try {
   *   const path = join(dir, "job.lock");
   *   await using holder = new Lock(path);
   *   assert.equal(await holder.acquire(), await holder.acquire());
   *   const waiter = new Lock(path);
   *   await assert.rejects(waiter.acquire({ timeout: 50 }), AlreadyLocked);
   *   assert.equal(waiter.locked, false);
   *   await holder.release();
   *   await waiter.acquire({ timeout: 1000 });
   *   assert.ok(waiter.locked);
   *   await waiter.release();
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  async acquire(overrides?: AcquireOptions): Promise<OpenFile> {
    if (this.#held.file !== undefined) return this.#held.file;
    const s = settingsOf(this.#settings, overrides, `Cannot acquire ${this.#name}`);
    if (s.signal?.aborted) throw s.signal.reason;
    if (this.#pending !== undefined) {
      return await share(
        this.#pending,
        s,
        (waited) => refusal(this.#path, this.#kind.holder?.(this.#path), waited),
      );
    }
    const first = this.#attempt();
    if (first instanceof OpenFile) return first;
    this.#pending = this.#wait(s, performance.now(), first);
    try {
      return await this.#pending;
    } finally {
      this.#pending = undefined;
    }
  }

  async #wait(s: Settings, start: number, raw: RawFile | undefined): Promise<OpenFile> {
    for (;;) {
      // `raw` comes in open and contended; later rounds open afresh.
      if (raw === undefined) {
        const next = this.#attempt();
        if (next === undefined) continue;
        if (next instanceof OpenFile) return next;
        raw = next;
      }
      const waited = performance.now() - start;
      if (s.failWhenLocked || s.timeout === 0 || waited >= s.timeout) {
        closeQuietly(raw);
        throw refusal(this.#path, this.#kind.holder?.(this.#path));
      }
      const outcome = await waitFor(raw, this.#exclusive, s.timeout - waited, s.signal);
      if (outcome === "aborted") throw s.signal!.reason;
      if (outcome === "timeout") {
        throw refusal(this.#path, this.#kind.holder?.(this.#path), s.timeout);
      }
      const file = this.#take(raw);
      if (file !== undefined) return file;
      raw = undefined;
    }
  }

  // Opens the file and takes the lock if it is free: the handle if taken,
  // the open file if somebody holds the lock, or undefined if the path no
  // longer names the file it locked (try again).
  #attempt(): OpenFile | RawFile | undefined {
    const { raw, held } = openAndTry(this.#path, this.#kind.flags(this.#mode), this.#exclusive);
    return held ? this.#take(raw) : raw;
  }

  // Finishes an acquire on a locked `raw`: undefined (and `raw` closed) when
  // the path no longer names the locked file.
  #take(raw: RawFile): OpenFile | undefined {
    try {
      if (this.#kind.check !== undefined && !this.#kind.check(raw, this.#path)) {
        rt.closeSync(raw);
        return undefined;
      }
      this.#kind.ready(raw, this.#mode);
    } catch (e) {
      closeQuietly(raw);
      throw e;
    }
    return this.#held.hold(raw);
  }

  /**
   * Releases the lock and closes the file. Doing so when the lock is not
   * held does nothing; it does not cancel a pending
   * {@link Lock.prototype.acquire} (give that a `signal`). A release that
   * fails still closes the file, which drops the lock, and then throws.
   *
   * @returns A promise that resolves once the lock is released.
   * @throws {FsError} Unlocking or closing failed.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "lock-release-"));
   * try {
   *   const lock = new Lock(join(dir, "a.lock"));
   *   const file = await lock.acquire();
   *   await lock.release();
   *   assert.equal(lock.locked, false);
   *   assert.ok(file.closed);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  release(): Promise<void> {
    return settled(() => this.#drop());
  }

  /**
   * Releases the lock and closes the file, synchronously; see
   * {@link Lock.prototype.release}.
   *
   * @throws {FsError} Unlocking or closing failed.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "lock-release-sync-"));
   * try {
   *   const lock = new Lock(join(dir, "a.lock"));
   *   await lock.acquire();
   *   lock.releaseSync();
   *   assert.equal(lock.locked, false);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  releaseSync(): void {
    this.#drop();
  }

  #drop(): void {
    this.#held.drop((raw) => this.#kind.leave?.(raw, this.#path));
  }

  /** Releases the lock, for `using`. */
  [Symbol.dispose](): void {
    this.#drop();
  }

  /** Releases the lock, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return settled(() => this.#drop());
  }
}

/**
 * A re-entrant {@link Lock}: each {@link RLock.prototype.acquire} on the
 * instance counts, and the lock is released when
 * {@link RLock.prototype.release} has been called as often. Releasing
 * more often than acquired throws {@link LockException}. Disposing it
 * releases it whatever the count.
 *
 * @example Usage
 * ```ts
 * import { LockException, RLock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "rlock-"));
 * try {
 *   const lock = new RLock(join(dir, "a.lock"));
 *   await lock.acquire();
 *   await lock.acquire();
 *   await lock.release();
 *   assert.ok(lock.locked);
 *   await lock.release();
 *   assert.equal(lock.locked, false);
 *   await assert.rejects(lock.release(), LockException);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class RLock extends Lock {
  #count = 0;

  /** How many acquisitions are not yet released. */
  get count(): number {
    return this.locked ? this.#count : 0;
  }

  /**
   * Acquires the lock, or counts one more acquisition if this instance
   * holds it; see {@link Lock.prototype.acquire}.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The open, locked file.
   * @throws {AlreadyLocked} `failWhenLocked` or `timeout` and the lock is held.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "rlock-acquire-"));
   * try {
   *   await using lock = new RLock(join(dir, "a.lock"));
   *   await lock.acquire();
   *   await lock.acquire();
   *   assert.equal(lock.count, 2);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  override async acquire(overrides?: AcquireOptions): Promise<OpenFile> {
    if (!this.locked) this.#count = 0;
    const file = await super.acquire(overrides);
    this.#count++;
    return file;
  }

  /**
   * Counts one release; the last one releases the lock.
   *
   * @returns A promise that resolves once counted (and released).
   * @throws {LockException} The instance does not hold the lock.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "rlock-release-"));
   * try {
   *   const lock = new RLock(join(dir, "a.lock"));
   *   await lock.acquire();
   *   await lock.release();
   *   assert.equal(lock.locked, false);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  override release(): Promise<void> {
    return settled(() => this.releaseSync());
  }

  /**
   * Counts one release, synchronously; the last one releases the lock.
   *
   * @throws {LockException} The instance does not hold the lock.
   *
   * @example Usage
   * ```ts
   * import { LockException, RLock } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "rlock-release-sync-"));
   * try {
   *   const lock = new RLock(join(dir, "a.lock"));
   *   assert.throws(() => lock.releaseSync(), LockException);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  override releaseSync(): void {
    if (this.count === 0) {
      throw new LockException(`Cannot release RLock '${this.path}': it is not acquired`);
    }
    if (--this.#count === 0) super.releaseSync();
  }
}

/**
 * A {@link Lock} whose file exists only while it is held: the file is
 * created on acquire and removed on release. Safe against portalocker's
 * issue 115, in which a process locks the inode another has just unlinked:
 * the holder unlinks before it unlocks, and an acquirer checks after
 * locking that the path still names the file it locked, and starts again
 * if not. Always exclusive. If the handle is closed directly instead of
 * released, the file is left behind (harmlessly: the next acquirer uses it).
 *
 * @example Usage
 * ```ts
 * import { TemporaryFileLock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { existsSync, mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "temporary-lock-"));
 * try {
 *   const path = join(dir, "build.lock");
 *   const lock = new TemporaryFileLock(path);
 *   await lock.acquire();
 *   assert.ok(existsSync(path));
 *   await lock.release();
 *   assert.equal(existsSync(path), false);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class TemporaryFileLock extends Lock {
  /**
   * Makes a lock whose file is removed on release.
   *
   * @param path The lock file to create and remove.
   * @param options The mode and the waiting rules.
   * @throws {TypeError} `path` is not a non-empty string, or an option has the wrong type.
   * @throws {RangeError} An option is out of range.
   */
  constructor(path: string, options: Omit<LockOptions, "shared"> = {}) {
    super(path, { ...options, shared: false });
    setKind(this, temporaryKind);
  }
}

/**
 * An exclusive {@link Lock} whose holder writes its pid into the file
 * (`"<pid>\n"`, after the lock is held) and empties it before letting go.
 * An acquire that is refused rejects with {@link AlreadyLocked} carrying
 * the holder's `holderPid`.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, PidFileLock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import process from "node:process";
 *
 * const dir = mkdtempSync(join(tmpdir(), "pid-lock-"));
 * try {
 *   const path = join(dir, "daemon.pid");
 *   await using lock = new PidFileLock(path);
 *   await lock.acquire();
 *   assert.equal(readFileSync(path, "utf8"), `${process.pid}\n`);
 *   await assert.rejects(new PidFileLock(path, { failWhenLocked: true }).acquire(), (e) => {
 *     assert.ok(e instanceof AlreadyLocked);
 *     assert.equal(e.holderPid, process.pid);
 *     return true;
 *   });
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class PidFileLock extends Lock {
  /**
   * Makes a lock that writes the holder's pid into `path`.
   *
   * @param path The pid file.
   * @param options The waiting rules.
   * @throws {TypeError} `path` is not a non-empty string, or an option has the wrong type.
   * @throws {RangeError} An option is out of range.
   */
  constructor(path: string, options: AcquireOptions = {}) {
    super(path, { ...options, mode: "w", shared: false });
    setKind(this, pidKind);
  }
}

/** Options of {@link BoundedSemaphore}. */
export interface BoundedSemaphoreOptions extends AcquireOptions {
  /**
   * The semaphore's name: its slot files are `<name>.00.lock`,
   * `<name>.01.lock`, ... in `directory`. Every process that shares the
   * semaphore uses the same name and directory.
   *
   * @default {"bounded_semaphore"}
   */
  name?: string;
  /**
   * The directory of the slot files; it must exist.
   *
   * @default {os.tmpdir()}
   */
  directory?: string;
}

interface Slot {
  index: number;
  raw: RawFile;
}

const SLOT_FLAGS: OpenFlags = { read: true, write: true, create: true };

/**
 * At most `maximum` holders at once, across processes: portalocker's
 * `BoundedSemaphore`, made of `maximum` lock files, one per slot, of which
 * a holder locks one. Acquirers start at a random slot, so that they do not
 * all contend for the first. A waiting acquirer blocks on one slot, so the
 * kernel hands it over as soon as that slot's holder lets go, and tries
 * the others every `checkInterval` milliseconds, opening them one at a
 * time: an acquirer has at most two files open, however large `maximum`
 * is (each look at the others costs one open per slot). One instance holds
 * at most one slot.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, BoundedSemaphore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "semaphore-"));
 * try {
 *   const options = { name: "workers", directory: dir };
 *   await using a = new BoundedSemaphore(2, options);
 *   await using b = new BoundedSemaphore(2, options);
 *   await a.acquire();
 *   await b.acquire();
 *   assert.notEqual(a.slot, b.slot);
 *   const c = new BoundedSemaphore(2, { ...options, failWhenLocked: true });
 *   await assert.rejects(c.acquire(), AlreadyLocked);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class BoundedSemaphore implements AsyncDisposable, Disposable {
  #maximum: number;
  #name: string;
  #directory: string;
  #settings: Settings;
  #class: string;
  #held = new Held();
  #slot: number | undefined;
  #pending: Promise<OpenFile> | undefined;

  /**
   * Makes a semaphore; nothing is opened until
   * {@link BoundedSemaphore.prototype.acquire}.
   *
   * @param maximum How many holders at most.
   * @param options The name, the directory and the waiting rules.
   * @throws {TypeError} An argument has the wrong type, or `name` contains a path separator.
   * @throws {RangeError} `maximum` is not a positive integer, or an option is out of range.
   */
  constructor(maximum: number, options: BoundedSemaphoreOptions = {}) {
    this.#class = new.target.name;
    const what = `Cannot create ${this.#class}`;
    if (typeof maximum !== "number") {
      throw new TypeError(`${what}: 'maximum' must be a positive integer, got ${show(maximum)}`);
    }
    if (!Number.isInteger(maximum) || maximum < 1 || maximum > 100_000) {
      throw new RangeError(
        `${what}: 'maximum' must be a positive integer up to 100000, got ${show(maximum)}`,
      );
    }
    this.#maximum = maximum;
    this.#settings = settingsOf(DEFAULTS, options, what);
    const name = options.name ?? "bounded_semaphore";
    if (typeof name !== "string" || name === "" || /[/\\\0]/.test(name)) {
      throw new TypeError(
        `${what}: 'name' must be a non-empty file name without path separators, got ${show(name)}`,
      );
    }
    this.#name = name;
    this.#directory = checkPath(options.directory ?? tmpdir(), `${what}: 'directory'`);
  }

  /** How many holders at most. */
  get maximum(): number {
    return this.#maximum;
  }

  /** The semaphore's name. */
  get name(): string {
    return this.#name;
  }

  /** The directory of the slot files. */
  get directory(): string {
    return this.#directory;
  }

  /** Whether this instance holds a slot now. */
  get locked(): boolean {
    return this.#held.file !== undefined;
  }

  /** The index of the slot this instance holds, or `undefined`. */
  get slot(): number | undefined {
    return this.#held.file === undefined ? undefined : this.#slot;
  }

  /**
   * The path of slot `index`'s lock file.
   *
   * @param index A slot, from 0 to `maximum - 1`.
   * @returns The lock file's path.
   * @throws {RangeError} `index` is not a slot.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new BoundedSemaphore(3, { name: "jobs", directory: "/run/app" });
   * assert.equal(semaphore.pathOf(2), "/run/app/jobs.02.lock");
   * ```
   */
  pathOf(index: number): string {
    if (!Number.isInteger(index) || index < 0 || index >= this.#maximum) {
      throw new RangeError(
        `Cannot name slot of ${this.#class}: 'index' must be an integer from 0 to ${
          this.#maximum - 1
        }, got ${show(index)}`,
      );
    }
    return join(this.#directory, `${this.#name}.${String(index).padStart(2, "0")}.lock`);
  }

  #open(index: number): RawFile {
    return rt.openSync(this.pathOf(index), SLOT_FLAGS);
  }

  // Locks slot `index` if it is free; the open file if so.
  #try(index: number): RawFile | undefined {
    const { raw, held } = openAndTry(this.pathOf(index), SLOT_FLAGS, true);
    if (held) return raw;
    rt.closeSync(raw);
    return undefined;
  }

  #take(raw: RawFile, index: number): OpenFile {
    this.#slot = index;
    return this.#held.hold(raw);
  }

  /**
   * Takes a free slot, waiting for one as the options say. While a slot is
   * held, another call resolves to the same handle; while one is pending,
   * another call shares its wait, yet keeps to its own `failWhenLocked`,
   * `timeout` and `signal`.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The open, locked slot file.
   * @throws {AlreadyLocked} `failWhenLocked` or `timeout: 0` and every slot is
   * held, or `timeout` ran out.
   * @throws {NotFound} The directory does not exist.
   * @throws {PermissionDenied} A slot file may not be opened.
   * @throws {TypeError} An override has the wrong type.
   * @throws {RangeError} An override is out of range.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "semaphore-acquire-"));
   * try {
   *   const options = { name: "one", directory: dir };
   *   const holder = new BoundedSemaphore(1, options);
   *   await holder.acquire();
   *   setTimeout(() => holder.releaseSync(), 20);
   *   const waiter = new BoundedSemaphore(1, options);
   *   await waiter.acquire({ timeout: 5000 });
   *   assert.equal(waiter.slot, 0);
   *   await waiter.release();
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  async acquire(overrides?: AcquireOptions): Promise<OpenFile> {
    if (this.#held.file !== undefined) return this.#held.file;
    const s = settingsOf(this.#settings, overrides, `Cannot acquire ${this.#class}`);
    if (s.signal?.aborted) throw s.signal.reason;
    if (this.#pending !== undefined) {
      return await share(this.#pending, s, (waited) => this.#refusal(waited));
    }
    const n = this.#maximum;
    const first = Math.floor(Math.random() * n);
    for (let i = 0; i < n; i++) {
      const index = (first + i) % n;
      const raw = this.#try(index);
      if (raw !== undefined) return this.#take(raw, index);
    }
    if (s.failWhenLocked || s.timeout === 0) throw this.#refusal();
    this.#pending = this.#wait(s, performance.now(), first);
    try {
      return await this.#pending;
    } finally {
      this.#pending = undefined;
    }
  }

  #refusal(waited?: number): AlreadyLocked {
    const after = waited === undefined ? "" : ` after ${waited} ms`;
    return new AlreadyLocked(
      `Cannot acquire ${this.#class} '${this.#name}' in '${this.#directory}': all ${this.#maximum} slots are held${after}`,
    );
  }

  // Blocks on slot `first` and tries the others every checkInterval, opening
  // one at a time, so that a wait holds two files open at most.
  async #wait(s: Settings, start: number, first: number): Promise<OpenFile> {
    const n = this.#maximum;
    const blockedRaw = this.#open(first);
    const controller = new AbortController();
    const signal = s.signal === undefined
      ? controller.signal
      : AbortSignal.any([controller.signal, s.signal]);
    const left = Math.max(0, s.timeout - (performance.now() - start));
    const blocked = waitFor(blockedRaw, true, left, signal);
    let settled = n === 1;
    let won: Slot | undefined;
    try {
      while (!settled) {
        let wake!: () => void;
        const tick = new Promise<void>((resolve) => wake = resolve);
        const id = setTimeout(wake, s.checkInterval);
        const outcome = await Promise.race([blocked, tick]);
        clearTimeout(id);
        if (outcome !== undefined) {
          settled = true;
          break;
        }
        for (let i = 1; i < n && won === undefined; i++) {
          const index = (first + i) % n;
          const raw = this.#try(index);
          if (raw !== undefined) won = { index, raw };
        }
        if (won !== undefined) break;
      }
    } catch (e) {
      controller.abort();
      // A slot granted just before the abort must not stay held.
      blocked.then((o) => o === "held" && closeQuietly(blockedRaw), () => {});
      throw e;
    }
    if (!settled) controller.abort();
    const outcome = await blocked;
    if (won !== undefined) {
      if (outcome === "held") closeQuietly(blockedRaw);
      return this.#take(won.raw, won.index);
    }
    if (outcome === "held") return this.#take(blockedRaw, first);
    if (outcome === "aborted") throw s.signal!.reason;
    throw this.#refusal(s.timeout);
  }

  /**
   * Releases the slot and closes its file. Doing so when no slot is held
   * does nothing.
   *
   * @returns A promise that resolves once the slot is released.
   * @throws {FsError} Unlocking or closing failed.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "semaphore-release-"));
   * try {
   *   const semaphore = new BoundedSemaphore(1, { name: "s", directory: dir });
   *   await semaphore.acquire();
   *   await semaphore.release();
   *   assert.equal(semaphore.slot, undefined);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  release(): Promise<void> {
    return settled(() => this.releaseSync());
  }

  /**
   * Releases the slot and closes its file, synchronously.
   *
   * @throws {FsError} Unlocking or closing failed.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "semaphore-release-sync-"));
   * try {
   *   const semaphore = new BoundedSemaphore(1, { name: "s", directory: dir });
   *   await semaphore.acquire();
   *   semaphore.releaseSync();
   *   assert.equal(semaphore.locked, false);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  releaseSync(): void {
    this.#held.drop();
  }

  /** Releases the slot, for `using`. */
  [Symbol.dispose](): void {
    this.releaseSync();
  }

  /** Releases the slot, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return settled(() => this.releaseSync());
  }
}

/**
 * A {@link BoundedSemaphore} whose name is given up front, as the second
 * argument, so that every process sharing it says which one it means.
 *
 * @example Usage
 * ```ts
 * import { NamedBoundedSemaphore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "named-semaphore-"));
 * try {
 *   await using semaphore = new NamedBoundedSemaphore(4, "downloads", { directory: dir });
 *   await semaphore.acquire();
 *   assert.equal(semaphore.name, "downloads");
 *   assert.ok(semaphore.slot! >= 0 && semaphore.slot! < 4);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class NamedBoundedSemaphore extends BoundedSemaphore {
  /**
   * Makes a named semaphore.
   *
   * @param maximum How many holders at most.
   * @param name The semaphore's name, shared by all its users.
   * @param options The directory and the waiting rules.
   * @throws {TypeError} An argument has the wrong type, or `name` contains a path separator.
   * @throws {RangeError} `maximum` is not a positive integer, or an option is out of range.
   */
  constructor(
    maximum: number,
    name: string,
    options: Omit<BoundedSemaphoreOptions, "name"> = {},
  ) {
    if (typeof name !== "string") {
      throw new TypeError(
        `Cannot create NamedBoundedSemaphore: 'name' must be a non-empty file name without path separators, got ${
          show(name)
        }`,
      );
    }
    super(maximum, { ...options, name });
  }
}

/** Options of {@link openAtomic} and {@link openAtomicSync}. */
export interface OpenAtomicOptions {
  /**
   * The new file's permission bits (before the umask).
   *
   * @default {0o666}
   */
  mode?: number;
}

function atomicStart(
  path: unknown,
  write: unknown,
  options: OpenAtomicOptions | undefined,
  what: string,
) {
  const target = checkPath(path, what);
  if (typeof write !== "function") {
    throw new TypeError(`${what}: 'write' must be a function, got ${show(write)}`);
  }
  const mode = options?.mode ?? 0o666;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new RangeError(
      `${what}: 'mode' must be permission bits from 0 to 0o7777, got ${show(mode)}`,
    );
  }
  try {
    rt.lstatSync(target);
    throw new AlreadyExists("EEXIST", "create", target, "file exists");
  } catch (e) {
    if (!(e instanceof NotFound)) throw e;
  }
  const random = Array.from(
    crypto.getRandomValues(new Uint8Array(6)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const temporary = join(dirname(target), `.${basename(target)}.${random}.tmp`);
  const raw = rt.openSync(temporary, { read: true, write: true, createNew: true, mode });
  return { target, temporary, raw, file: wrapFile(raw) };
}

function removeQuietly(path: string): void {
  try {
    rt.unlinkSync(path);
  } catch { /* the error that got us here matters more */ }
}

/**
 * Writes a new file that readers see whole or not at all: `write` fills a
 * temporary file beside `path`, which is then flushed to the disk and
 * published under `path` with a hard link, which never replaces an
 * existing file, and the temporary name removed. If `write` throws, or
 * `path` exists, nothing is left behind. The handle is closed for you.
 * It can throw after the file was already published: if removing the
 * temporary name or flushing the directory fails, `path` holds the whole
 * new file (and the temporary name may remain), yet the call rejects.
 *
 * @typeParam T What `write` returns.
 * @param path The file to create.
 * @param write Fills the file through the handle it is given.
 * @param options The file's permission bits.
 * @returns What `write` returned, once the file is published.
 * @throws {AlreadyExists} `path` exists; it is left as it was.
 * @throws {NotFound} The directory does not exist.
 * @throws {FsError} Writing, flushing or linking failed; or, after the file
 * was published, removing the temporary name or flushing the directory.
 * @throws {TypeError} `path` is not a non-empty string or `write` not a function.
 * @throws {RangeError} `mode` is not permission bits.
 *
 * @example Usage
 * ```ts
 * import { AlreadyExists, openAtomic } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "atomic-"));
 * try {
 *   const path = join(dir, "config.json");
 *   await openAtomic(path, (file) => file.write('{"ok":true}'));
 *   assert.equal(readFileSync(path, "utf8"), '{"ok":true}');
 *   await assert.rejects(openAtomic(path, (file) => file.write("{}")), AlreadyExists);
 *   assert.deepEqual(readdirSync(dir), ["config.json"]);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export async function openAtomic<T>(
  path: string,
  write: (file: OpenFile) => T | Promise<T>,
  options?: OpenAtomicOptions,
): Promise<T> {
  const { target, temporary, raw, file } = atomicStart(
    path,
    write,
    options,
    "Cannot open atomically",
  );
  let result: T;
  try {
    result = await write(file);
    if (file.closed) {
      const again = rt.openSync(temporary, { read: true });
      try {
        await rt.fsync(again);
      } finally {
        rt.closeSync(again);
      }
    } else {
      await rt.fsync(raw);
      file.closeSync();
    }
    await rt.link(temporary, target);
  } catch (e) {
    file.closeSync();
    removeQuietly(temporary);
    throw e;
  }
  await rt.unlink(temporary);
  await rt.fsyncDir(dirname(target));
  return result;
}

/**
 * Writes a new file that readers see whole or not at all, synchronously;
 * see {@link openAtomic}.
 *
 * @typeParam T What `write` returns.
 * @param path The file to create.
 * @param write Fills the file through the handle it is given.
 * @param options The file's permission bits.
 * @returns What `write` returned, once the file is published.
 * @throws {AlreadyExists} `path` exists; it is left as it was.
 * @throws {NotFound} The directory does not exist.
 * @throws {TypeError} `path` is not a non-empty string or `write` not a function.
 * @throws {RangeError} `mode` is not permission bits.
 *
 * @example Usage
 * ```ts
 * import { openAtomicSync } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readdirSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "atomic-sync-"));
 * try {
 *   const path = join(dir, "data.bin");
 *   assert.throws(() =>
 *     openAtomicSync(path, (file) => {
 *       file.writeSync("half");
 *       throw new Error("interrupted");
 *     })
 *   );
 *   assert.deepEqual(readdirSync(dir), []);
 *   openAtomicSync(path, (file) => file.writeSync(new Uint8Array([1, 2, 3])));
 *   assert.deepEqual(readdirSync(dir), ["data.bin"]);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function openAtomicSync<T>(
  path: string,
  write: (file: OpenFile) => T,
  options?: OpenAtomicOptions,
): T {
  const { target, temporary, raw, file } = atomicStart(
    path,
    write,
    options,
    "Cannot open atomically",
  );
  let result: T;
  try {
    result = write(file);
    if (result instanceof Promise) {
      result.catch(() => {});
      throw new TypeError(
        "Cannot open atomically: 'write' returned a promise, which openAtomicSync cannot wait for: use openAtomic",
      );
    }
    if (file.closed) {
      const again = rt.openSync(temporary, { read: true });
      try {
        rt.fsyncSync(again);
      } finally {
        rt.closeSync(again);
      }
    } else {
      rt.fsyncSync(raw);
      file.closeSync();
    }
    rt.linkSync(temporary, target);
  } catch (e) {
    file.closeSync();
    removeQuietly(temporary);
    throw e;
  }
  rt.unlinkSync(temporary);
  rt.fsyncDirSync(dirname(target));
  return result;
}
