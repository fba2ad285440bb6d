// Package redistest finds the real Redis server that tests run against.
//
// Tests call Client(t) for a connection to REDIS_URL (default redis://127.0.0.1:6379) and
// Prefix(t, c) for a key prefix of their own, deleted when the test ends.
// When no server answers the test is skipped with a loud message, unless
// FLEETWIRE_REQUIRE_REDIS=1 (set by CI), which makes it a failure.
package redistest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/redisconn"
)

// DefaultURL is used when REDIS_URL is unset.
const DefaultURL = "redis://127.0.0.1:6379"

// URL returns the Redis URL tests use.
func URL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Ping checks that a Redis server answers at URL() within two seconds.
func Ping(ctx context.Context) error {
	opts, err := redis.ParseURL(URL())
	if err != nil {
		return fmt.Errorf("REDIS_URL %q: %w", URL(), err)
	}
	probe := redis.NewClient(opts)
	defer probe.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return probe.Ping(ctx).Err()
}

// Unavailable is the message of a skipped Redis test (and of make test's own check:
// go test shows a passing package's output only with -v).
func Unavailable(err error) string {
	return fmt.Sprintf("REDIS NOT AVAILABLE at %s (%v): Redis-backed tests are SKIPPED. Start redis-server or set REDIS_URL; CI sets FLEETWIRE_REQUIRE_REDIS=1 to make this a failure.", URL(), err)
}

// Required reports whether a missing Redis is a failure rather than a skip.
func Required() bool { return os.Getenv("FLEETWIRE_REQUIRE_REDIS") == "1" }

var (
	warnOnce sync.Once
	nextDB   atomic.Int32
)

// Client returns a client, or skips (fails, when required) the test when Redis is unreachable.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(URL())
	if err != nil {
		t.Fatalf("REDIS_URL %q: %v", URL(), err)
	}
	if err := Ping(context.Background()); err != nil {
		msg := Unavailable(err)
		if Required() {
			t.Fatal(msg)
		}
		warnOnce.Do(func() { fmt.Fprintln(os.Stderr, "\n*** "+msg+" ***") })
		t.Skip(msg)
	}
	c := redis.NewClient(opts)
	// As the binaries' clients are: outages wrap apierr.ErrUnavailable.
	redisconn.MarkOutages(c)
	return c
}

// Prefix returns a key prefix unique to this test run, so tests in different packages
// (separate processes) sharing one Redis database cannot collide. The keys under it are
// deleted when the test ends.
func Prefix(t testing.TB, c *redis.Client) string {
	t.Helper()
	p := "fwtest:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":" + strconv.Itoa(int(nextDB.Add(1))) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 500 {
				c.Del(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		c.Close()
	})
	return p
}

// Unreachable returns a client of a port where no Redis listens, marked like the
// binaries' clients: every command fails with a driver error wrapping
// apierr.ErrUnavailable. Edge tests use it to show an outage answers Unavailable without
// the driver's text.
func Unreachable(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: UnreachableAddr, MaxRetries: -1, DialTimeout: time.Second})
	redisconn.MarkOutages(c)
	t.Cleanup(func() { c.Close() })
	return c
}

// UnreachableAddr is where Unreachable's client connects (port 1: nothing listens there
// and connecting fails at once); tests check that it never appears in a client's error.
const UnreachableAddr = "127.0.0.1:1"

// KeysUnder fails t for every key under prefix (a test's Prefix) that does not start
// with namespace: a store's KeyPrefix must cover all it writes, or wiping a lost store
// (pkg/storeguard) would leave some of it behind. Register it with t.Cleanup after Prefix,
// so it runs before Prefix's clean-up deletes the keys.
func KeysUnder(t testing.TB, c *redis.Client, prefix, namespace string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if k := iter.Val(); len(k) < len(namespace) || k[:len(namespace)] != namespace {
			t.Errorf("key %q is outside the store's namespace %q", k, namespace)
		}
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan %s*: %v", prefix, err)
	}
}
