// Package chaos is the fault-injection suite: the real service binaries, built into a
// temporary directory, run as processes against a NATS server and a Redis server the test
// owns, while the simulator drives a fleet through them. The NATS server is configured as
// a secured deployment's (pkg/natsauth's permission table), and each process logs in as
// its own identity: the services as tracking, geofence, maintenance and dispatch, the
// simulator as loadgen. The test kills, freezes and starves the services, silences the
// fleet beyond tracking's offline threshold and restarts NATS and Redis (with and without
// its data), then recomputes from the telemetry stream, with the services' own pure
// functions, the track points, status events (offline included), zone events and alerts
// that must exist, and checks that each exists exactly once and in per-vehicle order.
//
// The short form is part of go test ./... (a few faults of every kind, every service
// killed once, a small fleet; about four minutes on a busy 2-core machine, plus building
// the binaries). `make chaos` runs the long form (CHAOS_LONG=1): a bigger fleet, every
// fault, and the figures in docs/benchmarks.md. CHAOS_FAULTS (names or parts of names,
// comma-separated), CHAOS_VEHICLES, CHAOS_INTERVAL, CHAOS_PHASE and CHAOS_OFFLINE narrow
// a run down to reproduce a finding; CHAOS_LOG_DIR keeps every process's whole output.
// Nothing here judges speed: every wait is for a state (a consumer caught up), bounded
// only by the test's own deadline.
package chaos

import (
	"context"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
	"github.com/fleetwire/fleetwire/services/tracking"
	"github.com/fleetwire/fleetwire/tests/internal/faulttest"
)

type scale struct {
	vehicles int
	interval time.Duration // each vehicle's report interval
	phase    time.Duration // time between faults
	// offline is tracking's offline threshold: far above every vehicle's report interval
	// and every fault's silence but the one that freezes the simulator on purpose.
	offline time.Duration
}

// fromEnv overrides the scale with CHAOS_VEHICLES, CHAOS_INTERVAL, CHAOS_PHASE and
// CHAOS_OFFLINE, for reproducing a finding in the smallest configuration that shows it.
func (sc scale) fromEnv(t *testing.T) scale {
	t.Helper()
	if v := os.Getenv("CHAOS_VEHICLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("CHAOS_VEHICLES=%q: want a positive count", v)
		}
		sc.vehicles = n
	}
	for env, d := range map[string]*time.Duration{"CHAOS_INTERVAL": &sc.interval, "CHAOS_PHASE": &sc.phase, "CHAOS_OFFLINE": &sc.offline} {
		if v := os.Getenv(env); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				t.Fatalf("%s=%q: want a positive duration", env, v)
			}
			*d = x
		}
	}
	return sc
}

