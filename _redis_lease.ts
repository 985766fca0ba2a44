// What RedisLock and RedisSemaphore share: the acquire loop (try, then
// block on a wake-up list until a release or the end of the lease in the
// way), the lease kept alive in the background, and the connections that
// waits block on.
import { randomHex } from "./_check.ts";
import type { Connection } from "./_redis_client.ts";
import { type Keys, scripts } from "./_redis_scripts.ts";
import { after, deadline, unrefTimer, untilAbort, type WaitRules } from "./_wait.ts";
import { LockException } from "./errors.ts";

/**
 * A lock from `./redis` is no longer certainly held: the reason a lease's
 * `signal` aborts with. Its message says why (a renewal was refused, or
 * none was confirmed within the lease). Stop writing under the lock.
 *
 * @example Usage
 * ```ts
 * import { LockLost } from "@filestore/filestore/redis";
 * import { LockException } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const controller = new AbortController();
 * controller.abort(new LockLost("Lost RedisLock \"jobs\" (token 7): its lease ended"));
 * assert.throws(() => controller.signal.throwIfAborted(), LockLost);
 * assert.ok(controller.signal.reason instanceof LockException);
 * ```
 */
export class LockLost extends LockException {}

// ---------------------------------------------------------------------------
// Blocking connections: BLPOP holds a connection until it returns, so a wait
// runs on a duplicate of the user's client. Idle duplicates are kept for a
// second for the next wait, then closed; while idle they do not keep the
// host process alive.

const IDLE_MS = 1000;

export interface Blocker {
  conn: Connection;
  id: string;
  // Settles once the connection is free for another BLPOP.
  busy: Promise<unknown> | undefined;
  broken: boolean;
}

export class Pool {
  #base: Connection;
  // Oldest first: take() reuses the newest.
  #idle: { blocker: Blocker; since: number }[] = [];
  #sweep: (() => void) | undefined;

  constructor(base: Connection) {
    this.#base = base;
  }

  async take(): Promise<Blocker> {
    const entry = this.#idle.pop();
    if (entry !== undefined) {
      entry.blocker.conn.keepAlive(true);
      return entry.blocker;
    }
    const conn = await this.#base.duplicate();
    try {
      const id = String(await conn.send("CLIENT", ["ID"]));
      return { conn, id, busy: undefined, broken: false };
    } catch (e) {
      await conn.close();
      throw e;
    }
  }

  give(blocker: Blocker): void {
    if (blocker.broken) {
      void blocker.conn.close();
      return;
    }
    if (blocker.busy !== undefined) {
      // An unblocked BLPOP still on its way back: the connection is free
      // once it returns.
      void blocker.busy.then(() => {
        blocker.busy = undefined;
        this.give(blocker);
      });
      return;
    }
    blocker.conn.keepAlive(false);
    this.#idle.push({ blocker, since: performance.now() });
    this.#sweep ??= unrefTimer(IDLE_MS, () => this.#closeIdle());
  }

