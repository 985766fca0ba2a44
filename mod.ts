/**
 * Share files safely between processes, on Deno, Bun and Node: a
 * maildir-style file queue ({@link FileStore}), advisory OS file locks
 * ({@link Lock} and friends) and lock files that name their owner
 * ({@link LockFile}). All locks are BSD `flock(2)` locks, so every runtime,
 * and every other flock user on the host, sees the same locks.
 *
 * ```ts
 * import { FileStore, Lock } from "@filestore/filestore";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "mod-"));
 * try {
 *   const store = new FileStore(join(dir, "queue"));
 *   await store.prepare();
 *   await using lock = new Lock(join(dir, "consumer.lock"));
 *   await lock.acquire();
 *   await store.put("hello");
 *   await using claim = (await store.claim())!;
 *   assert.equal(await claim.text(), "hello");
 *   await claim.done();
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 *
 * @module
 */
export * from "./errors.ts";
export * from "./filestore.ts";
export * from "./lock.ts";
export * from "./lockfile.ts";
