// Waiting, in one place: a deadline combined with the caller's signal, a
// blocked lock call that can be given up, and a wait shared by a second
// caller under its own rules. Lock, the semaphore and anything later that
// waits go through here. (No `using` declarations: Node 22 cannot parse
// them.)
import { closeQuietly, type RawFile, rt } from "./_runtime.ts";

/** The longest delay a timer takes; longer ones fire at once. */
export const MAX_TIMER = 2 ** 31 - 1;

/**
 * Calls `fn` once `ms` milliseconds have passed, also beyond a timer's
 * 24.8-day limit; returns the cancel function.
 */
export function after(ms: number, fn: () => void): () => void {
  const end = performance.now() + ms;
  let id: ReturnType<typeof setTimeout>;
  const arm = (left: number) => {
    id = setTimeout(() => {
      const rest = end - performance.now();
      if (rest > 0) arm(rest);
      else fn();
    }, Math.min(left, MAX_TIMER));
  };
  arm(ms);
  return () => clearTimeout(id);
}

/**
 * A timer that does not keep the host process alive by itself (a held
 * lease's timers: the client's connection decides that); `ms` must be
 * within a timer's limit ({@link MAX_TIMER}). Returns the cancel function.
 */
export function unrefTimer(ms: number, fn: () => void): () => void {
  const id = setTimeout(fn, ms);
  if (typeof id === "object" && id !== null) (id as { unref?: () => void }).unref?.();
  else {
    (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno?.unrefTimer?.(id as number);
  }
  return () => clearTimeout(id);
}

// The reason a deadline's signal carries when its time ran out.
const TIMED_OUT: unique symbol = Symbol("timed out");

/** A timeout and the callers' signals as one signal (std's `deadline()` pattern). */
export interface Deadline extends Disposable {
  /**
   * Aborts when the time runs out or one of the signals aborts (with that
   * signal's reason); `undefined` when neither can happen.
   */
  readonly signal: AbortSignal | undefined;
  /** Whether it was the time that ran out. */
  readonly timedOut: boolean;
}

/** Starts a deadline of `ms` milliseconds (`Infinity`: none) joined to `signals`. */
export function deadline(ms: number, ...signals: (AbortSignal | undefined)[]): Deadline {
  const sources = signals.filter((s) => s !== undefined);
  if (ms === Infinity && sources.length === 0) {
    return { signal: undefined, timedOut: false, [Symbol.dispose]() {} };
  }
  const controller = new AbortController();
  const listeners = sources.map((source) => {
    const onAbort = () => controller.abort(source.reason);
    if (source.aborted) onAbort();
    else source.addEventListener("abort", onAbort, { once: true });
    return () => source.removeEventListener("abort", onAbort);
  });
  const cancel = ms === Infinity ? undefined : after(ms, () => controller.abort(TIMED_OUT));
  return {
    signal: controller.signal,
    get timedOut() {
      return controller.signal.reason === TIMED_OUT;
    },
    [Symbol.dispose]() {
      cancel?.();
      for (const remove of listeners) remove();
    },
  };
}

/** `promise`, or a rejection with `signal`'s reason if that aborts first. */
export function untilAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(signal.reason);
    if (signal.aborted) return abort();
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}

// `promise`, with the host process kept alive until it settles.
async function keptAlive<T>(promise: Promise<T>): Promise<T> {
  const id = setInterval(() => {}, MAX_TIMER);
  try {
    return await promise;
  } finally {
    clearInterval(id);
  }
}

// A given-up wait returns within a millisecond where it can be interrupted
// (Bun, Node on Linux); elsewhere (Deno) it stays blocked in the kernel
// until the holder lets go, on a thread of its own, without keeping the
// process alive where Deno allows that (_deno.ts). So that a caller
// retrying with short timeouts does not pile up one such thread per try,
// later waits on the same file wait for the given-up one to return (and
// drop its lock) instead of starting another; then they try again. Keyed
// by device and inode.
const abandoned = new Map<string, Promise<void>>();

/**
 * Waits without blocking the thread until `f` is locked. If `signal`
 * aborts first, rejects with its reason and `f` is closed (now, or as soon
 * as the blocked call returns): the lock is never held afterwards.
 * Without a signal, `f` is left open on failure: it may be the caller's.
 */
export async function lockWait(
  f: RawFile,
  exclusive: boolean,
  signal?: AbortSignal,
): Promise<void> {
  if (signal === undefined) return await rt.startWait(f, exclusive, false).granted;
  const gaveUp = (reason: unknown) => {
    closeQuietly(f);
    return reason;
  };
  if (signal.aborted) throw gaveUp(signal.reason);
  const { dev, ino } = rt.fstatSync(f);
  const key = `${dev}:${ino}`;
  for (let earlier = abandoned.get(key); earlier; earlier = abandoned.get(key)) {
    try {
      // A given-up call may no longer keep the process alive by itself
      // (Deno): this caller still waits for it.
      await keptAlive(untilAbort(earlier, signal));
    } catch (reason) {
      throw gaveUp(reason);
    }
    if (rt.tryLockSync(f, exclusive)) return;
  }
  const wait = rt.startWait(f, exclusive, true);
  try {
    await untilAbort(wait.granted, signal);
  } catch (reason) {
    if (!signal.aborted || reason !== signal.reason) throw reason;
    const dropped = wait.abandon();
    if (dropped === undefined) {
      // The call returned just before the abort: this side owns the lock.
      try {
        rt.unlockSync(f);
      } finally {
        closeQuietly(f);
      }
    } else {
      abandoned.set(key, dropped);
      void dropped.then(() => {
        if (abandoned.get(key) === dropped) abandoned.delete(key);
      });
    }
    throw reason;
  }
}

/** How a wait for a lock ended. */
export type Outcome = "held" | "timeout" | "aborted";

/**
 * Waits until `raw` is locked, `ms` run out or one of `signals` aborts.
 * Unless it resolves "held", `raw` is closed and the lock is not held.
 */
export async function waitForLock(
  raw: RawFile,
  exclusive: boolean,
  ms: number,
  ...signals: (AbortSignal | undefined)[]
): Promise<Outcome> {
  const limit = deadline(ms, ...signals);
  try {
    await lockWait(raw, exclusive, limit.signal);
    return "held";
  } catch (e) {
    if (limit.signal?.aborted && e === limit.signal.reason) {
      return limit.timedOut ? "timeout" : "aborted";
    }
    closeQuietly(raw);
    throw e;
  } finally {
    limit[Symbol.dispose]();
  }
}

/** The waiting rules of one acquire call. */
export interface WaitRules {
  timeout: number;
  failWhenLocked: boolean;
  signal: AbortSignal | undefined;
}

/**
 * Joins another call's pending acquire under this call's own rules: it is
 * refused at once (failWhenLocked, timeout 0) or when its timeout runs out,
 * and rejects with its signal's reason when that aborts. The shared wait
 * goes on for the call that started it.
 */
export async function share<T>(
  pending: Promise<T>,
  rules: WaitRules,
  refuse: (waited?: number) => Error,
): Promise<T> {
  if (rules.failWhenLocked || rules.timeout === 0) throw refuse();
  const limit = deadline(rules.timeout, rules.signal);
  try {
    return await untilAbort(pending, limit.signal);
  } catch (e) {
    if (limit.timedOut && e === limit.signal?.reason) throw refuse(rules.timeout);
    throw e;
  } finally {
    limit[Symbol.dispose]();
  }
}
