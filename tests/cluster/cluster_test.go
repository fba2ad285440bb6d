// Package cluster is the scale-out suite: three nats-servers clustered on loopback ports
// (configured from pkg/natsauth's table, routes authenticated), the streams at R3, two
// instances of every service (the real binaries, --partitions auto) sharing a Redis, and
// the simulator driving a fleet through them. Under that load it stops a NATS node and
// brings it back, SIGKILLs one instance of every service and starts it again (it rejoins
// and the partitions spread out), then recomputes from the telemetry stream what must
// exist, as the fault-injection suite does (tests/chaos): every track point, status
// event, zone event and zone alert exactly once and in per-vehicle order, and every
// vehicle's odometer as one instance computing it once gives it.
//
// Watches are held on the instances the test does not kill, from start to end:
// WatchVehicles must end with every vehicle's stored state, WatchAlerts with every alert
// in the store, WatchZoneEvents with events of every partition; none may end while the
// other instance dies.
//
// The short form (a small fleet, a few seconds of traffic per step) runs with
// FLEETWIRE_CLUSTER=1; it is not yet part of go test ./... because it still finds losses
// across a lease hand-over (docs/scaling.md). `make cluster` runs the long form
// (CLUSTER_LONG=1): a larger fleet, longer steps, and the faults twice. Nothing here judges speed: waits are for states, bounded
// only by the test's deadline.
package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/tracking"
	"github.com/fleetwire/fleetwire/tests/internal/faulttest"
)

var serviceNames = []string{"tracking", "geofence", "maintenance", "dispatch"}

type scale struct {
	vehicles int
	interval time.Duration // each vehicle's report interval
	phase    time.Duration // traffic between steps
	rounds   int           // how often the faults repeat
}

