// The Lua scripts behind RedisLock and RedisSemaphore, and their keys.
//
// One lock (or semaphore) is, under the prefix P = "filestore:lock:{name}:"
// (or "filestore:sem:{name}:"; the braces put every key of one lock in
// one Redis Cluster slot):
//   P.."owners"   sorted set: fencing token -> lease end, server ms
//   P.."info"     hash: token -> "<x|s|n> <since ms> <holder JSON>"
//   P.."token"    the last fencing token handed out
//   P.."waiters"  sorted set: "<mode>:<id>" -> when its registration lapses
//   P.."wake:"..id  a list a waiter blocks on (BLPOP); a release pushes to it
//   P.."baton"    a lock handed to the next exclusive waiter (see below)
//
// Time is always the server's (TIME), never a client's. Numbers: Lua's are
// doubles, and Lua 5.1 prints them with 14 significant digits, so a
// 16-digit token would come out rounded ("1.7954314976804e+15"). Tokens
// therefore never pass through a Lua number on their way out: they are
// built as strings (from TIME's strings) or read back with GET; numbers
// given to redis.call() go through string.format('%d'), exact for any
// integer below 2^53.
import { type Connection, isNoScript } from "./_redis_client.ts";

const PRELUDE = `
local function int(x) return string.format('%d', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owners, info, counter, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- Keeps a key for at least ms more milliseconds.
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left < ms then redis.call('PEXPIRE', key, int(ms)) end
end
-- Lets the owners and their info live as long as the longest lease.
local function keepOwners()
  local last = redis.call('ZRANGE', owners, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', owners, info)
    return
  end
  local ms = int(tonumber(last[2]) - now)
  redis.call('PEXPIRE', owners, ms)
  redis.call('PEXPIRE', info, ms)
end
-- A new fencing token: one more than the last, and at least the server's
-- clock in microseconds, so that it still grows when Redis lost the
-- counter. (Both are below 2^53 while the counter is near the clock, so
-- comparing them as Lua numbers is exact; a counter beyond 2^53 is larger
-- anyway.)
local function mint()
  local micros = t[1] .. string.format('%06d', tonumber(t[2]))
  local last = redis.call('GET', counter)
  if last and tonumber(last) >= tonumber(micros) then
    redis.call('INCR', counter)
    redis.call('PEXPIRE', counter, 86400000)
    return redis.call('GET', counter)
  end
  redis.call('SET', counter, micros, 'PX', 86400000)
  return micros
end
-- Pushes to the wake-up list of each waiter in the list given.
local function wake(prefix, list)
  for _, waiter in ipairs(list) do
    local key = prefix .. 'wake:' .. waiter
    redis.call('RPUSH', key, '1')
    redis.call('PEXPIRE', key, 10000)
  end
end
`;

// Exclusive waiters of a lock are handed the lock itself: the release that
// leaves it free mints the next token for them and pushes "TOKEN MINTED TTL"
// to P.."baton", which they block on besides their own list. Redis hands a
// pushed element to one blocked client, the longest waiting, so a waiter
// that died gets nothing. An element nobody took (the waiters were between
// tries) is taken by the next exclusive acquire, or cancelled by a shared
// one.

// KEYS: owners, info, counter, waiters. ARGV: mode (x exclusive, s shared,
// n semaphore), maximum (n), ttl ms, holder JSON, waiter ("" for none),
// key prefix, "1" if the waiter registered before (to be removed). Replies
// {1, token} or {0, ms until the first lease in the way ends, that
// holder's info, the server's time in ms}.
const ACQUIRE = PRELUDE + `
local mode, max, ttl, who, waiter, prefix =
  ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local wakeKey = prefix .. 'wake:' .. waiter
local function granted(token, alone)
  redis.call('ZADD', owners, int(now + ttl), token)
  redis.call('HSET', info, token, mode .. ' ' .. int(now) .. ' ' .. who)
  if alone then
    redis.call('PEXPIRE', owners, int(ttl))
    redis.call('PEXPIRE', info, int(ttl))
  else
    keepOwners()
  end
  if ARGV[7] == '1' then
    redis.call('ZREM', waiters, waiter)
    redis.call('DEL', wakeKey)
  end
  return {1, token}
end
-- The leases still running, in the order they end; ended ones go.
local function running()
  local all = redis.call('ZRANGE', owners, 0, -1, 'WITHSCORES')
  local live = {}
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= now then
      redis.call('ZREM', owners, all[i])
      redis.call('HDEL', info, all[i])
    else
      table.insert(live, all[i])
      table.insert(live, all[i + 1])
    end
  end
  return live
end
local live = running()
-- A lock handed over that nobody took (its lease is one of those running).
if mode ~= 'n' and #live > 0 then
  local baton = prefix .. 'baton'
  local cancelled = false
  for _ = 1, 100 do
    local handed = redis.call('LPOP', baton)
    if not handed then break end
    local token = string.match(handed, '^(%d+)')
    if redis.call('ZSCORE', owners, token) then
      if mode == 'x' then return granted(token, false) end
      redis.call('ZREM', owners, token)
      redis.call('HDEL', info, token)
      cancelled = true
    end
  end
  if cancelled then
    -- The exclusive waiters that were to take it try again.
    wake(prefix, redis.call('ZRANGEBYSCORE', waiters, now, '+inf'))
    redis.call('DEL', waiters)
    live = running()
  end
end
local blocker = nil
if mode == 'x' then
  if #live > 0 then blocker = 1 end
elseif mode == 's' then
  for i = 1, #live, 2 do
    local held = redis.call('HGET', info, live[i])
    if held and string.sub(held, 1, 1) == 'x' then
      blocker = i
      break
    end
  end
elseif #live / 2 >= max then
  blocker = 1
end
if not blocker then return granted(mint(), #live == 0) end
local left = tonumber(live[blocker + 1]) - now
if waiter ~= '' then
  -- Registered in the same step as the refusal: a release after this
  -- point pushes to the list, so the waiter cannot miss it.
  redis.call('DEL', wakeKey)
  redis.call('ZADD', waiters, int(now + left + ttl + 5000), waiter)
  keep(waiters, left + ttl + 5000)
end
return {0, left, redis.call('HGET', info, live[blocker]) or '', now}
`;