func TestFaultInjection(t *testing.T) {
	long := os.Getenv("CHAOS_LONG") != ""
	sc := scale{vehicles: 40, interval: 500 * time.Millisecond, phase: 6 * time.Second, offline: 12 * time.Second}
	if long {
		sc = scale{vehicles: 300, interval: time.Second, phase: 20 * time.Second, offline: 40 * time.Second}
	} else if testing.Short() {
		t.Skip("fault-injection suite skipped with -short")
	}
	sc = sc.fromEnv(t)
	red := faulttest.StartRedis(t)
	bin := t.TempDir()
	faulttest.BuildBinaries(t, bin)
	nats := startNATS(t)
	center := geo.Point{Lat: 52.52, Lon: 13.405}
	zones := faulttest.PutZones(t, nats.b, center, 0)

	logDir := os.Getenv("CHAOS_LOG_DIR")
	svc := func(name string) *faulttest.Proc {
		// Secure as deployed: its own NATS identity, TLS and tokens for gRPC with the
		// development credentials in its own data directory.
		env := append([]string{"FLEETWIRE_LOG_LEVEL=info", "FLEETWIRE_DATA_DIR=" + t.TempDir()}, nats.login(name)...)
		return &faulttest.Proc{T: t, Name: name, Bin: filepath.Join(bin, name), Env: env, Supervise: true, LogDir: logDir,
			Args: []string{"--nats-url", nats.url(), "--redis-url", red.URL(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "", "--grace", "2s"}}
	}
	services := map[string]*faulttest.Proc{
		"tracking": svc("tracking"), "geofence": svc("geofence"),
		"maintenance": svc("maintenance"), "dispatch": svc("dispatch"),
	}
	// Vehicles go offline within the run: while the simulator is frozen, and after it
	// stops (and at no other time, since each reports far more often than this).
	services["tracking"].Env = append(services["tracking"].Env, "FLEETWIRE_OFFLINE_AFTER="+sc.offline.String())
	sim := &faulttest.Proc{T: t, Name: "fleetsim", Bin: filepath.Join(bin, "fleetsim"), LogDir: logDir,
		Args: []string{"run", "--nats-url", nats.url(), "--vehicles", strconv.Itoa(sc.vehicles), "--seed", "7",
			"--interval", sc.interval.String(), "--prefix", "cx", "--stats", "0",
			"--nats-user", natsauth.UserLoadgen, "--nats-password-file", nats.creds.PasswordFile(natsauth.UserLoadgen)}}
	t.Cleanup(func() {
		sim.Kill()
		for _, p := range services {
			p.Kill()
		}
		if t.Failed() {
			for name, p := range services {
				t.Logf("--- %s (last output)\n%s", name, p.Tail(4000))
			}
			t.Logf("--- fleetsim\n%s", sim.Tail(2000))
		}
	})
	for _, p := range services {
		p.Start()
	}
	sim.Start()

	// Which forms run a fault: the long form runs every fault, the short form (make test)
	// those marked short, a few of every kind.
	const short, longOnly = true, false
	faults := []fault{
		{"SIGKILL geofence", longOnly, func() { services["geofence"].Restart() }},
		{"SIGKILL tracking and dispatch", longOnly, func() { services["tracking"].Restart(); services["dispatch"].Restart() }},
		{"SIGKILL geofence during its catch-up", longOnly, func() {
			services["geofence"].Kill()
			time.Sleep(sc.phase / 2) // a backlog builds up
			services["geofence"].Start()
			time.Sleep(500 * time.Millisecond)
			services["geofence"].Restart()
		}},
		{"freeze geofence (SIGSTOP, SIGCONT)", short, func() {
			services["geofence"].Signal(syscall.SIGSTOP)
			time.Sleep(sc.phase)
			services["geofence"].Signal(syscall.SIGCONT)
		}},
		{"restart NATS", short, func() { nats.restart() }},
		{"fleet silent beyond the offline threshold (simulator frozen)", short, func() {
			// Every vehicle goes offline and comes back: offline events and alerts, and
			// their resolution, exist before the store losses that follow.
			sim.Signal(syscall.SIGSTOP)
			time.Sleep(sc.offline + sc.phase/2)
			sim.Signal(syscall.SIGCONT)
		}},
		{"restart Redis with its data", longOnly, func() { red.Restart(true) }},
		{"restart Redis without its data", short, func() { red.Restart(false) }},
		{"SIGKILL maintenance right after its consumers were recreated", longOnly, func() {
			services["maintenance"].Restart()
			time.Sleep(300 * time.Millisecond)
			services["maintenance"].Restart()
		}},
		{"SIGKILL every service, one after another", short, func() {
			// The short form's kills: each service once, staggered within one phase so a
			// kill lands while another service is still catching up.
			for _, name := range []string{"tracking", "dispatch", "maintenance", "geofence"} {
				services[name].Restart()
				time.Sleep(sc.phase / 4)
			}
		}},
		{"one CPU: geofence on GOMAXPROCS=1 beside a CPU hog", short, func() {
			g := services["geofence"]
			g.Kill()
			g.Env = append(g.Env, "GOMAXPROCS=1")
			g.Start()
			stop := hog(runtime.NumCPU())
			time.Sleep(sc.phase)
			stop()
		}},
	}
	if sel := os.Getenv("CHAOS_FAULTS"); sel != "" {
		// One fault or a few, to reproduce a finding in the smallest configuration.
		var picked = faults[:0:0]
		for _, f := range faults {
			for _, w := range strings.Split(sel, ",") {
				if w = strings.TrimSpace(w); w != "" && strings.Contains(f.name, w) {
					picked = append(picked, f)
					break
				}
			}
		}
		if len(picked) == 0 {
			t.Fatalf("CHAOS_FAULTS=%q selects no fault", sel)
		}
		faults = picked
	} else if !long {
		faults = slices.DeleteFunc(faults, func(f fault) bool { return !f.short })
	}
	time.Sleep(sc.phase)
	for _, f := range faults {
		t.Logf("%s: %s", time.Now().Format("15:04:05.000"), f.name)
		f.do()
		time.Sleep(sc.phase)
	}
	sim.Stop(10 * time.Second)
	quietFrom := time.Now()
	t.Logf("%s: simulator stopped; waiting for the services to catch up", quietFrom.Format("15:04:05.000"))

	// Waits are for states, not verdicts: bounded only by the test's deadline.
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-20*time.Second))
	defer cancel()
	all := []string{"tracking", "geofence", "maintenance", "dispatch"}
	faulttest.WaitCaughtUp(t, ctx, nats.b, all)
	catchUp := time.Since(quietFrom)

	// Ground truth: the telemetry stream replayed through the services' own pure
	// functions, in stream order, as the services apply it.
	recs := faulttest.ReadStream(t, ctx, nats.b, bus.TelemetryStream, ">")
	wantPoints, wantStatus := faulttest.ExpectedTracking(t, recs, sc.offline)
	// The fleet has gone quiet: every vehicle goes offline once the threshold has passed,
	// and dispatch raises its offline alert. Waited for as states, like the catch-up.
	waitForEvents(t, ctx, nats.b, wantStatus)
	faulttest.WaitCaughtUp(t, ctx, nats.b, all)
	events := faulttest.ReadStream(t, ctx, nats.b, bus.EventStream, ">")
	report := &faulttest.Report{T: t}
	check := report.Check

	// Track points: tracking's Tracker decides which fixes enter the history (and which a
	// later record retracts); the history is read back from Redis.
	trk := tracking.NewRedisStore(red.Client(t), "fw:")
	check("track points", wantPoints, faulttest.StoredTrack(t, ctx, trk, wantPoints))

	// Status events: the same replay's status changes, with tracking's event ids, offline
	// included (a silence of the stream, and the end of the run).
	gotStatus := map[string][]string{}
	kinds := map[string]int{}
	var maxDelay time.Duration
	for _, m := range events {
		e := faulttest.DecodeEvent(t, m)
		kinds[e.GetSource()+"/"+e.GetKind()+alertKind(e)]++
		if e.GetSource() != "tracking" || e.GetKind() != "status_changed" {
			continue
		}
		gotStatus[e.GetVehicleId()] = append(gotStatus[e.GetVehicleId()], e.GetEventId())
	}
	check("status events", faulttest.IDs(wantStatus), gotStatus)

	// Zone events, with geofence's engine.
	expected := faulttest.ExpectedZoneEvents(t, recs, zones)
	wantZone := map[string][]string{}
	for _, e := range expected {
		wantZone[e.Vehicle] = append(wantZone[e.Vehicle], e.ID)
	}
	gotZone := map[string][]string{}
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
		if d := m.Time.Sub(e.GetTime().AsTime()); e.GetKind() != string(fence.Crossed) && d > maxDelay {
			maxDelay = d
		}
	}
	check("zone events", wantZone, gotZone)

	// Alerts: the expected zone and status events through dispatch's mapping, rules and
	// incident grouping (its own store logic: occurrences merge into the open alert of
	// their vehicle and zone, a vehicle back online resolves its offline alert), with
	// dispatch's alert event ids. Every alert dispatch published is compared: one the
	// expected events do not imply is reported as unexplained.
	var in []*fleetv1.Event
	now := timestamppb.Now()
	for i := range expected {
		in = append(in, geofence.ToProtoEvent(&expected[i], now))
	}
	zoneAlerts := faulttest.ExpectedAlerts(t, ctx, in)
	in = in[:0]
	for _, v := range slices.Sorted(maps.Keys(wantStatus)) {
		for _, e := range wantStatus[v] {
			in = append(in, e)
		}
	}
	statusAlerts := faulttest.ExpectedAlerts(t, ctx, in)
	gotZoneAlerts, gotStatusAlerts := map[string][]string{}, map[string][]string{}
	for _, m := range events {
		e := faulttest.DecodeEvent(t, m)
		if e.GetSource() != dispatch.SourceDispatch || e.GetKind() != "alert" {
			continue
		}
		v := e.GetVehicleId()
		switch k := e.GetAttributes()["alert_kind"]; {
		case strings.HasPrefix(k, "geofence_"):
			gotZoneAlerts[v] = append(gotZoneAlerts[v], e.GetEventId())
		case k == dispatch.KindOffline:
			gotStatusAlerts[v] = append(gotStatusAlerts[v], e.GetEventId())
		default:
			t.Errorf("alert of a kind the scenario cannot cause: %s for %s (%v)", k, v, e.GetAttributes())
		}
	}
	check("zone alerts", zoneAlerts, gotZoneAlerts)
	check("offline alerts", statusAlerts, gotStatusAlerts)

	t.Logf("records %d\n%s\nevents by source/kind: %v", len(recs), strings.Join(report.Lines, "\n"), kinds)
	t.Logf("FIGURES: catch-up after the last fault %s; max zone event delay (stream store time - fix time) %s",
		catchUp.Round(time.Millisecond), maxDelay.Round(time.Millisecond))
	for name, p := range services {
		if n := strings.Count(p.Output(), "STORE LOST ITS DATA"); n > 0 {
			t.Logf("%s noticed a lost store %d times", name, n)
		}
		if n := p.Exited(); n > 0 {
			t.Logf("%s exited on its own %d times (restarted)", name, n)
		}
		if strings.Contains(p.Output(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", name, p.Tail(6000))
		}
	}
}

