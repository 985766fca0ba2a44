// The runtimes' file-system errors, turned into the package's classes, and
// the wrappers that every runtime operation goes through to get there.
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

// Errno numbers that Linux, macOS and the BSDs share, and Linux's own, for
// the errors in `details` that Deno may report with no class of its own.
const sharedErrnos: Record<number, string> = {
  5: "EIO",
  9: "EBADF",
  18: "EXDEV",
  24: "EMFILE",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
};
const linuxErrnos: Record<number, string> = {
  36: "ENAMETOOLONG",
  39: "ENOTEMPTY",
  40: "ELOOP",
  122: "EDQUOT",
};
const onLinux = (globalThis as { Deno?: { build: { os: string } } }).Deno?.build.os === "linux";

// The errno name of a plain Error whose message ends in "(os error N)", as
// Deno reports the errors it has no class for (EFBIG: "File too large (os
// error 27)").
function osErrorName(message: string): string | undefined {
  const n = Number(/\(os error (\d+)\)/.exec(message)?.[1]);
  return sharedErrnos[n] ?? (onLinux ? linuxErrnos[n] : undefined);
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

/** An error for a failed flock call, from its errno and the platform's errno numbers (node:os's `constants.errno`). */
export function flockError(
  errno: number,
  numbers: Readonly<Record<string, number>>,
  path: string,
): FsError {
  const name = Object.entries(numbers).find(([, n]) => n === errno)?.[0] ??
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
