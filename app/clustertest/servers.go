// Package clustertest runs the control plane on the Redis topologies of a
// production deployment and checks the guarantees that span replicas. Its
// tests start a three-master Redis Cluster and a Sentinel with one master
// from the redis-server binary on free ports of 127.0.0.1, run several
// replicas on one Redis, and shut a replica down under load behind a load
// balancer. They also check the deployment material under docs/deploy.
//
// The helpers in this file start the Redis servers. Without redis-server
// and redis-cli on PATH the tests skip, or fail when
// CONTROLPLANE_REQUIRE_SERVICES=1.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/testenv"
)

// clusterBusOffset is the distance between a Cluster node's client port and
// its cluster bus port, fixed by Redis.
const clusterBusOffset = 10000

// startTimeout bounds how long a server or a topology may take to come up.
const startTimeout = 10 * time.Second

// process is one redis-server owned by a test. Stop kills it.
type process struct {
	addr string
	dir  string
	cmd  *exec.Cmd
}

// logTail returns the last lines of the server's log, for failure messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(filepath.Join(p.dir, "redis.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

func (p *process) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// requireBinaries skips or fails the test unless every named binary is on
// PATH.
func requireBinaries(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			testenv.SkipOrFail(t, name+" is not on PATH; install Redis (Debian packages redis-server and redis-tools) to run this test")
		}
	}
}

// freePort returns a port of 127.0.0.1 that nothing listens on. With
// withBus, port+10000 is free too, as a Cluster node's bus port must be.
// Another process may take the port before the caller binds it; the caller
// then fails to start and reports it.
func freePort(t testing.TB, withBus bool) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if !withBus {
			ln.Close()
			return port
		}
		if port+clusterBusOffset > 65535 {
			ln.Close()
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+clusterBusOffset))
		ln.Close()
		if err != nil {
			continue
		}
		bus.Close()
		return port
	}
	t.Fatal("found no free port pair (port, port+10000) on 127.0.0.1 in 100 tries")
	return 0
}

// startProcess runs redis-server with args in its own temporary directory,
// logging to redis.log there, and waits until addr replies to PING. The test's
// cleanup kills it.
func startProcess(t testing.TB, addr string, args ...string) *process {
	t.Helper()
	p := &process{addr: addr, dir: t.TempDir()}
	args = append(args, "--dir", p.dir, "--logfile", filepath.Join(p.dir, "redis.log"))
	p.cmd = exec.Command("redis-server", args...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start redis-server %s: %v", strings.Join(args, " "), err)
	}
	t.Cleanup(p.stop)

	rdb := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(startTimeout)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not reply to PING within %s; its log ends:\n%s", addr, startTimeout, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// Cluster is a Redis Cluster of three masters without replicas, owned by
// one test.
type Cluster struct {
	// Addrs are the masters' host:port addresses, which serve as seeds.
	Addrs []string
	nodes []*process
}

// StartCluster starts three redis-server processes in cluster mode on free
// ports of 127.0.0.1, joins them with redis-cli --cluster create, which
// spreads the 16384 hash slots over them, and waits until every node
// reports cluster_state:ok. The test's cleanup stops them.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	requireBinaries(t, "redis-server", "redis-cli")

	c := &Cluster{}
	for range 3 {
		port := freePort(t, true)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		dir := t.TempDir()
		node := startProcess(t, addr,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
			"--save", "", "--appendonly", "no")
		c.Addrs = append(c.Addrs, addr)
		c.nodes = append(c.nodes, node)
	}

	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	deadline := time.Now().Add(startTimeout)
	for _, node := range c.nodes {
		rdb := goredis.NewClient(&goredis.Options{Addr: node.addr, MaxRetries: -1})
		for {
			info, err := rdb.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				rdb.Close()
				t.Fatalf("cluster node %s did not report cluster_state:ok within %s (CLUSTER INFO: %q, err %v); its log ends:\n%s",
					node.addr, startTimeout, info, err, node.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
		rdb.Close()
	}
	return c
}

// Client returns a cluster client on c, closed by the test's cleanup.
func (c *Cluster) Client(t testing.TB) *goredis.ClusterClient {
	t.Helper()
	rdb := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Sentinel is one Redis master watched by one Sentinel, owned by one test.
type Sentinel struct {
	// MasterName is the name the Sentinel monitors the master under.
	MasterName string
	// MasterAddr is the master's host:port; clients should ask the Sentinel.
	MasterAddr string
	// SentinelAddr is the Sentinel's host:port.
	SentinelAddr string
}

// StartSentinel starts a redis-server master and a Sentinel that monitors
// it as "mymaster" with a quorum of one, on free ports of 127.0.0.1, and
// waits until the Sentinel reports the master's address. The test's
// cleanup stops both.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	requireBinaries(t, "redis-server")

	s := &Sentinel{MasterName: "mymaster"}
	masterPort := freePort(t, false)
	s.MasterAddr = "127.0.0.1:" + strconv.Itoa(masterPort)
	startProcess(t, s.MasterAddr,
		"--port", strconv.Itoa(masterPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")

	// Sentinel rewrites its configuration file, so it gets its own copy.
	sentinelPort := freePort(t, false)
	s.SentinelAddr = "127.0.0.1:" + strconv.Itoa(sentinelPort)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\nsentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 5000\n",
		sentinelPort, s.MasterName, masterPort, s.MasterName)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatalf("write %s: %v", conf, err)
	}
	sentinel := startProcess(t, s.SentinelAddr, conf, "--sentinel")

	rdb := goredis.NewSentinelClient(&goredis.Options{Addr: s.SentinelAddr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		addr, err := rdb.GetMasterAddrByName(context.Background(), s.MasterName).Result()
		if err == nil && len(addr) == 2 && net.JoinHostPort(addr[0], addr[1]) == s.MasterAddr {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("Sentinel on %s did not report master %s at %s within %s (got %v, err %v); its log ends:\n%s",
				s.SentinelAddr, s.MasterName, s.MasterAddr, startTimeout, addr, err, sentinel.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
