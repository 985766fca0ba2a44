/**
 * The errors this package throws, the same classes on Deno, Bun and Node:
 * {@link FsError} and its subclasses for failed file-system operations, and
 * one family for locks that somebody else holds ({@link LockException},
 * {@link AlreadyLocked}, {@link LockError}), so that one `catch` handles
 * every refusal on every runtime; {@link FfiUnavailable} when Node can take no
 * file lock at all.
 *
 * ```ts
 * import { AlreadyLocked, NotFound } from "@filestore/filestore/errors";
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 *
 * const store = new FileStore("/nonexistent/store");
 * assert.throws(() => store.listSync("new"), NotFound);
 * const refusal = new AlreadyLocked("Cannot lock '/tmp/x': held by pid 42", { pid: 42 });
 * assert.equal(refusal.pid, 42);
 * ```
 *
 * @module
 */
import { heldBy } from "./_check.ts";

/**
 * A file-system operation failed. `code` is the POSIX error name (`ENOENT`,
 * `EACCES`, ...) and `path` the file it concerned. Subclasses exist for the
 * conditions callers most often handle.
 *
 * @example Usage
 * ```ts
 * import { FsError } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new FsError("EIO", "open", "/tmp/x", "input/output error");
 * assert.equal(error.message, "Cannot open '/tmp/x': input/output error");
 * assert.equal(error.code, "EIO");
 * ```
 */
export class FsError extends Error {
  /** The POSIX error name, such as `ENOENT`. */
  readonly code: string;
  /** The operation that failed, such as `open` or `rename`. */
  readonly syscall: string;
  /** The path the operation concerned. */
  readonly path: string;

  /**
   * Creates an error for a failed operation.
   *
   * @param code The POSIX error name.
   * @param syscall The operation that failed.
   * @param path The path it concerned.
   * @param detail What went wrong, in words.
   * @param options The underlying error as `cause`.
   */
  constructor(
    code: string,
    syscall: string,
    path: string,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`Cannot ${syscall} '${path}': ${detail}`, options);
    this.name = new.target.name;
    this.code = code;
    this.syscall = syscall;
    this.path = path;
  }
}

/**
 * The path, or a directory on the way to it, does not exist (`ENOENT`).
 *
 * @example Usage
 * ```ts
 * import { FsError, NotFound } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new NotFound("ENOENT", "open", "/tmp/x", "no such file or directory");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class NotFound extends FsError {}

/**
 * The path already exists (`EEXIST`).
 *
 * @example Usage
 * ```ts
 * import { AlreadyExists, FsError } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new AlreadyExists("EEXIST", "link", "/tmp/x", "file exists");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class AlreadyExists extends FsError {}

/**
 * The process may not do this to the path (`EACCES`, `EPERM`, `EROFS`).
 *
 * @example Usage
 * ```ts
 * import { FsError, PermissionDenied } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new PermissionDenied("EACCES", "open", "/tmp/x", "permission denied");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class PermissionDenied extends FsError {}

/**
 * The runtime's sandbox, not the operating system, refused the operation:
 * Deno without the permission it needs (`--allow-read`, `--allow-write`,
 * ...), where Deno throws `Deno.errors.NotCapable`. The code is
 * `ENOTCAPABLE`; the message ends with Deno's own, which names the flag to
 * add. It is a {@link PermissionDenied}, so code that handles any refusal
 * keeps working, and code that tells them apart checks for this class
 * first. A refusal by the operating system (file modes, a read-only file
 * system) stays a plain `PermissionDenied` with `EACCES`, `EPERM` or `EROFS`.
 *
 * @example Usage
 * ```ts
 * import { NotCapable, PermissionDenied } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new NotCapable(
 *   "ENOTCAPABLE",
 *   "open",
 *   "/etc/app.lock",
 *   "not allowed by the runtime's permissions: run again with the --allow-write flag",
 * );
 * assert.ok(error instanceof PermissionDenied);
 * assert.equal(error.code, "ENOTCAPABLE");
 * ```
 */
