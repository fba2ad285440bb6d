package redisconn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/redisconn"
	"github.com/fleetwire/fleetwire/pkg/redistest"
)

// A server that does not answer is an outage; Redis's own answers are not.
func TestOutagesAreMarked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer down.Close()
	redisconn.MarkOutages(down)
	if err := down.Get(ctx, "k").Err(); !errors.Is(err, apierr.ErrUnavailable) {
		t.Errorf("GET on a closed port: got %v, want ErrUnavailable", err)
	}
	_, err := down.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); return nil })
	if !errors.Is(err, apierr.ErrUnavailable) {
		t.Errorf("pipeline on a closed port: got %v, want ErrUnavailable", err)
	}

	up := redistest.Client(t)
	redisconn.MarkOutages(up)
	prefix := redistest.Prefix(t, up)
	if err := up.Get(ctx, prefix+"missing").Err(); err != redis.Nil {
		t.Errorf("GET of a missing key: got %v, want redis.Nil itself", err)
	}
	up.Set(ctx, prefix+"s", "x", 0)
	if err := up.HGet(ctx, prefix+"s", "f").Err(); err == nil || errors.Is(err, apierr.ErrUnavailable) {
		t.Errorf("HGET on a string: got %v, want Redis's WRONGTYPE answer, not an outage", err)
	}
}

func TestOpenHidesMalformedURL(t *testing.T) {
	_, err := redisconn.Open(context.Background(), "redis://user:s3cret@host:notaport")
	if err == nil {
		t.Fatal("got nil, want an error")
	}
	if got := err.Error(); strings.Contains(got, "s3cret") {
		t.Errorf("error %q quotes the password", got)
	}
}