  // One timer for all idle connections, not one per give(): a process that
  // waits often gives a connection back on every acquire.
  #closeIdle(): void {
    this.#sweep = undefined;
    const now = performance.now();
    while (this.#idle.length > 0 && now - this.#idle[0]!.since >= IDLE_MS) {
      void this.#idle.shift()!.blocker.conn.close();
    }
    const oldest = this.#idle[0];
    if (oldest !== undefined) {
      this.#sweep = unrefTimer(oldest.since + IDLE_MS - now, () => this.#closeIdle());
    }
  }

  /**
   * Blocks on the lists `keys` until something is pushed to one, `ms` pass
   * or `signal` aborts (rejecting with its reason); resolves to BLPOP's
   * reply ([key, element], or null). Redis checks the timeouts of blocked
   * clients only about every 100 ms (hz 10), so the time is kept here, and
   * the BLPOP ended with CLIENT UNBLOCK; its own timeout is a safety net for
   * when that cannot be sent. A reply that comes after the signal aborted
   * goes to `late`.
   */
  block(
    blocker: Blocker,
    keys: readonly string[],
    ms: number,
    signal: AbortSignal | undefined,
    late: (reply: unknown) => void,
  ): Promise<unknown> {
    const seconds = ((Math.min(ms, 2 ** 31) + 1000) / 1000).toFixed(3);
    return this.blockOn(blocker, "BLPOP", [...keys, seconds], ms, signal, late);
  }

  /**
   * Sends the blocking `command` (BLPOP, XREADGROUP ... BLOCK) whose own
   * timeout is a little longer than `ms`, and ends it with CLIENT UNBLOCK
   * after `ms` or when `signal` aborts; see {@link Pool.prototype.block}.
   */
  async blockOn(
    blocker: Blocker,
    command: string,
    args: readonly string[],
    ms: number,
    signal: AbortSignal | undefined,
    late: (reply: unknown) => void,
  ): Promise<unknown> {
    const reply = blocker.conn.send(command, [...args]);
    // Redis answers CLIENT UNBLOCK with 0 when that connection is not
    // blocked: it was lost and made again under another id (some clients
    // then send the BLPOP again, or never fail it). The connection is then
    // dropped and the wait goes on without it; should the old BLPOP still
    // be handed a lock, `late` lets go of it.
    let lost!: (value: null) => void;
    const gone = new Promise<null>((resolve) => lost = resolve);
    let answered = false;
    blocker.busy = Promise.race([
      reply.then(() => answered = true, () => {
        answered = true;
        blocker.broken = true;
      }),
      gone,
    ]);
    const unblock = () => {
      this.#base.send("CLIENT", ["UNBLOCK", blocker.id]).then((count) => {
        if (Number(count) !== 0 || answered) return;
        blocker.broken = true;
        reply.then(late, () => {});
        lost(null);
      }, () => {});
    };
    const cancel = after(ms, unblock);
    signal?.addEventListener("abort", unblock, { once: true });
    try {
      const answer = await untilAbort(Promise.race([reply, gone]), signal);
      if (!blocker.broken) blocker.busy = undefined;
      return answer;
    } catch (e) {
      if (signal?.aborted && e === signal.reason) {
        reply.then(late, () => {});
        throw e;
      }
      // The connection failed (killed, server restarted): drop it; the
      // caller tries again on a new one.
      blocker.broken = true;
      return null;
    } finally {
      cancel();
      signal?.removeEventListener("abort", unblock);
    }
  }
}

const pools = new WeakMap<object, Pool>();

/** The pool of blocking connections of the user's client `client`. */
export function poolOf(client: object, base: Connection): Pool {
  let pool = pools.get(client);
  if (pool === undefined) pools.set(client, pool = new Pool(base));
  return pool;
}

// ---------------------------------------------------------------------------
// Acquiring.

/** What one acquire asks for. */
export interface Claim {
  readonly conn: Connection;
  readonly pool: Pool;
  readonly keys: Keys;
  /** "x" exclusive, "s" shared, "n" one of `max` semaphore slots. */
  readonly mode: "x" | "s" | "n";
  readonly max: number;
  readonly ttl: number;
  /** The holder's description stored with the lease (JSON). */
  readonly who: string;
}

/** Who holds what is in the way, from the info the holder stored. */
export interface Holder {
  pid?: number | undefined;
  hostname?: string | undefined;
  /** When it took the lock, server ms since the epoch. */
  since?: number | undefined;
}

/** Parses a lease as the scripts store it: "<end> <mode> <since> <JSON>". */
export function holderOf(lease: string): Holder {
  const match = /^\d+ [xsn] (\d+) (.*)$/s.exec(lease);
  if (match === null) return {};
  try {
    const { pid, hostname } = JSON.parse(match[2]!) as Record<string, unknown>;
    return {
      pid: typeof pid === "number" ? pid : undefined,
      hostname: typeof hostname === "string" ? hostname : undefined,
      since: Number(match[1]),
    };
  } catch {
    return { since: Number(match[1]) };
  }
}

/**
 * A lease just granted: its token, a local time no later than when the
 * lease started on the server (when the request that got it was sent), and
 * the length of that first lease.
 */
export interface Grant {
  token: string;
  sentAt: number;
  ttl: number;
  /**
   * Handed over by a release: renewed at once, which names the new holder
   * and drops this waiter's registration (`waiter`).
   */
  handedOver: boolean;
  waiter: string;
}

/** The token, or: ms until the lease in the way ends, that lease, the server's time in ms. */
type Reply = string | [number, string, number];

/** A lock handed over through the baton list: "TOKEN MINTED TTL". */
function batonOf(reply: unknown, batonKey: string): [string, number, number] | undefined {
  if (!Array.isArray(reply) || reply[0] !== batonKey) return undefined;
  const match = /^(\d+) (\d+) (\d+)$/.exec(String(reply[1]));
  if (match === null) return undefined;
  return [match[1]!, Number(match[2]), Number(match[3])];
}

