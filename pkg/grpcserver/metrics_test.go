package grpcserver_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fleetwire/fleetwire/pkg/grpcserver"
)

func TestServiceOf(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/fleet.v1.TrackingService/ListVehicles", "fleet.v1.TrackingService"},
		{"/grpc.health.v1.Health/Check", "grpc.health.v1.Health"},
		{"", ""},
	} {
		if got := grpcserver.ServiceOf(tc.in); got != tc.want {
			t.Errorf("ServiceOf(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A call over a real socket is counted and timed under the one label set: service,
// method, code.
func TestRequestMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	s := grpcserver.New(slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go s.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"service": "grpc.health.v1.Health", "method": "/grpc.health.v1.Health/Check", "code": "OK"}
	found := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			match := len(labels) == len(want)
			for k, v := range want {
				match = match && labels[k] == v
			}
			if !match {
				continue
			}
			switch mf.GetName() {
			case "fleetwire_grpc_requests_total":
				found[mf.GetName()] = m.GetCounter().GetValue() == 1
			case "fleetwire_grpc_request_duration_seconds":
				found[mf.GetName()] = m.GetHistogram().GetSampleCount() == 1
			}
		}
	}
	for _, name := range []string{"fleetwire_grpc_requests_total", "fleetwire_grpc_request_duration_seconds"} {
		if !found[name] {
			t.Errorf("%s: no series %v with one call", name, want)
		}
	}
}