func TestClusterScaleOut(t *testing.T) {
	long := os.Getenv("CLUSTER_LONG") != ""
	sc := scale{vehicles: 30, interval: 500 * time.Millisecond, phase: 3 * time.Second, rounds: 1}
	if long {
		sc = scale{vehicles: 300, interval: time.Second, phase: 15 * time.Second, rounds: 2}
	} else if testing.Short() {
		t.Skip("cluster suite skipped with -short")
	} else if os.Getenv("FLEETWIRE_CLUSTER") == "" {
		// Not yet in the default run: under the race detector on a loaded machine it finds
		// losses across a lease hand-over (docs/scaling.md, "Open defects"), and a test
		// that fails until they are fixed would stop every other change.
		msg := "CLUSTER SUITE NOT RUN: it still finds losses across a lease hand-over (docs/scaling.md, Open defects); run it with FLEETWIRE_CLUSTER=1 or make cluster"
		fmt.Fprintln(os.Stderr, "\n*** "+msg+" ***")
		t.Skip(msg)
	}
	red := faulttest.StartRedis(t)
	bin := t.TempDir()
	faulttest.BuildBinaries(t, bin)

	// The NATS cluster, each node configured as deployments/nats/nats-cluster.conf is.
	ids := natsauth.Table(natsauth.TableConfig{})
	var users []string
	for _, id := range ids {
		users = append(users, id.Name)
	}
	creds, err := natsauth.EnsureDevCredentials(filepath.Join(t.TempDir(), "nats"), users)
	if err != nil {
		t.Fatal(err)
	}
	routePW := natsauth.NewServicePassword()
	nc := natstest.NewClusterWith(t, 3, natstest.ClusterOptions{
		Config: func(i int, addrs []string) string {
			return natsauth.ServerConfig{
				Identities: ids,
				Password:   func(u string) string { return natsauth.Literal(creds.Passwords[u]) },
				Issuer:     natsauth.Literal(creds.IssuerPublic),
				Cluster: &natsauth.Cluster{Name: "fleetwire", Listen: addrs[i],
					Password: natsauth.Literal(routePW), Routes: natsauth.RouteURLs(routePW, addrs...)},
			}.Render()
		},
		User: natsauth.UserAdmin, Password: creds.Passwords[natsauth.UserAdmin], InboxPrefix: natsauth.InboxPrefix(natsauth.UserAdmin),
	})
	admin := nc.Bus(t, "admin", nil)
	nc.EnsureStreams(t, admin, bus.StreamConfig{Replicas: 3})
	zones := faulttest.PutZones(t, admin, geo.Point{Lat: 52.52, Lon: 13.405}, 3)

	// Two instances of every service; index 0 serves the watches and is never killed.
	instances := map[string][2]*faulttest.Proc{}
	grpcAddr := map[string]string{}
	for _, name := range serviceNames {
		var pair [2]*faulttest.Proc
		for i := range pair {
			addr := "127.0.0.1:" + strconv.Itoa(faulttest.FreePort(t))
			if i == 0 {
				grpcAddr[name] = addr
			}
			env := []string{"FLEETWIRE_LOG_LEVEL=info", "FLEETWIRE_DATA_DIR=" + t.TempDir(),
				"FLEETWIRE_NATS_USER=" + name, "FLEETWIRE_NATS_PASSWORD_FILE=" + creds.PasswordFile(name)}
			pair[i] = &faulttest.Proc{T: t, Name: fmt.Sprintf("%s-%d", name, i), Bin: filepath.Join(bin, name), Env: env, Supervise: true,
				// gRPC without TLS: the watches here are about the fleet they see, not
				// the transport (the other suites cover TLS and tokens).
				Args: []string{"--nats-url", nc.URL(), "--redis-url", red.URL(), "--grpc-addr", addr, "--metrics-addr", "",
					"--insecure", "--grace", "2s", "--partitions", "auto", "--lease-ttl", "2s", "--stream-replicas", "3"}}
		}
		instances[name] = pair
	}
	sim := &faulttest.Proc{T: t, Name: "fleetsim", Bin: filepath.Join(bin, "fleetsim"),
		Args: []string{"run", "--nats-url", nc.URL(), "--vehicles", strconv.Itoa(sc.vehicles), "--seed", "11",
			"--interval", sc.interval.String(), "--prefix", "cl", "--stats", "0",
			"--nats-user", natsauth.UserLoadgen, "--nats-password-file", creds.PasswordFile(natsauth.UserLoadgen)}}
	t.Cleanup(func() {
		sim.Kill()
		for _, pair := range instances {
			for _, p := range pair {
				p.Kill()
			}
		}
		if t.Failed() {
			for _, pair := range instances {
				for _, p := range pair {
					t.Logf("--- %s (last output)\n%s", p.Name, p.Tail(3000))
				}
			}
			t.Logf("--- fleetsim\n%s", sim.Tail(2000))
		}
	})
	for _, name := range serviceNames {
		for _, p := range instances[name] {
			p.Start()
		}
	}

	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-20*time.Second))
	defer cancel()
	w := startWatches(t, ctx, grpcAddr)
	sim.Start()

	step := func(format string, args ...any) {
		t.Logf("%s: %s", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	time.Sleep(sc.phase)
	for round := range sc.rounds {
		node := round % 3
		step("stop NATS node %d", node)
		nc.Stop(node)
		time.Sleep(sc.phase)
		step("start NATS node %d again", node)
		nc.Start(node)
		time.Sleep(sc.phase)
		step("SIGKILL the second instance of every service")
		for _, name := range serviceNames {
			instances[name][1].Kill()
		}
		time.Sleep(sc.phase)
		step("start the second instances again (they rejoin and take their share)")
		for _, name := range serviceNames {
			instances[name][1].Start()
		}
		time.Sleep(sc.phase)
	}
	sim.Stop(10 * time.Second)
	step("simulator stopped; waiting for the services to catch up")
	faulttest.WaitCaughtUp(t, ctx, admin, serviceNames)

	// Ground truth: the telemetry stream replayed through the services' own functions.
	recs := faulttest.ReadStream(t, ctx, admin, bus.TelemetryStream, ">")
	events := faulttest.ReadStream(t, ctx, admin, bus.EventStream, ">")
	report := &faulttest.Report{T: t}
	check := report.Check
	wantPoints, status := faulttest.ExpectedTracking(t, recs, 0)
	wantStatus := faulttest.IDs(status)
	trk := tracking.NewRedisStore(red.Client(t), "fw:")
	check("track points", wantPoints, faulttest.StoredTrack(t, ctx, trk, wantPoints))
	gotStatus := map[string][]string{}
	for _, m := range events {
		e := faulttest.DecodeEvent(t, m)
		if e.GetSource() != "tracking" || e.GetKind() != "status_changed" || e.GetAttributes()["status"] == "offline" {
			continue
		}
		gotStatus[e.GetVehicleId()] = append(gotStatus[e.GetVehicleId()], e.GetEventId())
	}
	check("status events", wantStatus, gotStatus)
	expected := faulttest.ExpectedZoneEvents(t, recs, zones)
	wantZone := map[string][]string{}
	for _, e := range expected {
		wantZone[e.Vehicle] = append(wantZone[e.Vehicle], e.ID)
	}
	gotZone := map[string][]string{}
	storedZone := map[string]bool{}
	for _, m := range events {
		e := faulttest.DecodeEvent(t, m)
		if e.GetSource() != geofence.Source {
			continue
		}
		if e.GetKind() == bus.EventKindDeadLetter {
			t.Errorf("dead letter from geofence: %v", e.GetAttributes())
			continue
		}
		gotZone[e.GetVehicleId()] = append(gotZone[e.GetVehicleId()], e.GetEventId())
		storedZone[e.GetEventId()] = true
	}
	check("zone events", wantZone, gotZone)
	wantAlerts := faulttest.ExpectedAlerts(t, ctx, faulttest.ZoneProtoEvents(expected))
	gotAlerts := map[string][]string{}
	for _, m := range events {
		e := faulttest.DecodeEvent(t, m)
		if e.GetSource() != dispatch.SourceDispatch || e.GetKind() != "alert" || !strings.HasPrefix(e.GetAttributes()["alert_kind"], "geofence_") {
			continue
		}
		gotAlerts[e.GetVehicleId()] = append(gotAlerts[e.GetVehicleId()], e.GetEventId())
	}
	check("zone alerts", wantAlerts, gotAlerts)

	// Odometers: a record applied by two instances, or twice, would show here.
	finals := expectedStates(t, recs)
	stored := map[string]tracking.Vehicle{}
	for v := range finals {
		vs, err := trk.Vehicles(ctx, []string{v})
		if err != nil || len(vs) != 1 || vs[0].State == nil {
			t.Fatalf("state of %s: %v (%d)", v, err, len(vs))
		}
		stored[v] = vs[0]
	}
	odoOff := 0
	for v, want := range finals {
		got := stored[v].State
		if got.GPSOdometerM != want.GPSOdometerM || got.OdometerM != want.OdometerM || got.LastSequence != want.LastSequence {
			odoOff++
			if odoOff <= 10 {
				t.Errorf("vehicle %s: odometer %.1f m (GPS %.1f), last sequence %d; one pass over its records gives %.1f m (GPS %.1f), %d",
					v, got.OdometerM, got.GPSOdometerM, got.LastSequence, want.OdometerM, want.GPSOdometerM, want.LastSequence)
			}
		}
	}
	report.Lines = append(report.Lines, fmt.Sprintf("vehicle states: %d, odometer or last record off %d", len(finals), odoOff))

	// The watches, each on the instance that was never killed.
	w.stop()
	w.checkVehicles(t, stored)
	alerts, err := dispatch.NewRedisStore(red.Client(t), "fw:").ListAlerts(ctx, dispatch.AlertFilter{Ascending: true, Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	w.checkAlerts(t, alerts)
	w.checkZoneEvents(t, storedZone, wantZone, bus.DefaultPartitions)
	report.Lines = append(report.Lines, w.summary()...)

	t.Logf("records %d\n%s", len(recs), strings.Join(report.Lines, "\n"))
	for _, pair := range instances {
		for _, p := range pair {
			if strings.Contains(p.Output(), "WARNING: DATA RACE") {
				t.Errorf("%s reported a data race:\n%s", p.Name, p.Tail(6000))
			}
			if n := p.Exited(); n > 0 {
				t.Logf("%s exited on its own %d times (restarted)", p.Name, n)
			}
		}
	}
}

// expectedStates replays the records through tracking's Tracker, in stream order, and
// returns every vehicle's final state.
func expectedStates(t *testing.T, recs []faulttest.Stored) map[string]*tracking.State {
	t.Helper()
	tr := tracking.NewTracker(tracking.DefaultConfig())
	states := map[string]*tracking.State{}
	for _, m := range recs {
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil || addr.Partition < 0 || addr.Kind == bus.KindReply {
			continue
		}
		rs, _, err := wire.DecodeBatch(addr.Vehicle, m.Data, m.JSON)
		if err != nil {
			continue
		}
		st := states[addr.Vehicle]
		if st == nil {
			st = tracking.NewState(addr.Vehicle)
			states[addr.Vehicle] = st
		}
		for i := range rs {
			rs[i].ReceivedTime, rs[i].StreamSeq = m.Time, m.Seq
			tr.Apply(st, &rs[i], m.Time)
		}
		st.MarkApplied(m.Seq, m.Time)
	}
	return states
}

// watches holds one stream of each watch API, on the instances that stay up.
type watches struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	vehicles  map[string]*fleetv1.Vehicle // latest per vehicle
	alertIDs  []uint64
	zoneIDs   map[string]int
	zoneVehs  map[string]bool
	endErrors map[string]error // a stream that ended before the test ended it
}

func startWatches(t *testing.T, ctx context.Context, addrs map[string]string) *watches {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	w := &watches{cancel: cancel, vehicles: map[string]*fleetv1.Vehicle{}, zoneIDs: map[string]int{},
		zoneVehs: map[string]bool{}, endErrors: map[string]error{}}
	conn := func(addr string) *grpc.ClientConn {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// Each stream is opened once the instance answers (its gRPC server starts after its
	// catch-up); WaitForReady holds the call until then.
	ready := grpc.WaitForReady(true)
	trk, err := fleetv1.NewTrackingServiceClient(conn(addrs["tracking"])).WatchVehicles(wctx, &fleetv1.WatchVehiclesRequest{}, ready)
	if err != nil {
		t.Fatalf("WatchVehicles: %v", err)
	}
	zero := uint64(0)
	alr, err := fleetv1.NewAlertServiceClient(conn(addrs["dispatch"])).WatchAlerts(wctx, &fleetv1.WatchAlertsRequest{AfterAlertId: &zero}, ready)
	if err != nil {
		t.Fatalf("WatchAlerts: %v", err)
	}
	zev, err := fleetv1.NewGeofenceServiceClient(conn(addrs["geofence"])).WatchZoneEvents(wctx, &fleetv1.WatchZoneEventsRequest{}, ready)
	if err != nil {
		t.Fatalf("WatchZoneEvents: %v", err)
	}
	// The zone-event subscription is live once the headers arrive.
	if _, err := zev.Header(); err != nil {
		t.Fatalf("WatchZoneEvents: %v", err)
	}
	run := func(name string, recv func() error) {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for {
				if err := recv(); err != nil {
					if wctx.Err() == nil { // not ended by the test
						w.mu.Lock()
						w.endErrors[name] = err
						w.mu.Unlock()
					}
					return
				}
			}
		}()
	}
	run("WatchVehicles", func() error {
		m, err := trk.Recv()
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.vehicles[m.GetVehicle().GetVehicleId()] = m.GetVehicle()
		w.mu.Unlock()
		return nil
	})
	run("WatchAlerts", func() error {
		m, err := alr.Recv()
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.alertIDs = append(w.alertIDs, m.GetAlert().GetAlertId())
		w.mu.Unlock()
		return nil
	})
	run("WatchZoneEvents", func() error {
		m, err := zev.Recv()
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.zoneIDs[m.GetEvent().GetEventId()]++
		w.zoneVehs[m.GetEvent().GetVehicleId()] = true
		w.mu.Unlock()
		return nil
	})
	return w
}

// stop ends the streams; any that ended earlier is an error.
func (w *watches) stop() {
	w.cancel()
	w.wg.Wait()
}

func (w *watches) ended(t *testing.T, name string) {
	t.Helper()
	if err := w.endErrors[name]; err != nil {
		t.Errorf("%s ended before the test ended it (the other instance's death must not end it): %v", name, err)
	}
}

// checkVehicles: the watch's last word on every vehicle is its stored state, including
// the vehicles the other instance handled.
func (w *watches) checkVehicles(t *testing.T, stored map[string]tracking.Vehicle) {
	t.Helper()
	w.ended(t, "WatchVehicles")
	off := 0
	for id, v := range stored {
		got := w.vehicles[id]
		switch {
		case got == nil:
			off++
			t.Errorf("WatchVehicles never saw %s", id)
		case got.GetState().GetLastSequence() != v.State.LastSequence || got.GetState().GetRecords() != v.State.Records:
			off++
			if off <= 10 {
				t.Errorf("WatchVehicles: %s last seen at sequence %d after %d records; stored: %d after %d",
					id, got.GetState().GetLastSequence(), got.GetState().GetRecords(), v.State.LastSequence, v.State.Records)
			}
		}
	}
}

// checkAlerts: every alert in the store reached the watch once, in id order.
func (w *watches) checkAlerts(t *testing.T, alerts []dispatch.Alert) {
	t.Helper()
	w.ended(t, "WatchAlerts")
	var want []uint64
	for i := range alerts {
		want = append(want, alerts[i].ID)
	}
	if len(want) == 0 {
		t.Error("WatchAlerts: the store holds no alert: the check compares nothing")
	}
	if !slices.Equal(w.alertIDs, want) {
		t.Errorf("WatchAlerts delivered %d alerts, the store holds %d (every one once, in id order, was expected)", len(w.alertIDs), len(want))
	}
}

// checkZoneEvents: the watch delivers stored events only, each once, from vehicles of
// every partition that had any. (A core subscription misses what is published while its
// NATS connection moves to another node, so the count is reported, not required to be
// complete.)
func (w *watches) checkZoneEvents(t *testing.T, stored map[string]bool, want map[string][]string, parts int) {
	t.Helper()
	w.ended(t, "WatchZoneEvents")
	for id, n := range w.zoneIDs {
		if !stored[id] {
			t.Errorf("WatchZoneEvents delivered %s, which is not in the event stream", id)
		}
		if n > 1 {
			t.Errorf("WatchZoneEvents delivered %s %d times", id, n)
		}
	}
	seen, all := map[int]bool{}, map[int]bool{}
	for v := range w.zoneVehs {
		seen[bus.PartitionOf(v, parts)] = true
	}
	for v := range want {
		all[bus.PartitionOf(v, parts)] = true
	}
	if len(seen) != len(all) {
		t.Errorf("WatchZoneEvents saw events of %d partitions, the fleet's are in %d: not the whole fleet", len(seen), len(all))
	}
}

func (w *watches) summary() []string {
	return []string{
		fmt.Sprintf("WatchVehicles: %d vehicles", len(w.vehicles)),
		fmt.Sprintf("WatchAlerts: %d alerts", len(w.alertIDs)),
		fmt.Sprintf("WatchZoneEvents: %d events of %d vehicles", len(w.zoneIDs), len(w.zoneVehs)),
	}
}
