// Package embedredis adapts miniredis, the in-process Redis of a trial run
// and of tests without a real Redis, to behave like a real server where the
// control plane depends on it.
package embedredis

import (
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// ExpireOnWallClock makes keys of mr expire as time passes, as on a real
// Redis, because miniredis counts TTLs down only in FastForward. It
// advances them once a second: one pass over the keys a second, where
// miniredis' own ClockTTL makes that pass on every command. The returned
// function stops it and waits until it has stopped.
func ExpireOnWallClock(mr *miniredis.Miniredis) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-ticker.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-stopped
		})
	}
}
