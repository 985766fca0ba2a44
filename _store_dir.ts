// What keeps a FileStore inside its own files: the store's directory must
// be one that nobody else can rearrange, its areas real directories, and
// files move between areas without ever replacing one or following a link.
import { linkVerified, openFile, sameFile, unlinkIfSame } from "./_open.ts";
import { closeQuietly, type FileInfo, rt, unlinkQuietly } from "./_runtime.ts";
import { step, type Steps } from "./_steps.ts";
import {
  AlreadyExists,
  FsError,
  NotADirectory,
  NotAFile,
  NotCapable,
  NotFound,
  PermissionDenied,
} from "./errors.ts";

const STICKY = 0o1000;
const WRITABLE_BY_OTHERS = 0o022;
const WRITABLE_BY_OTHER_USERS = 0o002;

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8)}`;
}

// Whether `info`, a directory on the way to the store or the store itself,
// is safe from others: theirs to rename entries in only if it is ours or
// root's and nobody else may write it (or it is sticky, as /tmp is, so
// that nobody else may rename what is ours in it).
function unsafeDirectory(info: FileInfo, uid: number | undefined): string | undefined {
  if (uid !== undefined && info.uid !== uid && info.uid !== 0) {
    return `it belongs to uid ${info.uid}, who could replace what is in it with links; it must be this user's (uid ${uid}) or root's`;
  }
  if ((info.mode & WRITABLE_BY_OTHERS) !== 0 && (info.mode & STICKY) === 0) {
    return `its mode ${
      octal(info.mode)
    } lets group or others replace what is in it with links: remove their write permission (chmod go-w) or set the sticky bit`;
  }
  return undefined;
}

/**
 * Checks the store's directory and every directory on the way to it: each
 * must be this user's or root's, and not writable by group or others
 * unless it is sticky (as /tmp is). Whoever can write one of them can
 * replace the store, or an area, with a link to any directory of ours at
 * any time, which no later check could catch. A link on the way (such as
 * /var/run) must be this user's or root's, and the directories it leads to
 * are checked the same way. Then each area that exists must be a real
 * directory of this user's or root's that others (beyond the group) cannot
 * write. Throws `PermissionDenied` or `NotAFile` naming what it found;
 * returns false if the store's directory does not exist yet (what exists
 * on the way is checked all the same).
 */
export function* checkStore(path: string, areas: readonly string[]): Steps<boolean> {
  const what = "use as a store";
  const uid = rt.uid();
  const pending = path.split("/").filter((part) => part !== "");
  let at = "";
  let hops = 0;
  // "/" first, then each component; a link is replaced by its target.
  for (let i = -1; i < pending.length; i++) {
    const current = i < 0 ? "/" : `${at}/${pending[i]}`;
    let info: FileInfo;
    try {
      info = yield* step("lstat", current);
    } catch (e) {
      if (e instanceof NotFound || e instanceof NotADirectory) return false;
      // Deno with --allow-read of the store alone may not look at the
      // directories above it: what it may not see, it cannot check (the
      // README's permissions table says so). The store itself it must see.
      if (e instanceof NotCapable && i < pending.length - 1) {
        at = i < 0 ? "" : current;
        continue;
      }
      throw e;
    }
    if (info.isSymlink) {
      if (uid !== undefined && info.uid !== uid && info.uid !== 0) {
        throw new PermissionDenied(
          "EPERM",
          what,
          current,
          `the link on the way belongs to uid ${info.uid}, who could point it elsewhere`,
        );
      }
      if (++hops > 40) throw new FsError("ELOOP", what, path, "too many links on the way");
      const target = yield* step("readlink", current);
      const rest = pending.slice(i + 1);
      const base = target.startsWith("/") ? target : `${at}/${target}`;
      pending.splice(0, pending.length, ...base.split("/").filter((p) => p !== ""), ...rest);
      at = "";
      i = -2;
      continue;
    }
    // Not a directory: no store can be there, and every operation will say so.
    if (!info.isDirectory) return false;
    const why = unsafeDirectory(info, uid);
    if (why !== undefined) throw new PermissionDenied("EPERM", what, current, why);
    at = i < 0 ? "" : current;
  }
  for (const area of areas) yield* checkArea(`${path}/${area}`, uid, false);
  return true;
}

// An area must be a real directory of this user's or root's that others
// (beyond the group) cannot write. Returns false if it does not exist.
function* checkArea(areaPath: string, uid: number | undefined, required: boolean): Steps<boolean> {
  const what = "use as a store";
  let info: FileInfo;
  try {
    info = yield* step("lstat", areaPath);
  } catch (e) {
    if (e instanceof NotFound && !required) return false;
    throw e;
  }
  if (info.isSymlink) {
    throw new NotAFile(
      "ELOOP",
      what,
      areaPath,
      "the area is a symbolic link, which is never followed",
    );
  }
  if (!info.isDirectory) {
    throw new FsError("ENOTDIR", what, areaPath, "the area is not a directory");
  }
  if (uid !== undefined && info.uid !== uid && info.uid !== 0) {
    throw new PermissionDenied(
      "EPERM",
      what,
      areaPath,
      `the area belongs to uid ${info.uid}, who could replace it with a link; it must be this user's (uid ${uid}) or root's`,
    );
  }
  if ((info.mode & WRITABLE_BY_OTHER_USERS) !== 0) {
    throw new PermissionDenied(
      "EPERM",
      what,
      areaPath,
      `its mode ${
        octal(info.mode)
      } lets anybody put and rearrange files in the area: remove others' write permission (chmod o-w); a group may write it`,
    );
  }
  return true;
}