function attempt(claim: Claim, waiter: string, registered: boolean): Promise<Reply> {
  const { mode, max, ttl, who, keys } = claim;
  const args = [mode === "n" ? `n${max}` : mode, String(ttl), who, waiter];
  if (registered) args.push("1");
  return scripts.acquire.run(claim.conn, keys, args) as Promise<Reply>;
}

/**
 * Ends a lease if it is ours, and drops the registration `waiter` if
 * given; resolves to whether the lease was ours.
 */
export function releaseToken(claim: Claim, token: string, waiter = ""): Promise<boolean> {
  const args = [token, String(claim.ttl), waiter];
  return scripts.release.run(claim.conn, claim.keys, args).then(isOne);
}

function isOne(reply: unknown): boolean {
  return reply === 1;
}

// Waiter ids: unique across processes by a random part drawn once, and
// within one by a count (an acquire on the uncontended path makes one too,
// as it registers in the same step should it be refused).
const processId = randomHex(6);
let waitCount = 0;

/** The answer to the first try, when it was sent before the waiting began. */
type First = { reply: Reply } | { error: unknown };

/**
 * Acquires under `rules`: resolves with the grant, or rejects with
 * `refuse(holder, waited)` (refused, or the timeout ran out) or the
 * signal's reason.
 */
export function acquireLease(
  claim: Claim,
  rules: WaitRules,
  refuse: (holder: Holder, waited?: number) => Error,
): Promise<Grant> {
  const start = performance.now();
  const waits = !rules.failWhenLocked && rules.timeout !== 0;
  const waiter = waits ? `${claim.mode}:${processId}${(waitCount++).toString(36)}` : "";
  if (rules.signal !== undefined || (waits && rules.timeout !== Infinity)) {
    return waitForLease(claim, rules, refuse, start, waiter, undefined);
  }
  // Nothing can give up the first try while it is on its way (no signal,
  // no deadline), so it goes out without the waiting machinery, which only
  // a refusal needs: this is the path of every uncontended acquire.
  return attempt(claim, waiter, false).then(
    (reply) =>
      typeof reply === "string"
        ? { token: reply, sentAt: start, ttl: claim.ttl, handedOver: false, waiter: "" }
        : waitForLease(claim, rules, refuse, start, waiter, { reply }),
    (error: unknown) => waitForLease(claim, rules, refuse, start, waiter, { error }),
  );
}

