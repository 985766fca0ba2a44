// PgQueue: a table-backed queue whose claims are held by liveness: each
// claimed message carries a session advisory lock of its consumer's
// session, so that recover() hands back exactly the messages whose
// consumer is gone (the lock is free), and never a live one's. With `ttl`,
// a claim is a lease instead (lease_until, renewed in the background), for
// consumers that cannot hold a session.
import { checkFunction, checkNumber, checkOptions, checkSignal, invalid } from "./_check.ts";
import { applyKeepalive, checkIdentifier, keepaliveOf, type PgKeepalive } from "./_pg_lock.ts";
import {
  MARK,
  markSession,
  openSession,
  type PgConnect,
  POOLED,
  POOLER,
  type Session,
} from "./_pg_session.ts";
import { deadline, MAX_TIMER, unrefTimer } from "./_wait.ts";
import { LockException } from "./errors.ts";

/** Options of {@link PgQueue}. */
export interface PgQueueOptions {
  /**
   * How often a message may be handed out: once it has been delivered this
   * many times and its consumer died with it (or released it) again,
   * `recover()` marks it `failed` (dead-lettered) instead of `ready`.
   *
   * @default {Infinity}
   */
  maxDeliveries?: number;
  /**
   * `claim()` runs `recover()` by itself when it finds no ready message, at
   * most once in this many milliseconds; `Infinity` leaves recovery to
   * explicit `recover()` calls.
   *
   * @default {1000}
   */
  recoverEvery?: number;
  /**
   * Server-side TCP keepalives of the consumer's session (see
   * {@link PgKeepalive}), or `false` for the server's own.
   *
   * @default {{ idle: 10, interval: 5, count: 3 }}
   */
  keepalive?: PgKeepalive | false;
  /**
   * Hold claims by a lease of this many milliseconds instead of by the
   * consumer's session: for consumers that cannot keep a session of their
   * own (a pooler in transaction mode, short-lived functions). The lease is
   * renewed every third of `ttl` while the claim is held; a consumer that
   * stops renewing (dead, stopped, cut off) loses the message `ttl` after
   * its last renewal, when `recover()` (or a `claim()` that finds nothing
   * ready) hands it out again, and its `done()` is then refused. Without
   * `ttl`, a dead consumer's message comes back at once and a stopped one's
   * never does. Consumers of both kinds may share a table.
   *
   * @default {undefined} (held by liveness)
   */
  ttl?: number;
}

/** Options of {@link PgQueue.prototype.claim}. */
export interface PgClaimOptions {
  /**
   * Wait up to this many milliseconds for a message when none is ready,
   * woken by the NOTIFY of a `put()` (LISTEN; a client without LISTEN is
   * refused). `0` answers at once.
   *
   * @default {0}
   */
  wait?: number;
  /** Ends a wait early: the claim resolves to `null`. */
  signal?: AbortSignal;
}

/** A message's state in the table. */
export type PgMessageState = "ready" | "claimed" | "failed";

/** What {@link PgQueue.prototype.recover} did. */
export interface PgRecovered {
  /** Ids of the messages made ready again. */
  requeued: string[];
  /** Ids of the messages dead-lettered (`failed`) after `maxDeliveries`. */
  failed: string[];
}

const VERSION = "filestore queue 2";

let pendingClaim:
  | {
    queue: PgQueue;
    session: Session;
    id: string;
    body: string;
    deliveries: number;
    sent: number;
  }
  | undefined;
