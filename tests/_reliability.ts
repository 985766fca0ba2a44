// The reliability scenarios of issue 7, written once with a size: short in
// tests/reliability_test.ts, long in tests/stress/main.ts. Each returns its
// figures and the violations it found instead of throwing, so that the
// stress run can report them all.
import fc from "fast-check";
import { execFileSync } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import process from "node:process";
import {
  BoundedSemaphore,
  Lock,
  lock,
  LockFlags,
  lockSync,
  NamedBoundedSemaphore,
  openAtomic,
  openAtomicSync,
  PidFileLock,
  RLock,
  TemporaryFileLock,
  unlock,
  unlockSync,
} from "../lock.ts";
import { LockError, LockFile, readLockFile, SimpleLockFile } from "../lockfile.ts";
import { type Area, FileStore, type OpenFile } from "../filestore.ts";
import { FsError, NoSpace } from "../errors.ts";
import { type Child, command, type Runtime, RUNTIMES, sleep, start } from "./_child.ts";

/** What a scenario did and what it found wrong. */
export interface Figures {
  scenario: string;
  processes: number;
  operations: number;
  kills: number;
  inputs: number;
  losses: number;
  violations: string[];
  notes: string[];
}

/** Empty figures for a scenario. */
export function figures(scenario: string): Figures {
  return {
    scenario,
    processes: 0,
    operations: 0,
    kills: 0,
    inputs: 0,
    losses: 0,
    violations: [],
    notes: [],
  };
}

/** The sizes of every scenario. */
export interface Scale {
  processes: number;
  increments: number;
  holds: number;
  waiters: number;
  holderKills: number;
  producerKills: number;
  consumerKills: number;
  messages: number;
  consumers: number;
  runs: number;
  cycles: number;
  putClaims: number;
}

/** Small enough for every test run. */
export const SHORT: Scale = {
  processes: 4,
  increments: 150,
  holds: 100,
  waiters: 64,
  holderKills: 3,
  producerKills: 9,
  consumerKills: 3,
  messages: 600,
  consumers: 3,
  runs: 40,
  cycles: 4_000,
  putClaims: 1_000,
};

/** The sizes issue 7 asks for. */
export const LONG: Scale = {
  processes: 8,
  increments: 2_000,
  holds: 1_000,
  waiters: 64,
  holderKills: 30,
  producerKills: 200,
  consumerKills: 50,
  messages: 20_000,
  consumers: 8,
  runs: 400,
  cycles: 1_000_000,
  putClaims: 100_000,
};

const WORKER = "tests/fixtures/rel_worker.ts";

function worker(index: number, args: string[]): Child {
  return start(RUNTIMES[index % RUNTIMES.length]!, WORKER, args);
}

// Rejects when `promise` is not settled within `ms`: a hang, not a timing.
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function settle(children: Child[]): Promise<void> {
  for (const c of children) {
    if (c.process.exitCode === null && c.process.signalCode === null) c.kill("SIGKILL");
  }
  await Promise.all(children.map((c) => c.exited));
}

// ---------------------------------------------------------------- messages

/**
 * A message that tells whether it is whole: its length in 8 digits, a
 * colon, and `size` copies of one letter that depends on the size.
 */
export function message(size: number): Uint8Array {
  const bytes = new Uint8Array(9 + size).fill(97 + size % 26);
  bytes.set(new TextEncoder().encode(`${String(size).padStart(8, "0")}:`));
  return bytes;
}

/** Why the bytes are not a whole message, or undefined if they are. */
export function brokenMessage(bytes: Uint8Array): string | undefined {
  if (bytes.length < 9) return `only ${bytes.length} bytes`;
  const size = Number(new TextDecoder().decode(bytes.subarray(0, 8)));
  if (!Number.isInteger(size) || bytes[8] !== 58) return "no header";
  if (bytes.length !== 9 + size) return `${bytes.length - 9} of ${size} bytes`;
  const letter = 97 + size % 26;
  for (let i = 9; i < bytes.length; i++) {
    if (bytes[i] !== letter) return `wrong byte at ${i}`;
  }
  return undefined;
}

function checkArea(store: FileStore, area: Area | "done", f: Figures): string[] {
  const names = readdirSync(join(store.path, area));
  for (const name of names) {
    const why = brokenMessage(readFileSync(join(store.path, area, name)));
    if (why !== undefined) f.violations.push(`${area}/${name} is not whole: ${why}`);
  }
  return names;
}

// ------------------------------------------------------------ under load

/**
 * `processes` processes of all three runtimes each add one to a counter
 * `increments` times under `Lock` or `LockFile` (with retry).
 */
export async function mutualExclusion(
  dir: string,
  kind: "lock" | "lockfile",
  processes: number,
  increments: number,
): Promise<Figures> {
  const f = figures(`mutual exclusion (${kind === "lock" ? "Lock" : "LockFile with retry"})`);
  const lockPath = join(dir, "counter.lock");
  const counter = join(dir, "counter");
  writeFileSync(counter, "0");
  const children = Array.from(
    { length: processes },
    (_, i) => worker(i, ["count", kind, lockPath, counter, String(increments)]),
  );
  f.processes = processes;
  try {
    await Promise.all(children.map((c) => c.line("ready")));
    for (const c of children) c.send("go");
    await Promise.all(children.map((c) => c.line("done", 1_800_000)));
  } finally {
    await settle(children);
  }
  const expected = processes * increments;
  const got = Number(readFileSync(counter, "utf8"));
  f.operations = expected;
  f.losses = expected - got;
  if (got !== expected) f.violations.push(`counter is ${got}, expected ${expected}`);
  return f;
}

/**
 * Holders append "enter"/"leave" lines to one log opened for appending,
 * after taking and before letting go of the lock: the order of the lines is
 * the order in time, so an overlap shows as an "enter" inside another
 * holder's pair. `rw`: shared and exclusive `Lock`s; `sem`:
 * `BoundedSemaphore(3)`.
 */
