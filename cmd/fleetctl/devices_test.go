package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
	"github.com/fleetwire/fleetwire/pkg/bus"
)

// fleetctl devices against a running devices service over TLS with the admin token: the
// credential is printed once with how to use it, and revoke and rotate show in list/show.
func TestDevicesCommands(t *testing.T) {
	p, err := launch.Start(context.Background(), launch.Options{
		NATS:     bus.Config{URL: bus.Embedded, ListenPort: -1},
		Streams:  bus.StreamConfig{MemoryStorage: true},
		RedisURL: "memory", GRPCAddr: "127.0.0.1:0", Grace: time.Second,
		DataDir: t.TempDir(), Services: []string{launch.Devices},
		Devices: launch.DevicesOptions{NATSURL: "nats://fleet.example:4222"},
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
	password := regexp.MustCompile(`password:\s+(\S+)`)

	out, errOut, code := ctl("devices", "add", "veh-1", "--model", "fmc130")
	m := password.FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "nats://fleet.example:4222") || !strings.Contains(out, "user:      veh-1") || !strings.Contains(out, "shown only now") {
		t.Fatalf("devices add (exit %d, %s):\n%s", code, errOut, out)
	}
	first := m[1]

	_, errOut, code = ctl("devices", "add", "veh-1")
	if code != 1 || !strings.Contains(errOut, "AlreadyExists") {
		t.Fatalf("second add: exit %d, %q; want AlreadyExists", code, errOut)
	}
	_, errOut, code = ctl("devices", "add", "veh.*")
	if code != 1 || !strings.Contains(errOut, "InvalidArgument") {
		t.Fatalf("add with a wildcard: exit %d, %q; want InvalidArgument", code, errOut)
	}

	out, errOut, code = ctl("devices", "list")
	if code != 0 || !strings.Contains(out, "veh-1") || !strings.Contains(out, "active") || !strings.Contains(out, "fmc130") || !strings.Contains(errOut, "1 devices") {
		t.Fatalf("devices list (exit %d):\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, first) {
		t.Fatal("devices list shows the secret")
	}

	out, _, code = ctl("devices", "revoke", "veh-1")
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("devices revoke (exit %d):\n%s", code, out)
	}
	out, _, code = ctl("devices", "show", "veh-1")
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("devices show after revoke (exit %d):\n%s", code, out)
	}

	out, _, code = ctl("devices", "rotate", "veh-1")
	m = password.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] == first {
		t.Fatalf("devices rotate (exit %d): want a new password:\n%s", code, out)
	}
	out, _, _ = ctl("-o", "json", "devices", "show", "veh-1")
	if !strings.Contains(out, `"DEVICE_STATE_ACTIVE"`) {
		t.Fatalf("devices show after rotate: %s; want active again", out)
	}

	_, errOut, code = ctl("devices", "show", "nobody")
	if code != 1 || !strings.Contains(errOut, "NotFound") {
		t.Fatalf("show unknown: exit %d, %q", code, errOut)
	}
	_, errOut, code = ctl("devices", "frobnicate")
	if code == 0 || !strings.Contains(errOut, "unknown subcommand") {
		t.Fatalf("unknown subcommand: exit %d, %q; want a refusal", code, errOut)
	}
}
