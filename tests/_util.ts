// Shared by the tests: temporary directories, and the child processes of
// tests/_child.ts, which a test file ends when it is done.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { killChildren } from "./_child.ts";

export { runtimeName } from "../_runtime.ts";
export { type Child, command, root, run, type Runtime, RUNTIMES, sleep, start } from "./_child.ts";

// A child that a failed test left running would keep the test process alive
// through its pipes.
after(killChildren);

/** A temporary directory, removed on dispose. */
export interface TempDir extends Disposable {
  readonly path: string;
}

/** Makes a temporary directory for one test. */
export function tempDir(prefix = "filestore-test-"): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    [Symbol.dispose]() {
      rmSync(path, { recursive: true, force: true });
    },
  };
}
