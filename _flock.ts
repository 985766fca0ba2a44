// BSD flock(2) for Bun and Node, through an FFI, with blocking waits run on
// worker threads so that neither the JavaScript thread nor a thread of
// libuv's pool is ever held by a lock that somebody else has.
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { childWaits, flockWaitInChild } from "./_flock_child.ts";
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
  /**
   * Interrupting a thread blocked in flock, where it works (Linux): a signal
   * whose handler is a harmless libc function (getpid) installed without
   * SA_RESTART makes the blocked call return EINTR.
   */
  interrupt?: Interrupt | undefined;
}

/** The calls that interrupt a blocked flock; see {@link Native.interrupt}. */
export interface Interrupt {
  /** The calling thread's pthread_t. */
  self(): bigint;
  /** pthread_kill(thread, signal); 0 or an errno. */
  kill(thread: bigint, signal: number): number;
  /**
   * Installs the handler for `signal` unless another one is there:
   * whether the signal is now this package's.
   */
  claim(signal: number): boolean;
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
  // struct sigaction of glibc and musl on Linux: the handler at 0, the
  // 128-byte mask at 8, the flags at 136 (0: no SA_RESTART), the restorer,
  // which sigaction() fills in, at 144.
  const SIGACTION_SIZE = 152;
  const FLAGS_AT = 136;
  const linux = platform === "linux";
  // Reads the handler of `signal` through `get`, and installs `handler` if
  // none is there (or it is already this package's) through `set`.
  const claimWith = (
    handler: bigint,
    get: (signal: number, old: Uint8Array) => number,
    set: (signal: number, action: Uint8Array) => number,
  ) =>
  (signal: number): boolean => {
    const old = new Uint8Array(SIGACTION_SIZE);
    if (get(signal, old) !== 0) return false;
    const current = new DataView(old.buffer).getBigUint64(0, true);
    if (current === handler) return true;
    if (current !== 0n) return false;
    const action = new Uint8Array(SIGACTION_SIZE);
    const view = new DataView(action.buffer);
    view.setBigUint64(0, handler, true);
    view.setInt32(FLAGS_AT, 0, true);
    return set(signal, action) === 0;
  };
  if (isBun) {
    const ffi = req("bun:ffi");
    const lib = ffi.dlopen(libc, {
      flock: { args: ["i32", "i32"], returns: "i32" },
      [errnoSym]: { args: [], returns: "ptr" },
      ...(linux
        ? {
          pthread_self: { args: [], returns: "u64" },
          pthread_kill: { args: ["u64", "i32"], returns: "i32" },
          sigaction: { args: ["i32", "ptr", "ptr"], returns: "i32" },
          dlopen: { args: ["ptr", "i32"], returns: "ptr" },
          dlsym: { args: ["ptr", "ptr"], returns: "ptr" },
        }
        : {}),
    }).symbols;
    const where = lib[errnoSym]();
    let interrupt: Interrupt | undefined;
    if (linux) {
      const name = new TextEncoder().encode("getpid\0");
      const getpid = BigInt(lib.dlsym(lib.dlopen(null, 1), ffi.ptr(name)));
      interrupt = {
        self: () => BigInt(lib.pthread_self()),
        kill: (thread, signal) => lib.pthread_kill(thread, signal),
        claim: claimWith(
          getpid,
          (signal, old) => lib.sigaction(signal, null, ffi.ptr(old)),
          (signal, action) => lib.sigaction(signal, ffi.ptr(action), null),
        ),
      };
    }
    return {
      via: "bun:ffi",
      EWOULDBLOCK,
      EINTR,
      flock: lib.flock,
      errno: () => ffi.read.i32(where, 0),
      interrupt,
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
        ...(linux
          ? {
            getpid: { arguments: [], return: "i32", parameters: [], result: "i32" },
            pthread_self: { arguments: [], return: "u64", parameters: [], result: "u64" },
            pthread_kill: {
              arguments: ["u64", "i32"],
              return: "i32",
              parameters: ["u64", "i32"],
              result: "i32",
            },
          }
          : {}),
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
        let interrupt: Interrupt | undefined;
        try {
          // sigaction twice, with the buffer in the second or third place.
          const sig = (args: string[]) =>
            ffi.dlopen(libc, {
              sigaction: { arguments: args, return: "i32", parameters: args, result: "i32" },
            }).functions.sigaction;
          const read = sig(["i32", "pointer", "buffer"]);
          const write = sig(["i32", "buffer", "pointer"]);
          if (linux && functions.getpid.pointer !== undefined) {
            interrupt = {
              self: () => BigInt(functions.pthread_self()),
              kill: (thread, signal) => functions.pthread_kill(thread, signal),
              claim: claimWith(
                BigInt(functions.getpid.pointer),
                (signal, old) => read(signal, 0n, old),
                (signal, action) => write(signal, action, 0n),
              ),
            };
          }
        } catch {
          interrupt = undefined;
        }
        return { via: "node:ffi", EWOULDBLOCK, EINTR, flock, errno, interrupt };
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
  let interrupt: Interrupt | undefined;
  if (linux) {
    const self = lib.func("uint64_t pthread_self()");
    const kill = lib.func("int pthread_kill(uint64_t, int)");
    const sigaction = lib.func("int sigaction(int, void *, void *)");
    const dlopen = lib.func("void *dlopen(const char *, int)");
    const dlsym = lib.func("void *dlsym(void *, const char *)");
    interrupt = {
      self: () => BigInt(self()),
      kill: (thread, signal) => kill(thread, signal),
      claim: claimWith(
        BigInt(koffi.address(dlsym(dlopen(null, 1), "getpid"))),
        (signal, old) => sigaction(signal, null, old),
        (signal, action) => sigaction(signal, action, null),
      ),
    };
  }
  return {
    via: "koffi",
    EWOULDBLOCK,
    EINTR,
    flock: lib.func("int flock(int, int)"),
    errno: () => koffi.errno(),
    interrupt,
  };
}

// The specifier is built at run time so that Deno and bundlers do not follow
// it: only Node 22 and 24 users ever need koffi.
const koffiName = ["kof", "fi"].join("");
let native: Native | undefined;
let koffiPath: string | undefined;

// The signal that interrupts a blocked flock: a real-time one that neither
// Node nor Bun uses (SIGRTMIN+26 in glibc's numbering, then lower ones if a
// host program has a handler there), undefined where none could be had.
const SIGNALS = [60, 59, 58, 57, 56];
let signal: number | undefined;

/** Loads the FFI on first use; throws a clear error when there is none. */
export function getNative(): Native {
  if (native === undefined) {
    const req = createRequire(import.meta.url);
    try {
      koffiPath = req.resolve(koffiName);
    } catch {
      koffiPath = undefined;
    }
    const loaded = loadNative(req, koffiPath);
    try {
      signal = loaded.interrupt && SIGNALS.find((s) => loaded.interrupt!.claim(s));
    } catch {
      signal = undefined;
    }
    native = loaded;
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

// Each waiter thread shares four words with the main thread: its state
// (IDLE, BLOCKED while it may be in flock, DONE), a cancel flag, and its
// pthread_t (in the second half), so that the main thread can interrupt it
// without waiting for a message, even in an exit listener.
const STATE = 0;
const CANCEL = 1;
// Set once the thread has loaded its FFI: a thread terminated while koffi
// loads aborts the whole process ("napi_throw" from koffi.load).
const LOADED = 2;
const IDLE = 0;
const BLOCKED = 1;
const DONE = 2;

// The state is BLOCKED before the cancel flag is read, and the flag is set
// before the state is read on the other side (sequentially consistent
// atomics): either the waiter sees the flag and never calls flock, or the
// canceller sees BLOCKED and signals until the call has returned.
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const native = (${loadNative.toString()})(require, workerData.koffiPath);
const shared = new Int32Array(workerData.shared, 0, 4);
if (native.interrupt) new BigUint64Array(workerData.shared, 16, 1)[0] = native.interrupt.self();
Atomics.store(shared, ${LOADED}, 1);
Atomics.notify(shared, ${LOADED});
parentPort.on("message", ({ fd, op }) => {
  let errno = 0;
  let cancelled = false;
  Atomics.store(shared, ${STATE}, ${BLOCKED});
  for (;;) {
    if (Atomics.load(shared, ${CANCEL}) === 1) { cancelled = true; break; }
    if (native.flock(fd, op) === 0) {
      errno = 0;
      if (Atomics.load(shared, ${CANCEL}) === 1) { native.flock(fd, 8); cancelled = true; }
      break;
    }
    errno = native.errno();
    if (errno !== native.EINTR) break;
  }
  Atomics.store(shared, ${STATE}, ${DONE});
  Atomics.notify(shared, ${STATE});
  parentPort.postMessage({ errno, cancelled });
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
  shared: Int32Array;
  thread: BigUint64Array;
  /** Repeats the interrupt until the waiter has returned. */
  kicker: ReturnType<typeof setInterval> | undefined;
}

const idle: Waiter[] = [];
const busy = new Set<Waiter>();
// Every waiter thread that is running, busy or idle.
const threads = new Set<Waiter>();
const MAX_IDLE = 4;

// Signals `waiter`'s thread if it may be in flock; false once it is not.
function kick(waiter: Waiter): boolean {
  if (Atomics.load(waiter.shared, STATE) !== BLOCKED) return false;
  const thread = waiter.thread[0]!;
  if (thread !== 0n && signal !== undefined) native!.interrupt!.kill(thread, signal);
  return true;
}

// Gives the wait up for real: the waiter returns from flock at once (or
// never calls it) and reports back. Where no signal could be had, it
// returns when the holder lets go, and drops what it got.
function cancel(waiter: Waiter): void {
  Atomics.store(waiter.shared, CANCEL, 1);
  if (signal === undefined || !kick(waiter)) return;
  waiter.kicker ??= setInterval(() => kick(waiter), 1);
  waiter.kicker.unref?.();
}

// Waits (spinning where the thread may not wait) until `shared[index]`
// is no longer `value`, or `until` has passed; `nudge` runs before each look.
function waitWhile(
  shared: Int32Array,
  index: number,
  value: number,
  until: number,
  nudge?: () => void,
): void {
  while (Atomics.load(shared, index) === value && performance.now() < until) {
    nudge?.();
    try {
      Atomics.wait(shared, index, value, 1);
    } catch { /* a thread that may not wait: look again at once */ }
  }
}

// At exit, Node joins its worker threads and tears them down: a waiter
// still in flock would hold the exit until the holder lets go, and one
// that is still loading koffi aborts the process. So this listener lets
// the threads that are loading finish (tens of milliseconds, only in a
// program that exits right after it first waited), and gives up the waits
// still pending, returning once their threads have left flock. It changes
// nothing else of the exit.
function settleThreadsSync(): void {
  for (const waiter of threads) {
    waitWhile(waiter.shared, LOADED, 0, performance.now() + 2000);
  }
  for (const waiter of busy) {
    Atomics.store(waiter.shared, CANCEL, 1);
    if (signal === undefined) continue;
    waitWhile(waiter.shared, STATE, BLOCKED, performance.now() + 100, () => kick(waiter));
  }
}

let exitListener = false;

function listenForExit(): void {
  if (exitListener) return;
  exitListener = true;
  (globalThis as { process?: { on(e: "exit", f: () => void): void } }).process?.on(
    "exit",
    settleThreadsSync,
  );
}

// An abandoned wait's descriptor belongs to the waiter: drop whatever lock
// the blocked call got, close it, and tell whoever waits for that.
function settleAbandoned(wait: Wait) {
  try {
    wait.release();
  } finally {
    wait.dropped?.();
  }
}

function finish(waiter: Waiter, errno: number, cancelled: boolean) {
  const wait = waiter.wait!;
  waiter.wait = undefined;
  busy.delete(waiter);
  if (waiter.kicker !== undefined) clearInterval(waiter.kicker);
  waiter.kicker = undefined;
  waiter.worker.unref();
  if (idle.length < MAX_IDLE) idle.push(waiter);
  else void waiter.worker.terminate();
  if (wait.abandoned) settleAbandoned(wait);
  else if (cancelled) {
    wait.reject(new Error("The wait for the lock was given up as the thread exits"));
  } else if (errno === 0) wait.resolve();
  else wait.reject(wait.onError(errno));
}

function spawnWaiter(): Waiter {
  const shared = new SharedArrayBuffer(24);
  const worker = new Worker(workerSource, {
    eval: true,
    // The parent's flags (--input-type=module, say) would change how this
    // CommonJS source runs.
    execArgv: [],
    workerData: { koffiPath, shared },
  });
  listenForExit();
  starting++;
  let online = false;
  const started = () => {
    if (!online) starting--;
    online = true;
  };
  worker.once("online", started);
  const waiter: Waiter = {
    worker,
    wait: undefined,
    shared: new Int32Array(shared, 0, 4),
    thread: new BigUint64Array(shared, 16, 1),
    kicker: undefined,
  };
  threads.add(waiter);
  worker.once("exit", () => threads.delete(waiter));
  worker.on(
    "message",
    (m: { errno: number; cancelled: boolean }) => finish(waiter, m.errno, m.cancelled),
  );
  worker.on("error", (error) => {
    started();
    const wait = waiter.wait;
    waiter.wait = undefined;
    busy.delete(waiter);
    if (waiter.kicker !== undefined) clearInterval(waiter.kicker);
    const at = idle.indexOf(waiter);
    if (at >= 0) idle.splice(at, 1);
    if (wait?.abandoned) settleAbandoned(wait);
    else wait?.reject(error);
  });
  return waiter;
}

// Each waiter thread takes descriptors of its own (2 on Bun, 5 on Node
// here), and a runtime that runs out of them while it starts a thread may
// die outright (Bun: "ran out of file descriptors"). So a new thread is
// started only while the descriptor limit leaves room for it and more;
// otherwise that wait fails with EMFILE, and the process lives on.
const FDS_PER_THREAD = 8;
const FDS_SPARE = 16;
const EMFILE = 24;

// Threads started whose descriptors are not all open yet.
let starting = 0;

function roomForThread(): boolean {
  let limit: number;
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m === null) return true;
    limit = Number(m[1]);
  } catch {
    return true;
  }
  try {
    const needed = (starting + 1) * FDS_PER_THREAD + FDS_SPARE;
    return readdirSync("/proc/self/fd").length + needed <= limit;
  } catch {
    return true;
  }
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
  if (idle.length === 0 && roomForThread()) {
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
  // One wait at a time on a thread (the fastest handoff); the waits beyond
  // it in flock(1) children, which cost a fraction of a thread's memory.
  if (busy.size > 0 && childWaits()) {
    return flockWaitInChild(fd, (op & LOCK_EX) !== 0, onError, release);
  }
  if (idle.length === 0 && !roomForThread()) {
    return { granted: Promise.reject(onError(EMFILE)), abandon: () => undefined };
  }
  const waiter = idle.pop() ?? spawnWaiter();
  let wait!: Wait;
  const granted = new Promise<void>((resolve, reject) => {
    wait = { onError, resolve, reject, release, abandoned: false, dropped: undefined };
  });
  waiter.wait = wait;
  busy.add(waiter);
  Atomics.store(waiter.shared, CANCEL, 0);
  Atomics.store(waiter.shared, STATE, IDLE);
  waiter.worker.ref();
  waiter.worker.postMessage({ fd, op });
  return {
    granted,
    abandon() {
      if (waiter.wait !== wait) return undefined;
      wait.abandoned = true;
      waiter.worker.unref();
      const dropped = new Promise<void>((resolve) => wait.dropped = resolve);
      cancel(waiter);
      return dropped;
    },
  };
}
