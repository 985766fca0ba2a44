/**
 * Lock files that say who owns them, after Python's `zc.lockfile`: a process
 * takes one at start-up to claim a resource, without waiting. The lock is an
 * exclusive BSD `flock(2)` lock, so processes of every runtime, and
 * `zc.lockfile` itself, see it; the owner's pid (and, if asked, hostname) is
 * written into the file in `zc.lockfile`'s format, `" <content>\n"`.
 *
 * ```ts
 * import { LockError, LockFile } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "lockfile-"));
 * try {
 *   using _lock = new LockFile(join(dir, "app.lock"));
 *   assert.throws(() => new LockFile(join(dir, "app.lock")), LockError);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 *
 * @module
 */
import { checkOptions, checkPath, invalid } from "./_check.ts";
import { openFile } from "./_open.ts";
import { closeQuietly, type RawFile, rt } from "./_runtime.ts";
import { runSync } from "./_steps.ts";
import { LockError, type LockHolder } from "./errors.ts";

// zc.lockfile's error, for users of this entry point alone; it is an
// AlreadyLocked, as every refusal in the package.
export { LockError, type LockHolder } from "./errors.ts";

/** Options for {@link LockFile} and {@link readLockFile}. */
export interface LockFileOptions {
  /**
   * What to write into the lock file once it is locked, after a space and
   * before a newline. `{pid}` stands for the process id and `{hostname}` for
   * the host's name (looked up only if used); `{{` and `}}` stand for `{`
   * and `}`. Any other placeholder is a `TypeError`. {@link readLockFile}
   * uses it to find the pid and hostname in what it reads.
   *
   * @default {"{pid}"}
   */
  contentTemplate?: string;
}

// A template, parsed once: literal text, and the placeholders between.
type Part = string | { readonly key: "pid" | "hostname" };

interface Template {
  readonly parts: readonly Part[];
  /** The content bytes: pid and hostname do not change while a process runs. */
  bytes?: Uint8Array;
  pattern?: RegExp;
}

const DEFAULT_TEMPLATE = "{pid}";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
// Parsed templates, with their bytes, for the next lock: a program uses one
// or two. Bounded, for a program that builds a new template every time.
const templates = new Map<string, Template>();

function parseTemplate(template: string): Template {
  const cached = templates.get(template);
  if (cached) return cached;
  if (typeof template !== "string") {
    throw invalid(TypeError, "use content template", "contentTemplate", "a string", template);
  }
  const parts: Part[] = [];
  let text = "";
  const token = /\{\{|\}\}|\{([^{}]*)\}|[{}]/g;
  let at = 0;
  for (const m of template.matchAll(token)) {
    text += template.slice(at, m.index);
    at = m.index + m[0].length;
    if (m[0] === "{{" || m[0] === "}}") {
      text += m[0][0];
    } else if (m[1] === "pid" || m[1] === "hostname") {
      if (text) parts.push(text);
      text = "";
      parts.push({ key: m[1] });
    } else {
      const what = m[1] === undefined
        ? `unmatched '${m[0]}' (write '${m[0]}${m[0]}' for a literal one)`
        : `unknown placeholder '${m[0]}' (known: {pid}, {hostname})`;
      throw new SyntaxError(`Cannot use content template ${JSON.stringify(template)}: ${what}`);
    }
  }
  text += template.slice(at);
  if (text) parts.push(text);
  const parsed: Template = { parts };
  if (templates.size >= 16) templates.clear();
  templates.set(template, parsed);
  return parsed;
}