// KEYS: owners, info, counter, waiters. ARGV: token, ttl ms, holder JSON.
// Replies 1 if the lease was ours and still running (now extended), else
// 0. A lease handed over by a release names its new holder from now on.
const RENEW = PRELUDE + `
local token, ttl, who = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local ends = redis.call('ZSCORE', owners, token)
if not ends or tonumber(ends) <= now then return 0 end
redis.call('ZADD', owners, 'XX', int(now + ttl), token)
local held = redis.call('HGET', info, token)
if held and string.sub(held, -3) == ' {}' then
  redis.call('HSET', info, token, string.sub(held, 1, -3) .. who)
end
keepOwners()
return 1
`;

// KEYS: owners, info, counter, waiters. ARGV: token, key prefix, ttl ms,
// "1" to hand a free lock to an exclusive waiter. Ends the lease if it is
// ours; then hands the lock over, or wakes the waiters. Replies 1 if it
// was ours.
const RELEASE = PRELUDE + `
local token, prefix, ttl, handOver = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local removed = redis.call('ZREM', owners, token)
redis.call('HDEL', info, token)
if removed == 0 then return 0 end
-- (Redis deletes a sorted set or hash with its last member.)
local free = redis.call('EXISTS', owners) == 0
if not free then keepOwners() end
local waiting = redis.call('ZRANGEBYSCORE', waiters, now, '+inf')
if #waiting == 0 then return 1 end
if handOver and free then
  local others = {}
  local exclusive = false
  for _, waiter in ipairs(waiting) do
    if string.sub(waiter, 1, 2) == 'x:' then exclusive = true else table.insert(others, waiter) end
  end
  if exclusive then
    local handed = mint()
    redis.call('ZADD', owners, int(now + ttl), handed)
    redis.call('HSET', info, handed, 'x ' .. int(now) .. ' {}')
    keepOwners()
    local baton = prefix .. 'baton'
    redis.call('RPUSH', baton, handed .. ' ' .. int(now) .. ' ' .. int(ttl))
    redis.call('PEXPIRE', baton, int(ttl))
    -- The others try again (and meet the new holder); the exclusive ones
    -- stay registered for the next release.
    wake(prefix, others)
    for _, waiter in ipairs(others) do redis.call('ZREM', waiters, waiter) end
    return 1
  end
end
wake(prefix, waiting)
redis.call('DEL', waiters)
return 1
`;

// KEYS: owners, info, counter, waiters. ARGV: waiter, key prefix. A waiter
// that gives up, or took a lock handed to it.
const LEAVE = `
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('DEL', ARGV[2] .. 'wake:' .. ARGV[1])
return 1
`;

/** The keys of one lock or semaphore. */
export interface Keys {
  readonly prefix: string;
  /** owners, info, counter, waiters: the KEYS of every script. */
  readonly list: readonly [string, string, string, string];
}

/** The keys of the lock or semaphore `name` (`kind` keeps the two apart). */
export function keysOf(kind: "lock" | "sem", name: string): Keys {
  const prefix = `filestore:${kind}:{${name}}:`;
  return {
    prefix,
    list: [`${prefix}owners`, `${prefix}info`, `${prefix}token`, `${prefix}waiters`],
  };
}

/** A Lua script run through EVALSHA, falling back to EVAL the first time a server meets it. */
export class Script {
  #body: string;
  #sha: Promise<string> | undefined;

  constructor(body: string) {
    this.#body = body;
  }

  async run(
    conn: Connection,
    keys: { readonly list: readonly string[] },
    args: readonly string[],
  ): Promise<unknown> {
    this.#sha ??= sha1(this.#body);
    const tail = [String(keys.list.length), ...keys.list, ...args];
    try {
      return await conn.send("EVALSHA", [await this.#sha, ...tail]);
    } catch (e) {
      if (!isNoScript(e)) throw e;
      return await conn.send("EVAL", [this.#body, ...tail]);
    }
  }
}

async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The scripts, run through EVALSHA (EVAL the first time a server meets one). */
export const scripts = {
  acquire: new Script(ACQUIRE),
  renew: new Script(RENEW),
  release: new Script(RELEASE),
  leave: new Script(LEAVE),
};
