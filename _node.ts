// The runtime layer on Bun and Node: node:fs for files, and BSD flock
// through an FFI (_flock.ts), since neither has a lock API of its own.
// Node's modules are taken when nodeRuntime() runs, not imported: Deno
// loads this file too (see _runtime.ts), and must not start its Node layer.
import type { Dirent, Stats } from "node:fs";
import { flockError as flockErrorOf, mapError, onFile, onPath } from "./_fserror.ts";
import {
  flockSync,
  flockWait,
  getNative,
  LOCK_EX,
  LOCK_NB,
  LOCK_SH,
  LOCK_UN,
  warmWaiter,
} from "./_flock.ts";
import type { FileInfo, Impl, OpenFlags, RawFile } from "./_runtime.ts";

function infoFromNode(s: Stats): FileInfo {
  return {
    isFile: s.isFile(),
    isDirectory: s.isDirectory(),
    isSymlink: s.isSymbolicLink(),
    size: s.size,
    mtimeMs: s.mtimeMs,
    ino: s.ino,
    dev: s.dev,
    nlink: s.nlink,
    uid: s.uid,
    mode: s.mode,
  };
}

// The regular files among a directory's entries. A file system that does
// not say an entry's type in the listing (every is*() false) gets an lstat.
function fileNames(dir: string, entries: Dirent[], lstatSync: (p: string) => Stats): string[] {
  const names: string[] = [];
  for (const e of entries) {
    if (e.isFile()) {
      names.push(e.name);
    } else if (
      !e.isDirectory() && !e.isSymbolicLink() && !e.isFIFO() && !e.isSocket() &&
      !e.isCharacterDevice() && !e.isBlockDevice()
    ) {
      try {
        if (lstatSync(`${dir}/${e.name}`).isFile()) names.push(e.name);
      } catch { /* gone meanwhile */ }
    }
  }
  return names;
}

/** The runtime layer on Bun and Node: node:fs, and flock through an FFI. */
export function nodeRuntime(name: "bun" | "node"): Impl {
  const fs = process.getBuiltinModule("node:fs");
  const os = process.getBuiltinModule("node:os");
  const flockError = (errno: number, path: string) => flockErrorOf(errno, os.constants.errno, path);
  const C = fs.constants;
  const flagBits = (f: OpenFlags): number =>
    (f.read && (f.write || f.append) ? C.O_RDWR : f.write || f.append ? C.O_WRONLY : C.O_RDONLY) |
    (f.create || f.createNew ? C.O_CREAT : 0) |
    (f.createNew ? C.O_EXCL : 0) |
    (f.truncate ? C.O_TRUNC : 0) |
    (f.append ? C.O_APPEND : 0) |
    (f.noFollow ? (C.O_NOFOLLOW ?? 0) | (C.O_NONBLOCK ?? 0) : 0);
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
  const fdOps = <A extends unknown[], R>(syscall: string, fn: (fd: number, ...a: A) => R) =>
    onFile(syscall, (f: RawFile, ...a: A) => fn(f.fd, ...a));
  const op = (exclusive: boolean) => exclusive ? LOCK_EX : LOCK_SH;
  let hostname: string | undefined;
  return {
    name,
    noFollow: C.O_NOFOLLOW !== undefined,
    passesFiles: true,
    uid: () => process.geteuid?.(),
    readlinkSync: onPath("readlink", (p) => fs.readlinkSync(p)),
    realPathSync: onPath("realpath", (p) => fs.realpathSync(p)),
    readTextSync: onPath("read", (p) => fs.readFileSync(p, "utf8")),
    pid: process.pid,
    hostname: () => hostname ??= os.hostname(),
    openSync: onPath(
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
    statSync: onPath("stat", (p) => infoFromNode(fs.statSync(p))),
    stat: onPath("stat", async (p) => infoFromNode(await P.stat(p))),
    lstatSync: onPath("stat", (p) => infoFromNode(fs.lstatSync(p))),
    renameSync: onPath("rename", (from, to: string) => fs.renameSync(from, to)),
    rename: onPath("rename", (from, to: string) => P.rename(from, to)),
    linkSync: onPath("link", (from, to: string) => fs.linkSync(from, to)),
    link: onPath("link", (from, to: string) => P.link(from, to)),
    unlinkSync: onPath("unlink", (p) => fs.unlinkSync(p)),
    unlink: onPath("unlink", (p) => P.unlink(p)),
    mkdirSync: onPath("mkdir", (p, recursive: boolean) => void fs.mkdirSync(p, { recursive })),
    mkdir: onPath(
      "mkdir",
      async (p, recursive: boolean) => void await P.mkdir(p, { recursive }),
    ),
    readDirSync: onPath("readdir", (p) => fs.readdirSync(p)),
    readFilesSync: onPath(
      "readdir",
      (p) => fileNames(p, fs.readdirSync(p, { withFileTypes: true }), fs.lstatSync),
    ),
    readFiles: onPath(
      "readdir",
      async (p) => fileNames(p, await P.readdir(p, { withFileTypes: true }), fs.lstatSync),
    ),
    readDir: onPath("readdir", (p) => P.readdir(p)),
    copyFileSync: onPath(
      "copy",
      (from, to: string, exclusive: boolean) =>
        fs.copyFileSync(from, to, exclusive ? C.COPYFILE_EXCL : 0),
    ),
    copyFile: onPath(
      "copy",
      (from, to: string, exclusive: boolean) =>
        P.copyFile(from, to, exclusive ? C.COPYFILE_EXCL : 0),
    ),
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