// Extra areas already made and checked, in this process. Whoever could
// swap one for a link later can write the store's directory, which
// checkStore() allows to nobody but this user and root.
const usable = new Set<string>();

/**
 * Makes sure the extra area `name` of the store at `store` (for finished
 * or failed work) exists and passes the checks of the three areas.
 */
export function* useArea(store: string, name: string): Steps<void> {
  const areaPath = `${store}/${name}`;
  if (usable.has(areaPath)) return;
  try {
    yield* step("mkdir", areaPath, false);
  } catch (e) {
    if (!(e instanceof AlreadyExists)) throw e;
  }
  yield* checkArea(areaPath, rt.uid(), true);
  if (usable.size > 1000) usable.clear();
  usable.add(areaPath);
}

/**
 * Moves `from` to `to` without ever replacing a file at `to`: link(2),
 * which refuses an existing target, then unlink(2). The move is done when
 * the link is made; a crash before the unlink leaves the file under both
 * names, which the next move of it finishes. Throws `AlreadyExists` when
 * another file has the name `to`.
 *
 * @returns `true` when this call made the move; `false` when the same
 * file was at `to` already (another mover linked it, and may have died
 * before its unlink), and this call only removed `from`.
 */
export function* moveNoReplace(from: string, to: string): Steps<boolean> {
  // A file moved onto its own name stays where it is (link would say
  // EEXIST for the same file, which the branch below takes for another
  // mover's finished work and unlinks).
  if (from === to) return true;
  // A target that is there at the link and gone at the look that follows
  // (another consumer took it meanwhile) is tried again.
  for (let attempt = 0;; attempt++) {
    try {
      yield* step("link", from, to);
      break;
    } catch (e) {
      if (!(e instanceof AlreadyExists)) throw e;
    }
    // Either another mover got there first with this same file (finish
    // its move), or a different file has the name.
    let source: FileInfo;
    try {
      source = yield* step("lstat", from);
    } catch (e) {
      if (e instanceof NotFound) {
        throw new NotFound("ENOENT", "rename", from, "no such file or directory");
      }
      throw e;
    }
    let target: FileInfo;
    try {
      target = yield* step("lstat", to);
    } catch (e) {
      if (e instanceof NotFound && attempt < 3) continue;
      throw e;
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
    return false;
  }
  try {
    yield* step("unlink", from);
  } catch (e) {
    // Another mover finished this move for us.
    if (!(e instanceof NotFound)) throw e;
  }
  return true;
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
  let identity: FileInfo | undefined;
  try {
    const copy = yield* step("open", staging, { write: true, createNew: true, mode });
    try {
      identity = yield* step("fstat", copy);
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
    if (identity !== undefined) yield* unlinkIfSame(staging, identity);
    throw e;
  } finally {
    closeQuietly(source);
  }
  try {
    yield* linkVerified(staging, to, identity!);
  } finally {
    yield* unlinkIfSame(staging, identity!);
  }
}
