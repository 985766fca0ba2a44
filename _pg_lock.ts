// PgLock: a session-level advisory lock on its own PostgreSQL session,
// with a fencing token from a sequence in the same statement.
import {
  checkBoolean,
  checkFunction,
  checkNumber,
  checkOptions,
  checkSignal,
  invalid,
} from "./_check.ts";
import { openSession, type PgConnect, POOLED, type Session, sqlState } from "./_pg_session.ts";
import { deadline, MAX_TIMER, share } from "./_wait.ts";
import { AlreadyLocked, type AlreadyLockedOptions, LockException } from "./errors.ts";

/** Options of one {@link PgLock.prototype.acquire} call, overriding the lock's own. */
export interface PgAcquireOptions {
  /**
   * How long to wait for the lock, in milliseconds; `0` tries once, and
   * `Infinity` waits for as long as it takes. The server ends the wait (its
   * `lock_timeout`), and the acquire rejects with {@link PgAlreadyLocked}.
   *
   * @default {Infinity}
   */
  timeout?: number;
  /**
   * Reject with {@link PgAlreadyLocked} at once if the lock is held,
   * whatever `timeout` says.
   *
   * @default {false}
   */
  failWhenLocked?: boolean;
  /**
   * Gives up the wait when it aborts: the waiting statement is cancelled on
   * the server, the acquire rejects with the signal's reason, and the lock
   * is not held afterwards.
   */
  signal?: AbortSignal;
}

/**
 * TCP keepalives of the server's side of the lock's session, in seconds
 * (PostgreSQL's `tcp_keepalives_idle`, `tcp_keepalives_interval`,
 * `tcp_keepalives_count`; `tcp_user_timeout` is set to their sum). They
 * decide how soon the server notices a holder whose host vanished (power
 * loss, partition) and frees its locks: `idle + interval * count` seconds.
 */
export interface PgKeepalive {
  /**
   * Seconds of silence before the server sends the first probe.
   *
   * @default {10}
   */
  idle?: number;
  /**
   * Seconds between unanswered probes.
   *
   * @default {5}
   */
  interval?: number;
  /**
   * Unanswered probes after which the server drops the session.
   *
   * @default {3}
   */
  count?: number;
}

/** Options of {@link PgLock}. */
export interface PgLockOptions extends PgAcquireOptions {
  /**
   * Take a shared lock, which other shared holders may hold at the same
   * time, instead of an exclusive one.
   *
   * @default {false}
   */
  shared?: boolean;
  /**
   * The sequence that fencing tokens come from, created if missing (`create
   * sequence if not exists`): a plain or schema-qualified SQL identifier.
   * Locks that protect the same resource must share it.
   *
   * @default {"filestore_fence"}
   */
  sequence?: string;
  /**
   * Server-side TCP keepalives for the session, or `false` to keep the
   * server's (by default the kernel's: about 2 h 11 min before a vanished
   * host's locks are freed). No effect over a Unix socket.
   *
   * @default {{ idle: 10, interval: 5, count: 3 }} (a vanished holder is dropped within about 25 s)
   */
  keepalive?: PgKeepalive | false;
}

/** What {@link PgLock.prototype.acquire} resolves to while the lock is held. */
export interface PgLockGrant {
  /**
   * The fencing token: a number from the lock's sequence, taken in the
   * statement that took the lock. Later grants of any lock sharing the
   * sequence get larger tokens, also after a server crash; a resource that
   * remembers the largest token it saw can refuse a writer that lost the
   * lock without knowing it.
   */
  readonly token: bigint;
  /**
   * Aborts when the lock is no longer held: the session ended (the server
   * restarted, the session was terminated, the connection broke) or the
   * lock was released.
   */
  readonly signal: AbortSignal;
  /** The server process id of the session that holds the lock. */
  readonly backendPid: number;
}

/** A session that holds (or held) an advisory lock, from `pg_locks` and `pg_stat_activity`. */
export interface PgHolder {
  /** The server process id of its session: what `pg_terminate_backend()` takes. */
  backendPid: number;
  /** The client's address, if the server shows it. */
  clientAddress: string | undefined;
  /** The client's `application_name`, if set and shown. */
  applicationName: string | undefined;
  /** When the holder's session started, as the server prints a timestamp. */
  since: string | undefined;
  /** `"ExclusiveLock"` or `"ShareLock"`. */
  mode: string;
}