// fault is one step of the scenario; short says whether the short form runs it too.
type fault struct {
	name  string
	short bool
	do    func()
}

// alertKind is ":<alert kind>" for dispatch's alert events, "" for others (the report).
func alertKind(e *fleetv1.Event) string {
	if k := e.GetAttributes()["alert_kind"]; k != "" {
		return ":" + k
	}
	return ""
}

// waitForEvents waits until the event stream holds every event of want (the offline of
// each vehicle, raised by the sweep once the threshold has passed), bounded only by ctx.
func waitForEvents(t *testing.T, ctx context.Context, b *bus.Bus, want map[string][]*fleetv1.Event) {
	t.Helper()
	s, err := b.Stream(ctx, bus.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	for {
		missing := 0
		for _, es := range want {
			for _, e := range es {
				subj := bus.EventSubject("tracking", "status_changed", e.GetVehicleId(), e.GetEventId())
				if _, err := s.GetLastMsgForSubject(ctx, subj); err != nil {
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%d expected status events never stored", missing)
		}
		time.Sleep(time.Second)
	}
}

// hog keeps n goroutines busy until stopped.
func hog(n int) func() {
	var stop atomic.Bool
	for range n {
		go func() {
			x := 1.0
			for !stop.Load() {
				for range 100_000 {
					x = math.Sqrt(x + 1)
				}
			}
		}()
	}
	return func() { stop.Store(true) }
}
