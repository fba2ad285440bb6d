package redisconn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/redisconn"
	"github.com/fleetwire/fleetwire/pkg/redistest"
)

func TestParseSentinelURL(t *testing.T) {
	for _, tc := range []struct {
		url        string
		ok         bool
		master     string
		addrs      int
		pass, user string
		db         int
	}{
		{url: "redis-sentinel://s1:26379,s2:26379,s3:26379/fleet", ok: true, master: "fleet", addrs: 3},
		{url: "redis-sentinel://:secret@s1:26379/fleet?db=2", ok: true, master: "fleet", addrs: 1, pass: "secret", db: 2},
		{url: "redis-sentinel://app:p:w@s1:26379/fleet", ok: true, master: "fleet", addrs: 1, user: "app", pass: "p:w"},
		{url: "redis-sentinel://s1:26379/", ok: false},
		{url: "redis-sentinel://s1/fleet", ok: false},
		{url: "redis-sentinel://s1:26379/fleet?db=x", ok: false},
		{url: "redis://s1:6379", ok: false},
	} {
		fo, err := redisconn.ParseSentinelURL(tc.url)
		if !tc.ok {
			if !errors.Is(err, redisconn.ErrMalformedURL) {
				t.Errorf("%s: err %v, want ErrMalformedURL", tc.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if fo.MasterName != tc.master || len(fo.SentinelAddrs) != tc.addrs || fo.Password != tc.pass || fo.Username != tc.user || fo.DB != tc.db {
			t.Errorf("%s: got %+v", tc.url, fo)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// redisProc runs redis-server with args until the test ends (or kill).
func redisProc(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func waitPing(t *testing.T, port int) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis on %d does not answer", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A client opened with a redis-sentinel:// URL follows the primary's failover: the
// primary is killed, Sentinel promotes the replica, and the same client writes on and
// reads what was written before.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "REDIS-SERVER NOT INSTALLED: the Sentinel failover test is SKIPPED (apt-get install redis-server)"
		if redistest.Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	primary, replica, sentinel := freePort(t), freePort(t), freePort(t)
	prim := redisProc(t, bin, "--port", fmt.Sprint(primary), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--dbfilename", "p.rdb")
	waitPing(t, primary)
	redisProc(t, bin, "--port", fmt.Sprint(replica), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--dbfilename", "r.rdb",
		"--replicaof", "127.0.0.1", fmt.Sprint(primary))
	waitPing(t, replica)
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(strings.Join([]string{
		fmt.Sprintf("port %d", sentinel),
		"bind 127.0.0.1",
		fmt.Sprintf("sentinel monitor fleet 127.0.0.1 %d 1", primary),
		"sentinel down-after-milliseconds fleet 1000",
		"sentinel failover-timeout fleet 5000",
		"",
	}, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	redisProc(t, bin, conf, "--sentinel")
	waitPing(t, sentinel)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := redisconn.Open(ctx, fmt.Sprintf("redis-sentinel://127.0.0.1:%d/fleet", sentinel))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(ctx, "{veh-1}:state", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The write is on the replica before the primary goes.
	for {
		n, err := c.Do(ctx, "WAIT", 1, 1000).Int()
		if err == nil && n >= 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica never acknowledged: %v", err)
		}
	}

	_ = prim.Process.Kill()
	start := time.Now()
	for {
		err := c.Set(ctx, "{veh-1}:after", "after", 0).Err()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no write after the failover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("writes resumed %s after the primary was killed", time.Since(start).Round(time.Millisecond))
	if got, err := c.Get(ctx, "{veh-1}:state").Result(); err != nil || got != "before" {
		t.Fatalf("after the failover: %q, %v; want the value written before", got, err)
	}
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, fmt.Sprintf("tcp_port:%d", replica)) {
		t.Errorf("the client is not on the promoted replica (port %d)", replica)
	}
}