/**
 * A {@link PgLock} is held by somebody else: an {@link AlreadyLocked}, so one
 * `catch` serves the file locks and these. `pid` is the holder session's
 * server process id and `hostname` its client address; `holders` lists all
 * of them (several for shared holders).
 *
 * @example Usage
 * ```ts
 * import { PgAlreadyLocked } from "@filestore/filestore/postgres";
 * import { AlreadyLocked } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const holder = {
 *   backendPid: 42,
 *   clientAddress: "10.0.0.7",
 *   applicationName: "billing",
 *   since: "2026-01-01 00:00:00+00",
 *   mode: "ExclusiveLock",
 * };
 * const error = new PgAlreadyLocked("nightly", [holder]);
 * assert.ok(error instanceof AlreadyLocked);
 * assert.equal(error.pid, 42);
 * assert.match(error.message, /held by backend pid 42 from 10\.0\.0\.7, application 'billing'/);
 * ```
 */
export class PgAlreadyLocked extends AlreadyLocked {
  /** Every session that held the lock when it was refused; empty if none was visible. */
  readonly holders: readonly PgHolder[];
  /** The refused lock's name. */
  readonly lockName: string;

  /**
   * Creates the error.
   *
   * @param name The lock's name.
   * @param holders Who holds it, as the server showed them.
   * @param waited How long the acquire waited, in milliseconds, if it did.
   * @param options The underlying error as `cause`.
   */
  constructor(
    name: string,
    holders: readonly PgHolder[],
    waited?: number,
    options?: ErrorOptions,
  ) {
    const first = holders[0];
    const who = first === undefined
      ? "held by a session that has just let go or is not visible"
      : `held by ${describe(first)}${holders.length > 1 ? ` and ${holders.length - 1} more` : ""}`;
    const after = waited === undefined ? "" : ` (gave up after ${waited} ms)`;
    const detail: AlreadyLockedOptions = {
      ...options,
      pid: first?.backendPid,
      hostname: first?.clientAddress,
    };
    super(`Cannot lock '${name}' on PostgreSQL: ${who}${after}`, detail);
    this.holders = holders;
    this.lockName = name;
  }
}

function describe(h: PgHolder): string {
  const parts = [`backend pid ${h.backendPid}`];
  if (h.clientAddress !== undefined) parts.push(`from ${h.clientAddress}`);
  let text = parts.join(" ");
  if (h.applicationName !== undefined) text += `, application '${h.applicationName}'`;
  if (h.since !== undefined) text += `, session since ${h.since}`;
  return text;
}

const encoder = new TextEncoder();

/**
 * The 64-bit advisory lock key that {@link PgLock} uses for a name: the
 * first 8 bytes of the SHA-256 of its UTF-8 bytes, as a signed big-endian
 * integer; a `bigint` name is its own key. Other programs can take the same
 * lock with `pg_advisory_lock(key)`; in SQL the key of a name is
 * `('x' || left(encode(sha256(convert_to(name, 'UTF8')), 'hex'), 16))::bit(64)::bigint`.
 *
 * @param name A lock name, or a key.
 * @returns The key.
 *
 * @example Usage
 * ```ts
 * import { keyOf } from "@filestore/filestore/postgres";
 * import assert from "node:assert/strict";
 *
 * assert.equal(await keyOf(42n), 42n);
 * assert.equal(await keyOf("nightly-report"), await keyOf("nightly-report"));
 * assert.notEqual(await keyOf("a"), await keyOf("b"));
 * ```
 */
export async function keyOf(name: string | bigint): Promise<bigint> {
  if (typeof name === "bigint") return name;
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(name));
  return new DataView(digest).getBigInt64(0);
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/;

/** A lock name: a non-empty string, or a bigint in PostgreSQL's `bigint` range. */
export function checkLockName(name: unknown, what: string): string | bigint {
  const expected = "a non-empty string or a bigint from -2^63 to 2^63-1";
  if (typeof name === "string") {
    if (name === "") throw invalid(RangeError, what, "name", expected, name);
    return name;
  }
  if (typeof name === "bigint") {
    if (name < -(2n ** 63n) || name >= 2n ** 63n) {
      throw invalid(RangeError, what, "name", expected, name);
    }
    return name;
  }
  throw invalid(TypeError, what, "name", expected, name);
}

