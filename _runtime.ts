// The one place that knows which runtime this is. filestore.ts, lock.ts and
// lockfile.ts call the `rt` object below and never ask.
import * as fs from "node:fs";
import * as os from "node:os";
import {
  AlreadyExists,
  FsError,
  IsADirectory,
  NoSpace,
  NotADirectory,
  NotFound,
  PermissionDenied,
} from "./errors.ts";
import {
  type BlockedWait,
  flockSync,
  flockWait,
  getNative,
  LOCK_EX,
  LOCK_NB,
  LOCK_SH,
  LOCK_UN,
  warmWaiter,
} from "./_flock.ts";

/** Which runtime runs this code. */
export type RuntimeName = "deno" | "bun" | "node";

// Deno and Bun both present `process`, so they are asked first.
function detect(): RuntimeName {
  const g = globalThis as { Deno?: { version?: unknown }; Bun?: unknown };
  if (typeof g.Deno?.version === "object") return "deno";
  if (typeof g.Bun !== "undefined") return "bun";
  return "node";
}

/** How to open a file: the usual open(2) flags, spelled out. */
export interface OpenFlags {
  read?: boolean;
  write?: boolean;
  append?: boolean;
  create?: boolean;
  /** Create, failing if the file exists (O_CREAT | O_EXCL). */
  createNew?: boolean;
  truncate?: boolean;
  /** Permission bits for a created file. */
  mode?: number;
}

/**
 * What stat(2) says about a file, the same on every runtime.
 *
 * @example Usage
 * ```ts
 * import { Lock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "info-"));
 * try {
 *   await using lock = new Lock(join(dir, "x.lock"));
 *   const file = await lock.acquire();
 *   const info = file.statSync();
 *   assert.ok(info.isFile);
 *   assert.equal(info.size, 0);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export interface FileInfo {
  /** A regular file. */
  isFile: boolean;
  /** A directory. */
  isDirectory: boolean;
  /** A symbolic link (only from an lstat). */
  isSymlink: boolean;
  /** The size in bytes. */
  size: number;
  /** The last modification, in milliseconds since the epoch. */
  mtimeMs: number;
  /** The inode number; with `dev`, it names the file. */
  ino: number;
  /** The device the file is on. */
  dev: number;
  /** The number of hard links to the file. */
  nlink: number;
}

/** An open file of the runtime: a `Deno.FsFile` or a numeric descriptor. */
export interface RawFile {
  readonly path: string;
  readonly fd: number;
  readonly file: Deno.FsFile | undefined;
}

const details: Record<
  string,
  [new (...a: ConstructorParameters<typeof FsError>) => FsError, string]