// The statement that claims the oldest ready message, by how the claim is
// held: a lease (`ttl`, $1 its milliseconds), an advisory lock ($1 the
// queue's key), or an advisory lock on a server session that must carry
// the queue's mark ($2, see markSession): that one answers one row always,
// saying whether it ran there (nothing is claimed otherwise).
function claimSql(t: string, hold: "lease" | "lock" | "marked"): string {
  const lease = hold === "lease";
  const pick = `c as (select id from ${t} where state = 'ready'${
    hold === "marked" ? ` and current_setting('${MARK}', true) = $2` : ""
  } order by id for update skip locked limit 1)`;
  const update = `update ${t} q set state = 'claimed', deliveries = q.deliveries + 1,
      claimed_at = now(), claimed_by = pg_backend_pid(),
      lease_until = ${lease ? "clock_timestamp() + $1::int4 * interval '1 millisecond'" : "null"}
    from c where q.id = c.id
    returning q.id::text as id, q.body, q.deliveries,
      ${lease ? "true" : "pg_try_advisory_lock($1::int4, q.id::bit(32)::int4)"} as locked`;
  if (hold !== "marked") return `with ${pick} ${update}`;
  return `with ${pick}, u as (${update})
    select coalesce(current_setting('${MARK}', true) = $2, false) as ours, u.*
    from (select) as one left join u on true`;
}

let queueSql!: (queue: PgQueue) => {
  table: string;
  key: number;
  ttl: number | undefined;
  /** The queue's session, or `undefined` once the queue was closed (until it is used again). */
  open(): Promise<Session> | undefined;
};

/**
 * A message claimed from a {@link PgQueue}, held by its consumer's session
 * (an advisory lock on the message) until {@link PgClaim.prototype.done}
 * deletes it or {@link PgClaim.prototype.release} makes it ready again. If
 * the consumer dies, its session ends, the lock goes, and the next
 * `recover()` hands the message out again. `await using` releases a claim
 * that is neither done nor released.
 *
 * @example Usage
 * ```ts ignore
 * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
 * import { PgQueue } from "@filestore/filestore/postgres";
 * import postgres from "postgres";
 *
 * await using queue = new PgQueue(() => postgres(process.env.DATABASE_URL!, { max: 1 }), "jobs");
 * await queue.put("resize photo 17");
 * await using claim = await queue.claim();
 * if (claim !== null) {
 *   console.log(claim.body, claim.deliveries);
 *   await claim.done();
 * }
 * ```
 */
export class PgClaim implements AsyncDisposable {
  #queue: PgQueue;
  #session: Session;
  #id: string;
  #body: string;
  #deliveries: number;
  #finished = false;
  // With a lease (ttl): its signal, the renewal timer and the time by which
  // the lease may have ended, by this process's monotonic clock.
  #lease: { controller: AbortController; cancel: () => void; until: number } | undefined;

