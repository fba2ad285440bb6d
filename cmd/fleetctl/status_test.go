package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// fleetctl status against a running platform: every service, its consumers and its
// store, ready once caught up.
func TestStatusAgainstRunningPlatform(t *testing.T) {
	p, err := launch.Start(context.Background(), launch.Options{
		NATS:     bus.Config{URL: bus.Embedded, ListenPort: -1},
		Streams:  bus.StreamConfig{MemoryStorage: true},
		RedisURL: "memory", GRPCAddr: "127.0.0.1:0", Sim: 3, SimSeed: 5, Grace: time.Second,
		DataDir: t.TempDir(),
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	ctl := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--addr", p.GRPCAddr, "--token", p.AdminToken, "--ca", p.CAFile}, args...), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	deadline := time.Now().Add(60 * time.Second)
	var out string
	for {
		var code int
		var stderr string
		out, stderr, code = ctl("status")
		if code != 0 {
			t.Fatalf("fleetctl status: exit %d: %s", code, stderr)
		}
		if strings.HasPrefix(out, "ready:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready; last output:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, svc := range []string{"tracking", "geofence", "maintenance", "dispatch"} {
		if !strings.Contains(out, "\n"+svc+" ") {
			t.Errorf("no line for %s:\n%s", svc, out)
		}
	}
	if !strings.Contains(out, "memory, rebuilt at start") {
		t.Errorf("stores not described:\n%s", out)
	}
	detail, _, code := ctl("status", "--consumers")
	// Per-service durables, or the all-in-one's shared ones.
	if code != 0 || !strings.Contains(detail, "-p00 ") || !strings.Contains(detail, "dispatch-events") {
		t.Errorf("status --consumers (exit %d):\n%s", code, detail)
	}
	js, _, code := ctl("-o", "json", "status")
	if code != 0 || !strings.Contains(js, `-p15"`) {
		t.Errorf("status -o json (exit %d):\n%s", code, js)
	}
}

func TestStatusTable(t *testing.T) {
	resp := &fleetv1.GetStatusResponse{
		Services: []string{"tracking", "geofence"}, ReadyDetail: "a store lost its data", CatchUpBound: 1000,
		Consumers: []*fleetv1.ConsumerStatus{
			{Durable: "tracking-p00", Service: "tracking", Pending: 5000, AckFloorLag: 5000, AppliedLag: 5000},
			{Durable: "tracking-p01", Service: "tracking", Pending: 10, AckPending: 2, AckFloorLag: 12, AppliedLag: 12, CaughtUp: true},
			{Durable: "geofence-p00", Service: "geofence", AppliedLag: -1},
		},
		Stores: []*fleetv1.StoreStatus{
			{Service: "tracking", Backend: "redis", EpochOk: false},
			{Service: "geofence", Backend: "redis", EpochOk: true, Rebuilt: true},
		},
	}
	var out bytes.Buffer
	if err := writeStatus(&out, resp, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"NOT READY: a store lost its data",
		"tracking  2          5010     2            5012           catching up (1)  redis LOST (rebuilding)",
		"geofence  1          0        0            0              starting (1)     redis epoch ok, rebuilt at start",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}
