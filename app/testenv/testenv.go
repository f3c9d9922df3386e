// Package testenv gives tests real dependencies: the Redis named by
// REDIS_TEST_ADDR (each test package leases one logical database of it and
// every test starts with that database empty), or an in-process miniredis
// when it is unset; and a private redis-server process for tests that stop
// or stall Redis.
//
// With CONTROLPLANE_REQUIRE_SERVICES=1 (as .ci/run sets), every test that
// would skip for a missing service fails instead.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/embedredis"
)

// Required reports whether missing services must fail tests, not skip them.
func Required() bool { return os.Getenv("CONTROLPLANE_REQUIRE_SERVICES") == "1" }

// SkipOrFail skips the test with reason, or fails it when services are
// required.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("CONTROLPLANE_REQUIRE_SERVICES=1 but %s", reason)
	}
	t.Skip(reason)
}

var (
	leaseOnce sync.Once
	leaseDB   int
	leaseErr  error
)

// leaseKey is the key in database 0 that reserves database n for one test
// process; it expires so a crashed process frees its database.
func leaseKey(n int) string { return "controlplane-test-lease:" + strconv.Itoa(n) }

// leaseDatabase reserves a logical database 1..15 of the shared Redis for
// this test process, so packages that run in parallel never share one.
func leaseDatabase(addr string) (int, error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for n := 1; n <= 15; n++ {
		ok, err := rdb.SetNX(ctx, leaseKey(n), os.Getpid(), 20*time.Minute).Result()
		if err != nil {
			return 0, fmt.Errorf("lease a test database on %s: %w", addr, err)
		}
		if ok {
			return n, nil
		}
	}
	return 0, fmt.Errorf("no free test database on %s: all of 1..15 are leased (keys %s*)", addr, "controlplane-test-lease:")
}

// ReleaseDatabase frees this process's database lease; TestMain calls it.
func ReleaseDatabase() {
	addr := os.Getenv("REDIS_TEST_ADDR")
	if addr == "" || leaseDB == 0 {
		return
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rdb.Del(ctx, leaseKey(leaseDB))
}

// Main runs a package's tests and releases the database lease afterwards.
// Use it as: func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	ReleaseDatabase()
	return code
}

// Redis returns the address of an empty Redis for this test and a client on
// it. Tests that use it must not run in parallel within their package.
func Redis(t testing.TB) (addr string, db int, client *goredis.Client) {
	t.Helper()
	addr = os.Getenv("REDIS_TEST_ADDR")
	if addr == "" {
		if Required() {
			t.Fatal("CONTROLPLANE_REQUIRE_SERVICES=1 but REDIS_TEST_ADDR is not set")
		}
		mr := miniredis.RunT(t)
		t.Cleanup(embedredis.ExpireOnWallClock(mr))
		client = goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { client.Close() })
		return mr.Addr(), 0, client
	}
	leaseOnce.Do(func() { leaseDB, leaseErr = leaseDatabase(addr) })
	if leaseErr != nil {
		t.Fatal(leaseErr)
	}
	client = goredis.NewClient(&goredis.Options{Addr: addr, DB: leaseDB})
	t.Cleanup(func() { client.Close() })
	if err := client.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("flush test database %d on %s: %v", leaseDB, addr, err)
	}
	return addr, leaseDB, client
}

// RedisServer is a redis-server process owned by one test, which the test
// may stop, restart empty, or pause.
type RedisServer struct {
	Addr string
	t    testing.TB
	cmd  *exec.Cmd
	dir  string
}

// StartRedisServer starts a private redis-server on a free port of
// 127.0.0.1. It skips (or fails, when services are required) without the
// redis-server binary.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		SkipOrFail(t, "redis-server is not on PATH; install Redis (Debian package redis-server) to run this test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &RedisServer{Addr: addr, t: t, dir: t.TempDir()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server, empty, and waits until it responds to PING.
func (s *RedisServer) Start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: s.Addr})
	defer rdb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s did not respond to PING within 5 s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server; what it held is lost.
func (s *RedisServer) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
