// The handle of a claimed file: it holds the file's flock from before the
// file left `new` until the consumer is done with it or releases it, so
// that "is anybody still working on this?" has an exact answer (recover()).
import { checkBoolean, checkOptions, invalid, joinBytes } from "./_check.ts";
import { checkName } from "./_names.ts";
import { closeQuietly, type RawFile, rt } from "./_runtime.ts";
import { run, runSync, step, type Steps } from "./_steps.ts";
import { moveNoReplace, useArea } from "./_store_dir.ts";
import { retried } from "./_names.ts";
import { AlreadyExists } from "./errors.ts";

/** Options of {@link Claim.prototype.done}. */
export interface DoneOptions {
  /**
   * Move the finished file into this area of the store (one path
   * component, such as `"done"`; made if missing) instead of removing it.
   */
  moveTo?: string;
}

/** Options of {@link Claim.prototype.release}. */
export interface ReleaseOptions {
  /**
   * Count this delivery as a failed one: the file goes back under its next
   * retry name (`NAME.retryN`), so that the next consumer's `deliveries`
   * is one more, as after a consumer that died. A consumer can then give
   * up on a message that fails every time (move it away with
   * `done({ moveTo })` once `deliveries` is high enough).
   *
   * @default {false}
   */
  retry?: boolean;
}

// What the store tells a claim it hands out; Claim's constructor is closed.
interface Grant {
  raw: RawFile;
  store: string;
  name: string;
  deliveries: number;
}

let pending: Grant | undefined;

// A claim that is dropped without done() or release() is garbage: its
// descriptor is closed then, the lock goes, and recover() hands the file
// out again, as if its consumer had died.
const dropped = new FinalizationRegistry<RawFile>((raw) => closeQuietly(raw));

// Set by Claim's static block: the command line's way to its descriptor.
let fileOfClaim: (claim: Claim) => RawFile;