export async function holders(
  dir: string,
  kind: "rw" | "sem",
  processes: number,
  holds: number,
): Promise<Figures> {
  const f = figures(
    kind === "rw" ? "shared and exclusive holders never overlap" : "BoundedSemaphore(3) holders",
  );
  const path = kind === "rw" ? join(dir, "rw.lock") : dir;
  const log = join(dir, "holders.log");
  writeFileSync(log, "");
  const children = Array.from(
    { length: processes },
    (_, i) => worker(i, [kind, path, log, String(holds)]),
  );
  f.processes = processes;
  try {
    await Promise.all(children.map((c) => c.line("ready")));
    for (const c of children) c.send("go");
    await Promise.all(children.map((c) => c.line("done", 1_800_000)));
  } finally {
    await settle(children);
  }
  const lines = readFileSync(log, "utf8").split("\n").filter((l) => l !== "");
  f.operations = lines.length / 2;
  if (lines.length !== 2 * processes * holds) {
    f.violations.push(`log has ${lines.length} lines, expected ${2 * processes * holds}`);
  }
  let shared = 0;
  let exclusive = 0;
  let most = 0;
  for (const [at, line] of lines.entries()) {
    const [what, which] = line.split(" ");
    if (what === "enter") {
      const busy = which === "E" ? shared + exclusive > 0 : exclusive > 0;
      if (busy) f.violations.push(`line ${at + 1} '${line}' while ${shared}S/${exclusive}E held`);
      if (which === "E") exclusive++;
      else shared++;
    } else if (which === "E") exclusive--;
    else shared--;
    most = Math.max(most, shared + exclusive);
    if (kind === "sem" && shared > 3) f.violations.push(`line ${at + 1}: ${shared} holders`);
  }
  f.notes.push(`most holders at once: ${most}`);
  if (shared !== 0 || exclusive !== 0) f.violations.push("unbalanced enter/leave lines");
  return f;
}

/**
 * `count` locks wait in this process for a lock it holds itself: file
 * operations of this process still complete while they wait.
 */
export async function manyWaiters(dir: string, count: number): Promise<Figures> {
  const f = figures("file operations beside waiting locks");
  const path = join(dir, "busy.lock");
  const holder = new Lock(path);
  await holder.acquire();
  let granted = 0;
  const waiters = Array.from({ length: count }, async () => {
    const waiter = new Lock(path);
    await waiter.acquire();
    granted++;
    await waiter.release();
  });
  try {
    const store = new FileStore(join(dir, "store"));
    await store.prepare();
    await within(
      (async () => {
        for (let i = 0; i < 20; i++) {
          await store.put(`message ${i}`, { sync: false });
          const claimed = await store.claim();
          if (claimed === null) f.violations.push("claim() found nothing after put()");
          else await claimed.done();
          await writeFile(join(dir, "plain"), `plain ${i}`);
          if ((await readFile(join(dir, "plain"), "utf8")) !== `plain ${i}`) {
            f.violations.push("read back something else");
          }
          f.operations += 4;
        }
      })(),
      30_000,
      `file operations beside ${count} waiting locks`,
    );
    if (!holder.locked || granted !== 0) {
      f.violations.push("the lock changed hands while the operations ran");
    }
  } finally {
    await holder.release();
  }
  await within(Promise.all(waiters), 60_000, `${count} waiters taking the lock in turn`);
  if (granted !== count) f.violations.push(`${granted} of ${count} waiters got the lock`);
  f.operations += count;
  return f;
}

// ------------------------------------------------------------ under faults

/**
 * A holder in another process (of each runtime in turn) is killed with
 * SIGKILL; the next waiter here gets the lock, and nobody names the dead
 * process as the holder of a free lock.
 */
export async function killedHolder(
  dir: string,
  kind: "lock" | "pid" | "lockfile",
  rounds: number,
): Promise<Figures> {
  const f = figures(
    `SIGKILLed holder (${
      kind === "lock" ? "Lock" : kind === "pid" ? "PidFileLock" : "LockFile"
    }) hands over`,
  );
  const path = join(dir, `${kind}.lock`);
  for (let round = 0; round < rounds; round++) {
    const runtime = RUNTIMES[round % RUNTIMES.length]!;
    const child = kind === "lockfile"
      ? start(runtime, "tests/fixtures/lockfile_child.ts", [path])
      : start(runtime, "tests/fixtures/lock_child.ts", [kind, path]);
    f.processes++;
    try {
      if (kind === "lockfile") {
        await child.line("ready");
        child.send("lock");
        await child.line("1 locked");
        try {
          new LockFile(path).close();
          f.violations.push(`${runtime}: LockFile taken while a live process held it`);
        } catch (e) {
          if (!(e instanceof LockError) || e.pid !== child.pid) {
            f.violations.push(`${runtime}: refusal does not name the live holder: ${e}`);
          }
        }
        child.kill("SIGKILL");
        f.kills++;
        await child.exited;
        try {
          using _lock = new LockFile(path);
          f.operations++;
        } catch (e) {
          f.violations.push(`${runtime}: free lock refused after the holder died: ${e}`);
        }
        continue;
      }
      await child.line("locked");
      const lock = kind === "pid" ? new PidFileLock(path) : new Lock(path);
      if (kind === "pid") {
        try {
          await lock.acquire({ failWhenLocked: true });
          f.violations.push(`${runtime}: PidFileLock taken while a live process held it`);
        } catch (e) {
          const named = (e as { holderPid?: number }).holderPid;
          if (named !== child.pid) {
            f.violations.push(`${runtime}: refusal names pid ${named}, holder is ${child.pid}`);
          }
        }
      }
      let held = false;
      const waiting = lock.acquire().then(() => held = true);
      await sleep(5);
      if (held) f.violations.push(`${runtime}: waiter got the lock before the holder died`);
      child.kill("SIGKILL");
      f.kills++;
      await within(waiting, 10_000, `${runtime}: waiter after the holder was killed`);
      if (kind === "pid") {
        const pid = Number(readFileSync(path, "utf8").trim());
        if (pid !== process.pid) f.violations.push(`pid file names ${pid} after the handover`);
      }
      await lock.release();
      f.operations++;
    } finally {
      await settle([child]);
    }
  }
  return f;
}

/**
 * A producer of each runtime in turn is killed at a random point while it
 * puts messages of up to 256 KiB: `new` only ever holds whole messages,
 * and cleanup() empties `tmp`.
 */
export async function killedProducer(dir: string, kills: number): Promise<Figures> {
  const f = figures("producer SIGKILLed inside put()");
  const store = new FileStore(join(dir, "store"));
  store.prepareSync();
  for (let i = 0; i < kills; i++) {
    const child = worker(i, ["put", store.path]);
    f.processes++;
    try {
      await child.line("started");
      await sleep(Math.random() * 40);
      child.kill("SIGKILL");
      f.kills++;
      await child.exited;
    } finally {
      await settle([child]);
    }
    f.operations = checkArea(store, "new", f).length;
  }
  const left = readdirSync(join(store.path, "tmp")).length;
  const removed = store.cleanupSync({ olderThan: 0 }).length;
  const after = readdirSync(join(store.path, "tmp")).length;
  f.notes.push(`${left} leftovers in tmp, ${removed} removed by cleanup`);
  if (after !== 0) f.violations.push(`${after} files left in tmp after cleanup`);
  return f;
}