export class NotCapable extends PermissionDenied {}

/**
 * A file was expected but the path is a directory (`EISDIR`).
 *
 * @example Usage
 * ```ts
 * import { FsError, IsADirectory } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new IsADirectory("EISDIR", "open", "/tmp", "is a directory");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class IsADirectory extends FsError {}

/**
 * A directory was expected on the way to the path, but a file is there
 * (`ENOTDIR`).
 *
 * @example Usage
 * ```ts
 * import { FsError, NotADirectory } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new NotADirectory("ENOTDIR", "open", "/etc/passwd/x", "not a directory");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class NotADirectory extends FsError {}

/**
 * The path is not a regular file where the package needs one, or has other
 * names that it would write through: a symbolic link (`ELOOP`: the package
 * never follows a link at a path it locks or stores), a FIFO, a device or a
 * socket (`EFTYPE`), or a file with more than one hard link that it was about
 * to truncate or overwrite (`EMLINK`). Nothing was changed.
 *
 * @example Usage
 * ```ts
 * import { FsError, NotAFile } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new NotAFile("ELOOP", "open", "/tmp/x.lock", "it is a symbolic link");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class NotAFile extends FsError {}

/**
 * The file system is full, or the user's quota is used up (`ENOSPC`,
 * `EDQUOT`, `EFBIG`).
 *
 * @example Usage
 * ```ts
 * import { FsError, NoSpace } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new NoSpace("ENOSPC", "write", "/tmp/x", "no space left on device");
 * assert.ok(error instanceof FsError);
 * ```
 */
export class NoSpace extends FsError {}

/** Who holds a lock, as far as known. */
export interface LockHolder {
  /** The holder's process id, if known. */
  pid?: number | undefined;
  /** The holder's host name, if known. */
  hostname?: string | undefined;
}

/**
 * The base class of the lock errors: portalocker's name. A refusal because
 * somebody else holds the lock is an {@link AlreadyLocked}; other lock
 * errors (releasing an `RLock` that is not acquired) are plain
 * `LockException`s. File-system failures are {@link FsError}s instead.
 *
 * @example Usage
 * ```ts
 * import { LockException } from "@filestore/filestore/errors";
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

/** Options of {@link AlreadyLocked}: who holds the lock, where known. */
export interface AlreadyLockedOptions extends ErrorOptions, LockHolder {
  /** The same as `pid`, under portalocker's name; `pid` wins when both are given. */
  holderPid?: number | undefined;
  /** The path of the lock that was refused, where there is one. */
  path?: string | undefined;
}

/**
 * Somebody else holds the lock: every refusal in the package is one (a
 * non-blocking attempt, `failWhenLocked`, a `timeout` that ran out, a full
 * semaphore, a held {@link LockError lock file}). `pid` and `hostname` name
 * the holder where the lock file says who it is, and are `undefined`
 * otherwise.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, LockException } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new AlreadyLocked("Cannot lock '/tmp/x': held by pid 42", { pid: 42 });
 * assert.ok(error instanceof LockException);
 * assert.equal(error.pid, 42);
 * assert.equal(error.holderPid, 42);
 * ```
 */
export class AlreadyLocked extends LockException {
  /** The holder's process id, or `undefined` if unknown. */
  readonly pid: number | undefined;
  /** The holder's host name, or `undefined` if unknown. */
  readonly hostname: string | undefined;
  /** The refused lock's path, or `undefined` where there is none (a semaphore). */
  readonly path: string | undefined;

  /**
   * Creates the error.
   *
   * @param message What was refused.
   * @param options The holder where known, the path, and `cause`.
   */
  constructor(message: string, options?: AlreadyLockedOptions) {
    super(message, options);
    this.pid = options?.pid ?? options?.holderPid;
    this.hostname = options?.hostname;
    this.path = options?.path;
  }

