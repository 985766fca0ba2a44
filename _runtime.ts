// The one place that knows which runtime this is. filestore.ts, lock.ts and
// lockfile.ts call the `rt` object below and never ask; the Deno
// implementation is in _deno.ts, the Bun and Node one in _node.ts. Both are
// imported (an ES module cannot choose its imports without a top-level
// await, which CommonJS bundles refuse), so neither imports a node: module:
// _node.ts takes them when nodeRuntime() runs, never on Deno, where the
// first node: module costs 15-23 ms.
import { denoRuntime } from "./_deno.ts";
import { nodeRuntime } from "./_node.ts";
import { flockHoldersOf } from "./_proc_locks.ts";

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
  /**
   * Fail with ELOOP rather than follow a symbolic link at the path, and do
   * not wait at a FIFO; honoured where `Runtime.noFollow` says so.
   */
  noFollow?: boolean;
  /** Refuse a file with more than one name (hard link): it is about to be overwritten (_open.ts). */
  single?: boolean;
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
  /** The owner's user id (0 where the platform has none). */
  uid: number;
  /** The type and permission bits, as stat(2)'s `st_mode` (0 where the platform has none). */
  mode: number;
}

/** An open file of the runtime: a numeric descriptor, or Deno's file object in `file`. */
export interface RawFile {
  readonly path: string;
  readonly fd: number;
  readonly file: unknown;
}

/** A flock call blocked off the JavaScript thread. */
export interface BlockedWait {
  /** Resolves once the lock is held; rejects with the call's error. */
  granted: Promise<void>;
  /**
   * Gives the wait up. From then on the file belongs to the wait, which
   * drops any lock it got and closes the file once the blocked call
   * returns; resolves then. Undefined if the call has already returned:
   * the caller still owns the file, and with it any lock the call got.
   */
  abandon(): Promise<void> | undefined;
}

/** The file operations and locks that the public modules need. */
export interface Runtime {
  readonly name: RuntimeName;
  /** Whether `open` honours `OpenFlags.noFollow` (O_NOFOLLOW); elsewhere _open.ts checks. */
  readonly noFollow: boolean;
  /**
   * Whether a child process can be handed one of this process's open files
   * (and so hold its lock): not on Deno, whose child processes get only the
   * standard streams.
   */
  readonly passesFiles: boolean;
  /** The effective user id, or undefined where there is none (Windows) or it may not be read. */
  uid(): number | undefined;
  readlinkSync(path: string): string;
  /** The path with every link and `.`/`..` resolved. */
  realPathSync(path: string): string;
  /** A whole file as UTF-8 text, for the small files of /proc. */
  readTextSync(path: string): string;
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
   * Starts a blocking lock call that does not block the JavaScript thread
   * (see _wait.ts). `abandonable` says whether it may be given up: where
   * it may not, work that only serves `abandon()` is skipped.
   */
  startWait(f: RawFile, exclusive: boolean, abandonable: boolean): BlockedWait;
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
  /** The names of the regular files in a directory: no links, directories, FIFOs. */
  readFilesSync(path: string): string[];
  readFiles(path: string): Promise<string[]>;
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

/** What each runtime's implementation supplies; the rest is built on it below. */
export type Impl = Omit<Runtime, "flockHolders" | "fsyncDirSync" | "fsyncDir">;

/** The running runtime's name. */
export const runtimeName: RuntimeName = detect();

/** Whether this is Windows, where a backslash separates paths too. */
export const onWindows: boolean = runtimeName === "deno"
  // Deno builds its `process` when first touched, at the Node layer's cost.
  ? (globalThis as { Deno?: { build?: { os?: string } } }).Deno?.build?.os === "windows"
  : (globalThis as { process?: { platform?: string } }).process?.platform === "win32";

const impl: Impl = runtimeName === "deno" ? denoRuntime() : nodeRuntime(runtimeName);

/** The running runtime's operations, chosen once. */
export const rt: Runtime = {
  ...impl,
  flockHolders: (f) => flockHoldersOf(impl.fstatSync(f), f.path),
  fsyncDirSync(path) {
    const dir = impl.openSync(path, { read: true });
    try {
      impl.fsyncSync(dir);
    } finally {
      impl.closeSync(dir);
    }
  },
  async fsyncDir(path) {
    const dir = await impl.open(path, { read: true });
    try {
      await impl.fsync(dir);
    } finally {
      impl.closeSync(dir);
    }
  },
};

/** Closes `f`, ignoring a failure: for error paths, where the first error is the one to report. */
export function closeQuietly(f: RawFile): void {
  try {
    rt.closeSync(f);
  } catch { /* the error that got us here matters more */ }
}

/** Removes `path`, ignoring a failure: for error paths and leftovers. */
export function unlinkQuietly(path: string): void {
  try {
    rt.unlinkSync(path);
  } catch { /* already gone, or the error that got us here matters more */ }
}
