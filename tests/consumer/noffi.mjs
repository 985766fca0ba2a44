// Node without a usable FFI (no koffi on Node 22/24, or --permission without
// --allow-ffi on Node 26): importing and constructing work, the first lock
// call throws FfiUnavailable with its code and reason. Usage: noffi.mjs
// REASON DIR. Run by scripts/consumer.sh.
import { FfiUnavailable, Lock, LockFile } from "@filestore/filestore";
import assert from "node:assert/strict";
import { join } from "node:path";
import process from "node:process";

const [reason, dir] = process.argv.slice(2);
const lock = new Lock(join(dir, "a.lock"));
const expected = (e) =>
  e instanceof FfiUnavailable && e.code === "ERR_NO_FFI" && e.reason === reason;
await assert.rejects(lock.acquire(), expected);
assert.throws(() => new LockFile(join(dir, "b.lock")), expected);
await assert.rejects(lock.acquire(), expected);
const error = await lock.acquire().catch((e) => e);
console.log(`FfiUnavailable (${error.reason}): ${error.message}`);