/**
 * A consumer of each runtime in turn is killed while it claims: every
 * message is still in `new` or whole in `cur`.
 */
export async function killedConsumer(dir: string, kills: number): Promise<Figures> {
  const f = figures("consumer SIGKILLed inside claim()");
  const store = new FileStore(join(dir, "store"));
  store.prepareSync();
  const put = new Set<string>();
  let halfDone = 0;
  for (let i = 0; i < kills; i++) {
    for (let j = 0; j < 300; j++) put.add(basename(store.putSync(message(j * 7), { sync: false })));
    const child = worker(i, ["claim", store.path]);
    f.processes++;
    try {
      await child.line("started");
      await sleep(Math.random() * 20);
      child.kill("SIGKILL");
      f.kills++;
      await child.exited;
    } finally {
      await settle([child]);
    }
    const inNew = checkArea(store, "new", f);
    const inCur = new Set(checkArea(store, "cur", f));
    // A consumer killed between claim()'s link into cur and its unlink from
    // new leaves one file under both names: the claim happened (the file is
    // the dead consumer's), and the next claim() of it finishes the move.
    const both = inNew.filter((name) => inCur.has(name));
    for (const name of both) {
      const a = statSync(join(store.path, "new", name));
      const b = statSync(join(store.path, "cur", name));
      if (a.ino !== b.ino) f.violations.push(`new/${name} and cur/${name} are different files`);
    }
    halfDone += both.length;
    const claimed: string[] = [];
    // The dead consumer's files in cur stay where they are for this count.
    const checker = new FileStore(store.path, { recoverEvery: Infinity });
    for (let c = checker.claimSync(); c !== null; c = checker.claimSync()) {
      claimed.push(c.path);
      c.doneSync({ moveTo: "checked" });
    }
    for (const path of claimed) {
      if (both.includes(basename(path))) f.violations.push(`${path} was handed out twice`);
      renameSync(
        join(store.path, "checked", basename(path)),
        join(store.path, "new", basename(path)),
      );
    }
    if (readdirSync(join(store.path, "new")).some((name) => both.includes(name))) {
      f.violations.push("claim() did not finish a half-done claim");
    }
    const found = new Set([...inNew, ...inCur]);
    f.losses = [...put].filter((name) => !found.has(name)).length;
    if (f.losses > 0) f.violations.push(`${f.losses} messages lost`);
    if (found.size !== put.size + 0 && f.losses === 0) {
      f.violations.push(`${found.size - put.size} messages appeared from nowhere`);
    }
  }
  f.operations = put.size;
  f.notes.push(`${halfDone} claims cut between link and unlink, finished by the next claim()`);
  return f;
}

/**
 * `consumers` processes of all three runtimes claim while this process
 * puts `messages`: each is claimed exactly once.
 */
export async function exactlyOnce(
  dir: string,
  messages: number,
  consumers: number,
): Promise<Figures> {
  const f = figures("exactly once");
  const store = new FileStore(join(dir, "store"));
  store.prepareSync();
  const stop = join(dir, "stop");
  const children = Array.from(
    { length: consumers },
    (_, i) =>
      start(RUNTIMES[i % RUNTIMES.length]!, "tests/fixtures/filestore_worker.ts", [
        "consume",
        store.path,
        stop,
        i % 2 === 0 ? "sync" : "async",
      ]),
  );
  f.processes = consumers;
  const put = new Set<string>();
  const claims = new Map<string, number>();
  try {
    for (let i = 0; i < messages; i++) {
      put.add(basename(store.putSync(message(i % 100), { sync: false })));
      if (i % 200 === 199) await sleep(1);
    }
    writeFileSync(stop, "");
    await Promise.all(children.map((c) => c.line("consumed", 1_800_000)));
  } finally {
    await settle(children);
  }
  for (const c of children) {
    for (const line of c.output().split("\n")) {
      if (!line.startsWith("claimed ")) continue;
      const name = line.slice(8);
      claims.set(name, (claims.get(name) ?? 0) + 1);
    }
  }
  f.operations = messages;
  const twice = [...claims].filter(([, n]) => n > 1).length;
  f.losses = [...put].filter((name) => !claims.has(name)).length;
  if (twice > 0) f.violations.push(`${twice} messages claimed more than once`);
  if (f.losses > 0) f.violations.push(`${f.losses} messages never claimed`);
  const done = checkArea(store, "done", f).length;
  if (done !== messages) f.violations.push(`done holds ${done} of ${messages} messages`);
  const cur = checkArea(store, "cur", f).length;
  if (cur !== 0) f.violations.push(`cur still holds ${cur} messages`);
  return f;
}