/** An SQL identifier for a table or sequence, plain or schema-qualified. */
export function checkIdentifier(value: unknown, what: string, param: string): string {
  const expected = "an SQL identifier (letters, digits and _, optionally schema.name)";
  if (typeof value !== "string") throw invalid(TypeError, what, param, expected, value);
  if (!IDENTIFIER.test(value)) throw invalid(RangeError, what, param, expected, value);
  return value.toLowerCase();
}

interface Rules {
  timeout: number;
  failWhenLocked: boolean;
  signal: AbortSignal | undefined;
}

function rulesOf(base: Rules, o: PgAcquireOptions | undefined, what: string): Rules {
  if (checkOptions(o, what) === undefined) return base;
  const { timeout, failWhenLocked, signal } = o!;
  return {
    timeout: checkNumber(timeout, what, "timeout", "a number of milliseconds >= 0", { min: 0 }) ??
      base.timeout,
    failWhenLocked: checkBoolean(failWhenLocked, what, "failWhenLocked") ?? base.failWhenLocked,
    signal: checkSignal(signal, what) ?? base.signal,
  };
}

/** The keepalive settings as the server's GUC values; `undefined` for `false`. */
export function keepaliveOf(
  value: unknown,
  what: string,
): [string, string, string, string] | undefined {
  if (value === false) return undefined;
  const o = checkOptions(value as PgKeepalive | undefined, what) ?? {};
  const seconds = "a whole number of seconds from 1 to 3600";
  const idle = checkNumber(o.idle, what, "keepalive.idle", seconds, {
    min: 1,
    max: 3600,
    integer: true,
  }) ?? 10;
  const interval = checkNumber(o.interval, what, "keepalive.interval", seconds, {
    min: 1,
    max: 3600,
    integer: true,
  }) ?? 5;
  const count = checkNumber(o.count, what, "keepalive.count", "a whole number from 1 to 100", {
    min: 1,
    max: 100,
    integer: true,
  }) ?? 3;
  return [`${idle}`, `${interval}`, `${count}`, `${(idle + interval * count) * 1000}`];
}

/** Sets the keepalives of `session`, one statement. */
export async function applyKeepalive(
  session: Session,
  values: [string, string, string, string] | undefined,
): Promise<void> {
  if (values === undefined) return;
  await session.query(
    "select set_config('tcp_keepalives_idle', $1, false), set_config('tcp_keepalives_interval', $2, false), set_config('tcp_keepalives_count', $3, false), set_config('tcp_user_timeout', $4, false)",
    values,
  );
}

const HOLDERS_SQL = `select l.pid::int4 as pid, host(a.client_addr) as addr,
  a.application_name as app, a.backend_start::text as since, l.mode
from pg_locks l left join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted and l.objsubid = 1
  and l.database = (select oid from pg_database where datname = current_database())
  and l.classid = $1::oid and l.objid = $2::oid
order by l.pid`;

/** The sessions that hold the advisory lock on `key` now, as visible to `session`. */
export async function holdersOf(session: Session, key: bigint): Promise<PgHolder[]> {
  const unsigned = BigInt.asUintN(64, key);
  const rows = await session.query(HOLDERS_SQL, [
    `${unsigned >> 32n}`,
    `${unsigned & 0xffffffffn}`,
  ]);
  return rows.map((r) => ({
    backendPid: Number(r.pid),
    clientAddress: typeof r.addr === "string" ? r.addr : undefined,
    applicationName: typeof r.app === "string" && r.app !== "" ? r.app : undefined,
    since: typeof r.since === "string" ? r.since : undefined,
    mode: String(r.mode),
  }));
}

/** Creates the fencing sequence if it is missing. */
export async function ensureSequence(session: Session, sequence: string): Promise<void> {
  const [row] = await session.query("select to_regclass($1) is not null as found", [sequence]);
  if (row?.found === true) return;
  try {
    await session.query(`create sequence if not exists ${sequence}`);
  } catch (e) {
    // Another session created it at the same moment.
    if (sqlState(e) !== "23505" && sqlState(e) !== "42P07") throw e;
  }
}

const RELEASED = "the lock was released";

// A grant while (and after) it is held. Its signal is made when first read:
// a cycle whose caller never looks at it makes no AbortController, adds no
// listener to the session and builds no Error.
interface Held {
  grant: PgLockGrant;
  session: Session;
  /** The client reconnected behind our back: the lock is on another session. */
  replaced: boolean;
  released: boolean;
  controller?: AbortController;
  onLost?: (() => void) | undefined;
}