/**
 * A file claimed from a {@link FileStore}'s `new`, held for its consumer:
 * the file sits in `cur` with a `flock` on it from before it left `new`
 * until {@link Claim.prototype.done} (it leaves the queue) or
 * {@link Claim.prototype.release} (back to `new`). If the consumer dies
 * instead, the kernel drops the lock at once, and `recover()` (which
 * `claim()` runs by itself when `new` is empty) hands the file out again.
 * Disposing a claim that is neither done nor released releases it, so
 * `using` and `await using` give a file back on any error.
 *
 * @example Usage
 * ```ts
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "claim-"));
 * try {
 *   const store = new FileStore(dir);
 *   await store.prepare();
 *   await store.put("order 1");
 *   {
 *     await using claim = (await store.claim())!;
 *     assert.equal(await claim.text(), "order 1");
 *     await claim.done();
 *   }
 *   assert.equal(await store.claim(), null);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class Claim implements AsyncDisposable, Disposable {
  #raw: RawFile;
  #store: string;
  #name: string;
  #deliveries: number;
  #finished = false;

  /**
   * Not for direct use: claims come from `FileStore.claim()`.
   *
   * @throws {TypeError} When called directly.
   */
  constructor() {
    if (pending === undefined) {
      throw new TypeError("Cannot construct Claim directly: use FileStore.claim()");
    }
    ({ raw: this.#raw, store: this.#store, name: this.#name, deliveries: this.#deliveries } =
      pending);
    pending = undefined;
    dropped.register(this, this.#raw, this);
  }

  /** The file's full path, in `cur` while the claim is held. */
  get path(): string {
    return `${this.#store}/cur/${this.#name}`;
  }

  /** The file's name. */
  get name(): string {
    return this.#name;
  }

  /**
   * How often the file has been handed out, this time included: 1 unless
   * consumers died with it before (see `FileStoreOptions.maxDeliveries`).
   */
  get deliveries(): number {
    return this.#deliveries;
  }

  /** Whether it is done or released. */
  get finished(): boolean {
    return this.#finished;
  }

  /**
   * Reads into `buffer` from the current position.
   *
   * @param buffer Where to put the bytes.
   * @returns The number of bytes read, or `null` at the end of the file.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    const n = await rt.read(this.#held(), buffer);
    return n === 0 && buffer.length > 0 ? null : n;
  }

  /**
   * Reads into `buffer` from the current position, synchronously.
   *
   * @param buffer Where to put the bytes.
   * @returns The number of bytes read, or `null` at the end of the file.
   */
  readSync(buffer: Uint8Array): number | null {
    const n = rt.readSync(this.#held(), buffer);
    return n === 0 && buffer.length > 0 ? null : n;
  }

  /**
   * The whole content, read from its start.
   *
   * @returns The bytes.
   */
  bytes(): Promise<Uint8Array> {
    return run(this.#bytes());
  }

  /**
   * The whole content, read from its start, synchronously.
   *
   * @returns The bytes.
   */
  bytesSync(): Uint8Array {
    return runSync(this.#bytes());
  }

  /**
   * The whole content as UTF-8 text.
   *
   * @returns The text.
   */
  async text(): Promise<string> {
    return new TextDecoder().decode(await this.bytes());
  }

  /**
   * The whole content as UTF-8 text, synchronously.
   *
   * @returns The text.
   */
  textSync(): string {
    return new TextDecoder().decode(this.bytesSync());
  }

  *#bytes(): Steps<Uint8Array> {
    const raw = this.#held();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const chunk = new Uint8Array(64 * 1024);
      const n = yield* step("read", raw, chunk, size);
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      size += n;
    }
    return joinBytes(chunks);
  }

  /**
   * Finishes the work: the file leaves the queue, removed or moved to the
   * area `moveTo`, while the lock still keeps `recover()` away; then the
   * lock is dropped.
   *
   * @param options `moveTo` keeps the file in an area of its own.
   * @returns The file's new path, or `null` when it was removed.
   * @throws {TypeError} The claim is already finished.
   * @throws {RangeError} `moveTo` is not one path component.
   * @throws {AlreadyExists} A file of that name is in `moveTo`; the claim
   * stays held.
   */
  done(options?: DoneOptions): Promise<string | null> {
    return run(this.#done(options));
  }

  /**
   * Finishes the work, synchronously; see {@link Claim.prototype.done}.
   *
   * @param options `moveTo` keeps the file in an area of its own.
   * @returns The file's new path, or `null` when it was removed.
   * @throws {TypeError} The claim is already finished.
   */
  doneSync(options?: DoneOptions): string | null {
    return runSync(this.#done(options));
  }

  *#done(options: DoneOptions | undefined): Steps<string | null> {
    const moveTo = checkOptions(options, "finish a claim")?.moveTo;
    this.#held();
    let target: string | null = null;
    if (moveTo === undefined) {
      yield* step("unlink", this.path);
    } else {
      const area = checkName(moveTo, "finish a claim", false);
      if (area === "tmp" || area === "new" || area === "cur") {
        throw invalid(
          RangeError,
          "finish a claim",
          "moveTo",
          "an area of its own (not tmp, new or cur, where the file would be cleaned up, delivered again or recovered)",
          moveTo,
        );
      }
      yield* useArea(this.#store, area);
      target = `${this.#store}/${area}/${this.#name}`;
      // Found there already (a duplicate delivery that another consumer
      // finished, or a mover that died after its link): finished all the same.
      yield* moveNoReplace(this.path, target);
    }
    this.#finish();
    return target;
  }

  /**
   * Gives the file back to `new` for another consumer (after an error,
   * say), then drops the lock. A file of the same name that arrived in
   * `new` meanwhile is never replaced: this one goes back under its next
   * retry name (`NAME.retryN`) then; if that is taken too, this throws
   * `AlreadyExists`, and the file stays in `cur`, unlocked, for
   * `recover()`. The claim is given up either way.
   *
   * @param options `retry: true` counts the delivery (see {@link ReleaseOptions}).
   * @returns The file's path in `new`.
   * @throws {TypeError} The claim is already finished.
   * @throws {AlreadyExists} A file of the same name is in `new`.
   */
  release(options?: ReleaseOptions): Promise<string> {
    return run(this.#release(options));
  }

  /**
   * Gives the file back to `new`, synchronously; see
   * {@link Claim.prototype.release}.
   *
   * @param options `retry: true` counts the delivery (see {@link ReleaseOptions}).
   * @returns The file's path in `new`.
   * @throws {TypeError} The claim is already finished.
   */
  releaseSync(options?: ReleaseOptions): string {
    return runSync(this.#release(options));
  }

  *#release(options: ReleaseOptions | undefined): Steps<string> {
    const retry = checkBoolean(
      checkOptions(options, "release a claim")?.retry,
      "release a claim",
      "retry",
    );
    this.#held();
    let target = `${this.#store}/new/${retry ? retried(this.#name) : this.#name}`;
    try {
      try {
        yield* moveNoReplace(this.path, target);
      } catch (e) {
        // Another file of the same name arrived in `new` meanwhile: this
        // one goes back under its next retry name.
        if (!(e instanceof AlreadyExists)) throw e;
        target = `${this.#store}/new/${retried(retry ? retried(this.#name) : this.#name)}`;
        yield* moveNoReplace(this.path, target);
      }
    } finally {
      // Given up in any case: a file that could not go back stays in `cur`,
      // unlocked, and recover() hands it out again.
      this.#finish();
    }
    return target;
  }

  static {
    fileOfClaim = (claim) => claim.#held();
  }

  #held(): RawFile {
    if (this.#finished) {
      throw new TypeError(`Cannot use the claim of '${this.path}': it is done or released`);
    }
    return this.#raw;
  }

  #finish(): void {
    this.#finished = true;
    dropped.unregister(this);
    closeQuietly(this.#raw);
  }

  /** Releases the claim unless it is done or released: for `using`. */
  [Symbol.dispose](): void {
    if (!this.#finished) this.releaseSync();
  }

  /** Releases the claim unless it is done or released: for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.#finished ? Promise.resolve() : this.release().then(() => {});
  }
}

/** The open, locked file of a claim that is neither done nor released (for the command line). */
export function claimFile(claim: Claim): RawFile {
  return fileOfClaim(claim);
}

/** Hands out a claim on `raw`, which is locked and in `cur` under `name`. */
export function grant(raw: RawFile, store: string, name: string, deliveries: number): Claim {
  pending = { raw, store, name, deliveries };
  return new Claim();
}
