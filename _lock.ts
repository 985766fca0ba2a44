// Lock, the file lock that lock.ts exports, and what the other lock classes
// share with it: the waiting rules, the held file, the open-and-try step.
import {
  checkBoolean,
  checkChoice,
  checkNumber,
  checkOptions,
  checkPath,
  checkSignal,
  heldBy,
  invalid,
} from "./_check.ts";
import { OpenFile, wrapFile } from "./_file.ts";
import { closeQuietly, type OpenFlags, type RawFile, rt } from "./_runtime.ts";
import { openFile } from "./_open.ts";
import { runSync, settled } from "./_steps.ts";
import { MAX_TIMER, share, waitForLock, type WaitRules } from "./_wait.ts";
import { AlreadyLocked, type LockHolder } from "./errors.ts";

/** How {@link Lock} opens its file. */
export type LockMode = "a" | "w" | "r+" | "r";

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
   * before), `"r+"` opens an existing file for reading and writing at
   * its start, and `"r"` opens an existing file for reading only, as
   * util-linux `flock(1)` does with a lock file it may not write.
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

/** The waiting rules of a lock or semaphore, checked. */
export interface Settings extends WaitRules {
  checkInterval: number;
}

/** The waiting rules when no option says otherwise. */
export const DEFAULTS: Settings = {
  timeout: Infinity,
  checkInterval: 50,
  failWhenLocked: false,
  signal: undefined,
};

/** Reads the waiting rules from `o` over `base`, each option once. */
export function settingsOf(base: Settings, o: AcquireOptions | undefined, what: string): Settings {
  if (checkOptions(o, what) === undefined) return base;
  const { timeout, checkInterval, failWhenLocked, signal } = o!;
  return {
    timeout: checkNumber(timeout, what, "timeout", "a number of milliseconds >= 0", { min: 0 }) ??
      base.timeout,
    checkInterval: checkNumber(
      checkInterval,
      what,
      "checkInterval",
      "a number of milliseconds above 0 and below 2^31",
      { above: 0, max: MAX_TIMER },
    ) ?? base.checkInterval,
    failWhenLocked: checkBoolean(failWhenLocked, what, "failWhenLocked") ?? base.failWhenLocked,
    signal: checkSignal(signal, what) ?? base.signal,
  };
}

// Opens `path` and takes the lock if nobody holds a conflicting one; on
// failure, the file is closed.
export function openAndTry(
  path: string,
  flags: OpenFlags,
  exclusive: boolean,
): { raw: RawFile; held: boolean } {
  const raw = runSync(openFile(path, flags));
  try {
    return { raw, held: rt.tryLockSync(raw, exclusive) };
  } catch (e) {
    closeQuietly(raw);
    throw e;
  }
}

// What sets the lock classes apart: how the file is opened, and what is
// done once it is locked and before it is unlocked.
export interface Kind {
  flags(mode: LockMode): OpenFlags;
  /** False when the path no longer names the locked file: try again. */
  check?(raw: RawFile, path: string): boolean;
  ready(raw: RawFile, mode: LockMode): void;
  leave?(raw: RawFile, path: string): void;
  holder?(path: string): LockHolder;
}

const MODES: readonly LockMode[] = ["a", "w", "r+", "r"];

/** How each mode opens the file. */
export const OPEN_FLAGS: Record<LockMode, OpenFlags> = {
  "a": { read: true, append: true, create: true },
  "w": { read: true, write: true, create: true, single: true },
  "r+": { read: true, write: true },
  "r": { read: true },
};

/** A plain lock: the file stays when released. */
export const plainKind: Kind = {
  flags: (mode) => OPEN_FLAGS[mode],
  ready(raw, mode) {
    if (mode === "w") rt.truncateSync(raw, 0);
  },
};

// The file that a Lock or BoundedSemaphore instance holds locked; closing
// its handle gives it up just as releasing does.
export class Held {
  raw: RawFile | undefined;
  file: OpenFile | undefined;

  // The handle for `raw`, not yet held. A waiter makes it before it waits:
  // in a fresh process the first handle costs tens of microseconds of cold
  // code, which would otherwise fall between the kernel's grant and the
  // acquire resolving.
  handle(raw: RawFile): OpenFile {
    return wrapFile(raw, () => {
      if (this.raw === raw) {
        this.raw = undefined;
        this.file = undefined;
      }
    });
  }

