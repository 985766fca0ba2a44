// BoundedSemaphore: at most N holders across processes, one lock file per
// slot; a waiter blocks on one slot and looks at the others now and then.
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkNumber, checkOptions, checkPath, invalid } from "./_check.ts";
import type { OpenFile } from "./_file.ts";
import {
  type AcquireOptions,
  DEFAULTS,
  Held,
  openAndTry,
  type Settings,
  settingsOf,
} from "./_lock.ts";
import { closeQuietly, type OpenFlags, type RawFile, rt } from "./_runtime.ts";
import { openFile } from "./_open.ts";
import { runSync, settled } from "./_steps.ts";
import { share, waitForLock } from "./_wait.ts";
import { AlreadyLocked } from "./errors.ts";

// The semaphore's name is part of its slot files' names.
function checkFileName(name: unknown, what: string): string {
  const expected = "a non-empty file name without path separators";
  if (typeof name !== "string") throw invalid(TypeError, what, "name", expected, name);
  if (name === "" || /[/\\\0]/.test(name)) throw invalid(RangeError, what, "name", expected, name);
  return name;
}

function invalidMaximum(what: string): never {
  throw invalid(TypeError, what, "maximum", "an integer from 1 to 100000", undefined);
}

/** Options of {@link BoundedSemaphore}. */
export interface BoundedSemaphoreOptions extends AcquireOptions {
  /**
   * The semaphore's name: its slot files are `<name>.00.lock`,
   * `<name>.01.lock`, ... in `directory`. Every process that shares the
   * semaphore uses the same name and directory.
   *
   * @default {"bounded_semaphore"}
   */
  name?: string;
  /**
   * The directory of the slot files; it must exist.
   *
   * @default {os.tmpdir()}
   */
  directory?: string;
}

interface Slot {
  index: number;
  raw: RawFile;
}

const SLOT_FLAGS: OpenFlags = { read: true, write: true, create: true };

