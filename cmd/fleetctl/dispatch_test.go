package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
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

// raise publishes a must-stay-inside zone exit, which the alert feed turns into an alert.
func raise(t *testing.T, id, vehicle string) {
	t.Helper()
	p := sharedPlatform(t)
	data, _ := proto.Marshal(&fleetv1.Event{EventId: id, Source: "geofence", Kind: "exit", VehicleId: vehicle, Time: timestamppb.Now(),
		Attributes: map[string]string{"zone_id": "yard", "zone_name": "Yard", "must_stay_inside": "true"}})
	if _, err := p.Bus.Publish(context.Background(), bus.EventSubject("geofence", "exit", vehicle, id), data, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

func TestAlertsAndCommands(t *testing.T) {
	p := sharedPlatform(t)
	t.Setenv("USER", "") // never required: the server records the authenticated principal

	// Follow the feed from the start while alerts arrive.
	var follow, followErr lockedBuffer
	fctx, fcancel := context.WithCancel(context.Background())
	defer fcancel()
	e := &env{cli: cli{stdout: &follow, stderr: &followErr, now: time.Now, loc: time.UTC}, name: "alerts", format: "table"}
	e.conns = connSettings{addr: p.GRPCAddr, token: p.AdminToken, ca: p.CAFile}
	conn, err := e.conns.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e.conn = conn
	followDone := make(chan error, 1)
	go func() { followDone <- runAlerts(fctx, e, []string{"--follow", "--after", "0", "--vehicle", "van-7"}) }()

	for i, v := range []string{"van-7", "van-8", "van-9"} {
		raise(t, "g"+string(rune('1'+i)), v)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(follow.String(), "zone_exit") {
		if time.Now().After(deadline) {
			t.Fatalf("alerts --follow never showed the alert; output:\n%s\nstderr:\n%s", follow.String(), followErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fcancel()
	if err := <-followDone; err != nil {
		t.Fatalf("alerts --follow on interrupt: got %v, want nil", err)
	}
	lines := strings.Split(follow.String(), "\n")
	if !strings.HasPrefix(lines[0], "ID ") || strings.Index(lines[0], "VEHICLE") != strings.Index(lines[1], "van-7") {
		t.Fatalf("alerts --follow is not aligned:\n%s", follow.String())
	}
	if strings.Contains(follow.String(), "van-8") {
		t.Fatalf("alerts --follow --vehicle van-7 showed van-8:\n%s", follow.String())
	}

	// Wait for all three in the list.
	for {
		out, _, _ := ctl(t, "alerts", "--kind", "zone_exit")
		if strings.Contains(out, "3 shown of 3 matching alerts") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts never listed 3 zone exits:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustCtl(t, []string{"1 shown of 3 matching alerts", "next page: fleetctl alerts --page-token"}, "alerts", "--kind", "zone_exit", "--limit", "1")
	mustCtl(t, []string{"ID", "zone_exit", "critical", "open", "Yard", "UTC"}, "alerts", "--vehicle", "van-7")
	mustCtl(t, []string{`"kind":"zone_exit"`}, "alerts", "--state", "open", "-o", "json")
	failCtl(t, 2, "unknown state", "alerts", "--state", "closed")

	id := func(vehicle string) string {
		out := mustCtl(t, nil, "alerts", "--vehicle", vehicle, "-o", "csv")
		return strings.SplitN(strings.Split(out, "\n")[1], ",", 2)[0]
	}
	a7, a8 := id("van-7"), id("van-8")
	mustCtl(t, []string{"acknowledged", "admin"}, "ack", a7, "--note", "calling driver")
	failCtl(t, 2, "either alert ids or --all", "resolve", a7, "--all")
	mustCtl(t, []string{"resolved", "admin"}, "resolve", a7, "--who", "mallory") // the principal, not what was typed
	failCtl(t, 1, "FailedPrecondition", "ack", a7)
	failCtl(t, 1, "NotFound", "ack", "4242")
	failCtl(t, 2, "not a number", "ack", "x")
	failCtl(t, 2, "which alerts", "ack")
	// Bulk: every open zone exit, then resolve the rest.
	_, stderr, code := ctl(t, "ack", "--all", "--kind", "zone_exit")
	if code != 0 || !strings.Contains(stderr, "2 alerts acknowledged, 0 failed") {
		t.Fatalf("ack --all: exit %d, %s", code, stderr)
	}
	// One record for the bulk call, and one per alert as if acknowledged alone.
	trail := mustCtl(t, []string{"AlertService/AcknowledgeAlerts", `"alertId":"` + a8 + `"`}, "audit", "--limit", "1000")
	if n := strings.Count(trail, "AlertService/AcknowledgeAlert "); n < 3 { // a7 alone, then two by the bulk call
		t.Fatalf("audit has %d AcknowledgeAlert records, want 3:\n%s", n, trail)
	}
	var stdout string
	stdout, stderr, code = ctl(t, "resolve", a8, "4242")
	if code != 1 || !strings.Contains(stderr, "1 alerts resolved, 1 failed") || !strings.Contains(stdout, "4242  not resolved: alert 4242") {
		t.Fatalf("resolve with one unknown id: exit %d, %s%s", code, stdout, stderr)
	}
	_, stderr, code = ctl(t, "resolve", "--all", "--kind", "zone_exit")
	if code != 0 || !strings.Contains(stderr, "1 alerts resolved") {
		t.Fatalf("resolve --all: exit %d, %s", code, stderr)
	}
	mustCtl(t, []string{"0 shown of 0 matching alerts"}, "alerts", "--kind", "zone_exit", "--state", "open")

	// Commands go to known vehicles: one neither registered nor heard from is NotFound;
	// register van-7 (it never reported, so it is offline).
	failCtl(t, 1, "NotFound", "command", "van-77", "locate-now")
	mustCtl(t, []string{"van-7"}, "vehicle", "add", "van-7", "--name", "Van 7")
	mustCtl(t, []string{"immobilize", "queued", "offline", "admin"}, "command", "van-7", "immobilize")
	out := mustCtl(t, []string{`"moving_s":"15"`, "COMMAND_STATE_QUEUED"}, "command", "van-7", "set-report-interval", "moving_s=15", "--ttl", "1h", "-o", "json")
	_ = out
	failCtl(t, 1, "InvalidArgument", "command", "van-7", "set_report_interval", "moving_s=fast")
	failCtl(t, 2, "unknown command kind", "command", "van-7", "selfdestruct")
	list := mustCtl(t, []string{"set_report_interval", "immobilize", "queued"}, "commands", "van-7")
	cmdID := strings.Fields(strings.Split(list, "\n")[1])[0]
	mustCtl(t, []string{"command:", cmdID, "history:", "queued"}, "commands", "show", cmdID)
	mustCtl(t, []string{"ID"}, "commands", "--state", "executed")

	// Cancelling the queued IMMOBILIZE: once, audited; the second time it has left the queue.
	var immID string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "immobilize" {
			immID = f[0]
		}
	}
	mustCtl(t, []string{"cancelled", "wrong van"}, "commands", "cancel", immID, "--note", "wrong van")
	failCtl(t, 1, "FailedPrecondition", "commands", "cancel", immID)
	failCtl(t, 1, "NotFound", "commands", "cancel", "c-nope")
	mustCtl(t, []string{"CommandService/CancelCommand"}, "audit", "--limit", "1000")

	// Deleting the vehicle: confirmed, audited; afterwards it is unknown everywhere.
	failCtl(t, 2, "add --yes", "vehicle", "delete", "van-7")
	_, stderr, code = ctl(t, "vehicle", "delete", "van-7", "--yes")
	if code != 0 || !strings.Contains(stderr, "vehicle van-7 deleted") {
		t.Fatalf("vehicle delete: exit %d, %s", code, stderr)
	}
	failCtl(t, 1, "NotFound", "vehicle", "van-7")
	failCtl(t, 1, "NotFound", "vehicle", "delete", "van-7", "--yes")
	failCtl(t, 1, "NotFound", "command", "van-7", "locate-now")
	mustCtl(t, []string{"TrackingService/DeleteVehicle"}, "audit", "--limit", "1000")
}
