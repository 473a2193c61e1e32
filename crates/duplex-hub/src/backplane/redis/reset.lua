-- Starts a topic's offsets again (a new epoch) when Redis holds fewer than
-- a node delivered in the same epoch: Redis came back from an older
-- snapshot, or a replica that had not seen the last writes took over, and
-- would otherwise give out offsets that were used already.
--
-- KEYS[1] epoch, KEYS[2] offset, KEYS[3] stream: the topic's, one hash slot
-- ARGV[1] the epoch the node delivered, ARGV[2] the last offset it did
-- ARGV[3] a new epoch, ARGV[4] the keys' TTL (ms)
-- Returns {epoch or '', last offset}, as they are after it.
local epoch = redis.call('GET', KEYS[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch == ARGV[1] and last < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  redis.call('DEL', KEYS[2], KEYS[3])
  return {ARGV[3], '0'}
end
return {epoch or '', string.format('%d', last)}
