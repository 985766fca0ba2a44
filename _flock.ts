// BSD flock(2) for Bun and Node, through an FFI, with blocking waits run on
// worker threads so that neither the JavaScript thread nor a thread of
// libuv's pool is ever held by a lock that somebody else has.
import type { Worker } from "node:worker_threads";
import { FfiUnavailable, type FfiUnavailableReason } from "./errors.ts";
import { childWaits, flockWaitInChild } from "./_flock_child.ts";
import { loadNativeSource, type Native } from "./_flock_native.ts";
import type { BlockedWait } from "./_runtime.ts";

/** flock(2) operations; the same numbers on Linux and macOS. */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

// The specifier is built at run time so that Deno and bundlers do not follow
// it: only Node 22 and 24 users ever need koffi.
const koffiName = ["kof", "fi"].join("");

// Node's modules, taken when first needed rather than imported: Deno loads
// this file too (see _runtime.ts), and must not start its Node layer.
const fs = () => process.getBuiltinModule("node:fs");
const createRequire = (base: string) => process.getBuiltinModule("node:module").createRequire(base);
let native: Native | undefined;
let failure: { reason: FfiUnavailableReason; cause: unknown } | undefined;
let koffiPath: string | undefined;

// The signal that interrupts a blocked flock: a real-time one that neither
// Node nor Bun uses (SIGRTMIN+26 in glibc's numbering, then lower ones if a
// host program has a handler there), undefined where none could be had.
const SIGNALS = [60, 59, 58, 57, 56];
let signal: number | undefined;

// This module's own URL, where it has one: a bundle in CommonJS, or one
// built for a target below ES2020, has an empty import.meta, and Bun's
// CommonJS output has the build machine's path in it.
function ownUrl(): string | undefined {
  try {
    const url: unknown = import.meta.url;
    return typeof url === "string" && url.startsWith("file:") ? url : undefined;
  } catch {
    return undefined;
  }
}

// Where koffi may be found from, most specific first: this module (the
// package installed next to koffi), the main script (a bundle, wherever it
// sits), the working directory. CommonJS's own `require` is not among
// them: it is local to each module, never on globalThis outside the REPL,
// and an ES module cannot name it.
function lookupBases(): string[] {
  const bases: string[] = [];
  const own = ownUrl();
  if (own !== undefined) bases.push(own);
  const main = (globalThis as { process?: { argv?: unknown[] } }).process?.argv?.[1];
  if (typeof main === "string" && main !== "") {
    try {
      bases.push(fs().realpathSync(main));
    } catch { /* not a file: a -e script, a REPL */ }
  }
  try {
    bases.push(process.getBuiltinModule("node:path").join(process.cwd(), "noop.js"));
  } catch { /* the working directory is gone */ }
  return bases;
}

/** Where koffi is installed, as an absolute path, or undefined. */
export function findKoffi(): string | undefined {
  for (const base of lookupBases()) {
    try {
      return createRequire(base).resolve(koffiName);
    } catch { /* not from here */ }
  }
  return undefined;
}

/**
 * Loads the FFI on first use.
 *
 * @throws {FfiUnavailable} Node has neither node:ffi nor koffi, or its
 * permission model refuses them; thrown again by every later call.
 */
export function getNative(): Native {
  if (native !== undefined) return native;
  if (failure !== undefined) throw new FfiUnavailable(failure.reason, { cause: failure.cause });
  koffiPath = findKoffi();
  // The main thread evaluates the same text that the waiter threads do.
  const loadNative = process.getBuiltinModule("node:vm").runInThisContext(loadNativeSource, {
    filename: "filestore-flock.js",
  }) as (req: (id: string) => unknown, koffiId: string | undefined) => Native;
  let loaded: Native;
  try {
    loaded = loadNative(createRequire(lookupBases()[0] ?? "/noop.js"), koffiPath);
  } catch (e) {
    const reason = (e as { noFfi?: FfiUnavailableReason }).noFfi;
    if (reason === undefined) throw e;
    failure = { reason, cause: (e as Error).cause };
    throw new FfiUnavailable(reason, { cause: failure.cause });
  }
  try {
    signal = loaded.interrupt && SIGNALS.find((s) => loaded.interrupt!.claim(s));
  } catch {
    signal = undefined;
  }
  return native = loaded;
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
//
// The thread is this package's own: it drops the default warning printer of
// its own process object (not the host's), so that Node 26's ExperimentalWarning
// for node:ffi is printed once, by the main thread, not once more per thread.
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads");
process.removeAllListeners("warning");
const native = ${loadNativeSource}(require, workerData.koffiPath);
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
  const { Worker } = process.getBuiltinModule("node:worker_threads");
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
    const m = /^Max open files\s+(\d+)/m.exec(fs().readFileSync("/proc/self/limits", "utf8"));
    if (m === null) return true;
    limit = Number(m[1]);
  } catch {
    return true;
  }
  try {
    const needed = (starting + 1) * FDS_PER_THREAD + FDS_SPARE;
    return fs().readdirSync("/proc/self/fd").length + needed <= limit;
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
  try {
    getNative();
  } catch {
    // No FFI: the first call that locks says so (FfiUnavailable), not a
    // constructor that only prepares.
    return;
  }
  if (idle.length === 0 && roomForThread()) {
    let waiter: Waiter;
    try {
      waiter = spawnWaiter();
    } catch {
      // Node's --permission without --allow-worker: only a wait needs the
      // thread, and that wait reports the refusal.
      return;
    }
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
