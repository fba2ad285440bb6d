package grpcserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
)

var (
	errMissing = errors.New("thing not found")
	errBad     = errors.New("bad thing")
)

func TestErrorTable(t *testing.T) {
	table := grpcserver.ErrorTable{Service: "things", Rules: []grpcserver.ErrorRule{
		{Err: errMissing, Code: codes.NotFound},
		{Err: errBad, Code: codes.InvalidArgument},
	}}
	driver := errors.New("dial tcp 10.1.2.3:6379: connect: connection refused")
	tests := []struct {
		name     string
		in       error
		want     codes.Code
		wantMsg  string // substring of the client's message
		hidden   string // must not reach the client
		wantLogs bool
	}{
		{"nil", nil, codes.OK, "", "", false},
		{"sentinel", fmt.Errorf("thing t1: %w", errMissing), codes.NotFound, "thing t1: thing not found", "", false},
		{"second rule", fmt.Errorf("%w: too long", errBad), codes.InvalidArgument, "too long", "", false},
		{"status passes through", status.Error(codes.Aborted, "retry"), codes.Aborted, "retry", "", false},
		{"outage hides driver text", fmt.Errorf("load v1: %w", apierr.Unavailable("redis", driver)), codes.Unavailable, "things is unavailable", "10.1.2.3", true},
		{"outage wins over a sentinel", fmt.Errorf("%w: %w", errMissing, apierr.Unavailable("nats", driver)), codes.Unavailable, "retry later", "connection refused", true},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), codes.Canceled, "cancelled", "", false},
		{"unknown is internal", driver, codes.Internal, "internal error", "10.1.2.3", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			err := table.Status(slog.New(slog.NewTextHandler(&logs, nil)), tt.in)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v, want %v (%v)", got, tt.want, err)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", msg, tt.wantMsg)
			}
			if tt.hidden != "" && strings.Contains(msg, tt.hidden) {
				t.Errorf("message %q reveals %q", msg, tt.hidden)
			}
			if logged := logs.Len() > 0; logged != tt.wantLogs {
				t.Errorf("logged %v (%q), want %v", logged, logs.String(), tt.wantLogs)
			}
			if tt.wantLogs && tt.hidden != "" && !strings.Contains(logs.String(), tt.hidden) {
				t.Errorf("log %q lacks the driver's text %q", logs.String(), tt.hidden)
			}
		})
	}
}

// SetReady before Serve holds a service NOT_SERVING while the others serve; SetReady(true)
// then makes it SERVING.
func TestSetReadyHoldsServiceOut(t *testing.T) {
	gs := grpcserver.New(slog.New(slog.DiscardHandler), nil)
	gs.SetReady("fleet.v1.Slow", false)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ctx, time.Second) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func(svc string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
			ccancel()
			if err == nil && resp.GetStatus() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health of %q: got %v, %v; want %v", svc, resp.GetStatus(), err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	check("", healthpb.HealthCheckResponse_SERVING)
	check("fleet.v1.Slow", healthpb.HealthCheckResponse_NOT_SERVING)
	gs.SetReady("fleet.v1.Slow", true)
	check("fleet.v1.Slow", healthpb.HealthCheckResponse_SERVING)
}
