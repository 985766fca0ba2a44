// The package's open-file handle, shared by lock.ts (Lock.acquire) and
// filestore.ts (FileStore.create). Its constructor is closed to callers:
// handles are made only by wrapFile() below.
import { toBytes } from "./_check.ts";
import { type FileInfo, type RawFile, rt } from "./_runtime.ts";
import { settled } from "./_steps.ts";

let pending: { raw: RawFile; onClose: (() => void) | undefined } | undefined;
let rawOf!: (file: OpenFile) => RawFile;

/**
 * An open file, as handed out by `Lock.acquire()` and `FileStore.create()`.
 * Reads and writes go through the runtime's own calls. Closing it closes
 * the descriptor, and with it any lock held through it.
 *
 * @example Usage
 * ```ts
 * import { FileStore } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "openfile-"));
 * try {
 *   const store = new FileStore(dir);
 *   store.prepareSync();
 *   await using file = await store.create("greeting");
 *   await file.write("hello");
 *   assert.equal(readFileSync(file.path, "utf8"), "hello");
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export class OpenFile implements AsyncDisposable, Disposable {
  #raw: RawFile;
  #onClose: (() => void) | undefined;
  #closed = false;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  /**
   * Not for direct use: handles come from `Lock.acquire()` and
   * `FileStore.create()`.
   *
   * @throws {TypeError} When called directly.
   */
  constructor() {
    if (pending === undefined) {
      throw new TypeError(
        "Cannot construct OpenFile directly: use Lock.acquire() or FileStore.create()",
      );
    }
    this.#raw = pending.raw;
    this.#onClose = pending.onClose;
    pending = undefined;
  }

  static {
    rawOf = (file) => {
      if (file.#closed) throw new TypeError(`Cannot use '${file.#raw.path}': the file is closed`);
      return file.#raw;
    };
  }

  /** The path the file was opened at. */
  get path(): string {
    return this.#raw.path;
  }

  /** Whether `close()` has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Writes all of `data` at the current position (strings as UTF-8).
   *
   * @param data What to write.
   * @returns The number of bytes written.
   */
  write(data: Uint8Array | string): Promise<number> {
    return rt.write(rawOf(this), toBytes(data, `write '${this.path}'`));
  }

  /**
   * Writes all of `data` at the current position, synchronously.
   *
   * @param data What to write.
   * @returns The number of bytes written.
   */
  writeSync(data: Uint8Array | string): number {
    return rt.writeSync(rawOf(this), toBytes(data, `write '${this.path}'`));
  }

  /**
   * Reads into `buffer` from the current position.
   *
   * @param buffer Where to put the bytes.
   * @returns The number of bytes read, or `null` at the end of the file.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    const n = await rt.read(rawOf(this), buffer);
    return n === 0 && buffer.length > 0 ? null : n;
  }

  /**
   * Reads into `buffer` from the current position, synchronously.
   *
   * @param buffer Where to put the bytes.
   * @returns The number of bytes read, or `null` at the end of the file.
   */
  readSync(buffer: Uint8Array): number | null {
    const n = rt.readSync(rawOf(this), buffer);
    return n === 0 && buffer.length > 0 ? null : n;
  }

  /**
   * Cuts the file to `length` bytes.
   *
   * @param length The new size.
   */
  truncate(length = 0): Promise<void> {
    return rt.truncate(rawOf(this), length);
  }

  /**
   * Cuts the file to `length` bytes, synchronously.
   *
   * @param length The new size.
   */
  truncateSync(length = 0): void {
    rt.truncateSync(rawOf(this), length);
  }

  /** Flushes the file's data and metadata to the disk. */
  sync(): Promise<void> {
    return rt.fsync(rawOf(this));
  }

  /** Flushes the file's data and metadata to the disk, synchronously. */
  syncSync(): void {
    rt.fsyncSync(rawOf(this));
  }

  /**
   * What the open file is now (size, inode, times).
   *
   * @returns The file's information.
   */
  statSync(): FileInfo {
    return rt.fstatSync(rawOf(this));
  }

  /** The file's bytes from the current position on, as a stream; it closes the file at its end. */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= new ReadableStream({
      type: "bytes",
      pull: async (controller) => {
        const chunk = new Uint8Array(64 * 1024);
        const n = await this.read(chunk);
        if (n === null) {
          controller.close();
          this.closeSync();
        } else {
          controller.enqueue(chunk.subarray(0, n));
        }
      },
      cancel: () => this.closeSync(),
    });
  }

  /** A stream that writes to the file; closing or aborting it closes the file. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      write: async (chunk) => void await this.write(chunk),
      close: () => this.closeSync(),
      abort: () => this.closeSync(),
    });
  }

  /** Closes the file, and so drops any lock held through it. Calling it again does nothing. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      rt.closeSync(this.#raw);
    } finally {
      this.#onClose?.();
    }
  }

  /** Closes the file, and so drops any lock held through it. Calling it again does nothing. */
  close(): Promise<void> {
    return settled(() => this.closeSync());
  }

  /** Closes the file: for `using`. */
  [Symbol.dispose](): void {
    this.closeSync();
  }

  /** Closes the file: for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Makes a handle for an open file; `onClose` runs once when it is closed. */
export function wrapFile(raw: RawFile, onClose?: () => void): OpenFile {
  pending = { raw, onClose };
  return new OpenFile();
}

/** The runtime file behind a handle; throws if the handle is closed. */
export function fileOf(file: OpenFile): RawFile {
  return rawOf(file);
}
