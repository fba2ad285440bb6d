package storeguard_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

// The fence admits reads and writes while the marker is the epoch and refuses them, and
// applies nothing, once the marker is gone or another; the refusal reaches onLost.
func TestFence(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	var lost []string
	f := storeguard.NewFence(p+"epoch", func(found string) { lost = append(lost, found) })
	write := func(key string) error {
		return f.Write(ctx, c, func(pp redis.Pipeliner) error {
			pp.Set(ctx, key, "x", 0)
			return nil
		})
	}
	read := func(key string) (string, error) {
		var g *redis.StringCmd
		err := f.Read(ctx, c, func(pp redis.Pipeliner) error {
			g = pp.Get(ctx, key)
			return nil
		})
		if err != nil {
			return "", err
		}
		v, err := g.Result()
		if errors.Is(err, redis.Nil) {
			return "", nil
		}
		return v, err
	}

	// Not armed: plain transactions.
	if err := write(p + "a"); err != nil {
		t.Fatalf("unarmed write: %v", err)
	}
	if v, err := read(p + "a"); err != nil || v != "x" {
		t.Fatalf("unarmed read: %q, %v", v, err)
	}

	if err := c.Set(ctx, f.Key(), "e1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	f.SetEpoch("e1")
	tests := []struct {
		name   string
		marker string // "" deletes it
		ok     bool
	}{
		{"marker is the epoch", "e1", true},
		{"marker gone (restarted empty)", "", false},
		{"another generation", "e2", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.marker == "" {
				c.Del(ctx, f.Key())
			} else {
				c.Set(ctx, f.Key(), tt.marker, 0)
			}
			key := p + "k" + string(rune('0'+i))
			werr := write(key)
			_, rerr := read(p + "a")
			if tt.ok {
				if werr != nil || rerr != nil {
					t.Fatalf("write %v, read %v; want both admitted", werr, rerr)
				}
				if n, _ := c.Exists(ctx, key).Result(); n != 1 {
					t.Error("admitted write not applied")
				}
				return
			}
			if !errors.Is(werr, storeguard.ErrStoreLost) || !errors.Is(rerr, storeguard.ErrStoreLost) {
				t.Fatalf("write %v, read %v; want ErrStoreLost for both", werr, rerr)
			}
			if n, _ := c.Exists(ctx, key).Result(); n != 0 {
				t.Error("refused write applied")
			}
			if len(lost) == 0 || lost[len(lost)-1] != tt.marker {
				t.Errorf("onLost saw %q, want %q last", lost, tt.marker)
			}
		})
	}
}

// A guard's fence carries the epoch Prepare settled on, and a refusal marks the store lost.
func TestGuardFenceMarksTheStoreLost(t *testing.T) {
	g, c, ns := preparedGuard(t)
	ctx := context.Background()
	f := g.Fence()
	if err := f.Write(ctx, c, func(pp redis.Pipeliner) error { pp.Set(ctx, ns+"x", "1", 0); return nil }); err != nil {
		t.Fatalf("write against the prepared store: %v", err)
	}
	c.Del(ctx, f.Key())
	if err := f.Write(ctx, c, func(pp redis.Pipeliner) error { pp.Set(ctx, ns+"y", "1", 0); return nil }); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Fatalf("write after the loss: %v, want ErrStoreLost", err)
	}
	if g.OK() {
		t.Error("the guard did not learn of the loss from its fence")
	}
	if err := g.Check(ctx); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("Check after the fence refused: %v", err)
	}
}

// preparedGuard is a guard prepared against a new store.
func preparedGuard(t *testing.T) (*storeguard.Guard, *redis.Client, string) {
	t.Helper()
	ctx := context.Background()
	rdb := redistest.Client(t)
	ns := redistest.Prefix(t, rdb) + "svc:"
	m, err := storeguard.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := storeguard.Config{Service: "svc", Namespace: ns, AllPartitions: true,
		Durables: []storeguard.Durable{{Stream: bus.TelemetryStream, Name: "svc-p00"}}}
	g := storeguard.New(cfg, rdb, natstest.Bus(t), m, quiet())
	if _, err := g.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	return g, rdb, ns
}
