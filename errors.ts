/**
 * Errors that this package throws for failed file-system operations, the
 * same classes on Deno, Bun and Node, so that one `catch` handles them on
 * every runtime.
 *
 * ```ts
 * import { NotFound } from "@filestore/filestore/errors";
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 *
 * const store = new FileStore("/nonexistent/store");
 * assert.throws(() => store.listSync("new"), NotFound);
 * ```
 *
 * @module
 */

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