/**
 * At most `maximum` holders at once, across processes: portalocker's
 * `BoundedSemaphore`, made of `maximum` lock files, one per slot, of which
 * a holder locks one. Acquirers start at a random slot, so that they do not
 * all contend for the first. A waiting acquirer blocks on one slot, so the
 * kernel hands it over as soon as that slot's holder lets go, and tries
 * the others every `checkInterval` milliseconds, opening them one at a
 * time: an acquirer has at most two files open, however large `maximum`
 * is (each look at the others costs one open per slot). One instance holds
 * at most one slot.
 *
 * @example Usage
 * ```ts
 * import { AlreadyLocked, BoundedSemaphore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "semaphore-"));
 * try {
 *   const options = { name: "workers", directory: dir };
 *   await using a = new BoundedSemaphore(2, options);
 *   await using b = new BoundedSemaphore(2, options);
 *   await a.acquire();
 *   await b.acquire();
 *   assert.notEqual(a.slot, b.slot);
 *   const c = new BoundedSemaphore(2, { ...options, failWhenLocked: true });
 *   await assert.rejects(c.acquire(), AlreadyLocked);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class BoundedSemaphore implements AsyncDisposable, Disposable {
  #maximum: number;
  #name: string;
  #directory: string;
  #settings: Settings;
  #class: string;
  #held = new Held();
  #slot: number | undefined;
  #pending: Promise<OpenFile> | undefined;

  /**
   * Makes a semaphore; nothing is opened until
   * {@link BoundedSemaphore.prototype.acquire}.
   *
   * @param maximum How many holders at most.
   * @param options The name, the directory and the waiting rules.
   * @throws {TypeError} An argument has the wrong type, or `name` contains a path separator.
   * @throws {RangeError} `maximum` is not a positive integer, or an option is out of range.
   */
  constructor(maximum: number, options: BoundedSemaphoreOptions = {}) {
    this.#class = new.target.name;
    const what = `create ${this.#class}`;
    this.#maximum = checkNumber(maximum, what, "maximum", "an integer from 1 to 100000", {
      min: 1,
      max: 100_000,
      integer: true,
    }) ?? invalidMaximum(what);
    this.#settings = settingsOf(DEFAULTS, options, what);
    const { name = "bounded_semaphore", directory = tmpdir() } = options;
    this.#name = checkFileName(name, what);
    this.#directory = checkPath(directory, what, "directory");
  }

  /** How many holders at most. */
  get maximum(): number {
    return this.#maximum;
  }

  /** The semaphore's name. */
  get name(): string {
    return this.#name;
  }

  /** The directory of the slot files. */
  get directory(): string {
    return this.#directory;
  }

  /** Whether this instance holds a slot now. */
  get locked(): boolean {
    return this.#held.file !== undefined;
  }

  /** The index of the slot this instance holds, or `undefined`. */
  get slot(): number | undefined {
    return this.#held.file === undefined ? undefined : this.#slot;
  }

  /**
   * The path of slot `index`'s lock file.
   *
   * @param index A slot, from 0 to `maximum - 1`.
   * @returns The lock file's path.
   * @throws {RangeError} `index` is not a slot.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new BoundedSemaphore(3, { name: "jobs", directory: "/run/app" });
   * assert.equal(semaphore.pathOf(2), "/run/app/jobs.02.lock");
   * ```
   */
  pathOf(index: number): string {
    if (!Number.isInteger(index) || index < 0 || index >= this.#maximum) {
      throw invalid(
        typeof index === "number" ? RangeError : TypeError,
        `name a slot of ${this.#class}`,
        "index",
        `an integer from 0 to ${this.#maximum - 1}`,
        index,
      );
    }
    return join(this.#directory, `${this.#name}.${String(index).padStart(2, "0")}.lock`);
  }

  #open(index: number): RawFile {
    return runSync(openFile(this.pathOf(index), SLOT_FLAGS));
  }

  // Locks slot `index` if it is free; the open file if so.
  #try(index: number): RawFile | undefined {
    const { raw, held } = openAndTry(this.pathOf(index), SLOT_FLAGS, true);
    if (held) return raw;
    rt.closeSync(raw);
    return undefined;
  }

  #take(raw: RawFile, index: number): OpenFile {
    this.#slot = index;
    return this.#held.hold(raw);
  }

  /**
   * Takes a free slot, waiting for one as the options say. While a slot is
   * held, another call resolves to the same handle; while one is pending,
   * another call shares its wait, yet keeps to its own `failWhenLocked`,
   * `timeout` and `signal`.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The open, locked slot file.
   * @throws {AlreadyLocked} `failWhenLocked` or `timeout: 0` and every slot is
   * held, or `timeout` ran out.
   * @throws {NotFound} The directory does not exist.
   * @throws {PermissionDenied} A slot file may not be opened.
   * @throws {TypeError} An override has the wrong type.
   * @throws {RangeError} An override is out of range.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "semaphore-acquire-"));
   * try {
   *   const options = { name: "one", directory: dir };
   *   const holder = new BoundedSemaphore(1, options);
   *   await holder.acquire();
   *   setTimeout(() => holder.releaseSync(), 20);
   *   const waiter = new BoundedSemaphore(1, options);
   *   await waiter.acquire({ timeout: 5000 });
   *   assert.equal(waiter.slot, 0);
   *   await waiter.release();
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  async acquire(overrides?: AcquireOptions): Promise<OpenFile> {
    if (this.#held.file !== undefined) return this.#held.file;
    const s = settingsOf(this.#settings, overrides, `acquire ${this.#class}`);
    if (s.signal?.aborted) throw s.signal.reason;
    if (this.#pending !== undefined) {
      return await share(this.#pending, s, (waited) => this.#refusal(waited));
    }
    const n = this.#maximum;
    const first = Math.floor(Math.random() * n);
    for (let i = 0; i < n; i++) {
      const index = (first + i) % n;
      const raw = this.#try(index);
      if (raw !== undefined) return this.#take(raw, index);
    }
    if (s.failWhenLocked || s.timeout === 0) throw this.#refusal();
    this.#pending = this.#wait(s, performance.now(), first);
    try {
      return await this.#pending;
    } finally {
      this.#pending = undefined;
    }
  }

  #refusal(waited?: number): AlreadyLocked {
    const after = waited === undefined ? "" : ` (gave up after ${waited} ms)`;
    return new AlreadyLocked(
      `Cannot acquire ${this.#class} '${this.#name}' in '${this.#directory}': all ${this.#maximum} slots are held${after}`,
    );
  }

  // Blocks on slot `first` and tries the others every checkInterval, opening
  // one at a time, so that a wait holds two files open at most.
  async #wait(s: Settings, start: number, first: number): Promise<OpenFile> {
    const n = this.#maximum;
    const blockedRaw = this.#open(first);
    // Aborted to give the blocked wait up once another slot is won.
    const stop = new AbortController();
    const left = Math.max(0, s.timeout - (performance.now() - start));
    const blocked = waitForLock(blockedRaw, true, left, s.signal, stop.signal);
    let done = n === 1;
    let won: Slot | undefined;
    try {
      while (!done) {
        let wake!: () => void;
        const tick = new Promise<void>((resolve) => wake = resolve);
        const id = setTimeout(wake, s.checkInterval);
        const outcome = await Promise.race([blocked, tick]);
        clearTimeout(id);
        if (outcome !== undefined) {
          done = true;
          break;
        }
        for (let i = 1; i < n && won === undefined; i++) {
          const index = (first + i) % n;
          const raw = this.#try(index);
          if (raw !== undefined) won = { index, raw };
        }
        if (won !== undefined) break;
      }
    } catch (e) {
      stop.abort();
      // A slot granted just before the abort must not stay held.
      blocked.then((o) => o === "held" && closeQuietly(blockedRaw), () => {});
      throw e;
    }
    if (!done) stop.abort();
    const outcome = await blocked;
    if (won !== undefined) {
      if (outcome === "held") closeQuietly(blockedRaw);
      return this.#take(won.raw, won.index);
    }
    if (outcome === "held") return this.#take(blockedRaw, first);
    if (outcome === "aborted") throw s.signal!.reason;
    throw this.#refusal(s.timeout);
  }

  /**
   * Releases the slot and closes its file. Doing so when no slot is held
   * does nothing.
   *
   * @returns A promise that resolves once the slot is released.
   * @throws {FsError} Unlocking or closing failed.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "semaphore-release-"));
   * try {
   *   const semaphore = new BoundedSemaphore(1, { name: "s", directory: dir });
   *   await semaphore.acquire();
   *   await semaphore.release();
   *   assert.equal(semaphore.slot, undefined);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  release(): Promise<void> {
    return settled(() => this.releaseSync());
  }

  /**
   * Releases the slot and closes its file, synchronously.
   *
   * @throws {FsError} Unlocking or closing failed.
   *
   * @example Usage
   * ```ts
   * import { BoundedSemaphore } from "@filestore/filestore";
   * import assert from "node:assert/strict";
   * import { mkdtempSync, rmSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   *
   * const dir = mkdtempSync(join(tmpdir(), "semaphore-release-sync-"));
   * try {
   *   const semaphore = new BoundedSemaphore(1, { name: "s", directory: dir });
   *   await semaphore.acquire();
   *   semaphore.releaseSync();
   *   assert.equal(semaphore.locked, false);
   * } finally {
   *   rmSync(dir, { recursive: true });
   * }
   * ```
   */
  releaseSync(): void {
    this.#held.drop();
  }

  /** Releases the slot, for `using`. */
  [Symbol.dispose](): void {
    this.releaseSync();
  }

  /** Releases the slot, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return settled(() => this.releaseSync());
  }
}

/**
 * An alias of {@link BoundedSemaphore} that takes the name as its second
 * argument, kept for portalocker users, whose `NamedBoundedSemaphore`
 * takes it so: `new NamedBoundedSemaphore(4, "downloads")` is
 * `new BoundedSemaphore(4, { name: "downloads" })`.
 *
 * @example Usage
 * ```ts
 * import { NamedBoundedSemaphore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "named-semaphore-"));
 * try {
 *   await using semaphore = new NamedBoundedSemaphore(4, "downloads", { directory: dir });
 *   await semaphore.acquire();
 *   assert.equal(semaphore.name, "downloads");
 *   assert.ok(semaphore.slot! >= 0 && semaphore.slot! < 4);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class NamedBoundedSemaphore extends BoundedSemaphore {
  /**
   * Makes a named semaphore.
   *
   * @param maximum How many holders at most.
   * @param name The semaphore's name, shared by all its users.
   * @param options The directory and the waiting rules.
   * @throws {TypeError} An argument has the wrong type, or `name` contains a path separator.
   * @throws {RangeError} `maximum` is not a positive integer, or an option is out of range.
   */
  constructor(
    maximum: number,
    name: string,
    options: Omit<BoundedSemaphoreOptions, "name"> = {},
  ) {
    super(maximum, {
      ...checkOptions(options, "create NamedBoundedSemaphore"),
      name: checkFileName(name, "create NamedBoundedSemaphore"),
    });
  }
}
