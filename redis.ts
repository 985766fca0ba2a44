/**
 * Locks across hosts, on Redis: {@link RedisLock} (exclusive or shared) and
 * {@link RedisSemaphore}, with the shape of the file locks of `./lock`. A
 * holder has a lease (`ttl`) that is renewed in the background, a
 * **fencing token** that grows with every acquire of the same name (also
 * across a Redis restart that lost its data), and an `AbortSignal` that
 * aborts as soon as the holder can no longer be sure that it still holds
 * the lock. Waiters are woken by Redis when the holder releases, and notice
 * a holder that died when its lease ends. You pass the client you already
 * have: Bun's `RedisClient`, `redis` (node-redis 5/6) or `ioredis`.
 *
 * The example needs a Redis server (`REDIS_URL`), so `deno test --doc`
 * does not run it here:
 *
 * ```ts ignore
 * import { RedisLock } from "@filestore/filestore/redis";
 * import { createClient } from "redis";
 *
 * const client = await createClient({ url: process.env.REDIS_URL }).connect();
 * await using lock = new RedisLock(client, "nightly-report", { ttl: 10_000 });
 * const { token, signal } = await lock.acquire();
 * await writeReport({ fencingToken: token, signal }); // your storage checks the token
 * ```
 *
 * @module
 */
import { checkBoolean, checkNumber, checkOptions, heldBy, invalid, show } from "./_check.ts";
import {
  checkClient,
  type Connection,
  connectionOf,
  type RedisClientLike,
} from "./_redis_client.ts";
import { acquireLease, type Claim, type Holder, Keeper, LockLost, poolOf } from "./_redis_lease.ts";
import { keysOf } from "./_redis_scripts.ts";
import { DEFAULTS, type Settings, settingsOf } from "./_lock.ts";
import { rt } from "./_runtime.ts";
import { share } from "./_wait.ts";
import { AlreadyLocked } from "./errors.ts";

export type { RedisClientLike };
export { LockLost };
// The refusal and the base class of LockLost, for users of this entry point alone.
export {
  AlreadyLocked,
  type AlreadyLockedOptions,
  LockException,
  type LockHolder,
} from "./errors.ts";

/** Options of one acquire call, overriding those of the lock. */
export interface RedisAcquireOptions {
  /**
   * How long to wait for the lock, in milliseconds; `0` tries once, and
   * `Infinity` waits for as long as it takes. When it runs out, the acquire
   * rejects with {@link AlreadyLocked}.
   *
   * @default {Infinity}
   */
  timeout?: number;
  /**
   * Reject with {@link AlreadyLocked} at once if the lock is held, whatever
   * `timeout` says.
   *
   * @default {false}
   */
  failWhenLocked?: boolean;
  /**
   * Gives up the wait when it aborts: the acquire rejects with the signal's
   * reason. Should Redis grant the lock to the request already sent, it is
   * released at once.
   */
  signal?: AbortSignal;
}

/** Options of {@link RedisLock}. */
export interface RedisLockOptions extends RedisAcquireOptions {
  /**
   * The lease, in milliseconds: how long the lock outlives a holder that
   * stopped renewing it (died, paused, cut off). Renewed every third of it
   * while held. Shorter leases hand a dead holder's lock on sooner; longer
   * ones survive longer pauses and network trouble.
   *
   * @default {10000}
   */
  ttl?: number;
  /**
   * Take a shared lock, which other shared holders may hold at the same
   * time, instead of an exclusive one.
   *
   * @default {false}
   */
  shared?: boolean;
}

/** Options of {@link RedisSemaphore}. */
export interface RedisSemaphoreOptions extends RedisAcquireOptions {
  /**
   * The lease of each slot, in milliseconds, as {@link RedisLockOptions.ttl}.
   *
   * @default {10000}
   */
  ttl?: number;
}

/** What an acquire gives the holder. */
export interface RedisLease {
  /** The lock's (or semaphore's) name. */
  readonly name: string;
  /**
   * The fencing token: larger than every token handed out before for this
   * name. Give it to the storage you write to and have it refuse writes
   * that carry a smaller token than one it has seen.
   */
  readonly token: bigint;
  /**
   * Aborts, with a {@link LockLost} as its reason, as soon as the holder can
   * no longer be sure that it holds the lock (a renewal was refused, or none
   * was confirmed in time); it is never aborted by a release.
   */
  readonly signal: AbortSignal;
}

const DEFAULT_TTL = 10_000;
const MAX_NAME = 1000;

function checkName(name: unknown, what: string): string {
  const expected = `a string of 1 to ${MAX_NAME} characters without '{' or '}'`;
  if (typeof name !== "string") throw invalid(TypeError, what, "name", expected, name);
  if (name === "" || name.length > MAX_NAME || /[{}]/.test(name)) {
    throw invalid(RangeError, what, "name", expected, name);
  }
  return name;
}

