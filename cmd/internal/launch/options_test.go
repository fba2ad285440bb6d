package launch

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

func TestEnvReaderReportsMalformedValues(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		set     bool
		read    func(e *envReader) any
		want    any
		wantErr string // "" = no error
	}{
		{"int unset keeps default", "", false, func(e *envReader) any { return e.int("X", 7) }, 7, ""},
		{"int empty keeps default", "", true, func(e *envReader) any { return e.int("X", 7) }, 7, ""},
		{"int parsed", " 42 ", true, func(e *envReader) any { return e.int("X", 7) }, 42, ""},
		{"int malformed", "4k", true, func(e *envReader) any { return e.int("X", 7) }, 7, `X="4k" is not an integer`},
		{"duration parsed", "90s", true, func(e *envReader) any { return e.duration("X", time.Second) }, 90 * time.Second, ""},
		{"duration without unit", "30", true, func(e *envReader) any { return e.duration("X", time.Second) }, time.Second, `X="30" is not a duration`},
		{"duration malformed", "soon", true, func(e *envReader) any { return e.duration("X", time.Second) }, time.Second, `X="soon" is not a duration`},
		{"string set empty is kept", "", true, func(e *envReader) any { return e.str("X", "def") }, "", ""},
		{"string unset keeps default", "", false, func(e *envReader) any { return e.str("X", "def") }, "def", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := envReader{lookup: func(k string) (string, bool) {
				if k == "X" && tt.set {
					return tt.value, true
				}
				return "", false
			}}
			if got := tt.read(&e); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			err := e.err()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			case tt.wantErr != "" && !errors.Is(err, ErrConfig):
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

// Every malformed variable is reported by one start, and Start refuses to run.
func TestStartRefusesMalformedEnvironment(t *testing.T) {
	t.Setenv("FLEETWIRE_GRACE", "10")
	t.Setenv("FLEETWIRE_STREAM_REPLICAS", "three")
	t.Setenv("FLEETWIRE_NATS_LISTEN_PORT", "")
	var o Options
	o.Flags(flag.NewFlagSet("test", flag.ContinueOnError), Options{})
	_, err := Start(context.Background(), o, quietLog())
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("Start: got %v, want an ErrConfig error", err)
	}
	for _, want := range []string{"FLEETWIRE_GRACE", "FLEETWIRE_STREAM_REPLICAS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "FLEETWIRE_NATS_LISTEN_PORT") {
		t.Errorf("error %q names an empty variable, which means the default", err)
	}
}

func TestStartRefusesUnknownService(t *testing.T) {
	_, err := Start(context.Background(), Options{Services: []string{"billing"}}, quietLog())
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `"billing"`) {
		t.Fatalf("got %v, want an ErrConfig error naming \"billing\"", err)
	}
}

func TestMaskURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"user and password", "nats://fleet:s3cret@nats:4222", "nats://***@nats:4222"},
		{"password only", "redis://:s3cret@redis:6379/0", "redis://***@redis:6379/0"},
		{"token as user", "nats://tok3n@nats:4222", "nats://***@nats:4222"},
		{"server list", "nats://a:x@n1:4222,nats://b:y@n2:4222", "nats://***@n1:4222,nats://***@n2:4222"},
		{"no userinfo", "redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
		{"not a url", "fw:", "fw:"},
		{"unparseable with userinfo", "nats://u:p%zz@host", "nats://***@host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maskURL(tt.in); got != tt.want {
				t.Errorf("maskURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// The logged configuration shows the settings an operator needs and none of the secrets.
func TestLoggedOptionsMaskSecrets(t *testing.T) {
	type withSecrets struct {
		Options
		APIToken      string
		AdminPassword string
		SigningKey    []byte `secret:"true"`
		Public        string
	}
	v := withSecrets{
		Options: Options{
			NATS:     bus.Config{URL: "nats://svc:natspass@nats:4222", CredsFile: "/run/secrets/tracking.creds"},
			RedisURL: "redis://default:redispass@redis:6379/0",
			GRPCAddr: ":50051",
			Grace:    3 * time.Second,
		},
		APIToken:      "tokenvalue",
		AdminPassword: "adminpass",
		SigningKey:    []byte("keybytes"),
		Public:        "visible",
	}
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	log.Info("configuration", "options", maskedValue(reflect.ValueOf(v), false))
	got := out.String()
	for _, secret := range []string{"natspass", "redispass", "tokenvalue", "adminpass", "keybytes", "svc:"} {
		if strings.Contains(got, secret) {
			t.Errorf("logged configuration contains %q:\n%s", secret, got)
		}
	}
	for _, want := range []string{`"GRPCAddr":":50051"`, "/run/secrets/tracking.creds", "nats://***@nats:4222", "redis://***@redis:6379/0", `"Grace":"3s"`, `"Public":"visible"`, `"APIToken":"***"`} {
		if !strings.Contains(got, want) {
			t.Errorf("logged configuration lacks %s:\n%s", want, got)
		}
	}

	// Options itself is a LogValuer: logging it directly masks the same way.
	out.Reset()
	log.Info("configuration", "options", v.Options)
	if got := out.String(); strings.Contains(got, "natspass") || !strings.Contains(got, "nats://***@nats:4222") {
		t.Errorf("Options logged without masking:\n%s", got)
	}
}

// The metrics server is supervised: when it stops serving, its Serve returns an error
// (which stops the process) instead of the endpoint vanishing unnoticed.
func TestAdminServerFailureIsReported(t *testing.T) {
	a, err := newAdminServer("127.0.0.1:0", false, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- a.Serve(context.Background()) }()
	a.lis.(*net.TCPListener).Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Serve returned nil after its listener failed; want an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve still running 30s after its listener failed")
	}
}