/** Whether a tmpfs can be mounted here (as root, in a container that allows it). */
export function canMountTmpfs(dir: string): boolean {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir], { stdio: "ignore" });
    execFileSync("umount", [dir], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * put() on a full 1 MiB tmpfs: it fails with NoSpace, and `new` holds only
 * whole messages and `tmp` nothing.
 */
export async function fullDisk(dir: string): Promise<Figures> {
  const f = figures("full disk");
  const mount = join(dir, "small");
  mkdirSync(mount);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1M", "tmpfs", mount]);
  try {
    const store = new FileStore(join(mount, "store"));
    store.prepareSync();
    let failures = 0;
    let delivered = 0;
    // Large puts until the first failure, then smaller ones into the rest.
    for (let i = 0; i < 200 && failures < 6; i++) {
      const size = failures === 0 ? 96 * 1024 + i : 30_000 >> failures;
      try {
        if (i % 2 === 0) store.putSync(message(size));
        else await store.put(message(size));
        delivered++;
      } catch (e) {
        failures++;
        if (!(e instanceof NoSpace) || !/space/i.test((e as Error).message)) {
          f.violations.push(`put failed with ${e}, not NoSpace`);
        }
        if (failures === 1) f.notes.push(`first failure: ${(e as Error).message}`);
      }
      f.operations++;
    }
    if (failures === 0) f.violations.push("the disk never filled");
    const inNew = checkArea(store, "new", f).length;
    if (inNew !== delivered) f.violations.push(`new holds ${inNew}, ${delivered} delivered`);
    const inTmp = readdirSync(join(store.path, "tmp")).length;
    if (inTmp !== 0) f.violations.push(`${inTmp} files left in tmp`);
    f.notes.push(`${delivered} delivered, ${failures} refused`);
  } finally {
    execFileSync("umount", [mount]);
  }
  return f;
}

/**
 * put() past the process's file-size limit (RLIMIT_FSIZE), where no tmpfs
 * can be mounted: a child of `runtime` under `ulimit -f` with SIGXFSZ
 * ignored (Deno would die of it) puts messages below and above the limit;
 * each refusal is a NoSpace (EFBIG), and `new` holds only whole messages
 * and `tmp` nothing.
 */
export async function fileSizeLimit(dir: string, runtime: Runtime): Promise<Figures> {
  const f = figures(`file-size limit (${runtime})`);
  const path = join(dir, `store-${runtime}`);
  const [bin, argv] = command(runtime, "tests/fixtures/file_size_limit.ts", [path]);
  // ulimit -f counts 512-byte blocks in sh (dash): 128 is 64 KiB.
  const out = execFileSync("sh", [
    "-c",
    'trap "" XFSZ; ulimit -f 128; exec "$@"',
    "sh",
    bin,
    ...argv,
  ], {
    encoding: "utf8",
  });
  const result = JSON.parse(out.trim().split("\n").pop()!) as {
    delivered: number;
    refusals: string[];
  };
  f.operations = result.delivered + result.refusals.length;
  if (result.refusals.length === 0) f.violations.push("no put was refused");
  for (const r of result.refusals) {
    if (!r.startsWith("NoSpace EFBIG")) f.violations.push(`a put failed with ${r}, not NoSpace`);
  }
  const store = new FileStore(path);
  const inNew = checkArea(store, "new", f).length;
  if (inNew !== result.delivered) {
    f.violations.push(`new holds ${inNew}, ${result.delivered} delivered`);
  }
  const inTmp = readdirSync(join(path, "tmp")).length;
  if (inTmp !== 0) f.violations.push(`${inTmp} files left in tmp`);
  f.notes.push(
    `${result.delivered} delivered, ${result.refusals.length} refused: ${result.refusals[0]}`,
  );
  return f;
}

// ------------------------------------------------------------- bad input

type Tree = Record<string, string>;

/** Every entry under `dir`: type, permissions, size, mtime and content. */
export function snapshot(dir: string, skip: (path: string) => boolean = () => false): Tree {
  const tree: Tree = {};
  const walk = (path: string) => {
    for (const name of readdirSync(path)) {
      const full = join(path, name);
      if (skip(full)) continue;
      const s = lstatSync(full);
      const head = `${s.mode.toString(8)} ${s.size} ${s.mtimeMs}`;
      if (s.isDirectory()) {
        tree[full] = `dir ${head}`;
        walk(full);
      } else if (s.isSymbolicLink()) {
        tree[full] = `link ${head} ${readlinkSync(full)}`;
      } else {
        tree[full] = `file ${head} ${readFileSync(full).toString("base64")}`;
      }
    }
  };
  tree[dir] = `dir ${lstatSync(dir).mtimeMs}`;
  walk(dir);
  return tree;
}

function sameTree(a: Tree, b: Tree): string | undefined {
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (a[key] !== b[key]) return `${key}: ${a[key] ?? "absent"} -> ${b[key] ?? "absent"}`;
  }
  return undefined;
}

interface Context {
  dir: string;
  store: FileStore;
  lockPath: string;
  file: OpenFile;
}

interface BadCase {
  call: string;
  names: RegExp;
  values: fc.Arbitrary<unknown>;
  run(value: unknown, ctx: Context): unknown;
}

const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.string(),
  fc.object(),
  fc.array(fc.integer()),
  fc.bigInt(),
);
const notString = anyValue.filter((v) => typeof v !== "string");
const notNumber = anyValue.filter((v) => typeof v !== "number");
const given = (a: fc.Arbitrary<unknown>) => a.filter((v) => v !== undefined && v !== null);
const noSlash = fc.string().map((s) => s.replaceAll("/", "_"));

// Bad as a name, also where a full path is accepted and its last part used.
const badName: fc.Arbitrary<unknown> = fc.oneof(
  notString,
  fc.constantFrom("", ".", "..", "a/", "/", "x/..", "x/.", "../..", "/tmp/", "x\0y"),
  fc.tuple(fc.string(), noSlash).map(([a, b]) => `${a}\0${b}`),
  fc.string({ minLength: 256, maxLength: 400 }).map((s) => s.replaceAll("/", "_")),
  fc.string({ unit: "grapheme", minLength: 86, maxLength: 200 })
    .map((s) => s.replaceAll("/", "_"))
    .filter((s) => new TextEncoder().encode(s).length > 255),
);
// Bad where only a bare name is accepted.
const badBareName = fc.oneof(
  badName,
  fc.tuple(fc.string(), fc.string()).map(([a, b]) => `${a}/${b}`),
);
const badArea = anyValue.filter((v) => v !== "tmp" && v !== "new" && v !== "cur");
const badPath = fc.oneof(notString, fc.constant(""), fc.string().map((s) => `${s}\0`));
const badTimeout = fc.oneof(
  given(notNumber),
  fc.double({ max: -Number.MIN_VALUE }),
  fc.constant(Number.NaN),
);
const badInterval = fc.oneof(
  given(notNumber),
  fc.double({ max: 0 }),
  fc.double({ min: 2 ** 31 }),
  fc.constant(Number.NaN),
);
const badBits = fc.oneof(
  given(anyValue).filter((v) => !Number.isInteger(v)),
  fc.integer({ max: -1 }),
  fc.integer({ min: 0o10000 }),
);
const badBoolean = given(anyValue).filter((v) => typeof v !== "boolean");
const badTemplate = fc.oneof(
  given(notString),
  fc.tuple(fc.string(), fc.stringMatching(/^[a-z]{1,8}$/), fc.string())
    .filter(([, key]) => key !== "pid" && key !== "hostname")
    .map(([a, key, b]) => `${a.replace(/[{}]/g, "")}{${key}}${b.replace(/[{}]/g, "")}`),
  fc.tuple(fc.string(), fc.constantFrom("{", "}"), fc.string())
    .map(([a, brace, b]) => `${a.replace(/[{}]/g, "")}${brace}${b.replace(/[{}]/g, "")}`),
);
const badFlags = fc.oneof(
  notNumber,
  fc.double().filter((v) => !Number.isInteger(v)),
  fc.integer({ max: 0 }),
  fc.integer({ min: 16 }),
  fc.constantFrom(3, 7, 9, 10, 12, 15),
);
const badFile = anyValue.filter((v) => typeof v !== "number");

// The package's one message shape: "Cannot <what>: '<param>' must be ...".
const quoted = (name: string) => new RegExp(`^Cannot [^:]+: '${name}' must be `);
const noop = () => {};

