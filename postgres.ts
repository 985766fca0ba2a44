/**
 * Locks and a queue across hosts on PostgreSQL, with the model of the file
 * locks: liveness, not leases. {@link PgLock} is a session-level advisory
 * lock held for exactly as long as its session lives (a holder that dies
 * loses it in milliseconds; a slow one keeps it), with a fencing token and
 * a signal that aborts when the session is lost. {@link PgQueue} is a
 * table-backed queue with the claim handle of `FileStore`. The package
 * depends on no client: you pass a function that opens a connection with
 * postgres.js, Bun's built-in `SQL` or node-postgres (`pg`).
 *
 * The example needs a PostgreSQL server, which `deno test --doc` does not
 * have here: hence `ignore`.
 *
 * ```ts ignore
 * import { PgLock } from "@filestore/filestore/postgres";
 * import postgres from "postgres";
 *
 * const connect = () => postgres(process.env.DATABASE_URL!, { max: 1 });
 * await using lock = new PgLock(connect, "nightly-report");
 * const { token, signal } = await lock.acquire();
 * await run({ token, signal }); // signal aborts if the session is lost
 * ```
 *
 * @module
 */
export {
  keyOf,
  type PgAcquireOptions,
  PgAlreadyLocked,
  type PgHolder,
  type PgKeepalive,
  PgLock,
  type PgLockGrant,
  type PgLockOptions,
} from "./_pg_lock.ts";
export {
  PgClaim,
  type PgClaimOptions,
  type PgMessageState,
  PgQueue,
  type PgQueueOptions,
  type PgRecovered,
} from "./_pg_queue.ts";
export type { PgClient, PgConnect } from "./_pg_session.ts";
// The lock errors, for users of this entry point alone.
export {
  AlreadyLocked,
  type AlreadyLockedOptions,
  LockException,
  type LockHolder,
} from "./errors.ts";