  /**
   * Not for direct use: claims come from `PgQueue.claim()`.
   *
   * @throws {TypeError} When called directly.
   */
  constructor() {
    if (pendingClaim === undefined) {
      throw new TypeError("Cannot construct PgClaim directly: use PgQueue.claim()");
    }
    ({
      queue: this.#queue,
      session: this.#session,
      id: this.#id,
      body: this.#body,
      deliveries: this.#deliveries,
    } = pendingClaim);
    const { sent } = pendingClaim;
    pendingClaim = undefined;
    const { ttl } = queueSql(this.#queue);
    if (ttl !== undefined) {
      // Counted from before the claim was sent: the server's lease ends no
      // earlier than that.
      const until = sent + ttl;
      this.#lease = { controller: new AbortController(), cancel: () => {}, until };
      this.#renewLater(ttl);
    }
  }

  // Renews the lease a third of `ttl` from now, and again after each
  // confirmed renewal. The signal aborts when a renewal finds the claim
  // taken back, or when none was confirmed before the lease may have ended.
  #renewLater(ttl: number): void {
    const lease = this.#lease!;
    const cancelRenew = unrefTimer(ttl / 3, () => void this.#renew(ttl));
    const cancelExpiry = unrefTimer(Math.max(0, lease.until - performance.now()), () => {
      this.#lose(`its lease of ${ttl} ms may have ended before a renewal was confirmed`);
    });
    lease.cancel = () => {
      cancelRenew();
      cancelExpiry();
    };
  }

  async #renew(ttl: number): Promise<void> {
    const lease = this.#lease!;
    if (this.#finished || lease.controller.signal.aborted) return;
    const sent = performance.now();
    const { table, open } = queueSql(this.#queue);
    let n: number;
    try {
      // A closed queue renews nothing (it would open a session nobody closes).
      const session = await open();
      if (session === undefined) throw new Error("the queue was closed");
      const [row] = await session.query(
        `with u as (update ${table} set lease_until = clock_timestamp() + $3::int4 * interval '1 millisecond'
           where id = $1::bigint and deliveries = $2 and state = 'claimed' returning id)
         select count(*)::int4 as n from u`,
        [this.#id, this.#deliveries, ttl],
      );
      n = Number(row?.n);
    } catch {
      // Not confirmed: try again a little later, until the lease may have ended.
      if (!this.#finished && !lease.controller.signal.aborted) {
        const cancelExpiry = lease.cancel;
        const cancelRetry = unrefTimer(Math.min(100, ttl / 10), () => void this.#renew(ttl));
        lease.cancel = () => {
          cancelExpiry();
          cancelRetry();
        };
      }
      return;
    }
    if (this.#finished || lease.controller.signal.aborted) return;
    if (n !== 1) {
      this.#lose("it was taken back after its lease ended");
      return;
    }
    lease.cancel();
    lease.until = sent + ttl;
    this.#renewLater(ttl);
  }

  #lose(why: string): void {
    const lease = this.#lease!;
    lease.cancel();
    if (!lease.controller.signal.aborted) {
      lease.controller.abort(new LockException(`Lost the claim of message ${this.#id}: ${why}`));
    }
  }

  /** The message's id (a `bigint` of the table, as a string). */
  get id(): string {
    return this.#id;
  }

  /** The message. */
  get body(): string {
    return this.#body;
  }

  /** How often the message has been handed out, this time included. */
  get deliveries(): number {
    return this.#deliveries;
  }

  /** Whether it is done or released. */
  get finished(): boolean {
    return this.#finished;
  }

  /**
   * Aborts when the claim is no longer this consumer's for sure: its
   * session was lost (by liveness), or its lease could not be renewed
   * (with `ttl`). The message is then recovered for another consumer.
   */
  get signal(): AbortSignal {
    return this.#lease?.controller.signal ?? this.#session.lost;
  }

  /**
   * Finishes the work: the message is deleted, then its lock dropped.
   *
   * @returns A promise that resolves once the message is gone.
   * @throws {TypeError} The claim is already finished.
   * @throws {LockException} The claim was taken back (the consumer's session
   * was lost and the message recovered): nothing was changed.
   */
  async done(): Promise<void> {
    await this.#finish(
      (t) =>
        `with d as (delete from ${t} where id = $1::bigint and deliveries = $2 and state = 'claimed' returning id)
         select count(*)::int4 as n from d`,
      "finish",
    );
  }

  /**
   * Gives the message back for another consumer (after an error, say): it
   * is ready again, and its delivery count stays.
   *
   * @returns A promise that resolves once the message is ready again.
   * @throws {TypeError} The claim is already finished.
   * @throws {LockException} The claim was taken back: nothing was changed.
   */
  async release(): Promise<void> {
    await this.#finish(
      (t) =>
        `with u as (update ${t} set state = 'ready', claimed_by = null, lease_until = null
           where id = $1::bigint and deliveries = $2 and state = 'claimed' returning id)
         select count(*)::int4 as n, pg_notify('${t.replace(".", "_")}', '') from u`,
      "release",
    );
  }

  async #finish(sql: (table: string) => string, verb: string): Promise<void> {
    if (this.#finished) {
      throw new TypeError(`Cannot use the claim of message ${this.#id}: it is done or released`);
    }
    this.#finished = true;
    this.#lease?.cancel();
    const { table, key, open } = queueSql(this.#queue);
    // A lease is not bound to a session: the queue's current one will do.
    const session = this.#lease === undefined ? this.#session : await open();
    if (session === undefined) {
      throw new LockException(
        `Cannot ${verb} message ${this.#id}: its queue was closed, nothing was changed`,
      );
    }
    let row;
    try {
      [row] = await session.query(sql(table), [this.#id, this.#deliveries]);
    } catch (e) {
      if (session.open) throw e;
      throw new LockException(
        `Cannot ${verb} message ${this.#id}: the consumer's session was lost, nothing was changed`,
        { cause: e },
      );
    }
    if (this.#lease === undefined && session.open) {
      await session.query("select pg_advisory_unlock($1::int4, ($2::bigint)::bit(32)::int4)", [
        key,
        this.#id,
      ]).catch(() => {});
    }
    if (Number(row?.n) !== 1) {
      const why = this.#lease === undefined
        ? "the consumer's session was lost"
        : "its lease ended without renewal";
      this.#lease?.controller.abort(
        new LockException(`Lost the claim of message ${this.#id}: ${why}`),
      );
      throw new LockException(
        `Cannot ${verb} message ${this.#id}: its claim was taken back (${why}), nothing was changed`,
      );
    }
  }

  /** Releases the claim unless it is done or released: for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#finished) return;
    try {
      await this.release();
    } catch { /* taken back already: nothing to give back */ }
  }
}

/**
 * A queue in a PostgreSQL table, with the claim handle of `FileStore`:
 * `put`, `claim` (null at once when empty, or a wait woken by
 * LISTEN/NOTIFY), `list`, `recover`, and dead-lettering after
 * `maxDeliveries`. A claim is held by liveness: the consumer's session holds
 * an advisory lock on the message, so a dead consumer's message comes back
 * at the next `recover()` and a slow or stopped one's never does. With the
 * `ttl` option a claim is a lease instead, renewed in the background, for
 * consumers that cannot hold a session (see {@link PgQueueOptions.ttl}).
 * Without `ttl`, `claim()` refuses with a {@link LockException} where it
 * finds that its connection goes through a pooler in transaction or
 * statement mode (such as PgBouncer), which would break the claims' locks:
 * it compares the backend pid that the connection announced with the
 * server's, and where they differ (or the client does not show it: Bun's
 * `SQL`), marks its server session and looks for the mark from a second
 * connection at the first claim, then checks it in each claim.
 *
 * The table is named by you (`table`, a plain or schema-qualified SQL
 * identifier) and created on first use with `create table if not exists`;
 * its comment holds the schema's version (`filestore queue 2`), from which
 * the package migrates an older table on first use (version 1 lacked
 * `lease_until`: `alter table ... add column if not exists`). Columns: `id
 * bigserial`, `body text`, `state` (`ready`, `claimed`, `failed`),
 * `deliveries`, `created`, `claimed_at`, `claimed_by` (the consumer's
 * backend pid), `lease_until` (the end of a `ttl` claim's lease; null for a
 * claim held by liveness). Each instance holds one session, opened at first
 * use and ended by {@link PgQueue.prototype.close}; message locks use the
 * two-key form `(table's oid, low 32 bits of id)`.
 *
 * @example Usage
 * ```ts ignore
 * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
 * import { PgQueue } from "@filestore/filestore/postgres";
 * import postgres from "postgres";
 *
 * const connect = () => postgres(process.env.DATABASE_URL!, { max: 1 });
 * await using queue = new PgQueue(connect, "jobs", { maxDeliveries: 5 });
 * await queue.put("send invoice 7");
 * for (;;) {
 *   await using claim = await queue.claim({ wait: 30_000 });
 *   if (claim === null) break;
 *   await handle(claim.body);
 *   await claim.done();
 * }
 * ```
 *
 * @example Claims held by a lease, through a pooler in transaction mode
 * ```ts ignore
 * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
 * import { PgQueue } from "@filestore/filestore/postgres";
 * import postgres from "postgres";
 *
 * const connect = () => postgres(process.env.POOLER_URL!, { max: 1 });
 * await using queue = new PgQueue(connect, "jobs", { ttl: 30_000 });
 * await using claim = await queue.claim(); // no wait: LISTEN needs a session
 * if (claim !== null) {
 *   await handle(claim.body, claim.signal); // the signal aborts if the lease is lost
 *   await claim.done(); // a LockException if another consumer took it over
 * }
 * ```
 */
export class PgQueue implements AsyncDisposable {
  #connect: PgConnect;
  #table: string;
  #channel: string;
  #maxDeliveries: number;
  #recoverEvery: number;
  #keepalive: [string, string, string, string] | undefined;
  #ttl: number | undefined;
  #session: Session | undefined;
  #opening: Promise<Session> | undefined;
  #key = 0;
  #closed = false;
  #lastRecover = -Infinity;
  #wakers = new Set<() => void>();
  #unlisten: Promise<(() => Promise<void>) | undefined> | undefined;
  // Claims held by liveness on a session that may go through a pooler:
  // the token that marks its server session (see markSession), which each
  // claim checks; `undefined` once the session was found shared.
  #mark: { session: Session; token: Promise<string | undefined> } | undefined;

