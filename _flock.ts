// BSD flock(2) for Bun and Node, through an FFI, with blocking waits run on
// worker threads so that neither the JavaScript thread nor a thread of
// libuv's pool is ever held by a lock that somebody else has.
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { BlockedWait } from "./_runtime.ts";

/** flock(2) operations; the same numbers on Linux and macOS. */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** What the FFI gives: flock and errno, with the platform's errno numbers. */
export interface Native {
  flock(fd: number, op: number): number;
  errno(): number;
  readonly EWOULDBLOCK: number;
  readonly EINTR: number;
  readonly via: string;
  /** libc `_exit`: ends the process without joining its threads. */
  exit?: (code: number) => void;
}

// Serialised with Function.prototype.toString into the waiter threads, so it
// must stay self-contained: no references to anything outside its body.
// deno-lint-ignore no-explicit-any
function loadNative(req: (id: string) => any, koffiId: string | undefined): Native {
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const platform = (globalThis as { process?: { platform?: string } }).process?.platform;
  const darwin = platform === "darwin";
  const win = platform === "win32";
  const libc = darwin ? "libSystem.B.dylib" : "libc.so.6";
  const errnoSym = darwin ? "__error" : "__errno_location";
  const EWOULDBLOCK = darwin ? 35 : 11;
  const EINTR = 4;
  if (win) {
    // LockFileEx on the first byte, as zc.lockfile does, so that readers of
    // the pid from byte 1 are not refused by a mandatory Windows lock.
    const ERROR_LOCK_VIOLATION = 33;
    const ERROR_IO_PENDING = 997;
    const FLAGS_EX = 2;
    const FLAGS_NB = 1;
    let lockEx: (h: unknown, f: number, o: Uint8Array) => number;
    let unlockEx: (h: unknown, o: Uint8Array) => number;
    let osHandle: (fd: number) => unknown;
    let lastError: () => number;
    if (isBun) {
      const ffi = req("bun:ffi");
      const k = ffi.dlopen("kernel32.dll", {
        LockFileEx: { args: ["ptr", "u32", "u32", "u32", "u32", "ptr"], returns: "i32" },
        UnlockFileEx: { args: ["ptr", "u32", "u32", "u32", "ptr"], returns: "i32" },
        GetLastError: { args: [], returns: "u32" },
      }).symbols;
      const u = ffi.dlopen("ucrtbase.dll", {
        _get_osfhandle: { args: ["i32"], returns: "ptr" },
      }).symbols;
      lockEx = (h, f, o) => k.LockFileEx(h, f, 0, 1, 0, ffi.ptr(o));
      unlockEx = (h, o) => k.UnlockFileEx(h, 0, 1, 0, ffi.ptr(o));
      osHandle = (fd) => u._get_osfhandle(fd);
      lastError = () => k.GetLastError();
    } else {
      const koffi = req(koffiId ?? "koffi");
      const k = koffi.load("kernel32.dll");
      const u = koffi.load("ucrtbase.dll");
      const lfe = k.func(
        "int __stdcall LockFileEx(void *, uint32_t, uint32_t, uint32_t, uint32_t, _Inout_ uint8_t *)",
      );
      const ufe = k.func(
        "int __stdcall UnlockFileEx(void *, uint32_t, uint32_t, uint32_t, _Inout_ uint8_t *)",
      );
      const gle = k.func("uint32_t __stdcall GetLastError()");
      const goh = u.func("void *_get_osfhandle(int)");
      lockEx = (h, f, o) => lfe(h, f, 0, 1, 0, o);
      unlockEx = (h, o) => ufe(h, 0, 1, 0, o);
      osHandle = (fd) => goh(fd);
      lastError = () => gle();
    }
    let error = 0;
    return {
      via: isBun ? "bun:ffi kernel32" : "koffi kernel32",
      EWOULDBLOCK,
      EINTR,
      errno: () => error,
      flock(fd, op) {
        const overlapped = new Uint8Array(32);
        const ok = op & 8
          ? unlockEx(osHandle(fd), overlapped)
          : lockEx(osHandle(fd), (op & 2 ? FLAGS_EX : 0) | (op & 4 ? FLAGS_NB : 0), overlapped);
        if (ok) return 0;
        const e = lastError();
        error = e === ERROR_LOCK_VIOLATION || e === ERROR_IO_PENDING ? EWOULDBLOCK : e;
        return -1;
      },
    };
  }
  if (isBun) {
    const ffi = req("bun:ffi");
    const lib = ffi.dlopen(libc, {
      flock: { args: ["i32", "i32"], returns: "i32" },
      [errnoSym]: { args: [], returns: "ptr" },
    }).symbols;
    const where = lib[errnoSym]();
    return {
      via: "bun:ffi",
      EWOULDBLOCK,
      EINTR,
      flock: lib.flock,
      errno: () => ffi.read.i32(where, 0),
    };
  }
  const builtin = (globalThis as {
    process?: { getBuiltinModule?: (id: string) => unknown };
  }).process?.getBuiltinModule;
  let nodeFfi;
  try {
    nodeFfi = builtin?.("node:ffi");
  } catch {
    nodeFfi = undefined;
  }
  // deno-lint-ignore no-explicit-any
  const ffi = nodeFfi as any;
  if (ffi && typeof ffi.dlopen === "function") {
    // Node 26.10 reads `arguments` and `return`, and silently ignores the
    // `parameters` and `result` of some of its docs (the function then
    // takes no arguments and returns nothing): give both spellings. A
    // "pointer" comes back as a bigint, which ffi.getInt32 takes.
    // deno-lint-ignore no-explicit-any
    let functions: any;
    try {
      functions = ffi.dlopen(libc, {
        flock: {
          arguments: ["i32", "i32"],
          return: "i32",
          parameters: ["i32", "i32"],
          result: "i32",
        },
        [errnoSym]: { arguments: [], return: "pointer", parameters: [], result: "pointer" },
        _exit: { arguments: ["i32"], return: "void", parameters: ["i32"], result: "void" },
      }).functions;
    } catch {
      // e.g. ERR_ACCESS_DENIED under --permission without --allow-ffi.
      functions = undefined;
    }
    if (functions) {
      const where = functions[errnoSym]();
      const flock = functions.flock;
      const errno = () => ffi.getInt32(where, 0);
      // Sanity check of the signatures: flock(-1, LOCK_UN) fails with EBADF
      // (9 on Linux and macOS). Otherwise fall through to koffi.
      if (flock(-1, 8) === -1 && errno() === 9) {
        return { via: "node:ffi", EWOULDBLOCK, EINTR, flock, errno, exit: functions._exit };
      }
    }
  }
  let koffi;
  try {
    koffi = req(koffiId ?? "koffi");
  } catch (cause) {
    throw new Error(
      "Cannot lock files on this Node: it has no node:ffi and the npm package 'koffi' is not installed: run 'npm install koffi' (Node 22 and 24), or use Node 26 or newer",
      { cause },
    );
  }
  const lib = koffi.load(libc);
  return {
    via: "koffi",
    EWOULDBLOCK,
    EINTR,
    flock: lib.func("int flock(int, int)"),
    errno: () => koffi.errno(),
    exit: lib.func("void _exit(int)"),
  };
}

