/**
 * Locks across hosts, on Redis: {@link RedisLock} (exclusive or shared) and
 * {@link RedisSemaphore}, with the shape of the file locks of `./lock`. A
 * holder has a lease (`ttl`) that is renewed in the background, a
 * **fencing token** that grows with every acquire of the same name (also
 * across a Redis restart that lost its data), and an `AbortSignal` that
 * aborts as soon as the holder can no longer be sure that it still holds
 * the lock. Waiters are woken by Redis when the holder releases, and notice
 * a holder that died when its lease ends. {@link RedisQueue} is the
 * `FileStore` queue across hosts, on a Redis stream. You pass the client
 * you already have: Bun's `RedisClient`, `redis` (node-redis 5/6) or
 * `ioredis`.
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
import {
  checkBoolean,
  checkNumber,
  checkOptions,
  checkSignal,
  heldBy,
  invalid,
  randomHex,
  show,
} from "./_check.ts";
import {
  checkClient,
  type Connection,
  connectionOf,
  type RedisClientLike,
} from "./_redis_client.ts";
import {
  acquireLease,
  type Blocker,
  type Claim,
  type Grant,
  type Holder,
  Keeper,
  LockLost,
  poolOf,
  unrefTimer,
} from "./_redis_lease.ts";
import {
  bytesOf,
  ClaimLost,
  entryOfRead,
  fieldsOf,
  GROUP,
  isNoGroup,
  type Payload,
  payloadOf,
  type QueueKeys,
  queueKeysOf,
  queueScripts,
  RELEASED_IDLE,
  textOf,
  tooLarge,
} from "./_redis_queue.ts";
import { keysOf } from "./_redis_scripts.ts";
import { DEFAULTS, type Settings, settingsOf } from "./_lock.ts";
import { rt } from "./_runtime.ts";
import { deadline, share, untilAbort } from "./_wait.ts";
import { AlreadyLocked } from "./errors.ts";

export type { RedisClientLike };
export { ClaimLost, LockLost };
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
  #what: string;
  #keeper: Keeper | undefined;
  #lease: RedisLease | undefined;
  #pending: Promise<RedisLease> | undefined;

  constructor(claim: Claim, settings: Settings, name: string, describe: string) {
    this.#claim = claim;
    this.#settings = settings;
    this.#name = name;
    this.#describe = describe;
    this.#what = `acquire ${describe}`;
  }

  get locked(): boolean {
    return this.#keeper?.held ?? false;
  }

  get lease(): RedisLease | undefined {
    return this.locked ? this.#lease : undefined;
  }

  async acquire(overrides: RedisAcquireOptions | undefined): Promise<RedisLease> {
    const s = settingsOf(this.#settings, overrides, this.#what);
    if (this.locked) return this.#lease!;
    if (s.signal?.aborted) throw s.signal.reason;
    if (this.#pending !== undefined) {
      return await share(this.#pending, s, (waited) => this.#refuse({}, waited));
    }
    const pending = acquireLease(this.#claim, s, this.#refuse).then((grant) => this.#hold(grant));
    this.#pending = pending;
    try {
      return await pending;
    } finally {
      this.#pending = undefined;
    }
  }

  #refuse = (holder: Holder, waited?: number): AlreadyLocked =>
    refusalOf(this.#what, holder, waited);

  #hold(grant: Grant): RedisLease {
    const keeper = new Keeper(this.#claim, grant, this.#describe);
    this.#keeper = keeper;
    this.#lease = {
      name: this.#name,
      token: keeper.token,
      get signal() {
        return keeper.signal;
      },
    };
    return this.#lease;
  }

  release(): Promise<void> {
    const keeper = this.#keeper;
    if (keeper === undefined) return Promise.resolve();
    this.#keeper = undefined;
    this.#lease = undefined;
    return keeper.release().then(() => {});
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
    return this.#leases.acquire(overrides);
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
    return this.#leases.acquire(overrides);
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

// ---------------------------------------------------------------------------
// The queue.

/** Options of {@link RedisQueue}. */
export interface RedisQueueOptions {
  /**
   * The lease of a claimed message, in milliseconds: how long a message
   * stays with a consumer that stopped renewing it (died, paused, cut off)
   * before the next claim takes it over. Renewed every third of it while
   * the claim is open. All users of one queue should give the same `ttl`.
   *
   * @default {10000}
   */
  ttl?: number;
  /**
   * How often a message may be handed out (a released one counts too).
   * One that would be handed out once more is moved to the dead-letter
   * stream ({@link RedisQueue.prototype.deadLetterKey}) instead.
   *
   * @default {Infinity}
   */
  maxDeliveries?: number;
  /**
   * The largest payload `put()` accepts, in bytes (UTF-8 for text): each
   * waiting message lives in the Redis server's memory. Bytes travel as
   * base64, a third larger.
   *
   * @default {1048576}
   */
  maxPayload?: number;
}

