// The Lua scripts behind RedisLock and RedisSemaphore, and their keys.
//
// One lock (or semaphore) is, under the prefix P = "filestore:lock:{name}:"
// (or "filestore:sem:{name}:"; the braces put every key of one lock in
// one Redis Cluster slot):
//   P.."owners"   hash: fencing token -> "<end> <x|s|n> <since> <holder JSON>"
//                 for each lease (end and since in server ms), and
//                   "n" -> the last fencing token handed out,
//                   "e" -> when the hash expires (server ms): at least a
//                          day on, and never before a lease in it ends
//   P.."waiters"  sorted set: "<mode>:<id>" -> when its registration lapses
//   P.."wake:"..id  a list a waiter blocks on (BLPOP); a release pushes to it
//   P.."baton"    a lock handed to the next exclusive waiter (see below)
//
// What most acquires and releases do is kept short, for each Redis command
// a script calls costs about as much as a plain one, and each Lua function
// it defines is a new closure on every run: an acquire that finds no lease
// reads the hash and the clock and writes its lease and the new token in
// one HSET (the expiry moves on about once a day); a release with nobody
// waiting deletes its field and looks for waiters. Only when there is a
// lease or a waiter to look at do the scripts define helpers. The pieces
// they share are inlined (CLOCK, GRANT, LEASES) rather than called, and
// what goes over the wire is kept small too (one key given, the others
// named after it; a grant answered with the bare token).
//
// Time is always the server's (TIME), never a client's. Numbers: Lua's are
// doubles, and Lua 5.1 prints them with 14 significant digits, so a
// 16-digit token would come out rounded ("1.7954314976804e+15"). Tokens
// therefore never pass through a Lua number on their way out: they are
// built as strings (from TIME's strings) or read back with HGET; numbers
// given to redis.call() go through string.format('%d'), exact for any
// integer below 2^53.
import { type Connection, isNoScript } from "./_redis_client.ts";

// The server's clock: `now` in ms (a number) and `micros` (a string).
const CLOCK = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local micros = t[1] .. string.sub('00000' .. t[2], -6)
`;

// The hash's fields in `all` (HGETALL's reply): the leases still running go
// to `live`, in no order, and ended ones are deleted; `last` and `expires`
// are set from the fields "n" and "e".
const LEASES = `
local live, ended = {}, {}
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  if field == 'n' then
    last = value
  elseif field == 'e' then
    expires = value
  else
    local ends, held = string.match(value, '^(%d+) (%a)')
    ends = tonumber(ends)
    if ends <= now then
      table.insert(ended, field)
    else
      table.insert(live, {token = field, ends = ends, mode = held, value = value})
    end
  end
end
if #ended > 0 then redis.call('HDEL', owners, unpack(ended)) end
`;

// Writes the lease `value` under `token`, or, when `token` is nil, under a
// new fencing token: one more than the last (`last`, the field "n"), and at
// least the server's clock in microseconds, so that it still grows when
// Redis lost the hash. (Both are below 2^53 while the counter is near the
// clock, so comparing them as Lua numbers is exact; a counter beyond 2^53
// is larger anyway.) The hash is kept until at least `ttl` from now: its
// expiry (`expires`, the field "e") moves on a day at a time.
const GRANT = `
if not token then
  if last and tonumber(last) >= tonumber(micros) then
    redis.call('HINCRBY', owners, 'n', 1)
    token = redis.call('HGET', owners, 'n')
  else
    token = micros
  end
  last = token
end
if now + ttl > (tonumber(expires) or 0) then
  local keep = math.max(tonumber(ttl), 86400000)
  expires = string.format('%d', now + keep)
  redis.call('HSET', owners, token, value, 'n', last or token, 'e', expires)
  redis.call('PEXPIRE', owners, keep)
else
  redis.call('HSET', owners, token, value, 'n', last or token, 'e', expires)
end
`;

// Pushes to the wake-up list of each waiter in a list.
const WAKE = `
local function wake(list)
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
// one. The waiter that took it drops its registration with its first
// renewal (or its release, if that comes first), not before its acquire
// returns: a handover is on the path of every contended acquire.

// The keys of a lock, from its owners hash (the one key the scripts are given).
const NAMES = `
local owners = KEYS[1]
local prefix = string.sub(owners, 1, -7)
local waiters = prefix .. 'waiters'
`;

