// The lock classes that differ from Lock in what they do once the file is
// locked and before it is unlocked: RLock counts, TemporaryFileLock removes
// its file, PidFileLock writes the holder's pid.
import {
  type AcquireOptions,
  type Kind,
  Lock,
  type LockOptions,
  onLockAcquired,
  OPEN_FLAGS,
  plainKind,
  setLockKind,
} from "./_lock.ts";
import type { OpenFile } from "./_file.ts";
import { type RawFile, rt } from "./_runtime.ts";
import { openFile } from "./_open.ts";
import { runSync, settled } from "./_steps.ts";
import { LockException, NotFound } from "./errors.ts";

// Whether `path` still names the file that `raw` holds open (lstat: a link
// put in its place is not it).
function stillAt(raw: RawFile, path: string): boolean {
  const held = rt.fstatSync(raw);
  try {
    const now = rt.lstatSync(path);
    return now.ino === held.ino && now.dev === held.dev;
  } catch (e) {
    if (e instanceof NotFound) return false;
    throw e;
  }
}

const temporaryKind: Kind = {
  ...plainKind,
  check: stillAt,
  leave(raw, path) {
    // Unlinked while still locked, so that whoever locks the old inode next
    // sees it is gone (check) and starts again on a new file; and only if
    // the path still names the file held: a file put in its place since is
    // somebody else's.
    if (!stillAt(raw, path)) return;
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
      const raw = runSync(openFile(path, { read: true }));
      try {
        const buf = new Uint8Array(32);
        const n = rt.readSync(raw, buf, 0);
        const text = new TextDecoder().decode(buf.subarray(0, n)).trim();
        return /^\d+$/.test(text) ? { pid: Number(text) } : {};
      } finally {
        rt.closeSync(raw);
      }
    } catch {
      return {};
    }
  },
};

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
  #file: OpenFile | undefined;

  /**
   * Makes a re-entrant lock on `path`; see {@link Lock}.
   *
   * @param path The file to lock.
   * @param options The mode, the waiting rules and whether it is shared.
   * @throws {TypeError} `path` is not a string, or an option has the wrong type.
   * @throws {RangeError} `path` is empty, or an option is out of range.
   */
  constructor(path: string, options: LockOptions = {}) {
    super(path, options);
    // Counted as the acquire completes, so that a release in between sees it.
    onLockAcquired(this, (file) => {
      if (file === this.#file) {
        this.#count++;
      } else {
        this.#file = file;
        this.#count = 1;
      }
    });
  }

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
  override acquire(overrides?: AcquireOptions): Promise<OpenFile> {
    return super.acquire(overrides);
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
    setLockKind(this, temporaryKind);
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
    setLockKind(this, pidKind);
  }
}
