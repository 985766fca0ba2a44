// Who holds a lock on a file, for programs and the command line.
import { checkPath } from "./_check.ts";
import { flockEntriesOf, processOf } from "./_proc_locks.ts";
import { rt } from "./_runtime.ts";

/** A process that holds a `flock(2)` lock on a file, as {@link lockHolders} found it. */
export interface LockHolderProcess {
  /** Its process id, as this process's pid namespace numbers it. */
  pid: number;
  /** Whether it holds a shared lock; otherwise it holds the exclusive one. */
  shared: boolean;
  /** Its command line, arguments joined by spaces; absent when /proc would not tell. */
  command?: string;
  /**
   * When the process started; absent when /proc would not tell. The lock
   * itself may be younger: the kernel does not say when it was taken.
   */
  startedAt?: Date;
}

/**
 * Lists every process that holds a `flock(2)` lock on the file at `path`,
 * with whether the lock is shared, the process's command line and when it
 * started, read from Linux's `/proc/locks` without taking any lock. The
 * locks of this package, util-linux `flock(1)`, Python's `fcntl.flock` and
 * portalocker are all found, since they are all `flock(2)` locks (POSIX
 * `fcntl` record locks are not). The answer is a snapshot: it can be out of
 * date as soon as it returns. A symbolic link at `path` is followed: this
 * only reads.
 *
 * @param path The locked file.
 * @returns The holders, empty when nobody holds a lock; `undefined` when
 * the system cannot tell: there is no readable `/proc/locks` (not Linux, or
 * Deno without `--allow-all`, which it needs for `/proc/locks`), or it lists
 * nobody while this process runs in a pid namespace (a container) whose view
 * may leave holders out.
 * @throws {NotFound} There is no file at `path`.
 * @throws {PermissionDenied} A directory on the way may not be searched.
 * @throws {TypeError} `path` is not a string.
 * @throws {RangeError} `path` is empty or holds a NUL.
 *
 * @example Usage
 * ```ts
 * import { Lock, lockHolders } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import process from "node:process";
 *
 * const dir = mkdtempSync(join(tmpdir(), "holders-"));
 * try {
 *   const path = join(dir, "job.lock");
 *   await using lock = new Lock(path);
 *   await lock.acquire();
 *   const holders = lockHolders(path);
 *   if (holders !== undefined) { // undefined where /proc/locks cannot be read
 *     assert.equal(holders.length, 1);
 *     assert.equal(holders[0]?.pid, process.pid);
 *     assert.equal(holders[0]?.shared, false);
 *   }
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function lockHolders(path: string): LockHolderProcess[] | undefined {
  const info = rt.statSync(checkPath(path, "list lock holders"));
  return flockEntriesOf(info, path)?.map((entry) => ({ ...entry, ...processOf(entry.pid) }));
}