function isOver(held: Held): boolean {
  return held.replaced || held.released || held.session.lost.aborted;
}

function reasonOf(held: Held): unknown {
  if (held.replaced) return new Error("PostgreSQL session was replaced");
  if (held.released) return new Error(RELEASED);
  return held.session.lost.reason;
}

function signalOf(held: Held): AbortSignal {
  if (held.controller !== undefined) return held.controller.signal;
  const controller = held.controller = new AbortController();
  if (isOver(held)) controller.abort(reasonOf(held));
  else {
    const lost = held.session.lost;
    held.onLost = () => controller.abort(lost.reason);
    lost.addEventListener("abort", held.onLost, { once: true });
  }
  return controller.signal;
}

// Marks a grant released (unless it was lost before) and aborts its signal.
function endHeld(held: Held): void {
  if (!isOver(held)) held.released = true;
  if (held.onLost !== undefined) held.session.lost.removeEventListener("abort", held.onLost);
  held.onLost = undefined;
  if (held.controller !== undefined && !held.controller.signal.aborted) {
    held.controller.abort(reasonOf(held));
  }
}

/** The statements of one lock, as text. */
interface Statements {
  lock: string;
  lockMarked: string;
  try: string;
  tryMarked: string;
  unlock: string;
  unlockMarked: string;
  /** The unlock of a client that found the lock held by its server session for another. */
  unlockPooled: string;
}

// The lock's statements with its key, marker and sequence written in as
// literals (all three are the package's own: a number, a hex name, a
// checked identifier). Without parameters the clients send one simple
// Query message instead of Parse, Bind, Describe, Execute and Sync, which
// is most of a cycle's cost beyond the two round trips. The select list is
// evaluated from left to right (one Result node): the lock is granted
// before the token is drawn, so a later grant always gets a larger token.
function statementsOf(key: bigint, shared: boolean, sequence: string): Statements {
  const mode = shared ? "_shared" : "";
  const k = `'${key}'::int8`;
  const m = `'filestore.lock_${BigInt.asUintN(64, key).toString(16)}'`;
  const seq = `'${sequence}'`;
  const mark =
    `set_config(${m}, coalesce(current_setting(${m}, true), '') || 'h', false) as marked`;
  const lock =
    `select pg_advisory_lock${mode}(${k}) as l, nextval(${seq})::text as token, pg_backend_pid() as pid`;
  // The token and the marker only when the lock was taken: a subquery
  // that the planner keeps (offset 0) decides first.
  const tryLock = (marked: boolean) =>
    `select l.held, case when l.held then nextval(${seq})::text end as token, pg_backend_pid() as pid${
      marked ? `, case when l.held then ${mark.slice(0, -" as marked".length)} end as marked` : ""
    } from (select pg_try_advisory_lock${mode}(${k}) as held offset 0) as l`;
  const unlock = `select pg_advisory_unlock${mode}(${k}) as released`;
  const rest = `substr(coalesce(current_setting(${m}, true), ''), 2)`;
  return {
    lock,
    lockMarked: `${lock}, ${mark}`,
    try: tryLock(false),
    tryMarked: tryLock(true),
    unlock,
    // An 's' in the marker says that the server session was found shared:
    // the holder that was there first learns it when it releases, and no
    // later acquire on that server session succeeds.
    unlockMarked:
      `${unlock}, position('s' in coalesce(current_setting(${m}, true), '')) > 0 as seen,
      set_config(${m}, ${rest}, false)`,
    unlockPooled: `${unlock}, set_config(${m}, ${rest} || 's', false)`,
  };
}

/**
 * A lock across hosts: a PostgreSQL session-level advisory lock, held on a
 * session of its own for exactly as long as that session lives. There is
 * no lease: a holder that dies (even `kill -9`) loses the lock within
 * milliseconds, when the server sees its connection close, and a holder
 * that is merely slow or stopped keeps it. A waiter is queued by the server
 * and woken when the lock is free, never polling. Each acquire gives a
 * fencing token and a signal that aborts if the session is lost.
 *
 * `connect` opens the lock's session: it must return a new client of one
 * connection (postgres.js `postgres(url, { max: 1 })`, Bun's
 * `new SQL(url, { max: 1 })`, or a `pg.Client`). The session is opened at
 * the first acquire, kept across releases for the next one, and closed by
 * {@link PgLock.prototype.close} (or `await using`).
 *
 * Names become 64-bit keys through SHA-256 (see {@link keyOf}); two names
 * whose keys collide (about one chance in 2^64 for a pair) would share one
 * lock: more exclusion than asked for, never less.
 *
 * The example needs a PostgreSQL server, which `deno test --doc` does not
 * have here: hence `ignore`.
 *
 * @example Usage
 * ```ts ignore
 * import { PgLock } from "@filestore/filestore/postgres";
 * import postgres from "postgres";
 *
 * const connect = () => postgres(process.env.DATABASE_URL!, { max: 1 });
 * await using lock = new PgLock(connect, "nightly-report", { timeout: 0 });
 * const { token, signal } = await lock.acquire(); // AlreadyLocked if another host runs it
 * await writeReport({ token, signal }); // the storage refuses tokens older than the last it saw
 * ```
 */
