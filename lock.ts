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
import { invalid } from "./_check.ts";
import { fileOf, OpenFile } from "./_file.ts";
import { refusal } from "./_lock.ts";
import { type RawFile, rt } from "./_runtime.ts";
import { settled } from "./_steps.ts";
import { lockWait } from "./_wait.ts";

// The classes and functions of this module live in private files of a few
// hundred lines each; this is where users find them.
export { type AcquireOptions, Lock, type LockMode, type LockOptions } from "./_lock.ts";
export { PidFileLock, RLock, TemporaryFileLock } from "./_lock_kinds.ts";
export {
  BoundedSemaphore,
  type BoundedSemaphoreOptions,
  NamedBoundedSemaphore,
} from "./_semaphore.ts";
export { openAtomic, type OpenAtomicOptions, openAtomicSync } from "./_atomic.ts";
export { type LockHolderProcess, lockHolders } from "./_holders.ts";
// The lock errors and the handle that acquire() resolves to, for users of
// this entry point alone.
export { AlreadyLocked, type AlreadyLockedOptions, LockException } from "./errors.ts";
export { OpenFile } from "./_file.ts";
export type { FileInfo } from "./_runtime.ts";

/**
 * The flags of {@link lock} and {@link lockSync}: `flock(2)`'s numbers, the
 * same on every platform, under portalocker's names, with the C names as
 * aliases for those who know `flock(2)`.
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
 * What {@link lock} needs of a `Deno.FsFile`, which satisfies it: declared
 * here so that the package's types never name the `Deno` namespace, which
 * a Bun or Node project's type checker does not know.
 */
export interface FsFileLike {
  /** Locks the file, waiting. */
  lock(exclusive?: boolean): Promise<void>;
  /** Locks the file, blocking the thread. */
  lockSync(exclusive?: boolean): void;
  /** Unlocks the file. */
  unlockSync(): void;
  /** Closes the file. */
  close(): void;
}

/** A `node:fs/promises` `FileHandle`, or anything else that carries a numeric descriptor. */
export interface FileHandleLike {
  /** The file descriptor. */
  readonly fd: number;
}

/**
 * A file {@link lock} accepts: a `Deno.FsFile` on Deno, a numeric file
 * descriptor or a `node:fs/promises` `FileHandle` on Bun and Node, or the
 * package's own {@link OpenFile} anywhere. One type serves every runtime,
 * so it admits a descriptor and a `FileHandle` on Deno too, where they are
 * refused at run time with a `TypeError`: Deno locks only its own files,
 * and reaching `flock(2)` for a descriptor would take an FFI and
 * `--allow-ffi`.
 */
export type LockTarget = OpenFile | FsFileLike | FileHandleLike | number;