// KEYS: owners. ARGV: mode (x exclusive, s shared, or n and the maximum of a
// semaphore: "n3"), ttl ms, holder JSON, waiter ("" for none), and "1" if
// the waiter registered before (to be removed). Replies the token, or {ms
// until the first lease in the way ends, that lease as stored, the
// server's time in ms}.
const ACQUIRE = NAMES + `
local mode, ttl, waiter = string.sub(ARGV[1], 1, 1), ARGV[2], ARGV[4]
local all = redis.call('HGETALL', owners)
` + CLOCK + `
local last, expires, token = nil, nil, nil
local busy = false
for i = 1, #all, 2 do
  local field = all[i]
  if field == 'n' then
    last = all[i + 1]
  elseif field == 'e' then
    expires = all[i + 1]
  else
    busy = true
  end
end
if busy then
` + LEASES + WAKE + `
  -- A lock handed over that nobody took (its lease is one of those running).
  if mode ~= 'n' and #live > 0 then
    local baton = prefix .. 'baton'
    local cancelled = {}
    for _ = 1, 100 do
      local handed = redis.call('LPOP', baton)
      if not handed then break end
      handed = string.match(handed, '^(%d+)')
      for _, lease in ipairs(live) do
        if lease.token == handed then
          if mode == 'x' then token = handed else cancelled[handed] = true end
        end
      end
      if token then break end
    end
    if next(cancelled) then
      -- The exclusive waiters that were to take it try again.
      wake(redis.call('ZRANGEBYSCORE', waiters, now, '+inf'))
      redis.call('DEL', waiters)
      local kept = {}
      for _, lease in ipairs(live) do
        if cancelled[lease.token] then
          redis.call('HDEL', owners, lease.token)
        else
          table.insert(kept, lease)
        end
      end
      live = kept
    end
  end
  -- The lease in the way that ends first, if any.
  local blocker = nil
  if not token and (mode ~= 'n' or #live >= tonumber(string.sub(ARGV[1], 2))) then
    for _, lease in ipairs(live) do
      if (mode ~= 's' or lease.mode == 'x') and (not blocker or lease.ends < blocker.ends) then
        blocker = lease
      end
    end
  end
  if blocker then
    local left = blocker.ends - now
    if waiter ~= '' then
      -- Registered in the same step as the refusal: a release after this
      -- point pushes to the list, so the waiter cannot miss it.
      local lapse = left + ttl + 5000
      redis.call('DEL', prefix .. 'wake:' .. waiter)
      redis.call('ZADD', waiters, string.format('%d', now + lapse), waiter)
      if redis.call('PTTL', waiters) < lapse then
        redis.call('PEXPIRE', waiters, string.format('%d', lapse))
      end
    end
    return {left, blocker.value, now}
  end
end
local value = string.format('%d %s %d %s', now + ttl, mode, now, ARGV[3])
` + GRANT + `
if ARGV[5] == '1' then
  redis.call('ZREM', waiters, waiter)
  redis.call('DEL', prefix .. 'wake:' .. waiter)
end
return token
`;

// Drops the registration of the waiter ARGV[n] unless it is "": one that
// gave up, or that holds the lock now.
function leave(n: number): string {
  return `
if ARGV[${n}] ~= '' then
  redis.call('ZREM', waiters, ARGV[${n}])
  redis.call('DEL', prefix .. 'wake:' .. ARGV[${n}])
end
`;
}

// KEYS: owners. ARGV: token, ttl ms, holder JSON, the registration to drop
// ("" for none). Replies 1 if the lease was ours and still running (now
// extended), else 0. A lease handed over by a release names its new holder
// from now on.
const RENEW = NAMES + leave(4) + `
local token, ttl = ARGV[1], ARGV[2]
local found = redis.call('HMGET', owners, token, 'n', 'e')
if not found[1] then return 0 end
` + CLOCK + `
local ends, rest = string.match(found[1], '^(%d+) (.*)$')
if tonumber(ends) <= now then return 0 end
if string.sub(rest, -3) == ' {}' then rest = string.sub(rest, 1, -3) .. ARGV[3] end
local value = string.format('%d ', now + ttl) .. rest
local last, expires = found[2] or nil, found[3] or nil
` + GRANT + `
return 1
`;

// KEYS: owners. ARGV: token, ttl ms, the registration to drop ("" for
// none). Ends the lease if it is ours; then hands a free lock over to an
// exclusive waiter (a semaphore has none), or wakes the waiters. Replies 1
// if it was ours.
const RELEASE = NAMES + leave(3) + `
local ttl = ARGV[2]
if redis.call('HDEL', owners, ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', waiters) == 0 then return 1 end
` + CLOCK + `
local waiting = redis.call('ZRANGEBYSCORE', waiters, now, '+inf')
if #waiting == 0 then return 1 end
` + WAKE + `
local all = redis.call('HGETALL', owners)
local last, expires, token = nil, nil, nil
` + LEASES + `
local others = {}
local exclusive = false
for _, waiter in ipairs(waiting) do
  if string.sub(waiter, 1, 2) == 'x:' then exclusive = true else table.insert(others, waiter) end
end
if exclusive and #live == 0 then
  local value = string.format('%d x %d {}', now + ttl, now)
` + GRANT + `
  local baton = prefix .. 'baton'
  redis.call('RPUSH', baton, string.format('%s %d %s', token, now, ttl))
  redis.call('PEXPIRE', baton, ttl)
  -- The others try again (and meet the new holder); the exclusive ones
  -- stay registered for the next release.
  wake(others)
  for _, waiter in ipairs(others) do redis.call('ZREM', waiters, waiter) end
  return 1
end
wake(waiting)
redis.call('DEL', waiters)
return 1
`;

// KEYS: owners. ARGV: waiter. A waiter that gives up.
const LEAVE = NAMES + leave(1) + `
return 1
`;

/** The keys of one lock or semaphore. */
export interface Keys {
  readonly prefix: string;
  /** The KEYS of every script: the owners hash (the others are named after it). */
  readonly list: readonly [string];
}

/** The keys of the lock or semaphore `name` (`kind` keeps the two apart). */
export function keysOf(kind: "lock" | "sem", name: string): Keys {
  const prefix = `filestore:${kind}:{${name}}:`;
  return {
    prefix,
    list: [`${prefix}owners`],
  };
}

/** A Lua script run through EVALSHA, falling back to EVAL the first time a server meets it. */
export class Script {
  #body: string;
  #sha: string | undefined;

  constructor(body: string) {
    this.#body = body;
  }

  run(
    conn: Connection,
    keys: { readonly list: readonly string[] },
    args: readonly string[],
  ): Promise<unknown> {
    const sha = this.#sha;
    if (sha === undefined) {
      return sha1(this.#body).then((digest) => {
        this.#sha = digest;
        return this.run(conn, keys, args);
      });
    }
    const tail = [String(keys.list.length), ...keys.list, ...args];
    return conn.send("EVALSHA", [sha, ...tail]).catch((e: unknown) => {
      if (!isNoScript(e)) throw e;
      return conn.send("EVAL", [this.#body, ...tail]);
    });
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