  /** The same as `pid`, under portalocker's name. */
  get holderPid(): number | undefined {
    return this.pid;
  }
}

/**
 * A lock file is held by somebody else: zc.lockfile's name, thrown by
 * `LockFile` and `SimpleLockFile`. It is an {@link AlreadyLocked}, so one
 * `catch` serves every lock in the package; `pid` and `hostname` are what
 * the lock file says.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, LockError } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new LockError("/run/app.lock", { pid: 42, hostname: "db1" });
 * assert.equal(error.message, "Cannot lock '/run/app.lock': held by pid 42 on host 'db1'");
 * assert.ok(error instanceof AlreadyLocked);
 * ```
 */
export class LockError extends AlreadyLocked {
  /** The lock file's path. */
  declare readonly path: string;

  /**
   * Creates the error for a lock file held by `holder`.
   *
   * @param path The lock file's path.
   * @param holder Who holds it, as far as known.
   * @param options The underlying error as `cause`, if any.
   */
  constructor(path: string, holder: LockHolder = {}, options?: ErrorOptions) {
    super(`Cannot lock '${path}': ${heldBy(holder)}`, {
      ...options,
      pid: holder.pid,
      hostname: holder.hostname,
      path,
    });
  }
}

/**
 * Why Node cannot lock files: {@link FfiUnavailable.reason}.
 *
 * - `"none"`: Node 22 or 24 (no `node:ffi`) and the npm package `koffi` was
 *   not found.
 * - `"denied"`: Node's permission model (`--permission`) refuses the FFI:
 *   `node:ffi` needs `--allow-ffi` (Node 26), koffi needs `--allow-addons`.
 * - `"unusable"`: `node:ffi` is there but failed the package's check, and
 *   koffi was not found.
 */
export type FfiUnavailableReason = "none" | "denied" | "unusable";

const ffiAdvice: Record<FfiUnavailableReason, string> = {
  none: "it has no node:ffi (Node 26 and newer) and the npm package 'koffi' was not found: " +
    "run 'npm install koffi'",
  denied: "the permission model refuses the FFI: run Node with --allow-ffi (node:ffi, Node 26 " +
    "and newer) or --allow-addons (koffi)",
  unusable: "its node:ffi failed a check and the npm package 'koffi' was not found: " +
    "run 'npm install koffi'",
};

/**
 * Node has no way to call `flock(2)` here. Bun and Deno never throw it.
 * Node 26 and newer use the built-in `node:ffi`; Node 22 and 24 need the npm
 * package `koffi`, looked up from the package, then from the main script
 * (a bundle), then from the working directory. It is thrown by the first
 * call that takes, tests or releases a lock (`Lock.acquire()`, the
 * `LockFile` constructor, `lock()`, `FileStore.claim()`, ...), not when a
 * module is imported, and again by every later one.
 *
 * @example Usage
 * ```ts
 * import { FfiUnavailable } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const error = new FfiUnavailable("none");
 * assert.equal(error.code, "ERR_NO_FFI");
 * assert.match(error.message, /npm install koffi/);
 * ```
 */
export class FfiUnavailable extends Error {
  /** Always `"ERR_NO_FFI"`, for code that tells errors apart by `code`. */
  readonly code: "ERR_NO_FFI" = "ERR_NO_FFI";
  /** Why no FFI could be used. */
  readonly reason: FfiUnavailableReason;

  /**
   * Creates the error.
   *
   * @param reason Why no FFI could be used.
   * @param options What the FFI's loading threw, as `cause`.
   */
  constructor(reason: FfiUnavailableReason, options?: ErrorOptions) {
    const version = (globalThis as { process?: { version?: string } }).process?.version;
    super(`Cannot lock files on Node ${version ?? ""}: ${ffiAdvice[reason]}`, options);
    this.name = new.target.name;
    this.reason = reason;
  }
}