function storeCases(): BadCase[] {
  const cases: BadCase[] = [
    {
      call: "new FileStore(path)",
      names: quoted("path"),
      values: badPath,
      run: (v) => new FileStore(v as string),
    },
    {
      call: "new FileStore(dir, { permissions })",
      names: quoted("permissions"),
      values: badBits,
      run: (v, c) => new FileStore(c.store.path, { permissions: v as number }),
    },
    {
      call: "pathOf(name)",
      names: quoted("name"),
      values: badName,
      run: (v, c) => c.store.pathOf(v as string, "new"),
    },
    {
      call: "pathOf(, area)",
      names: quoted("area"),
      values: badArea,
      run: (v, c) => c.store.pathOf("a", v as Area),
    },
    {
      call: "list(area)",
      names: quoted("area"),
      values: badArea,
      run: (v, c) => c.store.list(v as Area),
    },
    {
      call: "listSync(area)",
      names: quoted("area"),
      values: badArea,
      run: (v, c) => c.store.listSync(v as Area),
    },
    {
      call: "watch(area)",
      names: quoted("area"),
      values: badArea,
      run: (v, c) => c.store.watch(v as Area),
    },
    {
      call: "watch(, { interval })",
      names: quoted("interval"),
      values: fc.oneof(given(notNumber), fc.double({ max: 0 }), fc.constant(Number.NaN)),
      run: (v, c) => c.store.watch("new", { interval: v as number }),
    },
    {
      call: "put(data)",
      names: quoted("data"),
      values: anyValue.filter((v) => typeof v !== "string"),
      run: (v, c) => c.store.put(v as string),
    },
    {
      call: "putSync(data)",
      names: quoted("data"),
      values: anyValue.filter((v) => typeof v !== "string"),
      run: (v, c) => c.store.putSync(v as string),
    },
  ];
  for (const sync of [false, true]) {
    const s = sync ? "Sync" : "";
    const st = (c: Context) => c.store as unknown as Record<string, (...a: unknown[]) => unknown>;
    cases.push(
      {
        call: `create${s}(name)`,
        names: quoted("name"),
        values: badBareName,
        run: (v, c) => st(c)[`create${s}`]!.call(c.store, v),
      },
      {
        call: `create${s}(, { mode })`,
        names: quoted("mode"),
        values: given(anyValue).filter((v) => v !== "w" && v !== "wx"),
        run: (v, c) => st(c)[`create${s}`]!.call(c.store, "fresh", { mode: v }),
      },
      {
        call: `remove${s}(name)`,
        names: quoted("name"),
        values: badName,
        run: (v, c) => st(c)[`remove${s}`]!.call(c.store, v, "new"),
      },
      {
        call: `remove${s}(, area)`,
        names: quoted("area"),
        values: badArea,
        run: (v, c) => st(c)[`remove${s}`]!.call(c.store, "present", v),
      },
      {
        call: `cleanup${s}({ olderThan })`,
        names: quoted("olderThan"),
        values: badTimeout,
        run: (v, c) => st(c)[`cleanup${s}`]!.call(c.store, { olderThan: v }),
      },
    );
    for (const op of ["move", "copy"]) {
      cases.push(
        {
          call: `${op}${s}(name)`,
          names: quoted("name"),
          values: badName,
          run: (v, c) => st(c)[`${op}${s}`]!.call(c.store, v, "new", "cur"),
        },
        {
          call: `${op}${s}(, from)`,
          names: quoted("from"),
          values: badArea,
          run: (v, c) => st(c)[`${op}${s}`]!.call(c.store, "present", v, "cur"),
        },
        {
          call: `${op}${s}(, , to)`,
          names: quoted("to"),
          values: badArea,
          run: (v, c) => st(c)[`${op}${s}`]!.call(c.store, "present", "new", v),
        },
      );
    }
  }
  return cases;
}