function checkTtl(ttl: unknown, what: string): number {
  return checkNumber(ttl, what, "ttl", "an integer number of milliseconds from 100 to 2^31 - 1", {
    min: 100,
    max: 2 ** 31 - 1,
    integer: true,
  }) ?? DEFAULT_TTL;
}

// What the holder stores with its lease, for the refusals of others.
function whoAmI(): string {
  return JSON.stringify({ hostname: rt.hostname(), pid: rt.pid });
}

function refusalOf(what: string, holder: Holder, waited?: number): AlreadyLocked {
  const since = holder.since === undefined || !Number.isFinite(holder.since)
    ? ""
    : ` since ${new Date(holder.since).toISOString()}`;
  const gaveUp = waited === undefined ? "" : ` (gave up after ${waited} ms)`;
  return new AlreadyLocked(`Cannot ${what}: ${heldBy(holder)}${since}${gaveUp}`, {
    pid: holder.pid,
    hostname: holder.hostname,
  });
}

// The acquire/release logic of both classes: one lease at a time.
class Leases {
  #claim: Claim;
  #settings: Settings;
  #name: string;
  #describe: string;
  #keeper: Keeper | undefined;
  #lease: RedisLease | undefined;
  #pending: Promise<RedisLease> | undefined;

  constructor(claim: Claim, settings: Settings, name: string, describe: string) {
    this.#claim = claim;
    this.#settings = settings;
    this.#name = name;
    this.#describe = describe;
  }

  get locked(): boolean {
    return this.#keeper?.held ?? false;
  }

  get lease(): RedisLease | undefined {
    return this.locked ? this.#lease : undefined;
  }