function targetOf(file: unknown, what: string): RawFile {
  if (file instanceof OpenFile) return fileOf(file);
  const raw = rt.adopt(file);
  if (raw === undefined) {
    const expected = rt.name === "deno"
      ? "a Deno.FsFile or an OpenFile (Deno cannot lock a descriptor or FileHandle)"
      : "a file descriptor, a FileHandle or an OpenFile";
    throw invalid(TypeError, what, "file", expected, file);
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
  const bad = (expected: string) => invalid(RangeError, what, "flags", expected, flags);
  if (typeof flags !== "number") {
    throw invalid(TypeError, what, "flags", "a number of LockFlags", flags);
  }
  if (!Number.isInteger(flags) || flags <= 0 || (flags & ~15) !== 0) {
    throw bad("a combination of LockFlags");
  }
  if (flags & UNBLOCK) {
    if (flags !== UNBLOCK) throw bad("UNBLOCK alone to unlock");
    return { unlock: true, exclusive: false, wait: false };
  }
  if ((flags & SHARED) && (flags & EXCLUSIVE)) throw bad("SHARED or EXCLUSIVE, not both");
  return { unlock: false, exclusive: (flags & SHARED) === 0, wait: (flags & NON_BLOCKING) === 0 };
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
 * import { AlreadyLocked, type FsFileLike, lock, LockFlags, unlock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { open } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * // Deno locks only its own files (Deno.open); Bun and Node lock a node:fs
 * // FileHandle or descriptor.
 * const { Deno: deno } = globalThis as {
 *   Deno?: { open(path: string, options: object): Promise<FsFileLike> };
 * };
 * const openFile = async (path: string) =>
 *   deno ? await deno.open(path, { create: true, write: true }) : await open(path, "a");
 *
 * const dir = mkdtempSync(join(tmpdir(), "lock-fn-"));
 * try {
 *   const path = join(dir, "data.lock");
 *   const first = await openFile(path);
 *   const second = await openFile(path);
 *   await lock(first, LockFlags.EXCLUSIVE);
 *   await assert.rejects(lock(second, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING), AlreadyLocked);
 *   await unlock(first);
 *   await lock(second, LockFlags.NON_BLOCKING);
 *   await first.close();
 *   await second.close();
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
  if (!op.wait) throw refusal(raw.path, {});
  await lockWait(raw, op.exclusive);
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
 * import { AlreadyLocked, type FsFileLike, LockFlags, lockSync, unlockSync } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * // Deno locks only its own files (Deno.openSync); Bun and Node lock a
 * // node:fs descriptor (or FileHandle).
 * const { Deno: deno } = globalThis as {
 *   Deno?: { openSync(path: string, options: object): FsFileLike };
 * };
 * const openFile = (path: string) =>
 *   deno ? deno.openSync(path, { create: true, write: true }) : openSync(path, "a");
 * const closeFile = (file: FsFileLike | number) =>
 *   typeof file === "number" ? closeSync(file) : file.close();
 *
 * const dir = mkdtempSync(join(tmpdir(), "lock-sync-"));
 * try {
 *   const path = join(dir, "data.lock");
 *   const a = openFile(path);
 *   const b = openFile(path);
 *   try {
 *     lockSync(a, LockFlags.SHARED);
 *     lockSync(b, LockFlags.SHARED | LockFlags.NON_BLOCKING);
 *     assert.throws(() => lockSync(a, LockFlags.LOCK_EX | LockFlags.LOCK_NB), AlreadyLocked);
 *     unlockSync(b);
 *     lockSync(a, LockFlags.LOCK_EX | LockFlags.LOCK_NB);
 *   } finally {
 *     closeFile(a);
 *     closeFile(b);
 *   }
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
  if (!op.wait) throw refusal(raw.path, {});
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
 * import { AlreadyLocked, type FsFileLike, lock, LockFlags, unlock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { open } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * // Deno locks only its own files (Deno.open); Bun and Node lock a node:fs
 * // FileHandle or descriptor.
 * const { Deno: deno } = globalThis as {
 *   Deno?: { open(path: string, options: object): Promise<FsFileLike> };
 * };
 * const openFile = async (path: string) =>
 *   deno ? await deno.open(path, { create: true, write: true }) : await open(path, "a");
 *
 * const dir = mkdtempSync(join(tmpdir(), "unlock-"));
 * try {
 *   const path = join(dir, "a.lock");
 *   const file = await openFile(path);
 *   const other = await openFile(path);
 *   try {
 *     const tryOther = () => lock(other, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING);
 *     await lock(file, LockFlags.EXCLUSIVE);
 *     await assert.rejects(tryOther(), AlreadyLocked);
 *     await unlock(file);
 *     await assert.doesNotReject(tryOther());
 *   } finally {
 *     await file.close();
 *     await other.close();
 *   }
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
 * import { AlreadyLocked, type FsFileLike, LockFlags, lockSync, unlockSync } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * // Deno locks only its own files (Deno.openSync); Bun and Node lock a
 * // node:fs descriptor (or FileHandle).
 * const { Deno: deno } = globalThis as {
 *   Deno?: { openSync(path: string, options: object): FsFileLike };
 * };
 * const openFile = (path: string) =>
 *   deno ? deno.openSync(path, { create: true, write: true }) : openSync(path, "a");
 * const closeFile = (file: FsFileLike | number) =>
 *   typeof file === "number" ? closeSync(file) : file.close();
 *
 * const dir = mkdtempSync(join(tmpdir(), "unlock-sync-"));
 * try {
 *   const path = join(dir, "a.lock");
 *   const file = openFile(path);
 *   const other = openFile(path);
 *   try {
 *     const tryOther = () => lockSync(other, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING);
 *     lockSync(file, LockFlags.EXCLUSIVE);
 *     assert.throws(tryOther, AlreadyLocked);
 *     unlockSync(file);
 *     assert.doesNotThrow(tryOther);
 *   } finally {
 *     closeFile(file);
 *     closeFile(other);
 *   }
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function unlockSync(file: LockTarget): void {
  rt.unlockSync(targetOf(file, "unlock"));
}
