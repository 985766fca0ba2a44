// Opening the files that the package locks and stores, never through a
// link that somebody else planted: where the runtime's open has O_NOFOLLOW
// (Bun, Node) it is used; elsewhere (Deno) the path is looked at with lstat
// before and the open file with fstat after, and a file is only created with
// O_EXCL, which refuses a link. Either way the result is a regular file, and
// it is truncated only once it is known to be that file, with no other name.
import { closeQuietly, type FileInfo, type OpenFlags, type RawFile, rt } from "./_runtime.ts";
import { step, type Steps } from "./_steps.ts";
import {
  AlreadyExists,
  FsError,
  IsADirectory,
  NotAFile,
  NotFound,
  PermissionDenied,
} from "./errors.ts";

function notAFile(path: string, info: FileInfo, syscall = "open"): FsError {
  if (info.isDirectory) return new IsADirectory("EISDIR", syscall, path, "is a directory");
  if (info.isSymlink) {
    return new NotAFile("ELOOP", syscall, path, "it is a symbolic link, which is never followed");
  }
  return new NotAFile(
    "EFTYPE",
    syscall,
    path,
    "it is not a regular file (a FIFO, device or socket)",
  );
}

/**
 * Refuses to overwrite a file that has other names: one of them may be a
 * hard link that somebody planted to a file of the caller's.
 */
function checkSingleName(raw: RawFile, info: FileInfo = rt.fstatSync(raw)): void {
  if (info.nlink > 1) {
    throw new NotAFile(
      "EMLINK",
      "write",
      raw.path,
      `it has ${info.nlink} hard links, and another name may belong to somebody else`,
    );
  }
}

// Deno's open cannot say O_NONBLOCK, and a read-only open of a FIFO that
// was swapped in after the lstat would wait for a writer for ever; opened
// for reading and writing, a FIFO does not wait (Linux). So a read-only
// open is tried that way first, and read-only only where writing is not
// allowed (then that wait remains possible: README, Security).
function* openExisting(path: string, flags: OpenFlags): Steps<RawFile> {
  const existing = { ...flags, create: false, createNew: false };
  if (flags.write || flags.append) return yield* step("open", path, existing);
  try {
    return yield* step("open", path, { ...existing, write: true });
  } catch (e) {
    if (!(e instanceof PermissionDenied)) throw e;
  }
  return yield* step("open", path, existing);
}

// Deno: lstat, then open without creating (or create with O_EXCL), then
// fstat; a path that changed in between is tried again. A file that must
// be new is created with O_EXCL straight away.
function* openChecked(path: string, flags: OpenFlags): Steps<[RawFile, FileInfo]> {
  if (flags.createNew) {
    // O_CREAT | O_EXCL refuses whatever stands at the path, a link too:
    // nothing to look at first (and no failed lstat, which costs Deno an
    // error object, for every new file).
    const raw = yield* step("open", path, { ...flags, create: false, createNew: true });
    return [raw, yield* step("fstat", raw)];
  }
  for (let attempt = 0; attempt < 16; attempt++) {
    let before: FileInfo | undefined;
    try {
      before = yield* step("lstat", path);
    } catch (e) {
      if (!(e instanceof NotFound)) throw e;
    }
    if (before === undefined) {
      if (!flags.create) throw new NotFound("ENOENT", "open", path, "no such file or directory");
      let raw: RawFile;
      try {
        raw = yield* step("open", path, { ...flags, create: false, createNew: true });
      } catch (e) {
        if (e instanceof AlreadyExists) continue;
        throw e;
      }
      return [raw, yield* step("fstat", raw)];
    }
    if (!before.isFile) throw notAFile(path, before);
    let raw: RawFile;
    try {
      raw = yield* openExisting(path, flags);
    } catch (e) {
      if (e instanceof NotFound) continue;
      throw e;
    }
    const now = yield* step("fstat", raw);
    if (now.dev === before.dev && now.ino === before.ino) return [raw, now];
    closeQuietly(raw);
  }
  throw new FsError("EAGAIN", "open", path, "it kept changing while it was being opened");
}

/**
 * Opens `path` as `flags` say, refusing a symbolic link at the path and
 * anything that is not a regular file; `truncate` empties the file only
 * after that check. With `single` or `truncate`, a file with other names
 * (hard links) is refused too: it is about to be overwritten.
 */
export function* openFile(path: string, flags: OpenFlags): Steps<RawFile> {
  return (yield* openFileInfo(path, flags))[0];
}

/** {@link openFile}, with what fstat said of the file. */
export function* openFileInfo(path: string, flags: OpenFlags): Steps<[RawFile, FileInfo]> {
  const plain: OpenFlags = { ...flags, truncate: false, noFollow: true };
  let raw: RawFile;
  let info: FileInfo;
  if (rt.noFollow) {
    try {
      raw = yield* step("open", path, plain);
    } catch (e) {
      // O_NOFOLLOW says ELOOP; with O_CREAT in a sticky directory, Linux
      // says EACCES for another user's link first.
      if (e instanceof FsError && (e.code === "ELOOP" || e instanceof PermissionDenied)) {
        let link = false;
        try {
          link = rt.lstatSync(path).isSymlink;
        } catch { /* then the first error stands */ }
        if (link) {
          const why = "it is a symbolic link, which is never followed";
          throw new NotAFile("ELOOP", "open", path, why, { cause: e });
        }
      }
      throw e;
    }
    try {
      info = yield* step("fstat", raw);
    } catch (e) {
      closeQuietly(raw);
      throw e;
    }
  } else {
    [raw, info] = yield* openChecked(path, plain);
  }
  try {
    if (!info.isFile) throw notAFile(path, info);
    if (flags.single || flags.truncate) checkSingleName(raw, info);
    if (flags.truncate && info.size > 0) yield* step("truncate", raw, 0);
    return [raw, info];
  } catch (e) {
    closeQuietly(raw);
    throw e;
  }
}

/** Whether two stat results name the same file. */
export function sameFile(a: FileInfo, b: FileInfo): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/**
 * Removes `path` if it still names the file `identity` describes: a file
 * put in its place since is somebody else's, and stays.
 */
export function* unlinkIfSame(path: string, identity: FileInfo): Steps<void> {
  try {
    if (sameFile(yield* step("lstat", path), identity)) yield* step("unlink", path);
  } catch { /* gone already, or not ours to remove */ }
}

/**
 * Publishes the file that `from` names as `to` with link(2), which never
 * replaces a file, and checks that what got published is the file
 * `identity` describes: if somebody swapped `from` for another file or a
 * link in the meantime, the new name is removed again and the publication
 * fails. `from` is left in place.
 */
export function* linkVerified(from: string, to: string, identity: FileInfo): Steps<void> {
  yield* step("link", from, to);
  let published: FileInfo | undefined;
  try {
    published = yield* step("lstat", to);
  } catch { /* checked below */ }
  if (published === undefined || !sameFile(published, identity)) {
    yield* unlinkIfSame(to, published ?? identity);
    throw new NotAFile(
      "EAGAIN",
      "link",
      from,
      "it was replaced by another file while it was being published",
    );
  }
}
