package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// lockKey is held by the replica that runs the periodic jobs.
const lockKey = "scheduler:lock" // string: holder id, expires unless renewed

// renewScript extends the lock only if the caller still holds it.
//
//	KEYS[1] the lock key
//	ARGV[1] the holder id
//	ARGV[2] the new expiry in milliseconds
var renewScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the lock only if the caller holds it.
//
//	KEYS[1] the lock key
//	ARGV[1] the holder id
var releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// AcquireOrRenewLock takes the scheduler lock for holder, or extends it when
// holder has it already. It returns whether holder holds it afterwards.
func (s *Store) AcquireOrRenewLock(ctx context.Context, holder string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ok, err := s.rdb.SetNX(ctx, lockKey, holder, ttl).Result()
	if err != nil {
		return false, wrap("acquire scheduler lock", err)
	}
	if ok {
		return true, nil
	}
	n, err := renewScript.Run(ctx, s.rdb, []string{lockKey}, holder, ttl.Milliseconds()).Int()
	if err != nil {
		return false, wrap("renew scheduler lock", err)
	}
	return n == 1, nil
}

// ReleaseLock gives the lock up if holder has it, so another replica takes
// over at once instead of after the expiry.
func (s *Store) ReleaseLock(ctx context.Context, holder string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := releaseScript.Run(ctx, s.rdb, []string{lockKey}, holder).Err(); err != nil {
		return wrap("release scheduler lock", err)
	}
	return nil
}