  async acquire(overrides: RedisAcquireOptions | undefined, what: string): Promise<RedisLease> {
    const s = settingsOf(this.#settings, overrides, what);
    if (this.locked) return this.#lease!;
    if (s.signal?.aborted) throw s.signal.reason;
    const refuse = (holder: Holder, waited?: number) =>
      refusalOf(`acquire ${this.#describe}`, holder, waited);
    if (this.#pending !== undefined) {
      return await share(this.#pending, s, (waited) => refuse({}, waited));
    }
    this.#pending = (async () => {
      const grant = await acquireLease(this.#claim, s, refuse);
      const keeper = new Keeper(this.#claim, grant, this.#describe);
      this.#keeper = keeper;
      this.#lease = { name: this.#name, token: keeper.token, signal: keeper.signal };
      return this.#lease;
    })();
    try {
      return await this.#pending;
    } finally {
      this.#pending = undefined;
    }
  }

  async release(): Promise<void> {
    const keeper = this.#keeper;
    if (keeper === undefined) return;
    this.#keeper = undefined;
    this.#lease = undefined;
    await keeper.release();
  }
}

function claimOf(
  client: unknown,
  conn: Connection,
  kind: "lock" | "sem",
  name: string,
  mode: Claim["mode"],
  max: number,
  ttl: number,
): Claim {
  return {
    conn,
    pool: poolOf(client as object, conn),
    keys: keysOf(kind, name),
    mode,
    max,
    ttl,
    who: whoAmI(),
  };
}

/**
 * A lock that crosses hosts, on Redis: portalocker's `RedisLock`, with the
 * shape of `Lock` from `./lock` and a leased, fenced design. An acquire
 * resolves to a {@link RedisLease}: the **fencing token**, which grows with
 * every acquire of the name, and a `signal` that aborts as soon as this
 * holder can no longer be sure it holds the lock (judged on its own
 * monotonic clock from when the last confirmed renewal was sent, so it fires
 * before the lease can have ended on the server). A refusal is an
 * {@link AlreadyLocked} naming the holder (host, pid, since when). Waiters
 * block on Redis and are woken by the release; a holder that died is
 * noticed when its lease ends. Instances are independent: two on one name
 * contend, in one process as in two.
 *
 * The example needs a Redis server, so `deno test --doc` does not run it
 * here; the tests in `tests/redis_test.ts` do the same against a real one.
 *
 * @example Usage
 * ```ts ignore
 * import { RedisLock } from "@filestore/filestore/redis";
 * import { AlreadyLocked } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const client = new Bun.RedisClient(process.env.REDIS_URL);
 * {
 *   await using lock = new RedisLock(client, "invoices", { ttl: 5000 });
 *   const { token, signal } = await lock.acquire();
 *   const other = new RedisLock(client, "invoices", { failWhenLocked: true });
 *   await assert.rejects(other.acquire(), AlreadyLocked);
 *   signal.throwIfAborted(); // before each write, and pass `token` along
 * }
 * client.close();
 * ```
 */
export class RedisLock implements AsyncDisposable {
  #name: string;
  #shared: boolean;
  #ttl: number;
  #leases: Leases;

  /**
   * Makes a lock named `name`; nothing is sent until
   * {@link RedisLock.prototype.acquire}.
   *
   * @param client A connected Redis client (see {@link RedisClientLike}).
   * @param name The lock's name: the same name on every host is the same lock.
   * @param options The lease, the waiting rules and whether it is shared.
   * @throws {TypeError} `client` is not a Redis client, `name` is not a
   * string, or an option has the wrong type.
   * @throws {RangeError} `name` is empty, too long or has a brace; `ttl` or
   * `timeout` is out of range.
   *
   * @example Bad arguments are refused before anything is sent
   * ```ts
   * import { RedisLock } from "@filestore/filestore/redis";
   * import assert from "node:assert/strict";
   *
   * const client = { send: () => Promise.reject(new Error("not sent")), duplicate() {} };
   * assert.throws(() => new RedisLock(client, ""), RangeError);
   * assert.throws(() => new RedisLock(client, "jobs", { ttl: 10 }), RangeError);
   * assert.throws(() => new RedisLock({} as never, "jobs"), TypeError);
   * ```
   */
  constructor(client: RedisClientLike, name: string, options: RedisLockOptions = {}) {
    const what = "create RedisLock";
    checkClient(client, what);
    this.#name = checkName(name, what);
    const settings = settingsOf(DEFAULTS, checkOptions(options, what), what);
    this.#ttl = checkTtl(options.ttl, what);
    this.#shared = checkBoolean(options.shared, what, "shared") ?? false;
    const claim = claimOf(
      client,
      connectionOf(client),
      "lock",
      this.#name,
      this.#shared ? "s" : "x",
      1,
      this.#ttl,
    );
    this.#leases = new Leases(claim, settings, this.#name, `RedisLock ${show(this.#name)}`);
  }

  /** The lock's name. */
  get name(): string {
    return this.#name;
  }

  /** Whether this instance holds the lock now (false once it is lost). */
  get locked(): boolean {
    return this.#leases.locked;
  }

  /** The current lease while held, else `undefined`. */
  get lease(): RedisLease | undefined {
    return this.#leases.lease;
  }

  /**
   * Takes the lock, waiting as the options say. While it is held, another
   * call resolves to the same lease; while one is pending, another call
   * shares its wait under its own `failWhenLocked`, `timeout` and `signal`.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The lease: its fencing token and its signal.
   * @throws {AlreadyLocked} `failWhenLocked` or `timeout: 0` and the lock is
   * held, or `timeout` ran out; it names the holder.
   * @throws {TypeError} An override has the wrong type.
   * @throws {RangeError} An override is out of range.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisLock } from "@filestore/filestore/redis";
   * import Redis from "ioredis";
   *
   * const client = new Redis(process.env.REDIS_URL!);
   * const lock = new RedisLock(client, "cron:cleanup", { timeout: 0 });
   * const { token } = await lock.acquire(); // AlreadyLocked if another host runs it
   * console.log(`cleaning up with fencing token ${token}`);
   * await lock.release();
   * client.disconnect();
   * ```
   */
  acquire(overrides?: RedisAcquireOptions): Promise<RedisLease> {
    return this.#leases.acquire(overrides, `acquire RedisLock ${show(this.#name)}`);
  }

  /**
   * Releases the lock: ends the lease on the server if it is still this
   * holder's (a lock that was lost and taken by another is left alone).
   * Doing so when the lock is not held does nothing.
   *
   * @returns A promise that resolves once Redis has answered.
   * @throws {Error} Redis could not be reached; the lease then lapses by itself.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisLock } from "@filestore/filestore/redis";
   * import assert from "node:assert/strict";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const lock = new RedisLock(client, "release-example");
   * await lock.acquire();
   * await lock.release();
   * assert.equal(lock.locked, false);
   * client.close();
   * ```
   */
  release(): Promise<void> {
    return this.#leases.release();
  }

  /** Releases the lock, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.#leases.release();
  }
}

/**
 * A semaphore that crosses hosts, on Redis: portalocker's
 * `BoundedSemaphore`, with `maximum` slots, each leased and fenced like a
 * {@link RedisLock}. Leases are timed with the Redis server's clock, never
 * with the clients'. All users of one name should give the same `maximum`.
 *
 * The example needs a Redis server, so `deno test --doc` does not run it
 * here.
 *
 * @example Usage
 * ```ts ignore
 * import { RedisSemaphore } from "@filestore/filestore/redis";
 * import { createClient } from "redis";
 *
 * const client = await createClient({ url: process.env.REDIS_URL }).connect();
 * await using slot = new RedisSemaphore(client, "api-calls", 4, { timeout: 30_000 });
 * const { signal } = await slot.acquire(); // at most 4 at once, on all hosts
 * await fetch("https://example.com/", { signal });
 * ```
 */
export class RedisSemaphore implements AsyncDisposable {
  #name: string;
  #maximum: number;
  #leases: Leases;

  /**
   * Makes a semaphore of `maximum` slots named `name`; nothing is sent until
   * {@link RedisSemaphore.prototype.acquire}.
   *
   * @param client A connected Redis client (see {@link RedisClientLike}).
   * @param name The semaphore's name (apart from the lock names).
   * @param maximum How many may hold a slot at once.
   * @param options The lease and the waiting rules.
   * @throws {TypeError} `client` is not a Redis client, `name` is not a
   * string, `maximum` is not a number, or an option has the wrong type.
   * @throws {RangeError} `name` is empty, too long or has a brace;
   * `maximum` is not a positive integer; `ttl` or `timeout` is out of range.
   *
   * @example Bad arguments are refused before anything is sent
   * ```ts
   * import { RedisSemaphore } from "@filestore/filestore/redis";
   * import assert from "node:assert/strict";
   *
   * const client = { send: () => Promise.reject(new Error("not sent")), duplicate() {} };
   * assert.throws(() => new RedisSemaphore(client, "api", 0), RangeError);
   * assert.throws(() => new RedisSemaphore(client, "api", 1.5), RangeError);
   * assert.throws(() => new RedisSemaphore(client, "{api}", 2), RangeError);
   * ```
   */
  constructor(
    client: RedisClientLike,
    name: string,
    maximum: number,
    options: RedisSemaphoreOptions = {},
  ) {
    const what = "create RedisSemaphore";
    checkClient(client, what);
    this.#name = checkName(name, what);
    if (typeof maximum !== "number") {
      throw invalid(TypeError, what, "maximum", "a positive integer", maximum);
    }
    this.#maximum = checkNumber(maximum, what, "maximum", "a positive integer", {
      min: 1,
      max: 2 ** 31 - 1,
      integer: true,
    })!;
    const settings = settingsOf(DEFAULTS, checkOptions(options, what), what);
    const ttl = checkTtl(options.ttl, what);
    const claim = claimOf(client, connectionOf(client), "sem", this.#name, "n", this.#maximum, ttl);
    this.#leases = new Leases(claim, settings, this.#name, `RedisSemaphore ${show(this.#name)}`);
  }

  /** The semaphore's name. */
  get name(): string {
    return this.#name;
  }

  /** How many may hold a slot at once. */
  get maximum(): number {
    return this.#maximum;
  }

  /** Whether this instance holds a slot now (false once it is lost). */
  get locked(): boolean {
    return this.#leases.locked;
  }

  /** The current lease while a slot is held, else `undefined`. */
  get lease(): RedisLease | undefined {
    return this.#leases.lease;
  }

  /**
   * Takes a slot, waiting as the options say; see
   * {@link RedisLock.prototype.acquire}.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The lease of the slot.
   * @throws {AlreadyLocked} All slots are held and `failWhenLocked`,
   * `timeout: 0`, or `timeout` ran out; it names the holder whose lease ends
   * first.
   * @throws {TypeError} An override has the wrong type.
   * @throws {RangeError} An override is out of range.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisSemaphore } from "@filestore/filestore/redis";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const slot = new RedisSemaphore(client, "encoders", 2);
   * const { token } = await slot.acquire({ timeout: 10_000 });
   * console.log(`slot taken with token ${token}`);
   * await slot.release();
   * client.close();
   * ```
   */
  acquire(overrides?: RedisAcquireOptions): Promise<RedisLease> {
    return this.#leases.acquire(overrides, `acquire RedisSemaphore ${show(this.#name)}`);
  }

  /**
   * Gives the slot back if it is still this holder's; does nothing when no
   * slot is held.
   *
   * @returns A promise that resolves once Redis has answered.
   * @throws {Error} Redis could not be reached; the lease then lapses by itself.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisSemaphore } from "@filestore/filestore/redis";
   * import assert from "node:assert/strict";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const slot = new RedisSemaphore(client, "release-example", 3);
   * await slot.acquire();
   * await slot.release();
   * assert.equal(slot.locked, false);
   * client.close();
   * ```
   */
  release(): Promise<void> {
    return this.#leases.release();
  }

  /** Gives the slot back, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.#leases.release();
  }
}