export class PgLock implements AsyncDisposable {
  #connect: PgConnect;
  #name: string | bigint;
  #label: string;
  #rules: Rules;
  #shared: boolean;
  #sequence: string;
  #keepalive: [string, string, string, string] | undefined;
  #key: bigint | undefined;
  #session: Session | undefined;
  #opening: Promise<Session> | undefined;
  #held: Held | undefined;
  #pending: Promise<PgLockGrant> | undefined;
  #lockTimeout = "0";
  #sql: Statements | undefined;

  /**
   * Makes a lock; nothing is sent to the server until
   * {@link PgLock.prototype.acquire}.
   *
   * @param connect Opens a new connection for the lock's session.
   * @param name The lock's name, or a 64-bit key of your own as a `bigint`.
   * @param options The waiting rules, shared mode, the fencing sequence and keepalives.
   * @throws {TypeError} `connect` is not a function, `name` is neither a
   * string nor a bigint, or an option has the wrong type.
   * @throws {RangeError} `name` is empty or out of range, or an option is out of range.
   */
  constructor(connect: PgConnect, name: string | bigint, options: PgLockOptions = {}) {
    const what = "create PgLock";
    this.#connect = checkFunction(connect, what, "connect");
    this.#name = checkLockName(name, what);
    this.#label = typeof name === "bigint" ? `key ${name}` : name;
    this.#rules = rulesOf(
      { timeout: Infinity, failWhenLocked: false, signal: undefined },
      options,
      what,
    );
    this.#shared = checkBoolean(options.shared, what, "shared") ?? false;
    this.#sequence = options.sequence === undefined
      ? "filestore_fence"
      : checkIdentifier(options.sequence, what, "sequence");
    this.#keepalive = keepaliveOf(options.keepalive, what);
  }

  /** The lock's name (a `bigint` key as given). */
  get name(): string | bigint {
    return this.#name;
  }

  /** Whether this instance holds the lock now, as far as it knows (see the grant's `signal`). */
  get locked(): boolean {
    return this.#held !== undefined && !isOver(this.#held);
  }

  /**
   * Takes the lock, waiting as the options say. While it is held, another
   * call resolves to the same grant; while one is pending, another call
   * shares its wait under its own `failWhenLocked`, `timeout` and `signal`.
   *
   * @param overrides Waiting rules for this call only.
   * @returns The fencing token, the signal of a lost lock and the session's pid.
   * @throws {PgAlreadyLocked} `failWhenLocked` or `timeout: 0` and the lock is
   * held, or `timeout` ran out; it names the holders.
   * @throws {TypeError} An override has the wrong type.
   * @throws {RangeError} An override is out of range.
   * @throws {LockException} The session was lost while waiting.
   *
   * @example Usage
   * ```ts ignore
   * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
   * import { PgAlreadyLocked, PgLock } from "@filestore/filestore/postgres";
   * import postgres from "postgres";
   * import assert from "node:assert/strict";
   *
   * const connect = () => postgres(process.env.DATABASE_URL!, { max: 1 });
   * await using a = new PgLock(connect, "invoices");
   * await using b = new PgLock(connect, "invoices");
   * const first = await a.acquire();
   * await assert.rejects(b.acquire({ timeout: 50 }), PgAlreadyLocked);
   * await a.release();
   * assert.ok(first.signal.aborted); // released
   * assert.ok((await b.acquire()).token > first.token);
   * ```
   */
  async acquire(overrides?: PgAcquireOptions): Promise<PgLockGrant> {
    const what = "acquire PgLock";
    const rules = rulesOf(this.#rules, overrides, what);
    if (this.#held !== undefined && !isOver(this.#held)) return this.#held.grant;
    if (rules.signal?.aborted) throw rules.signal.reason;
    if (this.#pending !== undefined) {
      return await share(this.#pending, rules, (waited) => this.#refusal([], waited));
    }
    this.#pending = this.#acquire(rules);
    try {
      return await this.#pending;
    } finally {
      this.#pending = undefined;
    }
  }

  async #acquire(rules: Rules): Promise<PgLockGrant> {
    this.#forget();
    const key = this.#key ?? (this.#key = await keyOf(this.#name));
    const session = this.#session?.open ? this.#session : await this.#open();
    const sql = this.#sql ??= statementsOf(key, this.#shared, this.#sequence);
    // Through a pooler, a marker in the server session (a setting named for
    // the key, one 'h' per holder) tells whether that server session holds
    // this lock for another client already: a pooler in transaction mode
    // then shares it among clients. A direct connection needs none.
    const marked = session.direct !== true;
    if (rules.failWhenLocked || rules.timeout === 0) {
      const [row] = await this.#run(session, marked ? sql.tryMarked : sql.try);
      if (row?.held !== true) throw this.#refusal(await this.#holders(session, key));
      if (marked && row.marked !== "h") throw await this.#pooled(session);
      return this.#grant(session, row);
    }
    // The server ends a finite wait (lock_timeout, set in the same
    // statement); a signal, or a wait beyond lock_timeout's range, cancels
    // the statement.
    const serverTimeout = rules.timeout <= MAX_TIMER ? `${Math.ceil(rules.timeout)}` : "0";
    const limit = deadline(serverTimeout === "0" ? rules.timeout : Infinity, rules.signal);
    const text = serverTimeout === this.#lockTimeout
      ? (marked ? sql.lockMarked : sql.lock)
      : `select set_config('lock_timeout', '${serverTimeout}', false) as t, ${
        (marked ? sql.lockMarked : sql.lock).slice("select ".length)
      }`;
    const start = performance.now();
    try {
      const [row] = await this.#run(session, text, limit.signal);
      this.#lockTimeout = serverTimeout;
      if (limit.signal?.aborted) {
        // Granted just before the cancel arrived: give it back.
        await this.#unlock(session, marked ? sql.unlockMarked : sql.unlock);
        throw limit.timedOut ? this.#refusal([], rules.timeout) : limit.signal.reason;
      }
      if (marked && row?.marked !== "h") throw await this.#pooled(session);
      return this.#grant(session, row!);
    } catch (e) {
      // A failed statement's set_config() is rolled back with it: the
      // session keeps the lock_timeout it had, and #lockTimeout is right.
      const state = sqlState(e);
      if (state === "55P03") {
        const waited = Math.round(performance.now() - start);
        throw this.#refusal(await this.#holders(session, key), waited);
      }
      if (state === "57014" && limit.signal?.aborted) {
        if (limit.timedOut) throw this.#refusal(await this.#holders(session, key), rules.timeout);
        throw limit.signal.reason;
      }
      throw e;
    } finally {
      limit[Symbol.dispose]();
    }
  }

  // Runs a statement on the lock's session; a lost session is a LockException.
  async #run(session: Session, text: string, signal?: AbortSignal) {
    try {
      return await session.query(text, undefined, signal);
    } catch (e) {
      if (!session.open) {
        if (this.#session === session) this.#session = undefined;
        throw new LockException(
          `Cannot lock '${this.#label}' on PostgreSQL: the session was lost`,
          { cause: e },
        );
      }
      throw e;
    }
  }

  async #holders(session: Session, key: bigint): Promise<PgHolder[]> {
    try {
      return await holdersOf(session, key);
    } catch {
      return [];
    }
  }

  #refusal(holders: PgHolder[], waited?: number): PgAlreadyLocked {
    return new PgAlreadyLocked(this.#label, holders, waited);
  }

  #grant(session: Session, row: Record<string, unknown>): PgLockGrant {
    const pid = Number(row.pid);
    const held: Held = {
      grant: undefined!,
      session,
      // A client that reconnected behind our back: the lock is on a new
      // session, and whatever the old one held is gone. Never hide it.
      replaced: pid !== session.pid,
      released: false,
    };
    held.grant = {
      token: BigInt(row.token as string),
      get signal() {
        return signalOf(held);
      },
      backendPid: pid,
    };
    this.#held = held;
    return held.grant;
  }

  // Drops the record of a grant whose session was lost.
  #forget(): void {
    const held = this.#held;
    if (held !== undefined && isOver(held)) {
      endHeld(held);
      this.#held = undefined;
    }
  }

  async #open(): Promise<Session> {
    if (this.#session !== undefined && this.#session.open) return this.#session;
    this.#session = undefined;
    this.#opening ??= (async () => {
      const session = await openSession(this.#connect);
      try {
        await applyKeepalive(session, this.#keepalive);
        await ensureSequence(session, this.#sequence);
      } catch (e) {
        await session.close();
        throw e;
      }
      this.#lockTimeout = "0";
      return session;
    })();
    try {
      return this.#session = await this.#opening;
    } finally {
      this.#opening = undefined;
    }
  }

  // The server session held the lock before this client took it: gives
  // back this client's share, leaves the session, and says why.
  async #pooled(session: Session): Promise<LockException> {
    try {
      await this.#unlock(session, this.#sql!.unlockPooled);
    } finally {
      if (this.#session === session) this.#session = undefined;
      await session.close();
    }
    return new LockException(
      `Cannot lock '${this.#label}' on PostgreSQL: the server session already holds it for another client, so ${POOLED}`,
    );
  }

  // Runs an unlock statement; resolves to its row.
  async #unlock(session: Session, text: string): Promise<Record<string, unknown> | undefined> {
    // A cancel meant for the lock statement may still arrive and cancel
    // this one: try again then.
    for (let attempt = 0;; attempt++) {
      try {
        const [row] = await session.query(text);
        return row;
      } catch (e) {
        if (sqlState(e) !== "57014" || attempt >= 3) throw e;
      }
    }
  }

  /**
   * Releases the lock; the session stays open for the next acquire. Doing
   * so when the lock is not held does nothing. The grant's `signal` aborts.
   *
   * @returns A promise that resolves once the server has released the lock.
   * @throws {LockException} The session was lost while the lock was held:
   * the lock was gone before this call (the grant's `signal` said so). Or,
   * through a pooler in transaction mode, another client took the lock on
   * the same server session while this one held it (it was refused, but
   * the lock was not exclusive): released all the same.
   *
   * @example Usage
   * ```ts ignore
   * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
   * import { PgLock } from "@filestore/filestore/postgres";
   * import postgres from "postgres";
   * import assert from "node:assert/strict";
   *
   * const lock = new PgLock(() => postgres(process.env.DATABASE_URL!, { max: 1 }), "cache");
   * await lock.acquire();
   * await lock.release();
   * assert.equal(lock.locked, false);
   * await lock.close();
   * ```
   */
  async release(): Promise<void> {
    const held = this.#held;
    if (held === undefined) return;
    this.#held = undefined;
    const session = this.#session;
    if (!isOver(held) && session === held.session && session.open) {
      const sql = this.#sql!;
      let row;
      try {
        row = await this.#unlock(session, session.direct !== true ? sql.unlockMarked : sql.unlock);
      } finally {
        endHeld(held);
      }
      if (row?.seen === true) {
        throw new LockException(
          `Released '${this.#label}' on PostgreSQL, but it was not exclusive: while it was held, another client took it on the same server session, so ${POOLED}`,
        );
      }
      if (row?.released === true) return;
    } else endHeld(held);
    const reason = reasonOf(held);
    throw new LockException(
      `Cannot release '${this.#label}' on PostgreSQL: the lock was lost with its session before`,
      { cause: reason },
    );
  }

  /**
   * Releases the lock if held and ends the session. Never throws: a lock
   * lost before is reported by its grant's `signal` and by
   * {@link PgLock.prototype.release}.
   *
   * @returns A promise that resolves once the session is closed.
   *
   * @example Usage
   * ```ts ignore
   * // Needs a PostgreSQL server (DATABASE_URL): not run by deno test --doc here.
   * import { PgLock } from "@filestore/filestore/postgres";
   * import postgres from "postgres";
   *
   * const lock = new PgLock(() => postgres(process.env.DATABASE_URL!, { max: 1 }), "cache");
   * await lock.acquire();
   * await lock.close(); // released, and nothing keeps the process alive
   * ```
   */
  async close(): Promise<void> {
    try {
      await this.release();
    } catch { /* reported by the grant's signal */ }
    const session = this.#session ?? await this.#opening?.catch(() => undefined);
    this.#session = undefined;
    await session?.close();
  }

  /** Releases the lock and ends the session, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
