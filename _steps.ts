// The one way this package writes an operation with a sync and an async
// twin: the logic is a generator that yields the file operations it needs
// (`yield* step("rename", from, to)`); `runSync` carries them out with the
// runtime's sync calls and `run` with its async ones, handing back results
// and throwing errors into the generator where they happened.
import { rt } from "./_runtime.ts";

function settleSync(value: unknown, message: string): unknown {
  if (value instanceof Promise) {
    value.catch(() => {});
    throw new TypeError(message);
  }
  return value;
}

// Each operation's sync and async call; both take the same arguments.
const ops = {
  open: [rt.openSync, rt.open],
  write: [rt.writeSync, rt.write],
  fsync: [rt.fsyncSync, rt.fsync],
  close: [rt.closeSync, rt.closeSync],
  rename: [rt.renameSync, rt.rename],
  link: [rt.linkSync, rt.link],
  unlink: [rt.unlinkSync, rt.unlink],
  mkdir: [rt.mkdirSync, rt.mkdir],
  readDir: [rt.readDirSync, rt.readDir],
  readFiles: [rt.readFilesSync, rt.readFiles],
  stat: [rt.statSync, rt.stat],
  lstat: [rt.lstatSync, rt.lstatSync],
  readlink: [rt.readlinkSync, rt.readlinkSync],
  fstat: [rt.fstatSync, rt.fstatSync],
  tryLock: [rt.tryLockSync, rt.tryLockSync],
  truncate: [rt.truncateSync, rt.truncate],
  read: [rt.readSync, rt.read],
  copyFile: [rt.copyFileSync, rt.copyFile],
  fsyncDir: [rt.fsyncDirSync, rt.fsyncDir],
  // A caller's callback result: awaited by the async twin, refused (with
  // `message`) by the sync one if it is a promise.
  settle: [settleSync, (value: unknown, _message: string) => value],
} as const;

type Ops = typeof ops;
type Op = keyof Ops;
type Args<K extends Op> = Parameters<Ops[K][0]>;
type Result<K extends Op> = ReturnType<Ops[K][0]>;

/** One file operation a generator asks for. */
export type Call = { [K in Op]: readonly [K, ...Args<K>] }[Op];

/** The body of an operation with sync and async twins. */
export type Steps<T> = Generator<Call, T, unknown>;

/** Asks for one file operation and hands back its typed result. */
export function* step<K extends Op>(op: K, ...args: Args<K>): Steps<Result<K>> {
  return (yield [op, ...args] as unknown as Call) as Result<K>;
}

function drive<T>(steps: Steps<T>, next: IteratorResult<Call, T>, sync: true): T;
function drive<T>(steps: Steps<T>, next: IteratorResult<Call, T>, sync: false): Promise<T>;
function drive<T>(
  steps: Steps<T>,
  next: IteratorResult<Call, T>,
  sync: boolean,
): T | Promise<T> {
  for (;;) {
    if (next.done) return sync ? next.value : Promise.resolve(next.value);
    const [op, ...args] = next.value;
    const fn = ops[op][sync ? 0 : 1] as (...a: unknown[]) => unknown;
    let result: unknown;
    try {
      result = fn(...args);
    } catch (e) {
      next = steps.throw(e);
      continue;
    }
    if (!sync && result instanceof Promise) {
      return result.then(
        (value) => drive(steps, steps.next(value), false),
        (e) => drive(steps, steps.throw(e), false),
      );
    }
    next = steps.next(result);
  }
}

/** Carries the steps out with synchronous calls. */
export function runSync<T>(steps: Steps<T>): T {
  return drive(steps, steps.next(), true);
}

/** Carries the steps out with asynchronous calls; a throw before the first await rejects. */
export function run<T>(steps: Steps<T>): Promise<T> {
  try {
    return drive(steps, steps.next(), false);
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * A synchronous body as a promise: its throw becomes a rejection, for the
 * async twin of an operation that never waits. (`Promise.try`, which Node
 * 22 lacks.)
 */
export function settled<T>(body: () => T): Promise<T> {
  try {
    return Promise.resolve(body());
  } catch (e) {
    return Promise.reject(e);
  }
}
