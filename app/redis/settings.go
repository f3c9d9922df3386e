package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"
)

// settingsKey holds the runtime overrides made on the Settings page; a field
// that is absent means the environment's value is in force.
const settingsKey = "settings:overrides" // hash: setting name -> value as text

// SettingOverrides returns the runtime overrides.
func (s *Store) SettingOverrides(ctx context.Context) (map[string]string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	m, err := s.rdb.HGetAll(ctx, settingsKey).Result()
	if err != nil {
		return nil, wrap("read settings", err)
	}
	return m, nil
}

// SetSettingOverrides writes set and removes reset, in one transaction, and
// announces the change so every replica reloads at once.
func (s *Store) SetSettingOverrides(ctx context.Context, set map[string]string, reset []string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		if len(reset) > 0 {
			p.HDel(ctx, settingsKey, reset...)
		}
		for k, v := range set {
			p.HSet(ctx, settingsKey, k, v)
		}
		p.Publish(ctx, s.channel, "settings")
		return nil
	})
	if err != nil {
		return wrap("write settings", err)
	}
	return nil
}
