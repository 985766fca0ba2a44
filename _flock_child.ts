// A lock wait in a child process instead of a thread, for the waits beyond
// the first in a process: a thread with its own JavaScript engine costs
// megabytes (Bun 3.4 MiB, Node 12 MiB), a child of util-linux flock(1)
// about 0.1-0.4 MiB of the machine's memory and almost none of this
// process's. flock locks belong to the open file description, which the
// child inherits as its descriptor 3: once it has the lock and exits, this
// process holds it. setpriv(1) --pdeathsig has the kernel kill the child if
// the thread that started it ends, so that no wait outlives its program.
// Node's modules are taken when first needed, not imported: Deno loads this
// file too (see _runtime.ts), and must not start its Node layer.
import type { BlockedWait } from "./_runtime.ts";

interface Tools {
  flock: string;
  setpriv: string;
}

let tools: Tools | null | undefined;

// The programs by absolute path, from the usual system directories only:
// never whatever a PATH of the host's user would find first.
function find(name: string): string | undefined {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    try {
      const fs = process.getBuiltinModule("node:fs");
      fs.accessSync(`${dir}/${name}`, fs.constants.X_OK);
      return `${dir}/${name}`;
    } catch { /* not here */ }
  }
  return undefined;
}

/** Whether waits can run in flock(1) children here (Linux with util-linux). */
export function childWaits(): boolean {
  if (tools === undefined) {
    const platform = (globalThis as { process?: { platform?: string } }).process?.platform;
    const flock = find("flock");
    const setpriv = find("setpriv");
    tools = platform === "linux" && flock && setpriv ? { flock, setpriv } : null;
  }
  return tools !== null;
}

const EIO = 5;
const EMFILE = 24;

/**
 * Starts a child that waits for the lock on `fd` and exits once it has it.
 * Giving the wait up kills the child; then, and whenever the wait ends
 * given up, `release` unlocks and closes `fd` (the child may have got the
 * lock just before it was killed).
 */
export function flockWaitInChild(
  fd: number,
  exclusive: boolean,
  onError: (errno: number) => unknown,
  release: () => void,
): BlockedWait {
  const { flock, setpriv } = tools!;
  let ended = false;
  let abandoned = false;
  let dropped: (() => void) | undefined;
  const settleAbandoned = () => {
    try {
      release();
    } finally {
      dropped?.();
    }
  };
  const { spawn } = process.getBuiltinModule("node:child_process");
  const child = spawn(setpriv, ["--pdeathsig", "KILL", flock, exclusive ? "-x" : "-s", "3"], {
    stdio: ["ignore", "ignore", "ignore", fd],
  });
  const granted = new Promise<void>((resolve, reject) => {
    child.once("error", (error: Error & { code?: string }) => {
      ended = true;
      if (abandoned) settleAbandoned();
      else reject(error.code === "EMFILE" ? onError(EMFILE) : error);
    });
    child.once("exit", (code) => {
      ended = true;
      if (abandoned) settleAbandoned();
      else if (code === 0) resolve();
      else reject(onError(EIO));
    });
  });
  return {
    granted,
    abandon() {
      if (ended) return undefined;
      abandoned = true;
      child.unref();
      const done = new Promise<void>((resolve) => dropped = resolve);
      child.kill("SIGKILL");
      return done;
    },
  };
}