async function waitForLease(
  claim: Claim,
  rules: WaitRules,
  refuse: (holder: Holder, waited?: number) => Error,
  start: number,
  waiter: string,
  first: First | undefined,
): Promise<Grant> {
  const waits = waiter !== "";
  const batonKey = `${claim.keys.prefix}baton`;
  const lists = claim.mode === "x"
    ? [`${claim.keys.prefix}wake:${waiter}`, batonKey]
    : [`${claim.keys.prefix}wake:${waiter}`];
  // A lock handed over after this acquire gave up is let go at once.
  const late = (reply: unknown) => {
    const baton = batonOf(reply, batonKey);
    if (baton !== undefined) releaseToken(claim, baton[0]).catch(() => {});
  };
  const limit = deadline(rules.timeout, rules.signal);
  let blocker: Blocker | undefined;
  let holder: Holder = {};
  let registered = false;
  // A wait rides out connection trouble (a restart, a failover, a killed
  // connection, while the client reconnects), trying again with a growing
  // pause, for up to one lease; then the error is thrown. A single try
  // throws it at once.
  let troubleSince: number | undefined;
  let pauseMs = 25;
  const ridden = async (e: unknown): Promise<void> => {
    if (limit.signal?.aborted && e === limit.signal.reason) {
      if (limit.timedOut) throw refuse(holder, rules.timeout);
      throw e;
    }
    troubleSince ??= performance.now();
    if (!waits || performance.now() - troubleSince >= claim.ttl) throw e;
    try {
      await pause(pauseMs, limit.signal);
    } catch (reason) {
      if (limit.timedOut) throw refuse(holder, rules.timeout);
      throw reason;
    }
    pauseMs = Math.min(pauseMs * 2, 1000);
  };
  try {
    for (;;) {
      let sentAt = start;
      let reply: Reply;
      if (first !== undefined) {
        const given = first;
        first = undefined;
        if ("error" in given) {
          await ridden(given.error);
          continue;
        }
        reply = given.reply;
      } else {
        sentAt = performance.now();
        const pending = attempt(claim, waiter, registered);
        try {
          // A single try waits for its answer, whatever the timeout.
          reply = await untilAbort(pending, waits ? limit.signal : rules.signal);
        } catch (e) {
          if (limit.signal?.aborted && e === limit.signal.reason) {
            // Given up while the attempt was on its way: should it still be
            // granted, the lease is let go at once rather than left to lapse.
            void pending.then(
              (late) => typeof late === "string" && releaseToken(claim, late),
            ).catch(() => {});
          }
          await ridden(e);
          continue;
        }
      }
      troubleSince = undefined;
      pauseMs = 25;
      if (typeof reply === "string") {
        registered = false;
        return { token: reply, sentAt, ttl: claim.ttl, handedOver: false, waiter: "" };
      }
      registered = waits;
      holder = holderOf(String(reply[1]));
      const waited = performance.now() - start;
      if (!waits) throw refuse(holder);
      if (waited >= rules.timeout) throw refuse(holder, rules.timeout);
      // Until a release pushes to the list, or the lease in the way ends
      // (a holder that died is noticed then), or the timeout; and at least
      // once a lease of its own, in case Redis lost the registration (a
      // restart or failover that the connection survived).
      const ms = Math.min(Number(reply[0]) + 1, rules.timeout - waited, claim.ttl);
      if (blocker === undefined) {
        const taking = claim.pool.take();
        try {
          blocker = await untilAbort(taking, limit.signal);
        } catch (e) {
          // Given up while the connection was being made: it goes to the
          // pool (and is closed there) once it is.
          taking.then((b) => claim.pool.give(b), () => {});
          await ridden(e);
          continue;
        }
      }
      let woken: unknown;
      try {
        woken = await claim.pool.block(blocker, lists, ms, limit.signal, late);
      } catch (e) {
        if (limit.timedOut && e === limit.signal?.reason) throw refuse(holder, rules.timeout);
        throw e;
      }
      const baton = batonOf(woken, batonKey);
      if (baton !== undefined) {
        // Minted at server time baton[1]; the refusal was computed at
        // server time reply[2], after `sentAt` here: so the lease began no
        // earlier than this, on the local clock.
        const [token, minted, ttl] = baton;
        // The registration goes with the first renewal, off this path.
        registered = false;
        return {
          token,
          sentAt: sentAt + (minted - Number(reply[2])),
          ttl,
          handedOver: true,
          waiter,
        };
      }
      if (blocker.broken) {
        claim.pool.give(blocker);
        blocker = undefined;
      }
    }
  } finally {
    limit[Symbol.dispose]();
    if (blocker !== undefined) claim.pool.give(blocker);
    if (registered) {
      scripts.leave.run(claim.conn, claim.keys, [waiter]).catch(() => {});
    }
  }
}

/** Resolves after `ms`, or rejects with `signal`'s reason when it aborts first. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(id);
      reject(signal!.reason);
    };
    const id = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// ---------------------------------------------------------------------------
// Holding: renewal in the background, and the signal that says when the
// lease can no longer be relied on.

/** The share of the lease after which it is renewed. */
const RENEW_AT = 1 / 3;
/** After a renewal that failed (no answer, an error), the next try, as a share of the lease. */
const RETRY_AT = 1 / 10;

// The timers of held leases: one for the whole process, set for the
// earliest moment any lease needs attention, so that an acquire and its
// release set no timer of their own.
interface Timed {
  /** When it needs attention next, on the local clock. */
  readonly at: number;
  tick(now: number): void;
}

class Schedule {
  #items = new Set<Timed>();
  #at = Infinity;
  #cancel: (() => void) | undefined;
  #running = false;

  /** Adds `item`, or takes note that its `at` changed. */
  add(item: Timed): void {
    this.#items.add(item);
    if (item.at < this.#at && !this.#running) this.#arm(item.at);
  }

  /** Forgets `item`; the timer stays, and finds nothing to do. */
  delete(item: Timed): void {
    this.#items.delete(item);
  }

  #arm(at: number): void {
    this.#cancel?.();
    this.#at = at;
    this.#cancel = unrefTimer(Math.max(0, at - performance.now()), () => this.#run());
  }