// The specifier is built at run time so that Deno and bundlers do not follow
// it: only Node 22 and 24 users ever need koffi.
const koffiName = ["kof", "fi"].join("");
let native: Native | undefined;
let koffiPath: string | undefined;

/** Loads the FFI on first use; throws a clear error when there is none. */
export function getNative(): Native {
  if (native === undefined) {
    const req = createRequire(import.meta.url);
    try {
      koffiPath = req.resolve(koffiName);
    } catch {
      koffiPath = undefined;
    }
    native = loadNative(req, koffiPath);
  }
  return native;
}

/** flock(fd, op) retried on EINTR; returns 0 or the errno. */
export function flockSync(fd: number, op: number): number {
  const n = getNative();
  for (;;) {
    if (n.flock(fd, op) === 0) return 0;
    const errno = n.errno();
    if (errno !== n.EINTR) return errno;
  }
}

const workerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const native = (${loadNative.toString()})(require, workerData.koffiPath);
parentPort.on("message", ({ fd, op }) => {
  let errno = 0;
  for (;;) {
    if (native.flock(fd, op) === 0) { errno = 0; break; }
    errno = native.errno();
    if (errno !== native.EINTR) break;
  }
  parentPort.postMessage({ errno });
});
`;

interface Wait {
  onError(errno: number): unknown;
  resolve(): void;
  reject(error: unknown): void;
  /** Unlocks and closes the descriptor once an abandoned wait returns. */
  release(): void;
  abandoned: boolean;
  /** Resolves the promise that abandon() handed out. */
  dropped: (() => void) | undefined;
}

interface Waiter {
  worker: Worker;
  wait: Wait | undefined;
}

const idle: Waiter[] = [];
const MAX_IDLE = 4;
let abandonedCount = 0;
let exitGuard = false;

// An abandoned wait's descriptor belongs to the waiter: drop whatever lock
// the blocked call got, close it, and tell whoever waits for that.
function settleAbandoned(wait: Wait) {
  abandonedCount--;
  try {
    wait.release();
  } finally {
    wait.dropped?.();
  }
}

function finish(waiter: Waiter, errno: number) {
  const wait = waiter.wait!;
  waiter.wait = undefined;
  waiter.worker.unref();
  if (idle.length < MAX_IDLE) idle.push(waiter);
  else void waiter.worker.terminate();
  if (wait.abandoned) settleAbandoned(wait);
  else if (errno === 0) wait.resolve();
  else wait.reject(wait.onError(errno));
}

function spawnWaiter(): Waiter {
  const worker = new Worker(workerSource, {
    eval: true,
    // The parent's flags (--input-type=module, say) would change how this
    // CommonJS source runs.
    execArgv: [],
    workerData: { koffiPath },
  });
  const waiter: Waiter = { worker, wait: undefined };
  worker.on("message", (m: { errno: number }) => finish(waiter, m.errno));
  worker.on("error", (error) => {
    const wait = waiter.wait;
    waiter.wait = undefined;
    const at = idle.indexOf(waiter);
    if (at >= 0) idle.splice(at, 1);
    if (wait?.abandoned) settleAbandoned(wait);
    else wait?.reject(error);
  });
  return waiter;
}

// A thread blocked in flock cannot be stopped, and Node waits for its worker
// threads as it exits: an abandoned wait would keep the process alive until
// the holder lets go (and with four or more of them, process.exit() hangs
// too). So at exit, with abandoned waits still blocked, this listener runs
// the exit listeners registered after it and then ends the process with
// libc _exit, which joins nothing. Output to files and pipes is written
// synchronously on Linux, so none is lost.
function guardExit() {
  if (exitGuard) return;
  exitGuard = true;
  const proc = (globalThis as {
    process?: {
      on(e: "exit", f: (code: number) => void): void;
      listeners(e: "exit"): ((code: number) => void)[];
    };
  }).process;
  if (!proc || typeof (globalThis as { Bun?: unknown }).Bun !== "undefined") return;
  const onExit = (code: number) => {
    if (abandonedCount === 0 || native?.exit === undefined) return;
    const later = proc.listeners("exit");
    for (const listener of later.slice(later.indexOf(onExit) + 1)) listener.call(proc, code);
    native.exit(code);
  };
  proc.on("exit", onExit);
}

let warmed = false;

/**
 * Starts one idle waiter thread ahead of need, once per process, so that
 * the first contended wait does not also pay for the thread's start (about
 * 14 ms on Bun, 46 ms on Node with koffi; far more on a loaded machine).
 */
export function warmWaiter(): void {
  if (warmed) return;
  warmed = true;
  getNative();
  if (idle.length === 0) {
    const waiter = spawnWaiter();
    waiter.worker.unref();
    idle.push(waiter);
  }
}

/** Starts flock(fd, op) on a worker thread, so that no JavaScript thread blocks. */
export function flockWait(
  fd: number,
  op: number,
  onError: (errno: number) => unknown,
  release: () => void,
): BlockedWait {
  getNative();
  const waiter = idle.pop() ?? spawnWaiter();
  let wait!: Wait;
  const granted = new Promise<void>((resolve, reject) => {
    wait = { onError, resolve, reject, release, abandoned: false, dropped: undefined };
  });
  waiter.wait = wait;
  waiter.worker.ref();
  waiter.worker.postMessage({ fd, op });
  return {
    granted,
    abandon() {
      if (waiter.wait !== wait) return undefined;
      wait.abandoned = true;
      abandonedCount++;
      waiter.worker.unref();
      guardExit();
      return new Promise<void>((resolve) => wait.dropped = resolve);
    },
  };
}