  // Holds the locked `raw`: the handle that an acquire resolves to.
  hold(raw: RawFile, file: OpenFile = this.handle(raw)): OpenFile {
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

let setKind!: (lock: Lock, kind: Kind) => void;

let setHook!: (lock: Lock, hook: (file: OpenFile) => void) => void;

/** Makes `lock` a lock of another kind: for the subclasses, right after `super()`. */
export function setLockKind(lock: Lock, kind: Kind): void {
  setKind(lock, kind);
}

/** Calls `hook` with the handle each time an acquire of `lock` succeeds (RLock counts so). */
export function onLockAcquired(lock: Lock, hook: (file: OpenFile) => void): void {
  setHook(lock, hook);
}

/** The refusal of a lock at `path`, naming the holder where known. */
export function refusal(path: string, holder: LockHolder, waited?: number): AlreadyLocked {
  const after = waited === undefined ? "" : ` (gave up after ${waited} ms)`;
  return new AlreadyLocked(`Cannot lock '${path}': ${heldBy(holder)}${after}`, { ...holder, path });
}

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
  #onAcquired: ((file: OpenFile) => void) | undefined;

  static {
    setKind = (lock, kind) => {
      lock.#kind = kind;
    };
    setHook = (lock, hook) => {
      lock.#onAcquired = hook;
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
    const what = `create ${this.#name}`;
    this.#path = checkPath(path, what);
    this.#settings = settingsOf(DEFAULTS, options, what);
    const { mode = "a", shared = false } = options;
    this.#mode = checkChoice(mode, what, "mode", MODES);
    if (checkBoolean(shared, what, "shared") && mode === "w") {
      const expected =
        `"a", "r+" or "r" when 'shared' is true ("w" truncates, which needs an exclusive lock)`;
      throw invalid(RangeError, what, "mode", expected, mode);
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
   * @throws {NotFound} The directory does not exist, or the file with mode `"r+"` or `"r"`.
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
    if (this.#held.file !== undefined) return this.#counted(this.#held.file);
    const s = settingsOf(this.#settings, overrides, `acquire ${this.#name}`);
    if (s.signal?.aborted) throw s.signal.reason;
    if (this.#pending !== undefined) {
      const shared = await share(
        this.#pending,
        s,
        (waited) => refusal(this.#path, this.#holder(), waited),
      );
      return this.#counted(shared);
    }
    const first = this.#attempt();
    if (first instanceof OpenFile) return this.#counted(first);
    this.#pending = this.#wait(s, performance.now(), first);
    try {
      return this.#counted(await this.#pending);
    } finally {
      this.#pending = undefined;
    }
  }

  // Tells the subclass's hook (RLock's count) of each successful acquire,
  // in the same turn as the acquire completes, before anyone can release.
  #counted(file: OpenFile): OpenFile {
    this.#onAcquired?.(file);
    return file;
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
        throw refusal(this.#path, this.#holder());
      }
      const handle = this.#held.handle(raw);
      const outcome = await waitForLock(raw, this.#exclusive, s.timeout - waited, s.signal);
      if (outcome === "aborted") throw s.signal!.reason;
      if (outcome === "timeout") {
        throw refusal(this.#path, this.#holder(), s.timeout);
      }
      const file = this.#take(raw, handle);
      if (file !== undefined) return file;
      raw = undefined;
    }
  }

  #holder(): LockHolder {
    return this.#kind.holder?.(this.#path) ?? {};
  }

  // Opens the file and takes the lock if it is free: the handle if taken,
  // the open file if somebody holds the lock, or undefined if the path no
  // longer names the file it locked (try again).
  #attempt(): OpenFile | RawFile | undefined {
    const { raw, held } = openAndTry(this.#path, this.#kind.flags(this.#mode), this.#exclusive);
    return held ? this.#take(raw) : raw;
  }

  // Finishes an acquire on a locked `raw`, with its `handle` if made already:
  // undefined (and `raw` closed) when the path no longer names the locked file.
  #take(raw: RawFile, handle?: OpenFile): OpenFile | undefined {
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
    return this.#held.hold(raw, handle);
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