function lockCases(): BadCase[] {
  const cases: BadCase[] = [];
  const options: [string, fc.Arbitrary<unknown>][] = [
    ["timeout", badTimeout],
    ["checkInterval", badInterval],
    ["failWhenLocked", badBoolean],
    ["signal", given(anyValue)],
  ];
  const classes = { Lock, RLock, TemporaryFileLock, PidFileLock };
  for (const [name, Class] of Object.entries(classes)) {
    cases.push({
      call: `new ${name}(path)`,
      names: quoted("path"),
      values: badPath,
      run: (v) => new Class(v as string),
    });
    for (const [option, values] of options) {
      cases.push({
        call: `new ${name}(, { ${option} })`,
        names: quoted(option),
        values,
        run: (v, c) => new Class(c.lockPath, { [option]: v }),
      }, {
        call: `${name}.acquire({ ${option} })`,
        names: quoted(option),
        values,
        run: (v, c) => new Class(c.lockPath).acquire({ [option]: v }),
      });
    }
  }
  cases.push(
    {
      call: "Lock.acquire(options)",
      names: quoted("options"),
      values: given(anyValue).filter((v) => typeof v !== "object"),
      run: (v, c) => new Lock(c.lockPath).acquire(v as object),
    },
    {
      call: "new Lock(, { mode })",
      names: quoted("mode"),
      values: given(anyValue).filter((v) => v !== "a" && v !== "w" && v !== "r+"),
      run: (v, c) => new Lock(c.lockPath, { mode: v as "a" }),
    },
    {
      call: "new Lock(, { shared })",
      names: quoted("shared"),
      values: badBoolean,
      run: (v, c) => new Lock(c.lockPath, { shared: v as boolean }),
    },
    {
      call: "new Lock(, { mode: 'w', shared: true })",
      names: quoted("mode"),
      values: fc.constant("w"),
      run: (v, c) => new Lock(c.lockPath, { mode: v as "w", shared: true }),
    },
    {
      call: "lock(, flags)",
      names: quoted("flags"),
      values: badFlags,
      run: (v, c) => lock(c.file, v as number),
    },
    {
      call: "lockSync(, flags)",
      names: quoted("flags"),
      values: badFlags,
      run: (v, c) => lockSync(c.file, v as number),
    },
    {
      call: "lock(file)",
      names: quoted("file"),
      values: badFile,
      run: (v) => lock(v as number, LockFlags.EXCLUSIVE),
    },
    {
      call: "lockSync(file)",
      names: quoted("file"),
      values: badFile,
      run: (v) => lockSync(v as number, LockFlags.EXCLUSIVE),
    },
    {
      call: "unlock(file)",
      names: quoted("file"),
      values: badFile,
      run: (v) => unlock(v as number),
    },
    {
      call: "unlockSync(file)",
      names: quoted("file"),
      values: badFile,
      run: (v) => unlockSync(v as number),
    },
    {
      call: "new BoundedSemaphore(maximum)",
      names: quoted("maximum"),
      values: fc.oneof(
        anyValue.filter((v) => !Number.isInteger(v)),
        fc.integer({ max: 0 }),
        fc.integer({ min: 100_001 }),
      ),
      run: (v, c) => new BoundedSemaphore(v as number, { directory: c.dir }),
    },
    {
      call: "new BoundedSemaphore(, { name })",
      names: quoted("name"),
      values: fc.oneof(
        given(notString),
        fc.constant(""),
        fc.tuple(fc.string(), fc.constantFrom("/", "\\", "\0"), fc.string()).map((p) => p.join("")),
      ),
      run: (v, c) => new BoundedSemaphore(3, { name: v as string, directory: c.dir }),
    },
    {
      call: "new NamedBoundedSemaphore(, name)",
      names: quoted("name"),
      values: fc.oneof(notString, fc.constant(""), fc.constant("a/b")),
      run: (v, c) => new NamedBoundedSemaphore(3, v as string, { directory: c.dir }),
    },
    {
      call: "new BoundedSemaphore(, { directory })",
      names: quoted("directory"),
      values: fc.oneof(given(notString), fc.constant(""), fc.constant("a\0b")),
      run: (v) => new BoundedSemaphore(3, { directory: v as string }),
    },
    {
      call: "BoundedSemaphore.pathOf(index)",
      names: quoted("index"),
      values: anyValue.filter((v) => v !== 0 && v !== 1 && v !== 2),
      run: (v, c) => new BoundedSemaphore(3, { directory: c.dir }).pathOf(v as number),
    },
    {
      call: "BoundedSemaphore.acquire({ timeout })",
      names: quoted("timeout"),
      values: badTimeout,
      run: (v, c) =>
        new BoundedSemaphore(3, { directory: c.dir }).acquire({ timeout: v as number }),
    },
  );
  for (
    const [name, open] of [["openAtomic", openAtomic], ["openAtomicSync", openAtomicSync]] as const
  ) {
    cases.push(
      {
        call: `${name}(path)`,
        names: quoted("path"),
        values: badPath,
        run: (v) => open(v as string, noop),
      },
      {
        call: `${name}(, write)`,
        names: quoted("write"),
        values: anyValue,
        run: (v, c) => open(join(c.dir, "atomic"), v as () => void),
      },
      {
        call: `${name}(, , { mode })`,
        names: quoted("mode"),
        values: badBits,
        run: (v, c) => open(join(c.dir, "atomic"), noop, { mode: v as number }),
      },
    );
  }
  return cases;
}

function lockfileCases(): BadCase[] {
  const template = /^Cannot [^:]+: '?contentTemplate'? must be |^Cannot use content template /;
  return [
    {
      call: "new LockFile(path)",
      names: quoted("path"),
      values: badPath,
      run: (v) => new LockFile(v as string),
    },
    {
      call: "new SimpleLockFile(path)",
      names: quoted("path"),
      values: badPath,
      run: (v) => new SimpleLockFile(v as string),
    },
    {
      call: "readLockFile(path)",
      names: quoted("path"),
      values: badPath,
      run: (v) => readLockFile(v as string),
    },
    {
      call: "new LockFile(, { contentTemplate })",
      names: template,
      values: badTemplate,
      run: (v, c) => new LockFile(c.lockPath, { contentTemplate: v as string }),
    },
    {
      call: "readLockFile(, { contentTemplate })",
      names: template,
      values: badTemplate,
      run: (v, c) => readLockFile(c.lockPath, { contentTemplate: v as string }),
    },
  ];
}

/** The public functions whose arguments are checked, in three groups. */
export const BAD_INPUT_GROUPS = ["filestore", "lock", "lockfile"] as const;

/**
 * Every bad value of every checked parameter of `group` gives a TypeError
 * (wrong type), RangeError (right type, out of range) or SyntaxError (a
 * template that does not parse) naming the parameter, and leaves the
 * directory as it was.
 */
export async function badInput(
  dir: string,
  group: typeof BAD_INPUT_GROUPS[number],
  runs: number,
): Promise<Figures> {
  const f = figures(`bad input (${group})`);
  const store = new FileStore(join(dir, "store"));
  store.prepareSync();
  for (const area of ["tmp", "new", "cur"] as const) {
    writeFileSync(store.pathOf("present", area), `present in ${area}`);
  }
  const lockPath = join(dir, "held.lock");
  writeFileSync(lockPath, ` ${process.pid}\n`);
  const file = store.createSync("lockable");
  const ctx: Context = { dir, store, lockPath, file };
  const cases = group === "filestore"
    ? storeCases()
    : group === "lock"
    ? lockCases()
    : lockfileCases();
  try {
    for (const c of cases) {
      const property = fc.asyncProperty(c.values, async (value) => {
        f.inputs++;
        const before = snapshot(dir);
        let error: unknown;
        try {
          await c.run(value, ctx);
        } catch (e) {
          error = e;
        }
        const changed = sameTree(before, snapshot(dir));
        if (changed !== undefined) throw new Error(`changed the directory: ${changed}`);
        if (
          !(error instanceof TypeError || error instanceof RangeError ||
            error instanceof SyntaxError)
        ) {
          throw new Error(`expected TypeError, RangeError or SyntaxError, got ${error}`);
        }
        if (!c.names.test(error.message)) {
          throw new Error(`message does not name the parameter: ${error.message}`);
        }
      });
      try {
        await fc.assert(property, { numRuns: runs });
      } catch (e) {
        f.violations.push(`${c.call}: ${(e as Error).message.split("\n").slice(0, 6).join(" | ")}`);
      }
      f.operations++;
    }
  } finally {
    file.closeSync();
  }
  return f;
}

/**
 * Names built to leave the store (`..`, absolute paths into the
 * surroundings, separators, NUL, over-long): whatever each name-taking
 * method makes of them, nothing outside the store's areas changes.
 */