  #run(): void {
    this.#cancel = undefined;
    this.#at = Infinity;
    this.#running = true;
    const now = performance.now();
    for (const item of [...this.#items]) {
      if (item.at > now) continue;
      this.#items.delete(item);
      item.tick(now);
    }
    this.#running = false;
    let next = Infinity;
    for (const item of this.#items) next = Math.min(next, item.at);
    if (next < Infinity) this.#arm(next);
  }
}

const schedule = new Schedule();

/** A held lease, kept alive until released or lost. */
export class Keeper implements Timed {
  readonly token: bigint;
  readonly tokenText: string;
  readonly #claim: Claim;
  readonly #describe: string;
  // Made when the signal is first asked for: most holders never look.
  #controller: AbortController | undefined;
  #lost: LockLost | undefined;
  #confirmedSentAt: number;
  // The length of the lease last confirmed (a handed-over one has the
  // releaser's).
  #leaseTtl: number;
  // When the next renewal is due, on the local clock.
  #renewAt: number;
  #renewing = false;
  // The registration of the wait that was handed this lease, until the
  // first renewal (or the release) drops it on the server.
  #waiter: string;
  #done = false;
  // The next renewal, or, while one is on its way, the moment the lease
  // can no longer be relied on.
  at = 0;

  constructor(claim: Claim, grant: Grant, describe: string) {
    this.#claim = claim;
    this.tokenText = grant.token;
    this.token = BigInt(grant.token);
    this.#describe = describe;
    this.#confirmedSentAt = grant.sentAt;
    this.#leaseTtl = grant.ttl;
    this.#waiter = grant.waiter;
    this.#renewAt = grant.handedOver ? 0 : grant.sentAt + claim.ttl * RENEW_AT;
    this.#arm();
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#lost !== undefined) this.#controller.abort(this.#lost);
    }
    return this.#controller.signal;
  }

  /** Held and not lost. */
  get held(): boolean {
    return !this.#done;
  }

  // The lease ended on the server no earlier than `ttl` after the request
  // that started or last renewed it was sent (the server's clock ran from
  // receipt); a small margin covers clocks that run at slightly different
  // rates and a late timer.
  #limit(): number {
    const ttl = this.#leaseTtl;
    return this.#confirmedSentAt + ttl - ttl / 50 - 1;
  }

  #arm(): void {
    this.at = this.#renewing ? this.#limit() : Math.min(this.#renewAt, this.#limit());
    schedule.add(this);
  }

  tick(now: number): void {
    if (this.#done) return;
    if (now >= this.#limit()) {
      this.#lose(`no renewal was confirmed within its lease of ${this.#leaseTtl} ms`);
    } else if (!this.#renewing && now >= this.#renewAt) {
      void this.#renew(now);
    } else {
      this.#arm();
    }
  }

  async #renew(sentAt: number): Promise<void> {
    const { conn, keys, ttl, who } = this.#claim;
    this.#renewing = true;
    this.#arm();
    let ours: boolean;
    try {
      const args = [this.tokenText, String(ttl), who, this.#waiter];
      ours = await scripts.renew.run(conn, keys, args) === 1;
    } catch {
      this.#renewing = false;
      if (this.#done) return;
      this.#renewAt = performance.now() + ttl * RETRY_AT;
      this.#arm();
      return;
    }
    this.#renewing = false;
    this.#waiter = "";
    if (this.#done) return;
    if (!ours) {
      this.#lose("its lease ended or Redis lost it, and another holder may have it now");
      return;
    }
    this.#confirmedSentAt = sentAt;
    this.#leaseTtl = ttl;
    this.#renewAt = sentAt + ttl * RENEW_AT;
    this.#arm();
  }

  #stop(): void {
    this.#done = true;
    schedule.delete(this);
  }

  // Lost for good: nothing brings it back, whatever a reconnecting client
  // later delivers. The lease is ended on the server too, if it still runs
  // there, so that the next holder need not wait for it to lapse.
  #lose(why: string): void {
    if (this.#done) return;
    this.#stop();
    this.#lost = new LockLost(`Lost ${this.#describe} (token ${this.token}): ${why}`);
    this.#controller?.abort(this.#lost);
    releaseToken(this.#claim, this.tokenText, this.#waiter).catch(() => {});
  }

  /** Ends the lease; resolves to whether it was still ours on the server. */
  release(): Promise<boolean> {
    const wasHeld = !this.#done;
    this.#stop();
    return releaseToken(this.#claim, this.tokenText, this.#waiter).then((ours) => wasHeld && ours);
  }
}

// unrefTimer lives with the other waiting helpers; redis.ts imports it from here.
export { unrefTimer };
