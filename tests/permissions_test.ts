// Deno with the least permissions that the README's table names: each
// feature works with read and write access to its own directory, and a
// permission that Deno withholds is told apart from the OS's refusal.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { NotCapable, PermissionDenied } from "../errors.ts";
import { mapError } from "../_fserror.ts";
import { root, tempDir } from "./_util.ts";

test("Deno with --allow-read and --allow-write of one directory locks, holds a LockFile and runs a FileStore", () => {
  using dir = tempDir();
  const rw = join(dir.path, "rw");
  const ro = join(dir.path, "ro");
  mkdirSync(rw);
  mkdirSync(ro);
  const result = spawnSync(join(root, "node_modules", ".bin", "deno"), [
    "run",
    "--quiet",
    "--no-prompt",
    `--allow-read=${dir.path}`,
    `--allow-write=${rw}`,
    join(root, "tests/fixtures/deno_permissions.ts"),
    rw,
    ro,
  ], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual(JSON.parse(result.stdout), {
    lock: { ok: true },
    lockWithoutWrite: { error: "NotCapable", code: "ENOTCAPABLE" },
    lockFile: { ok: true },
    store: { ok: true },
  });
});

test("a refusal by Deno's sandbox is a NotCapable, one by the OS a plain PermissionDenied", () => {
  const sandbox = Object.assign(
    new Error('Requires write access to "/x", run again with the --allow-write flag'),
    { name: "NotCapable" },
  );
  const denied = mapError(sandbox, "open", "/x");
  assert.ok(denied instanceof NotCapable);
  assert.ok(denied instanceof PermissionDenied);
  assert.equal(denied.code, "ENOTCAPABLE");
  assert.equal(
    denied.message,
    "Cannot open '/x': not allowed by the runtime's permissions: run again with --allow-write",
  );
  const os = mapError(
    Object.assign(new Error("denied"), { name: "PermissionDenied" }),
    "open",
    "/x",
  );
  assert.ok(os instanceof PermissionDenied && !(os instanceof NotCapable));
  assert.equal((os as PermissionDenied).code, "EACCES");
});

test("Node under --permission without --allow-addons: the first lock call throws FfiUnavailable, the constructor does not", () => {
  using dir = tempDir();
  const script = `
    import { FfiUnavailable, Lock } from ${JSON.stringify(join(root, "mod.ts"))};
    const lock = new Lock(process.env.LOCK_DIR + "/a.lock");
    try {
      await lock.acquire();
      console.log("locked");
    } catch (e) {
      console.log(e instanceof FfiUnavailable ? e.code + " " + e.reason : String(e));
    }
  `;
  const result = spawnSync(join(root, "node_modules", ".bin", "node"), [
    "--no-warnings",
    "--permission",
    "--allow-fs-read=*",
    `--allow-fs-write=${dir.path}`,
    "--input-type=module",
    "-e",
    script,
  ], { encoding: "utf8", env: { ...process.env, LOCK_DIR: dir.path, NODE_OPTIONS: "" } });
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout.trim(), "ERR_NO_FFI denied");
});