export async function escapes(dir: string, runs: number): Promise<Figures> {
  const f = figures("names that try to leave the store");
  const sandbox = join(dir, "sandbox");
  const store = new FileStore(join(sandbox, "store"));
  store.prepareSync();
  for (const where of [dir, sandbox, store.path]) writeFileSync(join(where, "victim"), "keep me");
  mkdirSync(join(dir, "outside"));
  writeFileSync(join(dir, "outside", "victim"), "keep me");
  for (const area of ["tmp", "new", "cur"] as const) {
    writeFileSync(store.pathOf("victim", area), `victim in ${area}`);
  }
  const areas = new Set(["tmp", "new", "cur"].map((a) => join(store.path, a)));
  const outside = () => snapshot(dir, (path) => areas.has(path));
  const prefix = fc.constantFrom(
    "",
    "../",
    "../../",
    "../../../",
    "../new/",
    "./",
    "/",
    `${dir}/`,
    `${dir}/outside/`,
    `${sandbox}/`,
    `${store.path}/`,
    "..\\",
    "..\\..\\",
  );
  const stem = fc.constantFrom("victim", "outside", "store", "x", "..", ".", "", "new", "victim\0");
  const names = fc.oneof(
    fc.tuple(prefix, stem).map(([p, s]) => p + s),
    fc.tuple(prefix, fc.string({ maxLength: 300 })).map(([p, s]) => p + s),
  );
  const areaOf = fc.constantFrom<Area>("tmp", "new", "cur");
  const calls: ((name: string, a: Area, b: Area) => unknown)[] = [
    (n) => store.createSync(n).closeSync(),
    (n) => store.createSync(n, { mode: "wx" }).closeSync(),
    async (n) => await (await store.create(n)).close(),
    (n, a, b) => store.moveSync(n, a, b),
    (n, a, b) => store.move(n, a, b),
    (n, a, b) => store.copySync(n, a, b),
    (n, a, b) => store.copy(n, a, b),
    (n, a) => store.removeSync(n, a),
    (n, a) => store.remove(n, a),
    (n, a) => {
      const path = store.pathOf(n, a);
      // One component after the area's directory, and not a way up (a
      // backslash is an ordinary character in a Linux file name).
      const rest = path.slice(`${store.path}/${a}/`.length).split("/");
      if (
        !path.startsWith(`${store.path}/${a}/`) || rest.length !== 1 || rest[0] === ".." ||
        rest[0] === "."
      ) {
        throw new Error(`pathOf() left the store: ${path}`);
      }
    },
  ];
  const before = outside();
  const property = fc.asyncProperty(
    names,
    fc.integer({ min: 0, max: calls.length - 1 }),
    areaOf,
    areaOf,
    async (name, which, a, b) => {
      f.inputs++;
      try {
        await calls[which]!(name, a, b);
      } catch (e) {
        if ((e as Error).message.startsWith("pathOf() left")) throw e;
      }
      const changed = sameTree(before, outside());
      if (changed !== undefined) throw new Error(`touched outside the store: ${changed}`);
    },
  );
  try {
    await fc.assert(property, { numRuns: runs * calls.length });
  } catch (e) {
    f.violations.push((e as Error).message.split("\n").slice(0, 6).join(" | "));
  }
  f.operations = f.inputs;
  return f;
}

/**
 * Lock paths that cannot be a lock file: each class gives a file-system
 * error naming the path, in bounded time.
 */
export async function badLockPaths(dir: string, unreadable: boolean): Promise<Figures> {
  const f = figures("lock paths that cannot be locked");
  const paths: Record<string, string> = {
    "a directory": join(dir, "a-directory"),
    "a dangling symlink into a missing directory": join(dir, "dangling"),
    "a path below a file": join(dir, "a-file", "below"),
  };
  mkdirSync(paths["a directory"]!);
  symlinkSync(
    join(dir, "missing", "target"),
    paths["a dangling symlink into a missing directory"]!,
  );
  writeFileSync(join(dir, "a-file"), "");
  if (unreadable) {
    const path = join(dir, "unreadable");
    writeFileSync(path, "");
    execFileSync("chmod", ["000", path]);
    paths["an unreadable file"] = path;
  }
  const takers: Record<string, (path: string) => Promise<unknown>> = {
    Lock: (p) => new Lock(p, { timeout: 1000 }).acquire(),
    RLock: (p) => new RLock(p, { timeout: 1000 }).acquire(),
    TemporaryFileLock: (p) => new TemporaryFileLock(p, { timeout: 1000 }).acquire(),
    PidFileLock: (p) => new PidFileLock(p, { timeout: 1000 }).acquire(),
    LockFile: (p) => Promise.resolve().then(() => new LockFile(p)),
    SimpleLockFile: (p) => Promise.resolve().then(() => new SimpleLockFile(p)),
    readLockFile: (p) => Promise.resolve().then(() => readLockFile(p)),
  };
  for (const [what, path] of Object.entries(paths)) {
    for (const [name, take] of Object.entries(takers)) {
      f.inputs++;
      try {
        await within(take(path), 10_000, `${name} on ${what}`);
        f.violations.push(`${name} on ${what}: no error`);
      } catch (e) {
        if (!(e instanceof FsError) || !(e as Error).message.includes(path)) {
          f.violations.push(`${name} on ${what}: unclear error ${e}`);
        }
      }
    }
  }
  // A semaphore whose directory is a file.
  f.inputs++;
  try {
    await within(
      new BoundedSemaphore(2, { directory: join(dir, "a-file"), timeout: 1000 }).acquire(),
      10_000,
      "BoundedSemaphore in a file",
    );
    f.violations.push("BoundedSemaphore in a file: no error");
  } catch (e) {
    if (!(e instanceof FsError)) {
      f.violations.push(`BoundedSemaphore in a file: unclear error ${e}`);
    }
  }
  return f;
}

// ------------------------------------------------------------- resources

function descriptors(): number {
  return readdirSync("/proc/self/fd").length;
}

function collect(): void {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  g.Bun?.gc(true);
  g.gc?.();
}

/** The work of the resource runs: a lock cycle and a put/claim/done cycle. */
export interface Churn {
  /** Lock, LockFile and BoundedSemaphore in turn: one acquire and release. */
  cycle(i: number): Promise<void>;
  /** A put, its claim and done; a cleanup every 1,000. */
  putClaim(i: number): void;
  /** The store the put/claim cycles use. */
  readonly store: FileStore;
}

/** The lock and store of the resource runs, in `dir`. */
export function churn(dir: string): Churn {
  const lockPath = join(dir, "cycle.lock");
  const semaphore = new BoundedSemaphore(2, { name: "cycle", directory: dir });
  const store = new FileStore(join(dir, "store"));
  store.prepareSync();
  const payload = message(100);
  return {
    store,
    async cycle(i) {
      const kind = i % 3;
      if (kind === 0) {
        const lock = new Lock(lockPath);
        await lock.acquire();
        await lock.release();
      } else if (kind === 1) {
        new LockFile(lockPath + "f").close();
      } else {
        await semaphore.acquire();
        semaphore.releaseSync();
      }
    },
    putClaim(i) {
      store.putSync(payload, { sync: false });
      const claim = store.claimSync();
      if (claim === null) throw new Error("claim found nothing");
      claim.doneSync();
      if (i % 1000 === 999) store.cleanupSync();
    },
  };
}