> = {
  ENOENT: [NotFound, "no such file or directory"],
  EEXIST: [AlreadyExists, "file exists"],
  EACCES: [PermissionDenied, "permission denied"],
  EPERM: [PermissionDenied, "operation not permitted"],
  EROFS: [PermissionDenied, "read-only file system"],
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

const denoNames: Record<string, string> = {
  NotFound: "ENOENT",
  AlreadyExists: "EEXIST",
  PermissionDenied: "EACCES",
  NotCapable: "EACCES",
  IsADirectory: "EISDIR",
  NotADirectory: "ENOTDIR",
  FilesystemLoop: "ELOOP",
  FileTooLarge: "EFBIG",
};

/** Turns a runtime's error into this package's error classes. */
export function mapError(error: unknown, syscall: string, path: string): unknown {
  if (error instanceof FsError || !(error instanceof Error)) return error;
  const e = error as Error & { code?: unknown };
  const code = typeof e.code === "string" && e.code.startsWith("E") ? e.code : denoNames[e.name];
  if (code === undefined) return error;
  const [Class, text] = details[code] ?? [FsError, e.message];
  return new Class(code, syscall, path, text, { cause: error });
}

/** An error for a failed flock call, from its errno. */
export function flockError(errno: number, path: string): FsError {
  const name = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ??
    `errno ${errno}`;
  const [Class, text] = details[name] ?? [FsError, `flock failed with ${name}`];
  return new Class(name, "lock", path, text);
}

function wrap<A extends unknown[], R>(syscall: string, fn: (path: string, ...a: A) => R) {
  return (path: string, ...a: A): R => {
    try {
      return fn(path, ...a);
    } catch (e) {
      throw mapError(e, syscall, path);
    }
  };
}

function wrapAsync<A extends unknown[], R>(
  syscall: string,
  fn: (path: string, ...a: A) => Promise<R>,
) {
  return async (path: string, ...a: A): Promise<R> => {
    try {
      return await fn(path, ...a);
    } catch (e) {
      throw mapError(e, syscall, path);
    }
  };
}

/** The file operations and locks that the public modules need. */
export interface Runtime {
  readonly name: RuntimeName;
  readonly pid: number;
  hostname(): string;
  openSync(path: string, flags: OpenFlags): RawFile;
  open(path: string, flags: OpenFlags): Promise<RawFile>;
  readSync(f: RawFile, buf: Uint8Array, position?: number): number;
  read(f: RawFile, buf: Uint8Array, position?: number): Promise<number>;
  writeSync(f: RawFile, data: Uint8Array, position?: number): number;
  write(f: RawFile, data: Uint8Array, position?: number): Promise<number>;
  truncateSync(f: RawFile, length: number): void;
  truncate(f: RawFile, length: number): Promise<void>;
  fsyncSync(f: RawFile): void;
  fsync(f: RawFile): Promise<void>;
  fstatSync(f: RawFile): FileInfo;
  closeSync(f: RawFile): void;
  /** Takes the lock if nobody holds a conflicting one; false if somebody does. */
  tryLockSync(f: RawFile, exclusive: boolean): boolean;
  /** Blocks the thread until the lock is held. */
  lockSync(f: RawFile, exclusive: boolean): void;
  /** Readies what a later `lock()` wait needs, ahead of need; cheap to call again. */
  prepareWait(): void;
  /**
   * Waits without blocking the thread until the lock is held. If `signal`
   * aborts first, the promise rejects with its reason, and `f` is closed
   * (now, or as soon as the pending wait returns): the lock is never held
   * afterwards.
   */
  lock(f: RawFile, exclusive: boolean, signal?: AbortSignal): Promise<void>;
  unlockSync(f: RawFile): void;
  statSync(path: string): FileInfo;
  stat(path: string): Promise<FileInfo>;
  lstatSync(path: string): FileInfo;
  renameSync(from: string, to: string): void;
  rename(from: string, to: string): Promise<void>;
  linkSync(from: string, to: string): void;
  link(from: string, to: string): Promise<void>;
  unlinkSync(path: string): void;
  unlink(path: string): Promise<void>;
  mkdirSync(path: string, recursive: boolean): void;
  mkdir(path: string, recursive: boolean): Promise<void>;
  readDirSync(path: string): string[];
  readDir(path: string): Promise<string[]>;
  /** Copies a file; `exclusive` refuses an existing target. */
  copyFileSync(from: string, to: string, exclusive: boolean): void;
  copyFile(from: string, to: string, exclusive: boolean): Promise<void>;
  /** Flushes a directory's entries (after a rename or link into it). */
  fsyncDirSync(path: string): void;
  fsyncDir(path: string): Promise<void>;
  /** Wraps a file that the runtime itself handed out, or returns undefined. */
  adopt(value: unknown): RawFile | undefined;
  /**
   * The pids that hold a flock lock on the open file's inode, read from
   * Linux's /proc/locks without taking any lock; undefined where there is
   * no /proc/locks.
   */
  flockHolders(f: RawFile): number[] | undefined;
}

function infoFromNode(s: fs.Stats): FileInfo {
  return {
    isFile: s.isFile(),
    isDirectory: s.isDirectory(),
    isSymlink: s.isSymbolicLink(),
    size: s.size,
    mtimeMs: s.mtimeMs,
    ino: s.ino,
    dev: s.dev,
    nlink: s.nlink,
  };
}

function infoFromDeno(s: Deno.FileInfo): FileInfo {
  return {
    isFile: s.isFile,
    isDirectory: s.isDirectory,
    isSymlink: s.isSymlink,
    size: s.size,
    mtimeMs: s.mtime?.getTime() ?? 0,
    ino: s.ino ?? 0,
    dev: s.dev,
    nlink: s.nlink ?? 1,
  };
}

function denoRuntime(): Impl {
  const D = Deno;
  const file = (f: RawFile) => f.file!;
  const raw = (path: string, f: Deno.FsFile): RawFile => ({ path, fd: -1, file: f });
  const opts = (flags: OpenFlags): Deno.OpenOptions => {
    const o: Deno.OpenOptions = {
      read: flags.read ?? false,
      write: flags.write ?? false,
      append: flags.append ?? false,
      create: flags.create ?? false,
      createNew: flags.createNew ?? false,
      truncate: flags.truncate ?? false,
    };
    if (flags.mode !== undefined) o.mode = flags.mode;
    return o;
  };
  let hostname: string | undefined;
  return {
    name: "deno",
    pid: D.pid,
    hostname: () => hostname ??= D.hostname(),
    openSync: wrap("open", (path, flags: OpenFlags) => raw(path, D.openSync(path, opts(flags)))),
    open: wrapAsync(
      "open",
      async (path, flags: OpenFlags) => raw(path, await D.open(path, opts(flags))),
    ),
    readSync(f, buf, position) {
      try {
        if (position !== undefined) file(f).seekSync(position, D.SeekMode.Start);
        return file(f).readSync(buf) ?? 0;
      } catch (e) {
        throw mapError(e, "read", f.path);
      }
    },
    async read(f, buf, position) {
      try {
        if (position !== undefined) await file(f).seek(position, D.SeekMode.Start);
        return (await file(f).read(buf)) ?? 0;
      } catch (e) {
        throw mapError(e, "read", f.path);
      }
    },
    writeSync(f, data, position) {
      try {
        if (position !== undefined) file(f).seekSync(position, D.SeekMode.Start);
        let done = 0;
        while (done < data.length) done += file(f).writeSync(data.subarray(done));
        return done;
      } catch (e) {
        throw mapError(e, "write", f.path);
      }
    },
    async write(f, data, position) {
      try {
        if (position !== undefined) await file(f).seek(position, D.SeekMode.Start);
        let done = 0;
        while (done < data.length) done += await file(f).write(data.subarray(done));
        return done;
      } catch (e) {
        throw mapError(e, "write", f.path);
      }
    },
    truncateSync(f, length) {
      try {
        file(f).truncateSync(length);
      } catch (e) {
        throw mapError(e, "truncate", f.path);
      }
    },
    async truncate(f, length) {
      try {
        await file(f).truncate(length);
      } catch (e) {
        throw mapError(e, "truncate", f.path);
      }
    },
    fsyncSync(f) {
      try {
        file(f).syncSync();
      } catch (e) {
        throw mapError(e, "fsync", f.path);
      }
    },
    async fsync(f) {
      try {
        await file(f).sync();
      } catch (e) {
        throw mapError(e, "fsync", f.path);
      }
    },
    fstatSync(f) {
      try {
        return infoFromDeno(file(f).statSync());
      } catch (e) {
        throw mapError(e, "stat", f.path);
      }
    },
    closeSync(f) {
      try {
        file(f).close();
      } catch (e) {
        if (!(e instanceof D.errors.BadResource)) throw mapError(e, "close", f.path);
      }
    },
    tryLockSync(f, exclusive) {
      try {
        return file(f).tryLockSync(exclusive);
      } catch (e) {
        throw mapError(e, "lock", f.path);
      }
    },
    lockSync(f, exclusive) {
      try {
        file(f).lockSync(exclusive);
      } catch (e) {
        throw mapError(e, "lock", f.path);
      }
    },
    // Deno waits on its own blocking pool, which needs no preparing.
    prepareWait() {},
    startWait(f, exclusive) {
      const granted = file(f).lock(exclusive).catch((e) =>
        Promise.reject(mapError(e, "lock", f.path))
      );
      return {
        granted,
        abandon() {
          // Closing drops the resource: the descriptor closes, and with it
          // the lock, as soon as the pending call returns.
          try {
            file(f).close();
          } catch { /* already closed */ }
          return granted.then(() => {}, () => {});
        },
      };
    },
    unlockSync(f) {
      try {
        file(f).unlockSync();
      } catch (e) {
        throw mapError(e, "unlock", f.path);
      }
    },
    statSync: wrap("stat", (p) => infoFromDeno(D.statSync(p))),
    stat: wrapAsync("stat", async (p) => infoFromDeno(await D.stat(p))),
    lstatSync: wrap("stat", (p) => infoFromDeno(D.lstatSync(p))),
    renameSync: wrap("rename", (from, to: string) => D.renameSync(from, to)),
    rename: wrapAsync("rename", (from, to: string) => D.rename(from, to)),
    linkSync: wrap("link", (from, to: string) => D.linkSync(from, to)),
    link: wrapAsync("link", (from, to: string) => D.link(from, to)),
    // Deno.remove() would also remove an empty directory: node:fs's unlink
    // is unlink(2) in Deno too.
    unlinkSync: wrap("unlink", (p) => fs.unlinkSync(p)),
    unlink: wrapAsync("unlink", (p) => fs.promises.unlink(p)),
    mkdirSync: wrap("mkdir", (p, recursive: boolean) => D.mkdirSync(p, { recursive })),
    mkdir: wrapAsync("mkdir", (p, recursive: boolean) => D.mkdir(p, { recursive })),
    readDirSync: wrap("readdir", (p) => Array.from(D.readDirSync(p), (e) => e.name)),
    readDir: wrapAsync("readdir", async (p) => {
      const names: string[] = [];
      for await (const e of D.readDir(p)) names.push(e.name);
      return names;
    }),
    copyFileSync: wrap("copy", (from, to: string, exclusive: boolean) => {
      // Deno.copyFileSync always replaces, so an exclusive copy goes through
      // node:fs, which Deno implements with the same system calls.
      if (exclusive) fs.copyFileSync(from, to, fs.constants.COPYFILE_EXCL);
      else D.copyFileSync(from, to);
    }),
    copyFile: wrapAsync(
      "copy",
      (from, to: string, exclusive: boolean) =>
        exclusive
          ? fs.promises.copyFile(from, to, fs.constants.COPYFILE_EXCL)
          : D.copyFile(from, to),
    ),
    fsyncDirSync: wrap("fsync", (p) => {
      using dir = D.openSync(p, { read: true });
      dir.syncSync();
    }),
    fsyncDir: wrapAsync("fsync", async (p) => {
      using dir = await D.open(p, { read: true });
      await dir.sync();
    }),
    adopt(value) {
      return value instanceof D.FsFile ? raw("<Deno.FsFile>", value) : undefined;
    },
  };
}

function nodeRuntime(name: "bun" | "node"): Impl {
  const C = fs.constants;
  const flagBits = (f: OpenFlags): number =>
    (f.read && (f.write || f.append) ? C.O_RDWR : f.write || f.append ? C.O_WRONLY : C.O_RDONLY) |
    (f.create || f.createNew ? C.O_CREAT : 0) |
    (f.createNew ? C.O_EXCL : 0) |
    (f.truncate ? C.O_TRUNC : 0) |
    (f.append ? C.O_APPEND : 0);
  const raw = (path: string, fd: number): RawFile => ({ path, fd, file: undefined });
  const P = fs.promises;
  // Callback-style calls on a numeric descriptor, as promises.
  function call<R>(
    syscall: string,
    path: string,
    fn: (cb: (e: Error | null, r: R) => void) => void,
  ): Promise<R> {
    return new Promise<R>((resolve, reject) =>
      fn((e, r) => e ? reject(mapError(e, syscall, path)) : resolve(r))
    );
  }
  const fdOps =
    <A extends unknown[], R>(syscall: string, fn: (fd: number, ...a: A) => R) =>
    (f: RawFile, ...a: A): R => {
      try {
        return fn(f.fd, ...a);
      } catch (e) {
        throw mapError(e, syscall, f.path);
      }
    };
  const op = (exclusive: boolean) => exclusive ? LOCK_EX : LOCK_SH;
  let hostname: string | undefined;
  return {
    name,
    pid: process.pid,
    hostname: () => hostname ??= os.hostname(),
    openSync: wrap(
      "open",
      (path, flags: OpenFlags) =>
        raw(path, fs.openSync(path, flagBits(flags), flags.mode ?? 0o666)),
    ),
    open: (path, flags) =>
      call<number>("open", path, (cb) => fs.open(path, flagBits(flags), flags.mode ?? 0o666, cb))
        .then((
          fd,
        ) => raw(path, fd)),
    readSync: fdOps(
      "read",
      (fd, buf: Uint8Array, position?: number) =>
        fs.readSync(fd, buf, 0, buf.length, position ?? null),
    ),
    read: (f, buf, position) =>
      call("read", f.path, (cb) => fs.read(f.fd, buf, 0, buf.length, position ?? null, cb)),
    writeSync: fdOps("write", (fd, data: Uint8Array, position?: number) => {
      let done = 0;
      while (done < data.length) {
        done += fs.writeSync(
          fd,
          data,
          done,
          data.length - done,
          position === undefined ? null : position + done,
        );
      }
      return done;
    }),
    async write(f, data, position) {
      let done = 0;
      while (done < data.length) {
        const at = position === undefined ? null : position + done;
        done += await call<number>(
          "write",
          f.path,
          (cb) => fs.write(f.fd, data, done, data.length - done, at, cb),
        );
      }
      return done;
    },
    truncateSync: fdOps("truncate", (fd, length: number) => fs.ftruncateSync(fd, length)),
    truncate: (f, length) =>
      call("truncate", f.path, (cb) => fs.ftruncate(f.fd, length, (e) => cb(e, undefined))),
    fsyncSync: fdOps("fsync", (fd) => fs.fsyncSync(fd)),
    fsync: (f) => call("fsync", f.path, (cb) => fs.fsync(f.fd, (e) => cb(e, undefined))),
    fstatSync: fdOps("stat", (fd) => infoFromNode(fs.fstatSync(fd))),
    closeSync: fdOps("close", (fd) => fs.closeSync(fd)),
    tryLockSync(f, exclusive) {
      const errno = flockSync(f.fd, op(exclusive) | LOCK_NB);
      if (errno === 0) return true;
      if (errno === getNative().EWOULDBLOCK) return false;
      throw flockError(errno, f.path);
    },
    lockSync(f, exclusive) {
      const errno = flockSync(f.fd, op(exclusive));
      if (errno !== 0) throw flockError(errno, f.path);
    },
    prepareWait: warmWaiter,
    startWait(f, exclusive) {
      return flockWait(f.fd, op(exclusive), (errno) => flockError(errno, f.path), () => {
        flockSync(f.fd, LOCK_UN);
        fs.closeSync(f.fd);
      });
    },
    unlockSync(f) {
      const errno = flockSync(f.fd, LOCK_UN);
      if (errno !== 0) throw flockError(errno, f.path);
    },
    statSync: wrap("stat", (p) => infoFromNode(fs.statSync(p))),
    stat: wrapAsync("stat", async (p) => infoFromNode(await P.stat(p))),
    lstatSync: wrap("stat", (p) => infoFromNode(fs.lstatSync(p))),
    renameSync: wrap("rename", (from, to: string) => fs.renameSync(from, to)),
    rename: wrapAsync("rename", (from, to: string) => P.rename(from, to)),
    linkSync: wrap("link", (from, to: string) => fs.linkSync(from, to)),
    link: wrapAsync("link", (from, to: string) => P.link(from, to)),
    unlinkSync: wrap("unlink", (p) => fs.unlinkSync(p)),
    unlink: wrapAsync("unlink", (p) => P.unlink(p)),
    mkdirSync: wrap("mkdir", (p, recursive: boolean) => void fs.mkdirSync(p, { recursive })),
    mkdir: wrapAsync(
      "mkdir",
      async (p, recursive: boolean) => void await P.mkdir(p, { recursive }),
    ),
    readDirSync: wrap("readdir", (p) => fs.readdirSync(p)),
    readDir: wrapAsync("readdir", (p) => P.readdir(p)),
    copyFileSync: wrap(
      "copy",
      (from, to: string, exclusive: boolean) =>
        fs.copyFileSync(from, to, exclusive ? C.COPYFILE_EXCL : 0),
    ),
    copyFile: wrapAsync(
      "copy",
      (from, to: string, exclusive: boolean) =>
        P.copyFile(from, to, exclusive ? C.COPYFILE_EXCL : 0),
    ),
    fsyncDirSync: wrap("fsync", (p) => {
      const fd = fs.openSync(p, C.O_RDONLY);
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }),
    fsyncDir: wrapAsync("fsync", async (p) => {
      const h = await P.open(p, C.O_RDONLY);
      try {
        await h.sync();
      } finally {
        await h.close();
      }
    }),
    adopt(value) {
      if (typeof value === "number" && Number.isInteger(value) && value >= 0) {
        return raw(`<fd ${value}>`, value);
      }
      if (
        value !== null && typeof value === "object" && "fd" in value && typeof value.fd === "number"
      ) {
        return raw(`<fd ${value.fd}>`, value.fd);
      }
      return undefined;
    },
  };
}

// /proc/locks names a file by its device, as "major:minor" in hex, and its
// inode; the kernel packs major and minor into st_dev as below. Lines with
// "->" are waiters, not holders. The kernel hands the table out a page per
// read, by position: when other locks come and go between two reads, a line
// can be skipped (seen here with two other test suites running). A held
// lock is not skipped three times in a row, so a lock found in none of three
// readings is taken to be free.
function flockHoldersOf(info: FileInfo): number[] | undefined {
  const dev = BigInt(info.dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  for (let reading = 0; reading < 3; reading++) {
    let table: string;
    try {
      table = fs.readFileSync("/proc/locks", "utf8");
    } catch {
      return undefined;
    }
    const pids: number[] = [];
    for (const line of table.split("\n")) {
      const m = /^\d+: FLOCK +\S+ +\S+ +(-?\d+) +([0-9a-f]+):([0-9a-f]+):(\d+) /.exec(line);
      if (
        m && BigInt(`0x${m[2]}`) === major && BigInt(`0x${m[3]}`) === minor &&
        Number(m[4]) === info.ino
      ) {
        pids.push(Number(m[1]));
      }
    }
    if (pids.length > 0) return pids;
  }
  return [];
}

/** What each runtime supplies; `lock` is built on `startWait` below. */
type Impl = Omit<Runtime, "lock" | "flockHolders"> & {
  /** Starts a blocking lock call that does not block the JavaScript thread. */
  startWait(f: RawFile, exclusive: boolean): BlockedWait;
};

// A given-up wait stays blocked in the kernel until the holder lets go, on
// a thread of its own. So that a caller retrying with short timeouts does
// not pile up one such thread per try, later waits on the same file wait
// for the given-up one to return (and drop its lock) instead of starting
// another; then they try again.
const abandoned = new Map<string, Promise<void>>();

function untilAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(signal.reason);
    if (signal.aborted) return abort();
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}

async function lockAbandonable(
  impl: Impl,
  f: RawFile,
  exclusive: boolean,
  signal: AbortSignal,
): Promise<void> {
  const gaveUp = (reason: unknown) => {
    impl.closeSync(f);
    return reason;
  };
  if (signal.aborted) throw gaveUp(signal.reason);
  const { dev, ino } = impl.fstatSync(f);
  const key = `${dev}:${ino}`;
  for (let earlier = abandoned.get(key); earlier; earlier = abandoned.get(key)) {
    try {
      await untilAbort(earlier, signal);
    } catch (reason) {
      throw gaveUp(reason);
    }
    if (impl.tryLockSync(f, exclusive)) return;
  }
  const wait = impl.startWait(f, exclusive);
  try {
    await untilAbort(wait.granted, signal);
  } catch (reason) {
    if (!signal.aborted || reason !== signal.reason) throw reason;
    const dropped = wait.abandon();
    if (dropped === undefined) {
      // The call returned just before the abort: this side owns the lock.
      try {
        impl.unlockSync(f);
      } finally {
        impl.closeSync(f);
      }
    } else {
      abandoned.set(key, dropped);
      void dropped.then(() => {
        if (abandoned.get(key) === dropped) abandoned.delete(key);
      });
    }
    throw reason;
  }
}

function withLock(impl: Impl): Runtime {
  return {
    ...impl,
    flockHolders: (f) => flockHoldersOf(impl.fstatSync(f)),
    lock(f, exclusive, signal) {
      if (signal) return lockAbandonable(impl, f, exclusive, signal);
      return impl.startWait(f, exclusive).granted;
    },
  };
}

/** Closes `f`, ignoring a failure: for error paths, where the first error is the one to report. */
export function closeQuietly(f: RawFile): void {
  try {
    rt.closeSync(f);
  } catch { /* the error that got us here matters more */ }
}

/** The running runtime's name. */
export const runtimeName: RuntimeName = detect();

/** The running runtime's operations, chosen once. */
export const rt: Runtime = withLock(
  runtimeName === "deno" ? denoRuntime() : nodeRuntime(runtimeName),
);