function contentBytes(template: Template): Uint8Array {
  if (template.bytes) return template.bytes;
  let text = " ";
  for (const part of template.parts) {
    if (typeof part === "string") text += part;
    else text += part.key === "pid" ? String(rt.pid) : rt.hostname();
  }
  return template.bytes = encoder.encode(text + "\n");
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// Reads a content back into a pid and hostname: the template, turned into a
// pattern, first; failing that, a number at the start is taken for a pid.
function parseHolder(content: string, template: Template): LockHolder {
  template.pattern ??= new RegExp(
    "^" +
      template.parts.map((part) =>
        typeof part === "string"
          ? escapeRegExp(part)
          : part.key === "pid"
          ? "(?<pid>\\d+)"
          : "(?<hostname>[^\\s]+?)"
      ).join("") + "$",
  );
  const groups = template.pattern.exec(content)?.groups;
  const pid = groups?.pid ?? /^\d+(?!\w)/.exec(content)?.[0];
  const holder: LockHolder = {};
  if (pid !== undefined && Number.isSafeInteger(Number(pid))) holder.pid = Number(pid);
  if (groups?.hostname !== undefined) holder.hostname = groups.hostname;
  return holder;
}

// Reads the content from byte 1 to the first newline: byte 0 is the
// leading space, and is the byte a Windows lock covers. A holder that is
// writing its content right now may have left a longer old content after
// its newline; the first line is all that counts.
function readContent(f: RawFile): string {
  const limit = 64 * 1024;
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < limit) {
    const buf = new Uint8Array(Math.min(4096, limit - size));
    const n = rt.readSync(f, buf, 1 + size);
    if (n === 0) break;
    const chunk = buf.subarray(0, n);
    chunks.push(chunk);
    size += n;
    if (chunk.includes(10)) break;
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  const text = decoder.decode(all);
  const end = text.indexOf("\n");
  return end < 0 ? text : text.slice(0, end);
}

// Opens and locks `path`, then writes `content`; throws LockError if it is
// held. The file is opened without O_TRUNC and written only once the lock
// is held, so that a refused attempt leaves the holder's content alone.
function acquire(path: string, template: Template | undefined): RawFile {
  const content = template && contentBytes(template);
  const f = runSync(openFile(path, { read: true, write: true, create: true, single: true }));
  try {
    if (!rt.tryLockSync(f, true)) {
      const holder = parseHolder(readContent(f), template ?? parseTemplate(DEFAULT_TEMPLATE));
      // A refusal may come from a holder that has just let go, or from
      // readLockFile()'s momentary shared probe: one more try before
      // naming a holder that may be gone.
      if (!rt.tryLockSync(f, true)) throw new LockError(path, holder);
    }
  } catch (e) {
    closeQuietly(f);
    throw e;
  }
  if (content) {
    try {
      // ftruncate costs more than the write, even when it changes nothing
      // (it dirties the inode): a read of one byte more than the content
      // tells whether anything lies beyond it.
      const longer = rt.readSync(f, new Uint8Array(content.length + 1), 0) > content.length;
      rt.writeSync(f, content, 0);
      if (longer) rt.truncateSync(f, content.length);
    } catch (e) {
      try {
        rt.unlockSync(f);
      } catch { /* closing releases it too */ }
      closeQuietly(f);
      throw e;
    }
  }
  return f;
}

// LockFile hands its content to SimpleLockFile's constructor here; the base
// constructor takes it before anything else, synchronously.
let pendingTemplate: Template | undefined;

/**
 * An exclusive lock on a file, taken at once or not at all, that writes
 * nothing into the file: {@link LockFile} without the content. The file is
 * created if needed and never deleted.
 *
 * @example Usage
 * ```ts
 * import { LockError, SimpleLockFile } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "simplelockfile-"));
 * try {
 *   const path = join(dir, "app.lock");
 *   using _lock = new SimpleLockFile(path);
 *   assert.throws(() => new SimpleLockFile(path), LockError);
 *   assert.equal(readFileSync(path, "utf8"), "");
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class SimpleLockFile implements Disposable {
  /** The lock file's path. */
  readonly path: string;
  #file: RawFile | undefined;

  /**
   * Locks `path`, creating the file if needed, without waiting.
   *
   * @param path The lock file.
   * @throws {LockError} Somebody else holds the lock.
   * @throws {NotFound} The directory does not exist.
   * @throws {IsADirectory} A directory is at `path`.
   * @throws {PermissionDenied} The file may not be opened for writing.
   * @throws {TypeError} `path` is not a non-empty string without NUL.
   */
  constructor(path: string) {
    const template = pendingTemplate;
    pendingTemplate = undefined;
    this.path = checkPath(path, "lock");
    this.#file = acquire(path, template);
  }

  /**
   * Releases the lock and closes the file, which stays where it is. Calling
   * it again does nothing.
   *
   * @throws {FsError} The lock could not be released (the file is closed,
   * which releases it, all the same).
   *
   * @example Usage
   * ```ts
   * import { LockFile } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { existsSync, mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "lockfile-close-"));
   * try {
   *   const path = join(dir, "app.lock");
   *   const lock = new LockFile(path);
   *   lock.close();
   *   lock.close();
   *   assert.ok(existsSync(path));
   *   new LockFile(path).close();
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  close(): void {
    const f = this.#file;
    if (f === undefined) return;
    this.#file = undefined;
    try {
      rt.unlockSync(f);
    } finally {
      rt.closeSync(f);
    }
  }

  /** Same as {@link SimpleLockFile.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * An exclusive lock on a file, taken at once or not at all, that writes its
 * owner into the file: `" " + contentTemplate + "\n"`, with `{pid}` and
 * `{hostname}` filled in, from offset 0, and the rest cut off. The content is
 * written only once the lock is held, so a refused attempt never changes
 * it, and a {@link LockError} names the holder. The format is
 * `zc.lockfile`'s: files written by either read the same.
 *
 * @example Usage
 * ```ts
 * import { LockError, LockFile } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { hostname, tmpdir } from "node:os";
 * import { join } from "node:path";
 * import process from "node:process";
 *
 * const dir = mkdtempSync(join(tmpdir(), "lockfile-"));
 * try {
 *   const path = join(dir, "app.lock");
 *   using _lock = new LockFile(path, { contentTemplate: "{pid}/{hostname}" });
 *   assert.equal(readFileSync(path, "utf8"), ` ${process.pid}/${hostname()}\n`);
 *   assert.throws(() => new LockFile(path, { contentTemplate: "{pid}/{hostname}" }), (e) => {
 *     assert.ok(e instanceof LockError);
 *     assert.equal(e.pid, process.pid);
 *     return true;
 *   });
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class LockFile extends SimpleLockFile {
  /**
   * Locks `path`, creating the file if needed, without waiting, and writes
   * the content.
   *
   * @param path The lock file.
   * @param options The content to write.
   * @throws {TypeError} `contentTemplate` has an unknown placeholder, or
   * `path` is not a non-empty string without NUL; nothing has been touched.
   * @throws {LockError} Somebody else holds the lock.
   * @throws {NotFound} The directory does not exist.
   * @throws {IsADirectory} A directory is at `path`.
   * @throws {PermissionDenied} The file may not be opened for writing.
   * @throws {NoSpace} The content could not be written; the lock has been
   * released.
   */
  constructor(path: string, options: LockFileOptions = {}) {
    pendingTemplate = parseTemplate(
      checkOptions(options, "lock")?.contentTemplate ?? DEFAULT_TEMPLATE,
    );
    super(path);
  }
}

