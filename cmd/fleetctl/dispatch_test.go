package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/dispatch"
)

// lockedBuffer is written by a following command while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestDispatchCommands(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := natstest.Open(t, natstest.Options{Log: log})
	cfg := dispatch.DefaultConfig()
	cfg.WatchPoll = 100 * time.Millisecond
	svc, err := dispatch.New(cfg, b, dispatch.NewMemoryStore(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpcserver.New(log, nil)
	svc.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = gs.Serve(ctx, time.Second) }()
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	call := func(f func(context.Context, *grpc.ClientConn, []string, io.Writer, bool) error, jsonOut bool, args ...string) (string, error) {
		var out bytes.Buffer
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		err := f(cctx, conn, args, &out, jsonOut)
		return out.String(), err
	}

	// Follow the feed from the start while an alert arrives.
	var follow lockedBuffer
	fctx, fcancel := context.WithCancel(ctx)
	followDone := make(chan error, 1)
	go func() { followDone <- runAlerts(fctx, conn, []string{"--follow", "--after", "0"}, &follow, false) }()

	data, _ := proto.Marshal(&fleetv1.Event{EventId: "g1", Source: "geofence", Kind: "exit", VehicleId: "van-7", Time: timestamppb.Now(),
		Attributes: map[string]string{"zone_id": "yard", "zone_name": "Yard", "must_stay_inside": "true"}})
	if _, err := b.JS.Publish(ctx, bus.EventSubject("geofence", "exit", "van-7", "g1"), data, jetstream.WithMsgID("g1")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(follow.String(), "zone_exit") {
		if time.Now().After(deadline) {
			t.Fatalf("alerts --follow never showed the alert; output:\n%s", follow.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fcancel()
	if err := <-followDone; err != nil {
		t.Fatalf("alerts --follow on interrupt: got %v, want nil", err)
	}

	for _, tc := range []struct {
		name    string
		f       func(context.Context, *grpc.ClientConn, []string, io.Writer, bool) error
		json    bool
		args    []string
		want    []string // substrings of the output
		wantErr string
	}{
		{"list", runAlerts, false, []string{"--vehicle", "van-7"}, []string{"ID", "zone_exit", "critical", "open", "Yard"}, ""},
		{"list json", runAlerts, true, []string{"--state", "open"}, []string{`"kind":"zone_exit"`}, ""},
		{"bad state", runAlerts, false, []string{"--state", "closed"}, nil, "unknown state"},
		{"ack", runAck, false, []string{"1", "--note", "calling driver", "--who", "ann"}, []string{"acknowledged", "ann"}, ""},
		{"ack again", runAck, false, []string{"1", "--who", "ann"}, nil, "FailedPrecondition"},
		{"resolve", runResolve, false, []string{"--who", "bob", "1"}, []string{"resolved", "bob"}, ""},
		{"ack unknown", runAck, false, []string{"42", "--who", "ann"}, nil, "NotFound"},
		{"ack bad id", runAck, false, []string{"x", "--who", "ann"}, nil, "not a number"},
		{"command queued offline", runSendCommand, false, []string{"van-7", "immobilize", "--who", "ann"}, []string{"immobilize", "queued", "offline", "ann"}, ""},
		{"command params", runSendCommand, true, []string{"van-7", "set-report-interval", "moving_s=15", "--who", "ann", "--ttl", "1h"}, []string{`"moving_s":"15"`, "COMMAND_STATE_QUEUED"}, ""},
		{"command bad param", runSendCommand, false, []string{"van-7", "set_report_interval", "moving_s=fast", "--who", "ann"}, nil, "InvalidArgument"},
		{"command bad kind", runSendCommand, false, []string{"van-7", "selfdestruct", "--who", "ann"}, nil, "unknown command kind"},
		{"commands", runCommands, false, []string{"van-7"}, []string{"set_report_interval", "immobilize", "queued"}, ""},
		{"commands by state", runCommands, false, []string{"--state", "executed"}, []string{"ID"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := call(tc.f, tc.json, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
