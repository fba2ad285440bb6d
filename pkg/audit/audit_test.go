package audit_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/audit"
	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func TestTrailKeepsWhoAndRefusesRemoval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := natstest.Open(t, natstest.Options{Log: log, NoStreams: true})
	if err := audit.EnsureStream(ctx, b, audit.StreamConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	rec := audit.NewRecorder(b, log, nil)
	alice := &auth.Principal{Name: "alice", Role: auth.Admin, Via: auth.ViaToken}
	bob := &auth.Principal{Name: "bob", Role: auth.Dispatcher, Via: auth.ViaMTLS}
	rec.Record(ctx, auth.Entry{Time: time.Now(), Principal: alice, Peer: "127.0.0.1:4000", Method: "/fleet.v1.GeofenceService/DeleteZone",
		Request: &fleetv1.DeleteZoneRequest{ZoneId: "depot"}})
	rec.Record(ctx, auth.Entry{Time: time.Now(), Principal: bob, Peer: "127.0.0.1:4001", Method: "/fleet.v1.CommandService/SendCommand",
		Request: &fleetv1.SendCommandRequest{VehicleId: "v1", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE},
		Err:     status.Error(codes.PermissionDenied, "dispatcher may not")})

	r := audit.NewReader(b)
	t.Run("read back", func(t *testing.T) {
		recs, last, err := r.List(ctx, 0, 10, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || last != 2 {
			t.Fatalf("got %d records up to %d, want 2 up to 2", len(recs), last)
		}
		if got := recs[0]; got.GetPrincipal() != "alice" || got.GetPeer() != "127.0.0.1:4000" || got.GetCode() != "OK" || !strings.Contains(got.GetRequest(), "depot") || got.GetAuth() != "token" {
			t.Errorf("first record = %v", got)
		}
		if got := recs[1]; got.GetPrincipal() != "bob" || got.GetCode() != "PermissionDenied" || got.GetError() == "" {
			t.Errorf("second record = %v", got)
		}
	})
	t.Run("by principal and page", func(t *testing.T) {
		recs, _, err := r.List(ctx, 0, 10, "bob")
		if err != nil || len(recs) != 1 || recs[0].GetSeq() != 2 {
			t.Fatalf("bob's records = %v, %v; want the one at seq 2", recs, err)
		}
		recs, last, err := r.List(ctx, 0, 1, "")
		if err != nil || len(recs) != 1 || last != 1 {
			t.Fatalf("first page = %d records up to %d, %v; want 1 up to 1", len(recs), last, err)
		}
	})
	t.Run("purge refused", func(t *testing.T) {
		s, err := b.Stream(ctx, audit.Stream)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); err == nil {
			t.Fatal("purge of the audit stream succeeded, want refused")
		}
		if err := s.DeleteMsg(ctx, 1); err == nil {
			t.Fatal("deleting an audit record succeeded, want refused")
		}
		recs, _, err := r.List(ctx, 0, 10, "")
		if err != nil || len(recs) != 2 {
			t.Fatalf("after the attempts: %d records, %v; want 2", len(recs), err)
		}
	})
}
