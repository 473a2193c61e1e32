-- Where a topic stands, and what it retains after an offset: for a
-- subscription that begins or resumes. Makes the epoch if there is none.
--
-- KEYS[1] epoch, KEYS[2] offset, KEYS[3] stream: the topic's, one hash slot
-- KEYS[4] (on one Redis only) the sorted set of every topic, by expiry
-- ARGV[1] a new epoch, used if the topic has none
-- ARGV[2] the keys' TTL (ms)
-- ARGV[3] the offset to resume after, or -1
-- ARGV[4] how many entries to return at most
-- ARGV[5] the most topics there may be (with KEYS[4]), ARGV[6] the topic
-- Returns {epoch, last offset, now (ms), entries after ARGV[3]}.
local time = redis.call('TIME')
local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  if KEYS[4] then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ms)
    if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[5]) then
      return redis.error_reply('TOOMANY topics')
    end
  end
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[1], epoch, 'PX', ARGV[2])
end
if KEYS[4] then
  redis.call('ZADD', KEYS[4], ms + tonumber(ARGV[2]), ARGV[6])
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local now = string.format('%d', ms)
local since = tonumber(ARGV[3])
local entries = {}
if since >= 0 and since < last then
  entries = redis.call('XRANGE', KEYS[3], string.format('%d', since + 1) .. '-0', '+', 'COUNT', ARGV[4])
end
return {epoch, string.format('%d', last), now, entries}
