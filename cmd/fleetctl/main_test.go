package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

	t.Run("anonymous", func(t *testing.T) {
		t.Setenv("FLEETWIRE_DATA_DIR", t.TempDir()) // no all-in-one credentials to fall back on
		t.Setenv("FLEETCTL_CONFIG", filepath.Join(t.TempDir(), "none.json"))
		var out, errOut bytes.Buffer
		code := run([]string{"--addr", p.GRPCAddr, "--ca", p.CAFile, "vehicles"}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "Unauthenticated") {
			t.Fatalf("without a token: exit %d, stderr %q; want exit 1 and Unauthenticated", code, errOut.String())
		}
	})
	t.Run("login then use", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "fleetwire", "fleetctl.json")
		t.Setenv("FLEETCTL_CONFIG", cfg)
		t.Setenv("FLEETWIRE_DATA_DIR", t.TempDir())
		var out, errOut bytes.Buffer
		if code := run([]string{"login", "--addr", p.GRPCAddr, "--token", p.AdminToken, "--ca", p.CAFile}, &out, &errOut); code != 0 {
			t.Fatalf("login: exit %d: %s", code, errOut.String())
		}
		st, err := os.Stat(cfg)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("config file: %v, mode %v; want 0600", err, st.Mode().Perm())
		}
		out.Reset()
		if code := run([]string{"--addr", p.GRPCAddr, "tokens", "create", "vera", "viewer", "--group", "red"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "fwt_") {
			t.Fatalf("tokens create: exit %d, out %q, stderr %q", code, out.String(), errOut.String())
		}
		out.Reset()
		if code := run([]string{"--addr", p.GRPCAddr, "audit", "--principal", "admin"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "TokenService/CreateToken") {
			t.Fatalf("audit: exit %d, out %q, stderr %q; want the token creation by admin", code, out.String(), errOut.String())
		}
		out.Reset()
		if code := run([]string{"--addr", p.GRPCAddr, "tokens", "list"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "vera") {
			t.Fatalf("tokens list: exit %d, out %q", code, out.String())
		}
	})
}

// fleetctl finds the all-in-one's credentials where the all-in-one puts them.
func TestAllInOneDataDirMatchesLaunch(t *testing.T) {
	t.Setenv("FLEETWIRE_DATA_DIR", "")
	if got, want := allInOneDataDir(), launch.DefaultDataDir(); got != want {
		t.Fatalf("fleetctl looks in %s, the all-in-one writes to %s", got, want)
	}
}
