// What keeps a FileStore inside its own files: the store's directory must
// be one that nobody else can rearrange, its areas real directories, and
// files move between areas without ever replacing one or following a link.
import { openFile } from "./_open.ts";
import { closeQuietly, type FileInfo, rt, unlinkQuietly } from "./_runtime.ts";
import { step, type Steps } from "./_steps.ts";
import {
  AlreadyExists,
  FsError,
  NotADirectory,
  NotAFile,
  NotFound,
  PermissionDenied,
} from "./errors.ts";

const STICKY = 0o1000;
const WRITABLE_BY_OTHERS = 0o022;

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8)}`;
}

/**
 * Checks the store's directory: a real directory (not a link), owned by
 * this user or root, that group and others cannot write (unless it is
 * sticky, as /tmp is: then they cannot rename what is ours). Whoever can
 * write it can replace an area with a link to any directory of ours at any
 * time, which no later check could catch. Then each area that exists must
 * be a real directory. Throws `PermissionDenied` or `NotAFile` naming what
 * it found; returns false, having checked nothing, if there is no
 * directory yet.
 */
export function* checkStore(path: string, areas: readonly string[]): Steps<boolean> {
  let dir: FileInfo;
  try {
    dir = yield* step("lstat", path);
  } catch (e) {
    if (e instanceof NotFound || e instanceof NotADirectory) return false;
    throw e;
  }
  const what = "use as a store";
  if (dir.isSymlink) {
    throw new NotAFile("ELOOP", what, path, "it is a symbolic link; give the real directory");
  }
  if (!dir.isDirectory) throw new FsError("ENOTDIR", what, path, "not a directory");
  const uid = rt.uid;
  if (uid !== undefined) {
    if (dir.uid !== uid && dir.uid !== 0) {
      throw new PermissionDenied(
        "EPERM",
        what,
        path,
        `it belongs to uid ${dir.uid}, who could replace its areas with links; a store's directory must be this user's (uid ${uid}) or root's`,
      );
    }
    if ((dir.mode & WRITABLE_BY_OTHERS) !== 0 && (dir.mode & STICKY) === 0) {
      throw new PermissionDenied(
        "EPERM",
        what,
        path,
        `its mode ${
          octal(dir.mode)
        } lets group or others replace its areas with links: remove their write permission (chmod go-w) or set the sticky bit`,
      );
    }
  }
  for (const area of areas) {
    let info: FileInfo;
    try {
      info = yield* step("lstat", `${path}/${area}`);
    } catch (e) {
      if (e instanceof NotFound) continue;
      throw e;
    }
    if (info.isSymlink) {
      throw new NotAFile(
        "ELOOP",
        what,
        `${path}/${area}`,
        "the area is a symbolic link, which is never followed",
      );
    }
    if (!info.isDirectory) {
      throw new FsError("ENOTDIR", what, `${path}/${area}`, "the area is not a directory");
    }
  }
  return true;
}

function sameFile(a: FileInfo, b: FileInfo): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/**
 * Moves `from` to `to` without ever replacing a file at `to`: link(2),
 * which refuses an existing target, then unlink(2). The move is done when
 * the link is made; a crash before the unlink leaves the file under both
 * names, which the next move of it finishes. Throws `AlreadyExists` when
 * another file has the name `to`.
 */
export function* moveNoReplace(from: string, to: string): Steps<void> {
  try {
    yield* step("link", from, to);
  } catch (e) {
    if (!(e instanceof AlreadyExists)) throw e;
    // Either another mover got there first with this same file (finish its
    // move), or a different file has the name.
    let source: FileInfo;
    let target: FileInfo;
    try {
      source = yield* step("lstat", from);
      target = yield* step("lstat", to);
    } catch (e2) {
      if (e2 instanceof NotFound) {
        throw new NotFound("ENOENT", "rename", from, "no such file or directory");
      }
      throw e2;
    }
    if (!sameFile(source, target)) {
      throw new AlreadyExists(
        "EEXIST",
        "rename",
        from,
        `another file is already at '${to}': a name delivered twice is never replaced`,
      );
    }
    unlinkQuietly(from);
    throw new NotFound("ENOENT", "rename", from, "another process moved it first");
  }
  try {
    yield* step("unlink", from);
  } catch (e) {
    // Another mover finished this move for us.
    if (!(e instanceof NotFound)) throw e;
  }
}

/**
 * Copies the regular file `from` (never a link) to a new file `staging`,
 * then publishes it as `to` without replacing anything there.
 */
export function* copyNoReplace(
  from: string,
  staging: string,
  to: string,
  mode: number,
): Steps<void> {
  const source = yield* openFile(from, { read: true });
  try {
    const copy = yield* step("open", staging, { write: true, createNew: true, mode });
    try {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = yield* step("read", source, buffer);
        if (n === 0) break;
        yield* step("write", copy, buffer.subarray(0, n));
      }
    } finally {
      closeQuietly(copy);
    }
  } catch (e) {
    unlinkQuietly(staging);
    throw e;
  } finally {
    closeQuietly(source);
  }
  try {
    yield* step("link", staging, to);
  } finally {
    unlinkQuietly(staging);
  }
}
