package launch

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// taken holds a loopback port for the test's life and returns its address.
func taken(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

func portOptions(t *testing.T) Options {
	return Options{
		NATS:     bus.Config{URL: bus.Embedded, ListenPort: -1},
		Streams:  bus.StreamConfig{MemoryStorage: true},
		RedisURL: "memory", GRPCAddr: "127.0.0.1:0", Grace: time.Second, Services: []string{Tracking},
		DataDir: t.TempDir(), Ephemeral: true, Security: Security{Insecure: true},
	}
}

// An address the operator chose never moves: the process fails and names it. Only the
// all-in-one's defaults fall back, and the platform says which moved.
func TestExplicitPortsNeverMove(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name, flag string
		set        func(o *Options, addr string)
	}{
		{"grpc", "grpc-addr", func(o *Options, a string) { o.GRPCAddr = a }},
		{"metrics", "metrics-addr", func(o *Options, a string) { o.MetricsAddr = a }},
		{"pprof", "pprof-addr", func(o *Options, a string) { o.PprofAddr = a }},
	} {
		t.Run(tc.name+" pinned", func(t *testing.T) {
			addr := taken(t)
			o := portOptions(t)
			tc.set(&o, addr)
			o.FallbackPorts, o.Pinned = true, map[string]bool{tc.flag: true}
			p, err := Start(context.Background(), o, log)
			if err == nil {
				p.Stop()
				t.Fatalf("started with %s on a taken port %s; want a failure", tc.flag, addr)
			}
			if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "in use") {
				t.Fatalf("error %q does not name %s and say it is in use", err, addr)
			}
		})
		t.Run(tc.name+" per-service binary", func(t *testing.T) {
			addr := taken(t)
			o := portOptions(t)
			tc.set(&o, addr)
			if p, err := Start(context.Background(), o, log); err == nil {
				p.Stop()
				t.Fatalf("a binary without FallbackPorts started with %s on a taken port", tc.flag)
			}
		})
	}

	t.Run("default falls back and says so", func(t *testing.T) {
		grpcAddr, metricsAddr := taken(t), taken(t)
		o := portOptions(t)
		o.GRPCAddr, o.MetricsAddr, o.FallbackPorts = grpcAddr, metricsAddr, true
		o.EndpointsFile = filepath.Join(o.DataDir, EndpointsFile)
		p, err := Start(context.Background(), o, log)
		if err != nil {
			t.Fatal(err)
		}
		if p.GRPCAddr == grpcAddr || p.MetricsAddr == metricsAddr {
			t.Fatalf("listening on the taken ports: grpc %s, metrics %s", p.GRPCAddr, p.MetricsAddr)
		}
		if p.Moved["grpc"] != grpcAddr || p.Moved["metrics"] != metricsAddr {
			t.Fatalf("Moved = %v; want grpc from %s and metrics from %s", p.Moved, grpcAddr, metricsAddr)
		}
		data, err := os.ReadFile(o.EndpointsFile)
		if err != nil {
			t.Fatal(err)
		}
		var ep Endpoints
		if err := json.Unmarshal(data, &ep); err != nil || ep.GRPC != p.GRPCAddr || ep.Metrics != p.MetricsAddr || ep.NATS == "" {
			t.Fatalf("endpoints file %s: %v; want grpc %s, metrics %s and nats", data, err, p.GRPCAddr, p.MetricsAddr)
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(o.EndpointsFile); !os.IsNotExist(err) {
			t.Fatalf("endpoints file still there after stop: %v", err)
		}
	})

	t.Run("embedded nats port pinned", func(t *testing.T) {
		addr := taken(t)
		_, port, _ := net.SplitHostPort(addr)
		o := portOptions(t)
		o.NATS.ListenPort = atoi(t, port)
		if p, err := Start(context.Background(), o, log); err == nil {
			p.Stop()
			t.Fatalf("embedded NATS started on the taken port %s", port)
		} else if !strings.Contains(err.Error(), addr) {
			t.Fatalf("error %q does not name %s", err, addr)
		}
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Pinned comes from the environment (Flags) and from the command line (PinSetFlags).
func TestPinnedAddresses(t *testing.T) {
	t.Setenv("FLEETWIRE_METRICS_ADDR", "127.0.0.1:9999")
	fs := flag.NewFlagSet("fleetwire", flag.ContinueOnError)
	var o Options
	o.Flags(fs, Options{GRPCAddr: "127.0.0.1:50051", MetricsAddr: "127.0.0.1:9464"})
	o.TeltonikaFlags(fs, TeltonikaOptions{TCPAddr: "127.0.0.1:5027"})
	if err := fs.Parse([]string{"--teltonika-tcp-addr", "0.0.0.0:5027"}); err != nil {
		t.Fatal(err)
	}
	o.PinSetFlags(fs)
	want := map[string]bool{"metrics-addr": true, "teltonika-tcp-addr": true}
	for _, name := range []string{"grpc-addr", "metrics-addr", "pprof-addr", "teltonika-tcp-addr", "teltonika-udp-addr"} {
		if o.Pinned[name] != want[name] {
			t.Errorf("Pinned[%s] = %v, want %v", name, o.Pinned[name], want[name])
		}
	}
	o.FallbackPorts = true
	if o.fallback("metrics-addr") || !o.fallback("grpc-addr") {
		t.Errorf("fallback: metrics %v (want false), grpc %v (want true)", o.fallback("metrics-addr"), o.fallback("grpc-addr"))
	}
}
