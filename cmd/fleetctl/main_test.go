package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
	"github.com/fleetwire/fleetwire/pkg/bus"
)

func TestConsoleAgainstRunningPlatform(t *testing.T) {
	p, err := launch.Start(context.Background(), launch.Options{
		NATS:     bus.Config{URL: bus.Embedded, ListenPort: -1},
		Streams:  bus.StreamConfig{MemoryStorage: true},
		RedisURL: "memory", GRPCAddr: "127.0.0.1:0", Sim: 5, SimSeed: 11, Grace: time.Second,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	ctl := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--addr", p.GRPCAddr}, args...), &out, &errOut)
		return out.String(), errOut.String(), code
	}

	// Wait until all five simulated vehicles are listed.
	deadline := time.Now().Add(60 * time.Second)
	var out string
	for {
		var code int
		out, _, code = ctl("-o", "json", "vehicles")
		if code == 0 && strings.Count(out, "\n") == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleetctl -o json vehicles never listed 5 vehicles; last output:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var first struct {
		VehicleID string `json:"vehicleId"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); err != nil || first.VehicleID == "" {
		t.Fatalf("first JSON line %q: %v", strings.SplitN(out, "\n", 2)[0], err)
	}

	table, _, code := ctl("vehicles")
	if code != 0 || !strings.HasPrefix(table, "VEHICLE") || !strings.Contains(table, first.VehicleID) || !strings.Contains(table, "5 of 5 vehicles") {
		t.Fatalf("fleetctl vehicles (exit %d):\n%s", code, table)
	}

	detail, _, code := ctl("vehicle", first.VehicleID)
	if code != 0 || !strings.Contains(detail, first.VehicleID) {
		t.Fatalf("fleetctl vehicle %s (exit %d):\n%s", first.VehicleID, code, detail)
	}

	_, stderr, code := ctl("vehicle", "no-such-vehicle")
	if code != 1 || !strings.Contains(stderr, "NotFound") {
		t.Fatalf("unknown vehicle: exit %d, stderr %q; want exit 1 and NotFound", code, stderr)
	}

	_, stderr, code = ctl("frobnicate")
	if code != 2 || !strings.Contains(stderr, "unknown command") {
		t.Fatalf("unknown command: exit %d, stderr %q", code, stderr)
	}
}
