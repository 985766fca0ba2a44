// openAtomic: a file that appears whole, under its name, or not at all.
import { basename, dirname, join } from "node:path";
import { checkFunction, checkOptions, checkPath, checkPermissions, randomHex } from "./_check.ts";
import { type OpenFile, wrapFile } from "./_file.ts";
import { linkVerified, openFile, unlinkIfSame } from "./_open.ts";
import { closeQuietly, type FileInfo } from "./_runtime.ts";
import { run, runSync, step, type Steps } from "./_steps.ts";
import { AlreadyExists, NotAFile, NotFound } from "./errors.ts";

const encoder = new TextEncoder();

/** Options of {@link openAtomic} and {@link openAtomicSync}. */
export interface OpenAtomicOptions {
  /**
   * The new file's permission bits (before the umask).
   *
   * @default {0o666}
   */
  mode?: number;
}

// The body of both twins. The temporary file is linked to the target, not
// renamed over it: link(2) refuses an existing target, so a file that
// appeared meanwhile is never replaced.
function* atomic<T>(
  path: unknown,
  write: (file: OpenFile) => T | Promise<T>,
  options: OpenAtomicOptions | undefined,
): Steps<T> {
  const what = "open atomically";
  const target = checkPath(path, what);
  checkFunction(write, what, "write");
  const mode = checkPermissions(checkOptions(options, what)?.mode, what, "mode") ?? 0o666;
  try {
    yield* step("lstat", target);
    throw new AlreadyExists("EEXIST", "create", target, "file exists");
  } catch (e) {
    if (!(e instanceof NotFound)) throw e;
  }
  // The temporary name shows whose it is, unless that would pass 255 bytes.
  const base = basename(target);
  const prefix = base.length <= 60 || encoder.encode(base).length <= 200 ? `.${base}` : "";
  const temporary = join(dirname(target), `${prefix}.${randomHex(6)}.tmp`);
  const raw = yield* step("open", temporary, { read: true, write: true, createNew: true, mode });
  const file = wrapFile(raw);
  let result: T;
  let identity: FileInfo | undefined;
  try {
    identity = yield* step("fstat", raw);
    result = (yield* step(
      "settle",
      write(file),
      "Cannot open atomically: 'write' returned a promise, which openAtomicSync cannot wait for: use openAtomic",
    )) as T;
    if (file.closed) {
      // `write` closed it: open it again to flush it, never through a link,
      // and only if it is still the file made here.
      const again = yield* openFile(temporary, { read: true });
      try {
        const now = yield* step("fstat", again);
        if (now.dev !== identity.dev || now.ino !== identity.ino) {
          throw new NotAFile("EAGAIN", "open", temporary, "it was replaced by another file");
        }
        yield* step("fsync", again);
      } finally {
        closeQuietly(again);
      }
    } else {
      yield* step("fsync", raw);
      file.closeSync();
    }
    yield* linkVerified(temporary, target, identity);
  } catch (e) {
    file.closeSync();
    if (identity !== undefined) yield* unlinkIfSame(temporary, identity);
    throw e;
  }
  yield* unlinkIfSame(temporary, identity);
  yield* step("fsyncDir", dirname(target));
  return result;
}

/**
 * Writes a new file that readers see whole or not at all: `write` fills a
 * temporary file beside `path`, which is then flushed to the disk and
 * published under `path` with a hard link, which never replaces an
 * existing file, and the temporary name removed. If `write` throws, or
 * `path` exists, nothing is left behind. The handle is closed for you.
 * It can throw after the file was already published: if removing the
 * temporary name or flushing the directory fails, `path` holds the whole
 * new file (and the temporary name may remain), yet the call rejects.
 *
 * @typeParam T What `write` returns.
 * @param path The file to create.
 * @param write Fills the file through the handle it is given.
 * @param options The file's permission bits.
 * @returns What `write` returned, once the file is published.
 * @throws {AlreadyExists} `path` exists; it is left as it was.
 * @throws {NotFound} The directory does not exist.
 * @throws {FsError} Writing, flushing or linking failed; or, after the file
 * was published, removing the temporary name or flushing the directory.
 * @throws {TypeError} `path` is not a non-empty string or `write` not a function.
 * @throws {RangeError} `mode` is not permission bits.
 *
 * @example Usage
 * ```ts
 * import { AlreadyExists, openAtomic } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "atomic-"));
 * try {
 *   const path = join(dir, "config.json");
 *   await openAtomic(path, (file) => file.write('{"ok":true}'));
 *   assert.equal(readFileSync(path, "utf8"), '{"ok":true}');
 *   await assert.rejects(openAtomic(path, (file) => file.write("{}")), AlreadyExists);
 *   assert.deepEqual(readdirSync(dir), ["config.json"]);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function openAtomic<T>(
  path: string,
  write: (file: OpenFile) => T | Promise<T>,
  options?: OpenAtomicOptions,
): Promise<T> {
  return run(atomic(path, write, options));
}

/**
 * Writes a new file that readers see whole or not at all, synchronously;
 * see {@link openAtomic}.
 *
 * @typeParam T What `write` returns.
 * @param path The file to create.
 * @param write Fills the file through the handle it is given.
 * @param options The file's permission bits.
 * @returns What `write` returned, once the file is published.
 * @throws {AlreadyExists} `path` exists; it is left as it was.
 * @throws {NotFound} The directory does not exist.
 * @throws {TypeError} `path` is not a non-empty string or `write` not a function.
 * @throws {RangeError} `mode` is not permission bits.
 *
 * @example Usage
 * ```ts
 * import { openAtomicSync } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readdirSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "atomic-sync-"));
 * try {
 *   const path = join(dir, "data.bin");
 *   assert.throws(() =>
 *     openAtomicSync(path, (file) => {
 *       file.writeSync("half");
 *       throw new Error("interrupted");
 *     })
 *   );
 *   assert.deepEqual(readdirSync(dir), []);
 *   openAtomicSync(path, (file) => file.writeSync(new Uint8Array([1, 2, 3])));
 *   assert.deepEqual(readdirSync(dir), ["data.bin"]);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function openAtomicSync<T>(
  path: string,
  write: (file: OpenFile) => T,
  options?: OpenAtomicOptions,
): T {
  return runSync(atomic(path, write, options));
}