/** What {@link readLockFile} saw. */
export interface LockFileInfo extends LockHolder {
  /** Whether somebody held the lock at that moment. */
  locked: boolean;
  /** The content, without the leading space and from the first newline on. */
  content: string;
}

/**
 * Looks at a lock file without taking it: whether it is locked at this
 * moment, and the content its last holder wrote, with the pid and hostname
 * found in it (by `contentTemplate`, or a number at its start). This is a
 * snapshot: the answer can be out of date as soon as it returns. On Linux
 * it reads `/proc/locks` and takes no lock at all. Elsewhere, and on Deno
 * without `--allow-all` (Deno opens `/proc/locks` to nothing less), it
 * takes a shared lock on its own descriptor for a moment and lets go at once; a
 * `LockFile` attempt that falls in that moment retries once, but other flock
 * users may be refused. It never creates or writes the file.
 *
 * @param path The lock file.
 * @param options The template the holder used, to read its pid and hostname.
 * @returns Whether it is locked, and who it names.
 * @throws {TypeError} `contentTemplate` has an unknown placeholder, or `path`
 * is not a non-empty string without NUL.
 * @throws {NotFound} There is no file at `path`.
 * @throws {IsADirectory} A directory is at `path`.
 * @throws {PermissionDenied} The file may not be read.
 *
 * @example Usage
 * ```ts
 * import { LockFile, readLockFile } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import process from "node:process";
 *
 * const dir = mkdtempSync(join(tmpdir(), "readlockfile-"));
 * try {
 *   const path = join(dir, "app.lock");
 *   const lock = new LockFile(path);
 *   assert.deepEqual(readLockFile(path), {
 *     locked: true,
 *     pid: process.pid,
 *     content: String(process.pid),
 *   });
 *   lock.close();
 *   assert.equal(readLockFile(path).locked, false);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export function readLockFile(path: string, options: LockFileOptions = {}): LockFileInfo {
  const template = parseTemplate(
    checkOptions(options, "read lock file")?.contentTemplate ?? DEFAULT_TEMPLATE,
  );
  const f = runSync(openFile(checkPath(path, "read lock file"), { read: true }));
  try {
    // /proc/locks answers without locking; the fallback, a shared probe
    // dropped at once, can make a LockFile taken at that instant fail.
    const holders = rt.flockHolders(f);
    const locked = holders ? holders.length > 0 : !rt.tryLockSync(f, false);
    if (!holders && !locked) rt.unlockSync(f);
    const content = readContent(f);
    return { locked, ...parseHolder(content, template), content };
  } finally {
    closeQuietly(f);
  }
}