  static {
    queueSql = (q) => ({
      table: q.#table,
      key: q.#key,
      ttl: q.#ttl,
      open: () => q.#closed ? undefined : q.#open(),
    });
  }

  /**
   * Makes a queue on `table`; nothing is sent until the first call.
   *
   * @param connect Opens a new connection for the queue's session.
   * @param table The table's name.
   * @param options The delivery limit, recovery and keepalives.
   * @throws {TypeError} `connect` is not a function, or an argument has the wrong type.
   * @throws {RangeError} `table` is not an SQL identifier, or an option is out of range.
   */
  constructor(connect: PgConnect, table = "filestore_queue", options: PgQueueOptions = {}) {
    const what = "create PgQueue";
    this.#connect = checkFunction(connect, what, "connect");
    this.#table = checkIdentifier(table, what, "table");
    this.#channel = this.#table.replace(".", "_");
    checkOptions(options, what);
    this.#maxDeliveries = checkNumber(
      options.maxDeliveries,
      what,
      "maxDeliveries",
      "a whole number >= 1, or Infinity",
      { min: 1 },
    ) ?? Infinity;
    if (this.#maxDeliveries !== Infinity && !Number.isInteger(this.#maxDeliveries)) {
      throw invalid(
        RangeError,
        what,
        "maxDeliveries",
        "a whole number >= 1, or Infinity",
        options.maxDeliveries,
      );
    }
    this.#recoverEvery = checkNumber(
      options.recoverEvery,
      what,
      "recoverEvery",
      "a number of milliseconds >= 0",
      { min: 0 },
    ) ?? 1000;
    this.#keepalive = keepaliveOf(options.keepalive, what);
    this.#ttl = checkNumber(
      options.ttl,
      what,
      "ttl",
      "an integer number of milliseconds from 100 to 2^31 - 1",
      { min: 100, max: MAX_TIMER, integer: true },
    );
  }

  /** The table's name. */
  get table(): string {
    return this.#table;
  }

  async #open(): Promise<Session> {
    this.#closed = false;
    if (this.#session !== undefined && this.#session.open) return this.#session;
    this.#session = undefined;
    this.#unlisten = undefined;
    this.#opening ??= (async () => {
      const session = await openSession(this.#connect);
      try {
        await applyKeepalive(session, this.#keepalive);
        await this.#migrate(session);
        const [row] = await session.query(
          "select ($1::regclass)::oid::bigint::bit(32)::int4 as key",
          [this.#table],
        );
        this.#key = Number(row!.key);
      } catch (e) {
        await session.close();
        throw e;
      }
      return session;
    })();
    try {
      return this.#session = await this.#opening;
    } finally {
      this.#opening = undefined;
    }
  }

  async #migrate(session: Session): Promise<void> {
    const [row] = await session.query(
      "select obj_description(to_regclass($1), 'pg_class') as version",
      [this.#table],
    );
    if (row?.version === VERSION) return;
    const t = this.#table;
    const index = `${t.includes(".") ? t.split(".")[0] + "." : ""}${t.split(".").at(-1)}_ready`;
    try {
      await session.query(
        `create table if not exists ${t} (
          id bigserial primary key,
          body text not null,
          state text not null default 'ready' check (state in ('ready', 'claimed', 'failed')),
          deliveries int4 not null default 0,
          created timestamptz not null default now(),
          claimed_at timestamptz,
          claimed_by int4,
          lease_until timestamptz)`,
      );
    } catch (e) {
      // Another session created it at the same moment.
      if (!/already exists|duplicate key/.test(String((e as Error)?.message))) throw e;
    }
    // From version 1: the lease of claims held by ttl.
    await session.query(`alter table ${t} add column if not exists lease_until timestamptz`);
    await session.query(
      `create index if not exists ${index.split(".").at(-1)} on ${t} (id) where state = 'ready'`,
    ).catch(() => {});
    await session.query(`comment on table ${t} is '${VERSION}'`);
  }

  /**
   * Opens the session and creates the table (and its index) if missing, or
   * migrates it from an older version of the package; every other method
   * does so on its first call.
   *
   * @returns A promise that resolves once the table is ready.
   */
  async prepare(): Promise<void> {
    await this.#open();
  }

  /**
   * Adds a message; a consumer waiting in `claim()` is woken by NOTIFY.
   *
   * @param body The message.
   * @returns The message's id.
   * @throws {TypeError} `body` is not a string.
   */
  async put(body: string): Promise<string> {
    if (typeof body !== "string") {
      throw invalid(TypeError, "put a message", "body", "a string", body);
    }
    const session = await this.#open();
    const [row] = await session.query(
      `with i as (insert into ${this.#table} (body) values ($1) returning id)
       select id::text as id, pg_notify($2, '') from i`,
      [body, this.#channel],
    );
    return String(row!.id);
  }

  /**
   * Claims the oldest ready message (`FOR UPDATE SKIP LOCKED`, so
   * consumers never wait for each other) and locks it for this consumer's
   * session. When none is ready, runs `recover()` (at most once every
   * `recoverEvery` ms) and, with `wait`, waits for a `put()`.
   *
   * @param options How long to wait for a message.
   * @returns The claim, or `null` when no message is ready.
   * @throws {TypeError} An option has the wrong type, or `wait` with a client that cannot LISTEN.
   * @throws {RangeError} `wait` is negative.
   * @throws {LockException} Claims held by liveness (no `ttl`), or a
   * `wait` (which needs LISTEN), through a pooler in transaction or
   * statement mode, as far as it can be told (see the README's
   * "Poolers"): nothing was claimed.
   */
  async claim(options?: PgClaimOptions): Promise<PgClaim | null> {
    const what = "claim a message";
    const o = checkOptions(options, what) ?? {};
    const wait = checkNumber(o.wait, what, "wait", "a number of milliseconds >= 0", { min: 0 }) ??
      0;
    if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
      throw invalid(TypeError, what, "signal", "an AbortSignal", o.signal);
    }
    const session = await this.#open();
    if (wait > 0 && session.listen === undefined) {
      throw invalid(
        TypeError,
        what,
        "wait",
        "0 with a client that cannot LISTEN (a Bun SQL without listen()): use postgres.js, pg or a newer Bun to wait",
        wait,
      );
    }
    const token = await this.#ownSession(session, wait > 0);
    const limit = deadline(wait, o.signal);
    let wake: (() => void) | undefined;
    try {
      for (;;) {
        let woken: Promise<void> | undefined;
        if (wait > 0) {
          if (wake !== undefined) this.#wakers.delete(wake);
          woken = new Promise<void>((resolve) => {
            wake = resolve;
            this.#wakers.add(resolve);
          });
          await this.#listen(session);
        }
        const claim = await this.#take(session, token);
        if (claim !== null) return claim;
        if (performance.now() - this.#lastRecover >= this.#recoverEvery) {
          const { requeued } = await this.recover();
          if (requeued.length > 0) continue;
        }
        if (woken === undefined || limit.signal?.aborted) return null;
        const stop = limit.signal!;
        await new Promise<void>((resolve) => {
          stop.addEventListener("abort", () => resolve(), { once: true });
          void woken!.then(resolve);
        });
        if (o.signal?.aborted) return null;
        // The wait ran out: one last look.
        if (stop.aborted) return await this.#take(session, token);
      }
    } finally {
      if (wake !== undefined) this.#wakers.delete(wake);
      limit[Symbol.dispose]();
    }
  }

  /**
   * Claims messages as they come, for as long as the caller iterates: each
   * one is claimed only when the loop asks for the next, after waiting for
   * a `put()`'s NOTIFY when none is ready (LISTEN: postgres.js, pg and
   * Bun's SQL). Finish each claim (`done()` or `release()`) in the loop body.
   *
   * @param options `signal` ends the iteration when it aborts.
   * @returns The claims, one at a time.
   * @throws {TypeError} `signal` is not an AbortSignal, or the client cannot LISTEN (on the first `next()`).
   * @throws {LockException} As {@link PgQueue.prototype.claim}: claims held
   * by liveness through a pooler in transaction or statement mode.
   *
   * @example Usage
   * ```ts ignore
   * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
   * import { PgQueue } from "@filestore/filestore/postgres";
   * import postgres from "postgres";
   *
   * await using queue = new PgQueue(() => postgres(process.env.DATABASE_URL!, { max: 1 }), "jobs");
   * const stop = AbortSignal.timeout(60_000);
   * for await (const claim of queue.watch({ signal: stop })) {
   *   await using held = claim; // given back if the body throws
   *   console.log(held.body);
   *   await held.done();
   * }
   * ```
   */
  async *watch(options?: { signal?: AbortSignal }): AsyncGenerator<PgClaim, void, undefined> {
    const o = checkOptions(options, "watch a queue") ?? {};
    const signal = checkSignal(o.signal, "watch a queue");
    while (!signal?.aborted) {
      const claim = await this.claim(
        signal === undefined ? { wait: MAX_TIMER } : { wait: MAX_TIMER, signal },
      );
      if (claim !== null) yield claim;
    }
  }

  async #listen(session: Session): Promise<void> {
    this.#unlisten ??= session.listen!(this.#channel, () => {
      for (const wake of this.#wakers) wake();
    });
    await this.#unlisten;
  }

  // Resolves to the token that claims on `session` check, or `undefined`
  // where they need none (a direct connection; leases, which hold through a
  // pooler); throws when claims held by liveness cannot work there, or,
  // for a claim that `waits`, when LISTEN cannot.
  async #ownSession(session: Session, waits: boolean): Promise<string | undefined> {
    if (session.direct === true || (this.#ttl !== undefined && !waits)) return undefined;
    if (this.#mark?.session !== session) {
      this.#mark = { session, token: markSession(session, this.#connect) };
    }
    const mark = this.#mark;
    let token;
    try {
      token = await mark.token;
    } catch (e) {
      // Not known: the next claim tries again.
      if (this.#mark === mark) this.#mark = undefined;
      throw e;
    }
    if (token === undefined) {
      const why = "a second connection reached the queue's server session";
      if (this.#ttl === undefined) throw this.#pooled(why);
      throw new LockException(
        `Cannot wait for messages in '${this.#table}' on PostgreSQL: ${why}, so ${POOLER}, where LISTEN hears nothing; claim without wait, or connect to the server or to a pool in session mode to wait`,
      );
    }
    return this.#ttl === undefined ? token : undefined;
  }

  #pooled(why: string): LockException {
    return new LockException(
      `Cannot claim from '${this.#table}' on PostgreSQL: ${why}, so ${POOLED}, or use PgQueue's ttl option (claims held by a lease)`,
    );
  }

  async #take(session: Session, token: string | undefined): Promise<PgClaim | null> {
    const hold = this.#ttl !== undefined ? "lease" : token === undefined ? "lock" : "marked";
    const text = claimSql(this.#table, hold);
    const params = hold === "lease"
      ? [this.#ttl]
      : hold === "lock"
      ? [this.#key]
      : [this.#key, token];
    for (;;) {
      const sent = performance.now();
      const [row] = await session.query(text, params);
      if (token !== undefined && row?.ours !== true) {
        this.#mark = { session, token: Promise.resolve(undefined) };
        throw this.#pooled("the claim ran on a server session other than the queue's own");
      }
      if (row === undefined || row.id === null) return null;
      // Not locked: the id's lock is still held elsewhere (a message 2^32
      // ids away): left claimed, recover() makes it ready again later.
      if (row.locked !== true) continue;
      pendingClaim = {
        queue: this,
        session,
        id: String(row.id),
        body: String(row.body),
        deliveries: Number(row.deliveries),
        sent,
      };
      return new PgClaim();
    }
  }

  /**
   * Makes the claimed messages whose consumer's session is gone (their
   * advisory lock is free), and those whose lease ended (claims of queues
   * with `ttl`), ready again, or `failed` once they reached
   * `maxDeliveries`. A live consumer's claim, however slow, stays; so does
   * a lease that its consumer renews.
   *
   * @returns The ids requeued and dead-lettered.
   */
  async recover(): Promise<PgRecovered> {
    const session = await this.#open();
    this.#lastRecover = performance.now();
    const max = this.#maxDeliveries === Infinity ? 2147483647 : this.#maxDeliveries;
    const rows = await session.query(
      `update ${this.#table} q
         set state = case when q.deliveries >= $2 then 'failed' else 'ready' end, claimed_by = null,
           lease_until = null
       where q.state = 'claimed' and case when q.lease_until is not null
         then q.lease_until < clock_timestamp()
         else not exists (
           select 1 from pg_locks l
           where l.locktype = 'advisory' and l.granted and l.objsubid = 2
             and l.database = (select oid from pg_database where datname = current_database())
             and l.classid = ($1::int4)::bigint::bit(32)::bigint::oid
             and l.objid = (q.id::bit(32))::bigint::oid) end
       returning q.id::text as id, q.state, pg_notify($3, '')`,
      [this.#key, max, this.#channel],
    );
    const requeued: string[] = [];
    const failed: string[] = [];
    for (const r of rows) (r.state === "failed" ? failed : requeued).push(String(r.id));
    return { requeued, failed };
  }

  /**
   * The ids of the messages in one state, oldest first.
   *
   * @param state `"ready"`, `"claimed"` or `"failed"`.
   * @returns The ids.
   * @throws {RangeError} `state` is not one of them.
   */
  async list(state: PgMessageState = "ready"): Promise<string[]> {
    if (!["ready", "claimed", "failed"].includes(state)) {
      throw invalid(RangeError, "list messages", "state", `"ready", "claimed" or "failed"`, state);
    }
    const session = await this.#open();
    const rows = await session.query(
      `select id::text as id from ${this.#table} where state = $1 order by id`,
      [state],
    );
    return rows.map((r) => String(r.id));
  }

  /**
   * Ends the queue's session: its claims that are not done are given up
   * and come back at the next `recover()` (with `ttl`: once their lease
   * ends, as they are no longer renewed, and their `done()` is refused).
   *
   * @returns A promise that resolves once the session is closed.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const session = this.#session ?? await this.#opening?.catch(() => undefined);
    this.#session = undefined;
    const unlisten = await this.#unlisten?.catch(() => undefined);
    this.#unlisten = undefined;
    await unlisten?.().catch(() => {});
    await session?.close();
  }

  /** Ends the session, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