/**
 * `cycles` acquire/release cycles (Lock, LockFile, BoundedSemaphore in
 * turn) and `putClaims` put/claim cycles: open descriptors and RSS after
 * them are what they were after a warm-up.
 */
export async function resources(dir: string, cycles: number, putClaims: number): Promise<Figures> {
  const f = figures("resources stay flat");
  const { cycle, putClaim, store } = churn(dir);
  const warm = Math.min(3_000, cycles);
  for (let i = 0; i < warm; i++) await cycle(i);
  for (let i = 0; i < Math.min(1_000, putClaims); i++) putClaim(i);
  collect();
  const fds = descriptors();
  const rss = process.memoryUsage().rss;
  for (let i = 0; i < cycles; i++) await cycle(i);
  for (let i = 0; i < putClaims; i++) putClaim(i);
  collect();
  const fdsAfter = descriptors();
  const rssAfter = process.memoryUsage().rss;
  f.operations = cycles + putClaims;
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  f.notes.push(`descriptors ${fds} -> ${fdsAfter}, RSS ${mib(rss)} -> ${mib(rssAfter)} MiB`);
  if (fdsAfter > fds + 2) f.violations.push(`descriptors grew from ${fds} to ${fdsAfter}`);
  if (rssAfter - rss > 64 * 2 ** 20) {
    f.violations.push(`RSS grew from ${mib(rss)} to ${mib(rssAfter)} MiB`);
  }
  const left = readdirSync(join(store.path, "cur")).length +
    readdirSync(join(store.path, "new")).length;
  if (left !== 0) f.violations.push(`${left} messages left over`);
  return f;
}

/** The scenarios that run inside one process, for a child of each runtime. */
export async function runInProcess(name: string, long: boolean): Promise<Figures> {
  const scale = long ? LONG : SHORT;
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const dir = mkdtempSync(join(tmpdir(), "filestore-rel-"));
  try {
    if (name === "waiters") return await manyWaiters(dir, scale.waiters);
    if (name === "resources") return await resources(dir, scale.cycles, scale.putClaims);
    if (name === "escapes") return await escapes(dir, scale.runs);
    if (name === "paths") return await badLockPaths(dir, process.getuid?.() !== 0);
    const group = BAD_INPUT_GROUPS.find((g) => name === `bad-${g}`);
    if (group !== undefined) return await badInput(dir, group, scale.runs);
    throw new Error(`unknown scenario ${name}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------ claims

/**
 * `consumers` processes of all three runtimes claim `messages` messages,
 * logging "begin" and "end" around the work and recovering now and then,
 * while `kills` of them are SIGKILLed at random moments and replaced.
 * Every message must reach `done` once, none may be left in `new` or
 * `cur`, no two live processes may hold one message at once, and the
 * number worked on twice (at-least-once) may not pass the number of kills.
 */
export async function killedClaimers(
  dir: string,
  consumers: number,
  messages: number,
  kills: number,
): Promise<Figures> {
  const f = figures(`${consumers} claimers, ${kills} SIGKILLed`);
  const store = new FileStore(join(dir, "store"));
  store.prepareSync();
  const log = join(dir, "log");
  const stop = join(dir, "stop");
  writeFileSync(log, "");
  for (let i = 0; i < messages; i++) store.putSync(`message ${i}`, { sync: false });
  const workers = new Set<Child>();
  const spawnWorker = (i: number) => {
    const child = start(RUNTIMES[i % RUNTIMES.length]!, "tests/fixtures/claim_worker.ts", [
      "work",
      store.path,
      log,
      stop,
    ]);
    workers.add(child);
    f.processes++;
  };
  try {
    for (let i = 0; i < consumers; i++) spawnWorker(i);
    // Spread the kills over the run: a pause scaled to the queue's size.
    const pauseMs = Math.max(10, (messages / consumers) * 0.4 / Math.max(1, kills / consumers));
    for (let k = 0; k < kills; k++) {
      await sleep(pauseMs * (0.5 + Math.random()));
      const victim = [...workers][Math.floor(Math.random() * workers.size)]!;
      victim.kill("SIGKILL");
      workers.delete(victim);
      f.kills++;
      spawnWorker(k);
    }
    writeFileSync(stop, "");
    await Promise.all([...workers].map((c) => c.line("finished", 1_800_000)));
  } finally {
    await settle([...workers]);
  }
  // What the last killed ones held: one more recovery, then done here.
  const rest = new FileStore(store.path, { recoverEvery: Infinity });
  rest.recoverSync();
  let finishedHere = 0;
  for (let c = rest.claimSync(); c !== null; c = rest.claimSync()) {
    c.doneSync({ moveTo: "done" });
    finishedHere++;
  }
  const base = (name: string) => name.replace(/\.retry\d+$/, "");
  const done = readdirSync(join(store.path, "done")).map(base);
  f.operations = done.length;
  f.losses = messages - new Set(done).size;
  if (f.losses > 0) f.violations.push(`${f.losses} messages never reached done`);
  if (done.length !== new Set(done).size) f.violations.push("a message is in done twice");
  for (const area of ["new", "cur"] as const) {
    const left = readdirSync(join(store.path, area)).length;
    if (left > 0) f.violations.push(`${left} messages left in ${area}`);
  }
  // No message between "begin" and "end" in two processes at once: an end
  // must come from the process of the latest begin.
  const holder = new Map<string, string>();
  const ends = new Map<string, number>();
  for (const line of readFileSync(log, "utf8").split("\n")) {
    if (line === "") continue;
    const [what, name, pid] = line.split(" ") as [string, string, string];
    const key = base(name);
    if (what === "begin") {
      holder.set(key, pid);
    } else {
      if (holder.get(key) !== pid) f.violations.push(`two owners of ${key}: ${line}`);
      holder.delete(key);
      ends.set(key, (ends.get(key) ?? 0) + 1);
    }
  }
  const twice = [...ends.values()].filter((n) => n > 1).length;
  if (twice > f.kills) f.violations.push(`${twice} messages worked on twice with ${f.kills} kills`);
  f.notes.push(
    `${twice} messages worked on twice (at-least-once; ${f.kills} kills); ${finishedHere} finished by the checker`,
  );
  return f;
}