/** Options of {@link RedisQueue.prototype.claim}. */
export interface RedisClaimOptions {
  /**
   * How long to wait for a message when none is waiting, in milliseconds:
   * `0` answers at once (`null` when the queue is empty), `Infinity` waits
   * for as long as it takes. The wait blocks on Redis on a connection of
   * its own (from the client's `duplicate()`), and is woken by the next
   * `put()`.
   *
   * @default {0}
   */
  timeout?: number;
  /** Gives up the wait when it aborts: the claim rejects with its reason. */
  signal?: AbortSignal;
}

/** Options of {@link RedisQueue.prototype.watch}. */
export interface RedisWatchOptions {
  /** Ends the iteration when it aborts. */
  signal?: AbortSignal;
}

/** Options of {@link RedisQueue.prototype.list}. */
export interface RedisListOptions {
  /**
   * At most this many messages of each kind (waiting, claimed).
   *
   * @default {1000}
   */
  limit?: number;
}

/** A message that waits to be claimed, in {@link RedisQueueList}. */
export interface RedisWaitingMessage {
  /** Its id, from `put()`. */
  readonly id: string;
  /** How often it was handed out before (0 for a new one). */
  readonly deliveries: number;
}

/** A message that a consumer holds, in {@link RedisQueueList}. */
export interface RedisClaimedMessage {
  /** Its id, from `put()`. */
  readonly id: string;
  /** The consumer that holds it: "host:pid:random" ({@link RedisQueue.prototype.consumer}). */
  readonly consumer: string;
  /** When that consumer claimed it, on the Redis server's clock. */
  readonly since: Date | undefined;
  /** How often it has been handed out, this time included. */
  readonly deliveries: number;
}

/** What {@link RedisQueue.prototype.list} finds. */
export interface RedisQueueList {
  /**
   * The messages that the next claims take, oldest first: those never
   * handed out, then those released or left by a consumer past its lease.
   */
  readonly waiting: RedisWaitingMessage[];
  /** The messages held by a consumer within its lease. */
  readonly claimed: RedisClaimedMessage[];
  /** How many messages are in the dead-letter stream. */
  readonly dead: number;
}

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
const MAX_PAYLOAD_LIMIT = 256 * 1024 * 1024;

// A claimed message's lease, renewed in the background. It knows nothing
// of its RedisClaim, so that a claim dropped without done() or release()
// can be collected (and handed back then).
class MessageLease {
  readonly controller = new AbortController();
  readonly #conn: Connection;
  readonly #keys: QueueKeys;
  readonly #args: [string, string, string];
  readonly #ttl: number;
  readonly id: string;
  readonly #describe: string;
  #confirmedSentAt: number;
  #cancelRenew: (() => void) | undefined;
  #cancelExpiry: (() => void) | undefined;
  #stopped = false;

  constructor(
    conn: Connection,
    keys: QueueKeys,
    consumer: string,
    id: string,
    ttl: number,
    sentAt: number,
    describe: string,
  ) {
    this.#conn = conn;
    this.#keys = keys;
    this.#args = [GROUP, consumer, id];
    this.id = id;
    this.#ttl = ttl;
    this.#describe = describe;
    this.#confirmedSentAt = sentAt;
    this.#armExpiry();
    this.#scheduleRenew(ttl / 3);
  }

