-- Publishes one message of a topic: the next offset, the stream, pub/sub.
-- Atomic (a script runs alone), so every node receives a topic's messages
-- in offset order.
--
-- KEYS[1] epoch, KEYS[2] offset, KEYS[3] stream: the topic's, one hash slot
-- KEYS[4] (on one Redis only) the sorted set of every topic, by expiry
-- ARGV[1] a new epoch, used if the topic has none
-- ARGV[2] the message's kind (t or b), ARGV[3] its bytes
-- ARGV[4] the stream's MAXLEN, ARGV[5] the keys' TTL (ms)
-- ARGV[6] the channel, ARGV[7] the payload's header (magic, kind, node)
-- ARGV[8] the most topics there may be (with KEYS[4])
-- ARGV[9] the topic, ARGV[10] PUBLISH, or SPUBLISH on a Redis Cluster
-- Returns {epoch, offset}.
local time = redis.call('TIME')
local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  if KEYS[4] then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ms)
    if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[8]) then
      return redis.error_reply('TOOMANY topics')
    end
  end
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[1], epoch)
end
local offset = string.format('%d', redis.call('INCR', KEYS[2]))
local now = string.format('%d', ms)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], offset .. '-0', 'k', ARGV[2], 'd', ARGV[3], 't', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if KEYS[4] then
  redis.call('ZADD', KEYS[4], ms + tonumber(ARGV[5]), ARGV[9])
end
redis.call(ARGV[10], ARGV[6], ARGV[7] .. offset .. ':' .. epoch .. ':' .. ARGV[3])
return {epoch, offset}
