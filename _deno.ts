// The runtime layer on Deno: its own file API, whose locks are BSD flock.
// Deno's types are described here by what is used, so that the package
// type-checks where the Deno namespace is unknown (a Node user's tsc).
// No node: module is used here: the first one a Deno process imports
// starts Deno's Node layer, which costs 15-23 ms (the whole of a CLI run).
import { mapError, onFile, onPath } from "./_fserror.ts";
import type { FileInfo, Impl, OpenFlags, RawFile } from "./_runtime.ts";

interface DenoInfo {
  isFile: boolean;
  isDirectory: boolean;
  isSymlink: boolean;
  size: number;
  mtime: Date | null;
  ino: number | null;
  dev: number;
  nlink: number | null;
  uid: number | null;
  mode: number | null;
}

interface DenoFile {
  read(p: Uint8Array): Promise<number | null>;
  readSync(p: Uint8Array): number | null;
  write(p: Uint8Array): Promise<number>;
  writeSync(p: Uint8Array): number;
  seek(offset: number, whence: number): Promise<number>;
  seekSync(offset: number, whence: number): number;
  truncate(len?: number): Promise<void>;
  truncateSync(len?: number): void;
  sync(): Promise<void>;
  syncSync(): void;
  statSync(): DenoInfo;
  lock(exclusive?: boolean): Promise<void>;
  lockSync(exclusive?: boolean): void;
  tryLockSync(exclusive?: boolean): boolean;
  unlockSync(): void;
  close(): void;
}

interface DenoOpenOptions {
  read: boolean;
  write: boolean;
  append: boolean;
  create: boolean;
  createNew: boolean;
  truncate: boolean;
  mode?: number;
}

interface DenoNamespace {
  pid: number;
  uid(): number | null;
  hostname(): string;
  open(path: string, o: DenoOpenOptions): Promise<DenoFile>;
  openSync(path: string, o: DenoOpenOptions): DenoFile;
  stat(path: string): Promise<DenoInfo>;
  statSync(path: string): DenoInfo;
  lstat(path: string): Promise<DenoInfo>;
  lstatSync(path: string): DenoInfo;
  rename(from: string, to: string): Promise<void>;
  renameSync(from: string, to: string): void;
  link(from: string, to: string): Promise<void>;
  linkSync(from: string, to: string): void;
  mkdir(path: string, o: { recursive: boolean }): Promise<void>;
  mkdirSync(path: string, o: { recursive: boolean }): void;
  readDir(path: string): AsyncIterable<{ name: string; isFile: boolean }>;
  readDirSync(path: string): Iterable<{ name: string; isFile: boolean }>;
  copyFile(from: string, to: string): Promise<void>;
  copyFileSync(from: string, to: string): void;
  readLinkSync(path: string): string;
  realPathSync(path: string): string;
  readTextFileSync(path: string): string;
  remove(path: string): Promise<void>;
  removeSync(path: string): void;
  chmod(path: string, mode: number): Promise<void>;
  chmodSync(path: string, mode: number): void;
  FsFile: abstract new (...a: never[]) => DenoFile;
  errors: { BadResource: abstract new (...a: never[]) => Error };
  internal: symbol;
}

// Deno's private core, used for one thing: a lock call that was given up
// must not keep the process alive. Deno cannot cancel its blocked flock
// call, but its event loop can stop waiting for the call's op (unref), as
// it does for an unref'd timer. The op's id is learnt by turning Deno's op
// leak tracing on for the one synchronous call that starts the op (only
// when nobody else has it on, so that `deno test --trace-leaks` keeps its
// own traces); turning it off again drops the trace. Every part is checked
// before use; where one is missing, a given-up wait keeps the process
// alive until the holder lets go, as it did before.
interface DenoCore {
  promiseIdSymbol: symbol;
  isLeakTracingEnabled(): boolean;
  setLeakTracingEnabled(on: boolean): void;
  getAllLeakTraces(): Map<unknown, unknown>;
  unrefOpPromise(promise: object): void;
  getLeakTraceForPromise(promise: object): unknown;
}

// The kind of trace Deno keeps for an async op (others: timers, intervals).
const ASYNC_OP_TRACE = 0;