  // As RedisLock's: the lease ended on the server no earlier than `ttl`
  // after the request that started or renewed it was sent.
  #armExpiry(): void {
    this.#cancelExpiry?.();
    const limit = this.#confirmedSentAt + this.#ttl - this.#ttl / 50 - 1;
    this.#cancelExpiry = unrefTimer(Math.max(0, limit - performance.now()), () => {
      this.lose(
        `${this.#describe}: no renewal was confirmed within its lease of ${this.#ttl} ms, and another consumer may have it now`,
      );
    });
  }

  #scheduleRenew(ms: number): void {
    this.#cancelRenew?.();
    this.#cancelRenew = unrefTimer(ms, () => void this.#renew());
  }

  async #renew(): Promise<void> {
    if (this.#stopped) return;
    const sentAt = performance.now();
    let reply: unknown;
    try {
      reply = await queueScripts.renew.run(this.#conn, this.#keys, this.#args);
    } catch {
      if (!this.#stopped) this.#scheduleRenew(this.#ttl / 10);
      return;
    }
    if (this.#stopped) return;
    const refusal = queueRefusalOf(reply);
    if (refusal !== undefined) {
      this.lose(`${this.#describe}: ${refusal}`);
      return;
    }
    this.#confirmedSentAt = sentAt;
    this.#armExpiry();
    this.#scheduleRenew(Math.max(0, sentAt + this.#ttl / 3 - performance.now()));
  }

  stop(): void {
    this.#stopped = true;
    this.#cancelRenew?.();
    this.#cancelExpiry?.();
  }

  /** Aborts the signal with `reason` unless it already aborted. */
  abort(reason: ClaimLost): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  lose(why: string): void {
    if (this.#stopped) return;
    this.stop();
    this.controller.abort(new ClaimLost(`Lost ${why}`));
  }

  /** Runs the done or release script; resolves to why Redis refused, or undefined. */
  async finish(release: boolean): Promise<string | undefined> {
    this.stop();
    const reply = release
      ? await queueScripts.release.run(this.#conn, this.#keys, [...this.#args, RELEASED_IDLE])
      : await queueScripts.done.run(this.#conn, this.#keys, this.#args);
    return queueRefusalOf(reply);
  }
}

// The owner check's reply in words, or undefined when the message was ours.
function queueRefusalOf(reply: unknown): string | undefined {
  if (!Array.isArray(reply) || Number(reply[0]) === 1) return undefined;
  const owner = String(reply[1] ?? "");
  if (owner === "") {
    return "it is no longer pending (another consumer finished it, it went to the dead-letter stream, or Redis lost it)";
  }
  return `its lease ended and consumer '${owner}' has taken it over (delivery ${Number(reply[2])})`;
}

// A claim dropped without done() or release() hands its message back when
// it is collected, as a FileStore claim does.
const droppedClaims = new FinalizationRegistry<MessageLease>((lease) => {
  lease.finish(true).catch(() => {});
});

// RedisQueue's done-and-take for a claim's lease: the claim taken next,
// null, or why Redis refused the done.
type DoneAndTake = (
  lease: MessageLease,
  timeout: number,
  signal: AbortSignal | undefined,
) => Promise<RedisClaim | null | { refusal: string }>;

let grantedClaim:
  | {
    queue: string;
    id: string;
    payload: Payload;
    deliveries: number;
    lease: MessageLease;
    doneAndTake: DoneAndTake;
  }
  | undefined;

// The options of a claim: the timeout and the signal, checked.
function claimOptionsOf(
  options: RedisClaimOptions | undefined,
  what: string,
): { timeout: number; signal: AbortSignal | undefined } {
  const timeout = checkNumber(
    checkOptions(options, what)?.timeout,
    what,
    "timeout",
    "a number of milliseconds >= 0, or Infinity",
    { min: 0 },
  ) ?? 0;
  return { timeout, signal: checkSignal(options?.signal, what) };
}

/**
 * A message claimed from a {@link RedisQueue}, held for its consumer: the
 * counterpart of a `FileStore` claim. The message is this consumer's for a
 * lease (`ttl`) that is renewed in the background while the claim is open;
 * {@link RedisClaim.prototype.done} takes it out of the queue and
 * {@link RedisClaim.prototype.release} hands it back. If the consumer dies
 * or stops renewing for longer than the lease, the next claim (on any
 * host) takes the message over, and this claim's `done()` is refused with
 * {@link ClaimLost}. Disposing a claim that is neither done nor released
 * releases it, so `await using` gives a message back on any error.
 *
 * The example needs a Redis server, so `deno test --doc` does not run it
 * here.
 *
 * @example Usage
 * ```ts ignore
 * import { RedisQueue } from "@filestore/filestore/redis";
 * import assert from "node:assert/strict";
 *
 * const client = new Bun.RedisClient(process.env.REDIS_URL);
 * const queue = new RedisQueue(client, "orders");
 * await queue.put("order 1");
 * {
 *   await using claim = (await queue.claim())!;
 *   assert.equal(await claim.text(), "order 1");
 *   await claim.done();
 * }
 * client.close();
 * ```
 */
export class RedisClaim implements AsyncDisposable {
  #queue: string;
  #id: string;
  #payload: Payload;
  #deliveries: number;
  #lease: MessageLease;
  #doneAndTake: DoneAndTake;
  #finished = false;

  /**
   * Not for direct use: claims come from `RedisQueue.claim()`.
   *
   * @throws {TypeError} When called directly.
   */
  constructor() {
    if (grantedClaim === undefined) {
      throw new TypeError("Cannot construct RedisClaim directly: use RedisQueue.claim()");
    }
    ({
      queue: this.#queue,
      id: this.#id,
      payload: this.#payload,
      deliveries: this.#deliveries,
      lease: this.#lease,
      doneAndTake: this.#doneAndTake,
    } = grantedClaim);
    grantedClaim = undefined;
    droppedClaims.register(this, this.#lease, this);
  }

  /** The message's id, as `put()` returned it. */
  get id(): string {
    return this.#id;
  }

  /** The message's id, under the name a `FileStore` claim gives it. */
  get name(): string {
    return this.#id;
  }

  /**
   * How often the message has been handed out, this time included: 1
   * unless a consumer died with it, was too slow, or released it before.
   */
  get deliveries(): number {
    return this.#deliveries;
  }

  /** Whether it is done or released (or refused as lost). */
  get finished(): boolean {
    return this.#finished;
  }

  /**
   * Aborts, with a {@link ClaimLost} as its reason, as soon as this
   * consumer can no longer be sure that the message is still its own (a
   * renewal was refused, none was confirmed within the lease, or Redis
   * refused `done()` or `release()`). Never aborted by a `done()` or
   * `release()` that succeeded.
   */
  get signal(): AbortSignal {
    return this.#lease.controller.signal;
  }

  /**
   * The payload as bytes (text as UTF-8).
   *
   * @returns The bytes.
   */
  bytes(): Promise<Uint8Array> {
    return Promise.resolve(bytesOf(this.#payload));
  }

  /**
   * The payload as text (bytes decoded as UTF-8).
   *
   * @returns The text.
   */
  text(): Promise<string> {
    return Promise.resolve(textOf(this.#payload));
  }

  /**
   * Finishes the work: the message leaves the queue (XACK and XDEL), if it
   * is still this consumer's.
   *
   * @returns Once Redis has answered.
   * @throws {ClaimLost} Its lease ended and another consumer took it over,
   * or it is gone; the claim is finished either way.
   * @throws {TypeError} The claim is already finished.
   */
  done(): Promise<void> {
    return this.#finish(false, "finish");
  }

  /**
   * Hands the message back for the next claim, on any host (after an
   * error, say). That next handout counts as a delivery, so a message
   * whose work always fails ends in the dead-letter stream when
   * `maxDeliveries` is set.
   *
   * @returns Once Redis has answered.
   * @throws {ClaimLost} Another consumer has it already, or it is gone.
   * @throws {TypeError} The claim is already finished.
   */
  release(): Promise<void> {
    return this.#finish(true, "release");
  }

  /**
   * Finishes the work and claims the next message, in one round trip to
   * Redis: what `await claim.done()` followed by `await queue.claim(options)`
   * on this claim's queue does, in one script. A worker that takes one
   * message after another saves a round trip per message this way (see
   * the README's "Across hosts" section for the loop).
   *
   * If Redis refuses the done (the message is no longer this consumer's),
   * nothing is claimed: it throws {@link ClaimLost} as `done()` does. When
   * no message waits, it resolves to `null` at once, or waits for one as
   * `claim()` does when `timeout` says so; the done stands whatever the
   * wait does.
   *
   * @param options How long to wait for the next message, and a signal
   * to give up the wait (as {@link RedisQueue.prototype.claim}'s).
   * @returns The next claim, or `null`.
   * @throws {ClaimLost} Its lease ended and another consumer took it over,
   * or it is gone; the claim is finished either way, and nothing was
   * claimed.
   * @throws {TypeError} The claim is already finished, or an option has
   * the wrong type (then nothing is sent).
   * @throws {RangeError} `timeout` is negative (nothing is sent).
   *
   * @example A worker loop with one round trip per message
   * ```ts ignore
   * import { RedisQueue } from "@filestore/filestore/redis";
   * import assert from "node:assert/strict";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const queue = new RedisQueue(client, "orders");
   * await queue.put("order 1");
   * await queue.put("order 2");
   * const seen: string[] = [];
   * let claim = await queue.claim();
   * while (claim !== null) {
   *   await using held = claim; // released if the work throws
   *   seen.push(await held.text());
   *   claim = await held.doneAndClaim(); // null: nothing left
   * }
   * assert.deepEqual(seen, ["order 1", "order 2"]);
   * client.close();
   * ```
   */
  async doneAndClaim(options?: RedisClaimOptions): Promise<RedisClaim | null> {
    const describe = `message ${this.#id} of RedisQueue ${show(this.#queue)}`;
    const { timeout, signal } = claimOptionsOf(options, `finish ${describe} and claim the next`);
    if (!this.#finished) signal?.throwIfAborted();
    this.#start("finish", describe);
    const next = await this.#doneAndTake(this.#lease, timeout, signal);
    if (next === null || next instanceof RedisClaim) return next;
    throw this.#lost("finish", describe, next.refusal);
  }

  #start(verb: string, describe: string): void {
    if (this.#finished) {
      throw new TypeError(`Cannot ${verb} ${describe}: the claim is already done or released`);
    }
    this.#finished = true;
    droppedClaims.unregister(this);
  }

  #lost(verb: string, describe: string, refusal: string): ClaimLost {
    const lost = new ClaimLost(`Cannot ${verb} ${describe}: ${refusal}`);
    this.#lease.abort(lost);
    return lost;
  }

  async #finish(release: boolean, verb: string): Promise<void> {
    const describe = `message ${this.#id} of RedisQueue ${show(this.#queue)}`;
    this.#start(verb, describe);
    const refusal = await this.#lease.finish(release);
    if (refusal !== undefined) throw this.#lost(verb, describe, refusal);
  }

  /**
   * Releases the message unless the claim is finished: for `await using`.
   * A message that is no longer this consumer's is left alone.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#finished) return;
    try {
      await this.release();
    } catch (e) {
      if (!(e instanceof ClaimLost)) throw e;
    }
  }
}

/**
 * The `FileStore` queue across hosts, on Redis Streams: `put()` from any
 * host, `claim()` on any other, and a claim handle shaped like the
 * `FileStore`'s (`done()`, `release()`, `await using`, `deliveries`), so
 * that a worker loop moves from one host to many by changing its
 * constructor. Each message goes to one consumer at a time; a claim is a
 * lease (`ttl`) renewed while the claim is open, and a consumer that dies
 * or stops renewing loses its message to the next claim once the lease
 * has run out: at-least-once delivery. Messages handed out
 * `maxDeliveries` times go to a dead-letter stream.
 *
 * One Redis stream per queue (`filestore:queue:{name}:stream`) with one
 * consumer group; the `{name}` hash tag keeps all its keys in one Redis
 * Cluster slot. A resolved `put()` is as durable as the server makes it:
 * see the README ("Across hosts") for `appendonly` and `appendfsync`.
 * Needs Redis 6.2 or later (XAUTOCLAIM).
 *
 * The example needs a Redis server, so `deno test --doc` does not run it
 * here; `tests/redis_queue_test.ts` does the same against a real one.
 *
 * @example Usage
 * ```ts ignore
 * import { RedisQueue } from "@filestore/filestore/redis";
 * import { createClient } from "redis";
 *
 * const client = await createClient({ url: process.env.REDIS_URL }).connect();
 * await using queue = new RedisQueue(client, "thumbnails", { ttl: 30_000, maxDeliveries: 5 });
 * await queue.put(JSON.stringify({ image: "cat.png" }));
 * for await (const claim of queue.watch({ signal: AbortSignal.timeout(60_000) })) {
 *   await using held = claim; // released on any error
 *   await makeThumbnail(JSON.parse(await held.text()), held.signal);
 *   await held.done();
 * }
 * ```
 */
export class RedisQueue implements AsyncDisposable {
  #name: string;
  #ttl: number;
  #maxDeliveries: number;
  #maxPayload: number;
  #conn: Connection;
  #pool: ReturnType<typeof poolOf>;
  #keys: QueueKeys;
  #consumer: string;
  #ready: Promise<void> | undefined;
  // Where the next look for messages past their lease starts in the
  // pending list (XAUTOCLAIM's cursor).
  #cursor = "0-0";
  // When this instance last removed the consumers that left (see #forgetArg).
  #forgotAt = -Infinity;

  /**
   * Makes a queue named `name`; nothing is sent until it is used.
   *
   * @param client A connected Redis client (see {@link RedisClientLike}).
   * @param name The queue's name: the same name on every host is the same queue.
   * @param options The lease, the dead-letter limit and the payload limit.
   * @throws {TypeError} `client` is not a Redis client, `name` is not a
   * string, or an option has the wrong type.
   * @throws {RangeError} `name` is empty, too long or has a brace; an
   * option is out of range.
   *
   * @example Bad arguments are refused before anything is sent
   * ```ts
   * import { RedisQueue } from "@filestore/filestore/redis";
   * import assert from "node:assert/strict";
   *
   * const client = { send: () => Promise.reject(new Error("not sent")), duplicate() {} };
   * assert.throws(() => new RedisQueue(client, "jobs{1}"), RangeError);
   * assert.throws(() => new RedisQueue(client, "jobs", { maxDeliveries: 0 }), RangeError);
   * const queue = new RedisQueue(client, "jobs", { maxPayload: 10 });
   * await assert.rejects(queue.put("more than ten bytes"), RangeError);
   * await assert.rejects(queue.put(42 as never), TypeError);
   * ```
   */
  constructor(client: RedisClientLike, name: string, options: RedisQueueOptions = {}) {
    const what = "create RedisQueue";
    checkClient(client, what);
    this.#name = checkName(name, what);
    checkOptions(options, what);
    this.#ttl = checkTtl(options.ttl, what);
    this.#maxDeliveries = checkNumber(
      options.maxDeliveries,
      what,
      "maxDeliveries",
      "a whole number >= 1 or Infinity",
      { min: 1 },
    ) ?? Infinity;
    if (this.#maxDeliveries !== Infinity && !Number.isInteger(this.#maxDeliveries)) {
      throw invalid(
        RangeError,
        what,
        "maxDeliveries",
        "a whole number >= 1 or Infinity",
        this.#maxDeliveries,
      );
    }
    this.#maxPayload = checkNumber(
      options.maxPayload,
      what,
      "maxPayload",
      `a whole number of bytes from 1 to ${MAX_PAYLOAD_LIMIT}`,
      { min: 1, max: MAX_PAYLOAD_LIMIT, integer: true },
    ) ?? DEFAULT_MAX_PAYLOAD;
    this.#conn = connectionOf(client);
    this.#pool = poolOf(client as object, this.#conn);
    this.#keys = queueKeysOf(this.#name);
    this.#consumer = `${rt.hostname()}:${rt.pid}:${randomHex(4)}`;
  }

  /** The queue's name. */
  get name(): string {
    return this.#name;
  }

  /** This instance's name as a consumer in Redis: "host:pid:random". */
  get consumer(): string {
    return this.#consumer;
  }

  /** The Redis key of the dead-letter stream (read it with XRANGE). */
  get deadLetterKey(): string {
    return this.#keys.dead;
  }

  /**
   * Delivers `data` as a new message (XADD). It resolves once Redis has
   * accepted it; whether it survives a server crash is up to the server's
   * `appendfsync` setting.
   *
   * @param data The payload: text, or bytes.
   * @returns The message's id (a stream id, such as `"1764000000000-0"`).
   * @throws {TypeError} `data` is not a string or a Uint8Array.
   * @throws {RangeError} `data` is larger than `maxPayload`; nothing is sent.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisQueue } from "@filestore/filestore/redis";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const id = await new RedisQueue(client, "mail").put(new TextEncoder().encode("hi"));
   * console.log(`queued as ${id}`);
   * client.close();
   * ```
   */
  async put(data: string | Uint8Array): Promise<string> {
    const what = `put to RedisQueue ${show(this.#name)}`;
    if (typeof data !== "string" && !(data instanceof Uint8Array)) {
      throw invalid(TypeError, what, "data", "a string or a Uint8Array", data);
    }
    const size = tooLarge(data, this.#maxPayload);
    if (size !== undefined) {
      throw new RangeError(
        `Cannot ${what}: 'data' must be at most ${this.#maxPayload} bytes (maxPayload), got ${size} bytes`,
      );
    }
    return String(await this.#conn.send("XADD", [this.#keys.stream, "*", ...fieldsOf(data)]));
  }

  /**
   * Takes the oldest waiting message for this consumer: first one whose
   * consumer stopped renewing its lease (or released it), else a new one.
   * Resolves to `null` at once when none waits, as `FileStore.claim()`
   * does, unless `timeout` says to wait for one.
   *
   * @param options How long to wait, and a signal to give up.
   * @returns The claim, or `null`.
   * @throws {TypeError} An option has the wrong type.
   * @throws {RangeError} `timeout` is negative.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisQueue } from "@filestore/filestore/redis";
   * import Redis from "ioredis";
   *
   * const client = new Redis(process.env.REDIS_URL!);
   * const queue = new RedisQueue(client, "mail");
   * const claim = await queue.claim({ timeout: 5000 }); // null after 5 s without mail
   * if (claim !== null) await claim.done();
   * client.disconnect();
   * ```
   */
  async claim(options?: RedisClaimOptions): Promise<RedisClaim | null> {
    const { timeout, signal } = claimOptionsOf(
      options,
      `claim from RedisQueue ${show(this.#name)}`,
    );
    signal?.throwIfAborted();
    const first = await this.#take();
    if (first !== null || timeout === 0) return first;
    return await this.#wait(timeout, signal);
  }

  // Waits up to `timeout` for a message, blocking on Redis.
  async #wait(timeout: number, signal: AbortSignal | undefined): Promise<RedisClaim | null> {
    const start = performance.now();
    const limit = deadline(timeout, signal);
    let blocker: Blocker | undefined;
    // A message handed to a read given up on its way back: handed back.
    const late = (reply: unknown) => {
      const entry = entryOfRead(reply);
      if (entry === undefined) return;
      queueScripts.release.run(this.#conn, this.#keys, [
        GROUP,
        this.#consumer,
        entry[0],
        RELEASED_IDLE,
      ]).catch(() => {});
    };
    try {
      for (;;) {
        const left = timeout - (performance.now() - start);
        if (left <= 0) return null;
        // Messages of consumers that stopped renewing do not wake a
        // blocked read: look for them again every quarter of a lease.
        const ms = Math.max(1, Math.ceil(Math.min(left, this.#ttl / 4)));
        if (blocker === undefined) {
          const taking = this.#pool.take();
          try {
            blocker = await untilAbort(taking, limit.signal);
          } catch (e) {
            taking.then((b) => this.#pool.give(b), () => {});
            if (limit.timedOut) return null;
            throw e;
          }
        }
        const sentAt = performance.now();
        let reply: unknown;
        try {
          reply = await this.#pool.blockOn(
            blocker,
            "XREADGROUP",
            [
              ...["GROUP", GROUP, this.#consumer, "COUNT", "1", "BLOCK", String(ms + 1000)],
              ...["STREAMS", this.#keys.stream, ">"],
            ],
            ms,
            limit.signal,
            late,
          );
        } catch (e) {
          if (limit.timedOut) return null;
          throw e;
        }
        if (blocker.broken) {
          this.#pool.give(blocker);
          blocker = undefined;
        }
        const entry = entryOfRead(reply);
        if (entry !== undefined) {
          await queueScripts.stamp.run(this.#conn, this.#keys, [entry[0], this.#consumer]);
          return this.#grant(entry[0], entry[1], 1, sentAt);
        }
        const next = await this.#take();
        if (next !== null) return next;
      }
    } finally {
      limit[Symbol.dispose]();
      if (blocker !== undefined) this.#pool.give(blocker);
    }
  }

  /**
   * Claims each message as it arrives, for as long as the iteration runs:
   * `claim()` waiting without a timeout, in a loop. Finish each claim
   * before taking the next (`await using` inside the loop does).
   *
   * @param options `signal` ends the iteration.
   * @returns An async iterable of claims.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisQueue } from "@filestore/filestore/redis";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const queue = new RedisQueue(client, "mail");
   * for await (const claim of queue.watch({ signal: AbortSignal.timeout(10_000) })) {
   *   await using held = claim;
   *   console.log(await held.text());
   *   await held.done();
   * }
   * client.close();
   * ```
   */
  async *watch(options?: RedisWatchOptions): AsyncIterableIterator<RedisClaim> {
    const what = `watch RedisQueue ${show(this.#name)}`;
    const signal = checkSignal(checkOptions(options, what)?.signal, what);
    for (;;) {
      let claim: RedisClaim | null;
      try {
        claim = await this.claim({ timeout: Infinity, ...(signal ? { signal } : {}) });
      } catch (e) {
        if (signal?.aborted && e === signal.reason) return;
        throw e;
      }
      if (claim !== null) yield claim;
    }
  }

  /**
   * What the queue holds: the messages waiting (new, released, or past
   * their consumer's lease), those claimed (by whom, since when), and how
   * many are in the dead-letter stream.
   *
   * @param options `limit`: at most this many of each kind.
   * @returns The listing.
   * @throws {RangeError} `limit` is not a positive integer.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisQueue } from "@filestore/filestore/redis";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const { waiting, claimed } = await new RedisQueue(client, "mail").list();
   * for (const c of claimed) console.log(`${c.id}: ${c.consumer} since ${c.since?.toISOString()}`);
   * console.log(`${waiting.length} waiting`);
   * client.close();
   * ```
   */
  async list(options?: RedisListOptions): Promise<RedisQueueList> {
    const what = `list RedisQueue ${show(this.#name)}`;
    const limit = checkNumber(
      checkOptions(options, what)?.limit,
      what,
      "limit",
      "a positive integer",
      { min: 1, max: 2 ** 31 - 1, integer: true },
    ) ?? 1000;
    const reply = await this.#withGroup(() =>
      queueScripts.list.run(this.#conn, this.#keys, [GROUP, String(limit)])
    ) as [string[], [string, string, number, number][], string[], number];
    const [fresh, pending, stamps, dead] = reply;
    const waiting: RedisWaitingMessage[] = [];
    const claimed: RedisClaimedMessage[] = [];
    for (const [i, [id, consumer, idle, count]] of pending.entries()) {
      if (Number(idle) >= this.#ttl) {
        waiting.push({ id: String(id), deliveries: Number(count) });
        continue;
      }
      const stamp = String(stamps[i] ?? "");
      const since = stamp === "" ? undefined : new Date(Number(stamp.split(" ")[0]));
      claimed.push({
        id: String(id),
        consumer: String(consumer),
        since,
        deliveries: Number(count),
      });
    }
    return {
      waiting: [...waiting, ...fresh.map((id) => ({ id: String(id), deliveries: 0 }))].slice(
        0,
        limit,
      ),
      claimed,
      dead: Number(dead),
    };
  }

  /**
   * Leaves the queue: removes this consumer's name from the consumer group
   * if it holds no message (one that does stays, so that its messages are
   * taken over after their lease). The client stays open: it is yours.
   * A consumer that ended without `close()` (killed, say) is removed by
   * the other consumers' claims (one look a lease each) once it holds
   * nothing and Redis has not heard from it for two leases.
   *
   * @returns Once Redis has answered.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisQueue } from "@filestore/filestore/redis";
   *
   * const client = new Bun.RedisClient(process.env.REDIS_URL);
   * const queue = new RedisQueue(client, "mail");
   * await queue.close();
   * client.close();
   * ```
   */
  async close(): Promise<void> {
    if (this.#ready === undefined) return;
    try {
      await queueScripts.forget.run(this.#conn, this.#keys, [GROUP, this.#consumer]);
    } catch (e) {
      if (!isNoGroup(e)) throw e;
    }
  }

  /** Leaves the queue, for `await using`; see {@link RedisQueue.prototype.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // Makes the stream and the group unless they exist; from id 0, so that
  // messages put before any consumer came are not skipped.
  #ensure(): Promise<void> {
    this.#ready ??= this.#conn.send("XGROUP", [
      "CREATE",
      this.#keys.stream,
      GROUP,
      "0",
      "MKSTREAM",
    ]).then(() => {}, (e) => {
      if (e instanceof Error && e.message.startsWith("BUSYGROUP")) return;
      this.#ready = undefined;
      throw e;
    });
    return this.#ready;
  }

  // Runs `fn`, making the group first, and again when Redis lost it (a
  // restart without persistence, a DEL).
  async #withGroup<T>(fn: () => Promise<T>): Promise<T> {
    await this.#ensure();
    try {
      return await fn();
    } catch (e) {
      if (!isNoGroup(e)) throw e;
      this.#ready = undefined;
      await this.#ensure();
      return await fn();
    }
  }

  async #take(): Promise<RedisClaim | null> {
    const sentAt = performance.now();
    const [id, fields, deliveries, cursor] = await this.#withGroup(() =>
      queueScripts.take.run(this.#conn, this.#keys, [
        GROUP,
        this.#consumer,
        String(this.#ttl),
        this.#maxDeliveriesArg(),
        this.#cursor,
        this.#forgetArg(),
      ])
    ) as [string, unknown, number, string];
    this.#cursor = String(cursor);
    if (id === "" || id === null) return null;
    return this.#grant(String(id), fields, Number(deliveries), sentAt);
  }

  // RedisClaim.doneAndClaim(): done, and the next message, in one script.
  #doneAndTake: DoneAndTake = async (lease, timeout, signal) => {
    const sentAt = performance.now();
    lease.stop();
    const reply = await this.#withGroup(() =>
      queueScripts.doneTake.run(this.#conn, this.#keys, [
        GROUP,
        this.#consumer,
        lease.id,
        String(this.#ttl),
        this.#maxDeliveriesArg(),
        this.#cursor,
        this.#forgetArg(),
      ])
    );
    const refusal = queueRefusalOf(reply);
    if (refusal !== undefined) return { refusal };
    const [, id, fields, deliveries, cursor] = reply as [number, string, unknown, number, string];
    this.#cursor = String(cursor);
    if (id !== "" && id !== null) {
      return this.#grant(String(id), fields, Number(deliveries), sentAt);
    }
    if (timeout === 0) return null;
    signal?.throwIfAborted();
    return await this.#wait(timeout, signal);
  };

  #maxDeliveriesArg(): string {
    return this.#maxDeliveries === Infinity ? "0" : String(this.#maxDeliveries);
  }

  // Once a lease, a take also removes from the group the consumers that
  // hold nothing and have not been heard from for two leases (see
  // TAKE_FUNCTION in _redis_queue.ts): "0" means not this time.
  #forgetArg(): string {
    const now = performance.now();
    if (now - this.#forgotAt < this.#ttl) return "0";
    this.#forgotAt = now;
    return String(2 * this.#ttl);
  }

  #grant(id: string, fields: unknown, deliveries: number, sentAt: number): RedisClaim {
    const describe = `message ${id} of RedisQueue ${show(this.#name)}`;
    const lease = new MessageLease(
      this.#conn,
      this.#keys,
      this.#consumer,
      id,
      this.#ttl,
      sentAt,
      describe,
    );
    grantedClaim = {
      queue: this.#name,
      id,
      payload: payloadOf(fields),
      deliveries,
      lease,
      doneAndTake: this.#doneAndTake,
    };
    return new RedisClaim();
  }
}
