// The runtimes' file-system errors, turned into the package's classes, and
// the wrappers that every runtime operation goes through to get there.
import * as os from "node:os";
import {
  AlreadyExists,
  FsError,
  IsADirectory,
  NoSpace,
  NotADirectory,
  NotCapable,
  NotFound,
  PermissionDenied,
} from "./errors.ts";

const details: Record<
  string,
  [new (...a: ConstructorParameters<typeof FsError>) => FsError, string]
> = {
  ENOENT: [NotFound, "no such file or directory"],
  EEXIST: [AlreadyExists, "file exists"],
  EACCES: [PermissionDenied, "permission denied"],
  EPERM: [PermissionDenied, "operation not permitted"],
  EROFS: [PermissionDenied, "read-only file system"],
  // Deno's sandbox said no (Deno.errors.NotCapable); its message names the flag.
  ENOTCAPABLE: [NotCapable, "not allowed by the runtime's permissions"],
  EISDIR: [IsADirectory, "is a directory"],
  ENOTDIR: [NotADirectory, "not a directory"],
  ENOSPC: [NoSpace, "no space left on device"],
  EDQUOT: [NoSpace, "disk quota exceeded"],
  EFBIG: [NoSpace, "file too large"],
  ENAMETOOLONG: [FsError, "file name too long"],
  ELOOP: [FsError, "too many levels of symbolic links"],
  ENOTEMPTY: [FsError, "directory not empty"],
  EXDEV: [FsError, "cross-device link"],
  EBADF: [FsError, "bad file descriptor"],
  EMFILE: [FsError, "too many open files"],
  EIO: [FsError, "input/output error"],
};

// Deno's error classes that carry no errno name of their own.
const denoNames: Record<string, string> = {
  NotFound: "ENOENT",
  AlreadyExists: "EEXIST",
  PermissionDenied: "EACCES",
  NotCapable: "ENOTCAPABLE",
  IsADirectory: "EISDIR",
  NotADirectory: "ENOTDIR",
  FilesystemLoop: "ELOOP",
  FileTooLarge: "EFBIG",
};

// The flag that Deno's NotCapable message names ("Requires read access to
// "/x", run again with the --allow-read flag"), as advice.
function denoAdvice(message: string): string {
  const flag = /--allow-[a-z-]+/.exec(message)?.[0];
  return flag === undefined ? message : `run again with ${flag}`;
}

// The errno name of a plain Error whose message ends in "(os error N)", as
// Deno reports the errors it has no class for (EFBIG: "File too large (os
// error 27)").
function osErrorName(message: string): string | undefined {
  const n = /\(os error (\d+)\)/.exec(message)?.[1];
  if (n === undefined) return undefined;
  return Object.entries(os.constants.errno).find(([, v]) => v === Number(n))?.[0];
}

/** Turns a runtime's error into this package's error classes. */
export function mapError(error: unknown, syscall: string, path: string): unknown {
  if (error instanceof FsError || !(error instanceof Error)) return error;
  const e = error as Error & { code?: unknown };
  const code = typeof e.code === "string" && e.code.startsWith("E")
    ? e.code
    : denoNames[e.name] ?? osErrorName(e.message);
  if (code === undefined) return error;
  const [Class, text] = details[code] ?? [FsError, e.message];
  const detail = code === "ENOTCAPABLE" ? `${text}: ${denoAdvice(e.message)}` : text;
  return new Class(code, syscall, path, detail, { cause: error });
}

/** An error for a failed flock call, from its errno. */
export function flockError(errno: number, path: string): FsError {
  const name = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ??
    `errno ${errno}`;
  const [Class, text] = details[name] ?? [FsError, `flock failed with ${name}`];
  return new Class(name, "lock", path, text);
}

// `fn`, sync or async, with its errors mapped to the path that `where`
// finds in its first argument.
function guarded<A extends unknown[], R>(
  syscall: string,
  where: (first: A[0]) => string,
  fn: (...a: A) => R,
): (...a: A) => R {
  return (...a) => {
    try {
      const result = fn(...a);
      if (!(result instanceof Promise)) return result;
      return result.catch((e) => Promise.reject(mapError(e, syscall, where(a[0])))) as R;
    } catch (e) {
      throw mapError(e, syscall, where(a[0]));
    }
  };
}

/** `fn` on a path (its first argument), sync or async, with its errors mapped. */
export function onPath<A extends [string, ...unknown[]], R>(
  syscall: string,
  fn: (...a: A) => R,
): (...a: A) => R {
  return guarded(syscall, (path) => path, fn);
}

/** `fn` on an open file (its first argument), sync or async, with its errors mapped. */
export function onFile<A extends [{ readonly path: string }, ...unknown[]], R>(
  syscall: string,
  fn: (...a: A) => R,
): (...a: A) => R {
  return guarded(syscall, (f) => f.path, fn);
}