function denoCore(D: DenoNamespace): DenoCore | undefined {
  try {
    const internal = (D as unknown as Record<symbol, { core?: Partial<DenoCore> } | undefined>)[
      D.internal
    ];
    const core = internal?.core;
    if (
      typeof core?.promiseIdSymbol === "symbol" &&
      typeof core.isLeakTracingEnabled === "function" &&
      typeof core.setLeakTracingEnabled === "function" &&
      typeof core.getAllLeakTraces === "function" &&
      typeof core.unrefOpPromise === "function" &&
      typeof core.getLeakTraceForPromise === "function"
    ) return core as DenoCore;
  } catch { /* no private core here */ }
  return undefined;
}

/**
 * Calls `start`, which must call `FsFile.prototype.lock` and nothing else
 * that starts an op, and returns its promise with a function that stops
 * the event loop from waiting for that op, or undefined where the op's id
 * cannot be learnt for sure.
 */
function startUnrefable<T>(
  core: DenoCore | undefined,
  start: () => Promise<T>,
): { promise: Promise<T>; unref: (() => void) | undefined } {
  // No code of the host's may run while tracing is on: Deno formats each
  // trace through Error.prepareStackTrace (and reads stackTraceLimit), and
  // an op started from there would be given the traced op's id. Where
  // either cannot be set aside and put back, the trick is not used.
  const hook = Object.getOwnPropertyDescriptor(Error, "prepareStackTrace");
  const limit = Object.getOwnPropertyDescriptor(Error, "stackTraceLimit");
  if (
    core === undefined || core.isLeakTracingEnabled() ||
    (hook !== undefined && !hook.configurable) ||
    (limit !== undefined && (!limit.configurable || !("value" in limit)))
  ) return { promise: start(), unref: undefined };
  const errorStatics = Error as { prepareStackTrace?: unknown; stackTraceLimit?: number };
  let id: number | undefined;
  let promise: Promise<T>;
  if (hook !== undefined) delete errorStatics.prepareStackTrace;
  errorStatics.stackTraceLimit = 10;
  core.setLeakTracingEnabled(true);
  try {
    promise = start();
    id = tracedLockOp(core);
  } finally {
    core.setLeakTracingEnabled(false);
    if (hook !== undefined) Object.defineProperty(Error, "prepareStackTrace", hook);
    if (limit !== undefined) Object.defineProperty(Error, "stackTraceLimit", limit);
    else delete errorStatics.stackTraceLimit;
  }
  if (id === undefined) return { promise, unref: undefined };
  const op = { [core.promiseIdSymbol]: id };
  return { promise, unref: () => core.unrefOpPromise(op) };
}

// The id of the one async op traced, if it is the op of FsFile.lock called
// from this module: Deno keys getAllLeakTraces() by the kind of trace, so
// two ops would look like one; ids are handed out one after another, so a
// second op in the window would have a traced neighbour. A wrapper around
// FsFile.lock (instrumentation, a test stub) fails the frame check.
function tracedLockOp(core: DenoCore): number | undefined {
  const traces = core.getAllLeakTraces();
  if (traces.size !== 1) return undefined;
  const id = Number(traces.get(ASYNC_OP_TRACE));
  if (!Number.isSafeInteger(id)) return undefined;
  const trace = (n: number) => core.getLeakTraceForPromise({ [core.promiseIdSymbol]: n });
  const frames = String(trace(id) ?? "").split("\n");
  if (
    trace(id - 1) !== undefined || trace(id + 1) !== undefined ||
    !/^\s*at FsFile\.lock \(ext:/.test(frames[1] ?? "") ||
    !(frames[2] ?? "").includes(import.meta.url)
  ) return undefined;
  return id;
}

const SEEK_START = 0;
const COPY_CHUNK = 64 * 1024;

// An error that the runtime layer's mapping turns into IsADirectory.
function isADirectory(): Error {
  return Object.assign(new Error("is a directory"), { code: "EISDIR" });
}

function infoFromDeno(s: DenoInfo): FileInfo {
  return {
    isFile: s.isFile,
    isDirectory: s.isDirectory,
    isSymlink: s.isSymlink,
    size: s.size,
    mtimeMs: s.mtime?.getTime() ?? 0,
    ino: s.ino ?? 0,
    dev: s.dev,
    nlink: s.nlink ?? 1,
    uid: s.uid ?? 0,
    mode: s.mode ?? 0,
  };
}

function denoOptions(flags: OpenFlags): DenoOpenOptions {
  const o: DenoOpenOptions = {
    read: flags.read ?? false,
    write: flags.write ?? false,
    append: flags.append ?? false,
    create: flags.create ?? false,
    createNew: flags.createNew ?? false,
    truncate: flags.truncate ?? false,
  };
  if (flags.mode !== undefined) o.mode = flags.mode;
  return o;
}

/** The runtime layer on Deno. */
export function denoRuntime(): Impl {
  const D = (globalThis as unknown as { Deno: DenoNamespace }).Deno;
  const file = (f: RawFile) => f.file as DenoFile;
  const raw = (path: string, f: DenoFile): RawFile => ({ path, fd: -1, file: f });
  let hostname: string | undefined;
  let uid: number | undefined | null = null;
  const core = denoCore(D);
  return {
    name: "deno",
    // Deno's open has no O_NOFOLLOW: _open.ts checks by lstat and fstat.
    noFollow: false,
    passesFiles: false,
    uid() {
      // Deno.uid() needs --allow-sys; /proc/self belongs to this process's
      // effective user too, and needs only --allow-read.
      if (uid === null) {
        try {
          uid = D.uid() ?? undefined;
        } catch {
          try {
            uid = D.statSync("/proc/self").uid ?? undefined;
          } catch {
            uid = undefined;
          }
        }
      }
      return uid;
    },
    readlinkSync: onPath("readlink", (p) => D.readLinkSync(p)),
    realPathSync: onPath("realpath", (p) => D.realPathSync(p)),
    readTextSync: onPath("read", (p) => D.readTextFileSync(p)),
    pid: D.pid,
    // Deno.hostname() needs --allow-sys; the kernel's own copy needs only
    // --allow-read.
    hostname() {
      if (hostname === undefined) {
        try {
          hostname = D.hostname();
        } catch {
          try {
            hostname = D.readTextFileSync("/proc/sys/kernel/hostname").trim();
          } catch {
            hostname = "localhost";
          }
        }
      }
      return hostname;
    },
    openSync: onPath(
      "open",
      (path, flags: OpenFlags) => raw(path, D.openSync(path, denoOptions(flags))),
    ),
    open: onPath(
      "open",
      async (path, flags: OpenFlags) => raw(path, await D.open(path, denoOptions(flags))),
    ),
    readSync: onFile("read", (f: RawFile, buf: Uint8Array, position?: number) => {
      if (position !== undefined) file(f).seekSync(position, SEEK_START);
      return file(f).readSync(buf) ?? 0;
    }),
    read: onFile("read", async (f: RawFile, buf: Uint8Array, position?: number) => {
      if (position !== undefined) await file(f).seek(position, SEEK_START);
      return (await file(f).read(buf)) ?? 0;
    }),
    writeSync: onFile("write", (f: RawFile, data: Uint8Array, position?: number) => {
      if (position !== undefined) file(f).seekSync(position, SEEK_START);
      let done = 0;
      while (done < data.length) done += file(f).writeSync(data.subarray(done));
      return done;
    }),
    write: onFile("write", async (f: RawFile, data: Uint8Array, position?: number) => {
      if (position !== undefined) await file(f).seek(position, SEEK_START);
      let done = 0;
      while (done < data.length) done += await file(f).write(data.subarray(done));
      return done;
    }),
    truncateSync: onFile("truncate", (f: RawFile, length: number) => file(f).truncateSync(length)),
    truncate: onFile("truncate", (f: RawFile, length: number) => file(f).truncate(length)),
    fsyncSync: onFile("fsync", (f: RawFile) => file(f).syncSync()),
    fsync: onFile("fsync", (f: RawFile) => file(f).sync()),
    fstatSync: onFile("stat", (f: RawFile) => infoFromDeno(file(f).statSync())),
    closeSync: onFile("close", (f: RawFile) => {
      try {
        file(f).close();
      } catch (e) {
        if (!(e instanceof D.errors.BadResource)) throw e;
      }
    }),
    tryLockSync: onFile("lock", (f: RawFile, exclusive: boolean) => file(f).tryLockSync(exclusive)),
    lockSync: onFile("lock", (f: RawFile, exclusive: boolean) => file(f).lockSync(exclusive)),
    // Deno waits on its own blocking pool, which needs no preparing.
    prepareWait() {},
    startWait(f, exclusive, abandonable) {
      // Only a wait that may be given up needs its op's id (tens of
      // microseconds: a stack trace is taken and read).
      const call = startUnrefable(abandonable ? core : undefined, () => file(f).lock(exclusive));
      const granted = call.promise.catch((e) => Promise.reject(mapError(e, "lock", f.path)));
      return {
        granted,
        abandon() {
          // The call stays blocked in the kernel, but no longer keeps the
          // process alive. Closing drops the resource: the descriptor
          // closes, and with it the lock, as soon as the pending call
          // returns.
          call.unref?.();
          try {
            file(f).close();
          } catch { /* already closed */ }
          return granted.then(() => {}, () => {});
        },
      };
    },
    unlockSync: onFile("unlock", (f: RawFile) => file(f).unlockSync()),
    statSync: onPath("stat", (p) => infoFromDeno(D.statSync(p))),
    stat: onPath("stat", async (p) => infoFromDeno(await D.stat(p))),
    lstatSync: onPath("stat", (p) => infoFromDeno(D.lstatSync(p))),
    renameSync: onPath("rename", (from, to: string) => D.renameSync(from, to)),
    rename: onPath("rename", (from, to: string) => D.rename(from, to)),
    linkSync: onPath("link", (from, to: string) => D.linkSync(from, to)),
    link: onPath("link", (from, to: string) => D.link(from, to)),
    // Deno.remove() would remove an empty directory: a directory is refused
    // here first, as unlink(2) refuses it on Bun and Node.
    unlinkSync: onPath("unlink", (p) => {
      if (D.lstatSync(p).isDirectory) throw isADirectory();
      D.removeSync(p);
    }),
    unlink: onPath("unlink", async (p) => {
      if ((await D.lstat(p)).isDirectory) throw isADirectory();
      await D.remove(p);
    }),
    mkdirSync: onPath("mkdir", (p, recursive: boolean) => D.mkdirSync(p, { recursive })),
    mkdir: onPath("mkdir", (p, recursive: boolean) => D.mkdir(p, { recursive })),
    readDirSync: onPath("readdir", (p) => Array.from(D.readDirSync(p), (e) => e.name)),
    readDir: onPath("readdir", async (p) => {
      const names: string[] = [];
      for await (const e of D.readDir(p)) names.push(e.name);
      return names;
    }),
    // Deno's entries carry the type, from an lstat where the listing lacks it.
    readFilesSync: onPath(
      "readdir",
      (p) => Array.from(D.readDirSync(p)).filter((e) => e.isFile).map((e) => e.name),
    ),
    readFiles: onPath("readdir", async (p) => {
      const names: string[] = [];
      for await (const e of D.readDir(p)) if (e.isFile) names.push(e.name);
      return names;
    }),
    // Deno.copyFile always replaces: an exclusive copy creates the target
    // with O_EXCL and copies into it, as COPYFILE_EXCL does, and removes
    // what it created if the copy fails.
    copyFileSync: onPath("copy", (from, to: string, exclusive: boolean) => {
      if (!exclusive) return D.copyFileSync(from, to);
      const src = D.openSync(from, denoOptions({ read: true }));
      try {
        const { mode } = src.statSync();
        const dst = D.openSync(to, denoOptions({ write: true, createNew: true }));
        try {
          const buf = new Uint8Array(COPY_CHUNK);
          for (let n; (n = src.readSync(buf)) !== null;) {
            for (let done = 0; done < n;) done += dst.writeSync(buf.subarray(done, n));
          }
          if (mode !== null) D.chmodSync(to, mode & 0o7777);
        } catch (e) {
          dst.close();
          try {
            D.removeSync(to);
          } catch { /* the copy's error matters more */ }
          throw e;
        }
        dst.close();
      } finally {
        src.close();
      }
    }),
    copyFile: onPath("copy", async (from, to: string, exclusive: boolean) => {
      if (!exclusive) return D.copyFile(from, to);
      const src = await D.open(from, denoOptions({ read: true }));
      try {
        const { mode } = src.statSync();
        const dst = await D.open(to, denoOptions({ write: true, createNew: true }));
        try {
          const buf = new Uint8Array(COPY_CHUNK);
          for (let n; (n = await src.read(buf)) !== null;) {
            for (let done = 0; done < n;) done += await dst.write(buf.subarray(done, n));
          }
          if (mode !== null) await D.chmod(to, mode & 0o7777);
        } catch (e) {
          dst.close();
          await D.remove(to).catch(() => {});
          throw e;
        }
        dst.close();
      } finally {
        src.close();
      }
    }),
    adopt(value) {
      return value instanceof D.FsFile ? raw("<Deno.FsFile>", value) : undefined;
    },
  };
}
