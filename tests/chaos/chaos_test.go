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
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
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

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
	"github.com/fleetwire/fleetwire/services/tracking"
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
	red := startRedis(t)
	bin := t.TempDir()
	buildBinaries(t, bin)
	nats := startNATS(t)
	center := geo.Point{Lat: 52.52, Lon: 13.405}
	zones := putZones(t, nats.b, center)

	svc := func(name string) *proc {
		// Secure as deployed: its own NATS identity, TLS and tokens for gRPC with the
		// development credentials in its own data directory.
		env := append([]string{"FLEETWIRE_LOG_LEVEL=info", "FLEETWIRE_DATA_DIR=" + t.TempDir()}, nats.login(name)...)
		return &proc{t: t, name: name, bin: filepath.Join(bin, name), log: &lockedBuffer{}, env: env, supervis: true,
			args: []string{"--nats-url", nats.url(), "--redis-url", red.url(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "", "--grace", "2s"}}
	}
	services := map[string]*proc{
		"tracking": svc("tracking"), "geofence": svc("geofence"),
		"maintenance": svc("maintenance"), "dispatch": svc("dispatch"),
	}
	// Vehicles go offline within the run: while the simulator is frozen, and after it
	// stops (and at no other time, since each reports far more often than this).
	services["tracking"].env = append(services["tracking"].env, "FLEETWIRE_OFFLINE_AFTER="+sc.offline.String())
	sim := &proc{t: t, name: "fleetsim", bin: filepath.Join(bin, "fleetsim"), log: &lockedBuffer{},
		args: []string{"run", "--nats-url", nats.url(), "--vehicles", strconv.Itoa(sc.vehicles), "--seed", "7",
			"--interval", sc.interval.String(), "--prefix", "cx", "--stats", "0",
			"--nats-user", natsauth.UserLoadgen, "--nats-password-file", nats.creds.PasswordFile(natsauth.UserLoadgen)}}
	t.Cleanup(func() {
		sim.kill()
		for _, p := range services {
			p.kill()
		}
		if t.Failed() {
			for name, p := range services {
				t.Logf("--- %s (last output)\n%s", name, p.tail(4000))
			}
			t.Logf("--- fleetsim\n%s", sim.tail(2000))
		}
	})
	for _, p := range services {
		p.start()
	}
	sim.start()

	// Which forms run a fault: the long form runs every fault, the short form (make test)
	// those marked short, a few of every kind.
	const short, longOnly = true, false
	faults := []fault{
		{"SIGKILL geofence", longOnly, func() { services["geofence"].restart() }},
		{"SIGKILL tracking and dispatch", longOnly, func() { services["tracking"].restart(); services["dispatch"].restart() }},
		{"SIGKILL geofence during its catch-up", longOnly, func() {
			services["geofence"].kill()
			time.Sleep(sc.phase / 2) // a backlog builds up
			services["geofence"].start()
			time.Sleep(500 * time.Millisecond)
			services["geofence"].restart()
		}},
		{"freeze geofence (SIGSTOP, SIGCONT)", short, func() {
			services["geofence"].signal(syscall.SIGSTOP)
			time.Sleep(sc.phase)
			services["geofence"].signal(syscall.SIGCONT)
		}},
		{"restart NATS", short, func() { nats.restart() }},
		{"fleet silent beyond the offline threshold (simulator frozen)", short, func() {
			// Every vehicle goes offline and comes back: offline events and alerts, and
			// their resolution, exist before the store losses that follow.
			sim.signal(syscall.SIGSTOP)
			time.Sleep(sc.offline + sc.phase/2)
			sim.signal(syscall.SIGCONT)
		}},
		{"restart Redis with its data", longOnly, func() { red.restart(true) }},
		{"restart Redis without its data", short, func() { red.restart(false) }},
		{"SIGKILL maintenance right after its consumers were recreated", longOnly, func() {
			services["maintenance"].restart()
			time.Sleep(300 * time.Millisecond)
			services["maintenance"].restart()
		}},
		{"SIGKILL every service, one after another", short, func() {
			// The short form's kills: each service once, staggered within one phase so a
			// kill lands while another service is still catching up.
			for _, name := range []string{"tracking", "dispatch", "maintenance", "geofence"} {
				services[name].restart()
				time.Sleep(sc.phase / 4)
			}
		}},
		{"one CPU: geofence on GOMAXPROCS=1 beside a CPU hog", short, func() {
			g := services["geofence"]
			g.kill()
			g.env = append(g.env, "GOMAXPROCS=1")
			g.start()
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
	sim.stop(10 * time.Second)
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
	waitCaughtUp(t, ctx, nats.b, all)
	catchUp := time.Since(quietFrom)

	// Ground truth: the telemetry stream replayed through the services' own pure
	// functions, in stream order, as the services apply it.
	recs := readStream(t, ctx, nats.b, bus.TelemetryStream, ">")
	wantPoints, wantStatus := expectedTracking(t, recs, sc.offline)
	// The fleet has gone quiet: every vehicle goes offline once the threshold has passed,
	// and dispatch raises its offline alert. Waited for as states, like the catch-up.
	waitForEvents(t, ctx, nats.b, wantStatus)
	waitCaughtUp(t, ctx, nats.b, all)
	events := readStream(t, ctx, nats.b, bus.EventStream, ">")
	var report []string
	check := func(what string, want, got map[string][]string) {
		t.Helper()
		n := 0
		for _, ids := range want {
			n += len(ids)
		}
		// A check over nothing would pass whatever the services did.
		if n == 0 {
			t.Errorf("%s: the scenario implies none: the check compares nothing", what)
		}
		r := compare(t, what, want, got)
		report = append(report, fmt.Sprintf("%s: expected %d, lost %d, duplicated %d, unexplained %d, vehicles out of order %d",
			what, n, r.lost, r.dup, r.extra, r.disordered))
	}

	// Track points: tracking's Tracker decides which fixes enter the history (and which a
	// later record retracts); the history is read back from Redis.
	trk := tracking.NewRedisStore(red.client(t), "fw:")
	gotPoints := map[string][]string{}
	for v := range wantPoints {
		fixes, err := trk.Track(ctx, v, time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatalf("track of %s: %v", v, err)
		}
		for i := range fixes {
			gotPoints[v] = append(gotPoints[v], pointKey(&fixes[i]))
		}
	}
	check("track points", wantPoints, gotPoints)

	// Status events: the same replay's status changes, with tracking's event ids, offline
	// included (a silence of the stream, and the end of the run).
	gotStatus := map[string][]string{}
	kinds := map[string]int{}
	var maxDelay time.Duration
	for _, m := range events {
		e := decodeEvent(t, m)
		kinds[e.GetSource()+"/"+e.GetKind()+alertKind(e)]++
		if e.GetSource() != "tracking" || e.GetKind() != "status_changed" {
			continue
		}
		gotStatus[e.GetVehicleId()] = append(gotStatus[e.GetVehicleId()], e.GetEventId())
	}
	check("status events", ids(wantStatus), gotStatus)

	// Zone events, with geofence's engine.
	expected := expectedZoneEvents(t, recs, zones)
	wantZone := map[string][]string{}
	for _, e := range expected {
		wantZone[e.Vehicle] = append(wantZone[e.Vehicle], e.ID)
	}
	gotZone := map[string][]string{}
	for _, m := range events {
		e := decodeEvent(t, m)
		if e.GetSource() != geofence.Source {
			continue
		}
		if e.GetKind() == bus.EventKindDeadLetter {
			t.Errorf("dead letter from geofence: %v", e.GetAttributes())
			continue
		}
		gotZone[e.GetVehicleId()] = append(gotZone[e.GetVehicleId()], e.GetEventId())
		if d := m.time.Sub(e.GetTime().AsTime()); e.GetKind() != string(fence.Crossed) && d > maxDelay {
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
	zoneAlerts := expectedAlerts(t, ctx, in)
	in = in[:0]
	for _, v := range slices.Sorted(maps.Keys(wantStatus)) {
		for _, e := range wantStatus[v] {
			in = append(in, e)
		}
	}
	statusAlerts := expectedAlerts(t, ctx, in)
	gotZoneAlerts, gotStatusAlerts := map[string][]string{}, map[string][]string{}
	for _, m := range events {
		e := decodeEvent(t, m)
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

	t.Logf("records %d\n%s\nevents by source/kind: %v", len(recs), strings.Join(report, "\n"), kinds)
	t.Logf("FIGURES: catch-up after the last fault %s; max zone event delay (stream store time - fix time) %s",
		catchUp.Round(time.Millisecond), maxDelay.Round(time.Millisecond))
	for name, p := range services {
		if n := strings.Count(p.log.String(), "STORE LOST ITS DATA"); n > 0 {
			t.Logf("%s noticed a lost store %d times", name, n)
		}
		if n := p.exited(); n > 0 {
			t.Logf("%s exited on its own %d times (restarted)", name, n)
		}
		if strings.Contains(p.log.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", name, p.tail(6000))
		}
	}
}

// fault is one step of the scenario; short says whether the short form runs it too.
type fault struct {
	name  string
	short bool
	do    func()
}

type result struct{ lost, dup, extra, disordered int }

// compare checks got against want, per vehicle: every wanted id exactly once, nothing
// else, and in the wanted order.
func compare(t *testing.T, what string, want, got map[string][]string) result {
	t.Helper()
	var r result
	report := func(n *int, format string, args ...any) {
		*n++
		if *n <= 10 {
			t.Errorf(what+": "+format, args...)
		}
	}
	for v, ids := range got {
		seen := map[string]int{}
		for _, id := range ids {
			seen[id]++
		}
		wanted := map[string]bool{}
		for _, id := range want[v] {
			wanted[id] = true
		}
		for id, n := range seen {
			if n > 1 {
				r.dup += n - 1
				if r.dup <= 10 {
					t.Errorf("%s: %s of %s stored %d times", what, id, v, n)
				}
			}
			if !wanted[id] {
				report(&r.extra, "%s of %s was not implied by the stream (raised from lost state?)", id, v)
			}
		}
	}
	for v, ids := range want {
		seen := map[string]bool{}
		for _, id := range got[v] {
			seen[id] = true
		}
		for _, id := range ids {
			if !seen[id] {
				report(&r.lost, "%s of %s lost", id, v)
			}
		}
		if g := slices.Compact(slices.Clone(got[v])); len(g) == len(ids) && !slices.Equal(g, ids) {
			report(&r.disordered, "%s out of order: got %v, want %v", v, g, ids)
		}
	}
	return r
}

func decodeEvent(t *testing.T, m stored) *fleetv1.Event {
	t.Helper()
	var e fleetv1.Event
	if err := proto.Unmarshal(m.data, &e); err != nil {
		t.Fatalf("undecodable event at %d: %v", m.seq, err)
	}
	return &e
}

// pointKey identifies a history point: device time (the history's score, ms) and the
// record's sequence number.
func pointKey(f *tracking.Fix) string {
	return strconv.FormatInt(f.Time.UnixMilli(), 10) + "/" + strconv.FormatUint(f.Seq, 10)
}

// expectedTracking replays the stored records through tracking's Tracker in stream order,
// as the service applies them, and returns per vehicle the history it keeps (in time
// order) and the status events it raises (in order): the records' status changes, an
// offline when the stream holds nothing from a vehicle for longer than the threshold, and
// the offline of every vehicle after the end of the run.
func expectedTracking(t *testing.T, recs []stored, offlineAfter time.Duration) (points map[string][]string, status map[string][]*fleetv1.Event) {
	t.Helper()
	cfg := tracking.DefaultConfig()
	cfg.OfflineAfter = offlineAfter
	tr := tracking.NewTracker(cfg)
	states := map[string]*tracking.State{}
	hist := map[string]map[string]tracking.Fix{}
	status = map[string][]*fleetv1.Event{}
	raise := func(st *tracking.State, r *telemetry.Record) {
		status[st.VehicleID] = append(status[st.VehicleID], &fleetv1.Event{
			EventId: tracking.StatusEventID(st, r), Source: "tracking", Kind: "status_changed", VehicleId: st.VehicleID,
			Time: timestamppb.New(st.StatusTime), Attributes: map[string]string{"status": st.Status.String(), "previous": st.PrevStatus.String()},
		})
	}
	for _, m := range recs {
		addr, err := bus.ParseSubject(m.subject)
		if err != nil || addr.Partition < 0 || addr.Kind == bus.KindReply {
			continue
		}
		rs, _, err := wire.DecodeBatch(addr.Vehicle, m.data, m.json)
		if err != nil {
			continue
		}
		v := addr.Vehicle
		st := states[v]
		if st == nil {
			st = tracking.NewState(v)
			states[v] = st
			hist[v] = map[string]tracking.Fix{}
		}
		if len(rs) > 0 && tr.Sweep(st, m.time) {
			raise(st, nil)
		}
		for i := range rs {
			r := &rs[i]
			r.ReceivedTime, r.StreamSeq = m.time, m.seq
			res := tr.Apply(st, r, m.time)
			if res.Dropped {
				continue
			}
			for _, f := range res.Released {
				hist[v][pointKey(&f)] = f
			}
			for _, f := range res.Retracted {
				delete(hist[v], pointKey(&f))
			}
			if res.HasPoint {
				hist[v][pointKey(&res.Point)] = res.Point
			}
			if res.StatusChanged {
				raise(st, r)
			}
		}
		st.MarkApplied(m.seq, m.time)
	}
	for _, st := range states {
		if !telemetry.IsLoadTest(st.VehicleID) && tr.Sweep(st, time.Now().Add(24*time.Hour)) {
			raise(st, nil)
		}
	}
	points = map[string][]string{}
	for v, h := range hist {
		fixes := make([]tracking.Fix, 0, len(h))
		for _, f := range h {
			fixes = append(fixes, f)
		}
		slices.SortFunc(fixes, func(a, b tracking.Fix) int {
			if c := a.Time.Compare(b.Time); c != 0 {
				return c
			}
			return cmp.Compare(a.Seq, b.Seq)
		})
		for i := range fixes {
			points[v] = append(points[v], pointKey(&fixes[i]))
		}
	}
	return points, status
}

// ids are the event ids of events, per vehicle.
func ids(events map[string][]*fleetv1.Event) map[string][]string {
	out := make(map[string][]string, len(events))
	for v, es := range events {
		for _, e := range es {
			out[v] = append(out[v], e.GetEventId())
		}
	}
	return out
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

// putZones writes zones around the simulated city into the geofence bucket and returns
// them compiled, as geofence compiles them.
func putZones(t *testing.T, b *bus.Bus, c geo.Point) *fence.Index {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := b.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: geofence.DefaultZoneBucket, History: 5, MaxValueSize: fence.MaxDefinitionBytes + 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A grid of small circles over the city: vehicles moving at city speeds cross a
	// boundary every few hundred metres, so a short run raises enough zone events.
	var zs []*fence.Zone
	const n, spacing = 40, 400.0
	for i := range n {
		for j := range n {
			north := geo.Destination(c, 0, (float64(i)-n/2)*spacing)
			p := geo.Destination(north, 90, (float64(j)-n/2)*spacing)
			// Every zone event raises an alert too, so the alert path is checked on
			// real counts (the default policy raises only for broken rules).
			spec := fence.Spec{ID: fmt.Sprintf("z%02d-%02d", i, j), Name: fmt.Sprintf("Zone %d/%d", i, j),
				GeoJSON: fmt.Sprintf(`{"type":"Point","coordinates":[%f,%f]}`, p.Lon, p.Lat), RadiusM: 150,
				AlertPolicy: &fence.AlertPolicy{Raise: []fence.EventKind{fence.Enter, fence.Exit, fence.Dwell, fence.Crossed}},
				UpdateTime:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			data, err := json.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, spec.ID, data); err != nil {
				t.Fatal(err)
			}
			z, err := fence.Compile(spec)
			if err != nil {
				t.Fatal(err)
			}
			zs = append(zs, z)
		}
	}
	return fence.NewIndex(zs)
}

type stored struct {
	subject string
	data    []byte
	seq     uint64
	time    time.Time
	json    bool
}

// readStream reads every message of stream matching filter, in order.
func readStream(t *testing.T, ctx context.Context, b *bus.Bus, stream, filter string) []stored {
	t.Helper()
	s, err := b.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	cfg := jetstream.OrderedConsumerConfig{}
	if filter != ">" {
		cfg.FilterSubjects = []string{filter}
	}
	oc, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for {
		batch, err := oc.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			out = append(out, stored{subject: m.Subject(), data: m.Data(), seq: md.Sequence.Stream, time: md.Timestamp,
				json: m.Headers().Get(wire.HeaderContentType) == wire.ContentTypeJSON})
		}
		if n > 0 && out[len(out)-1].seq >= last {
			return out
		}
		if n == 0 {
			ci, err := oc.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ci.NumPending == 0 {
				return out
			}
		}
		if ctx.Err() != nil {
			t.Fatal("reading the stream timed out")
		}
	}
}

// waitCaughtUp waits until every durable of services has nothing pending or unacknowledged.
func waitCaughtUp(t *testing.T, ctx context.Context, b *bus.Bus, services []string) {
	t.Helper()
	busy := func(streams ...string) bool {
		for _, name := range streams {
			s, err := b.Stream(ctx, name)
			if err != nil {
				return true
			}
			lister := s.ListConsumers(ctx)
			for ci := range lister.Info() {
				for _, svc := range services {
					if strings.HasPrefix(ci.Name, svc+"-") && (ci.NumPending > 0 || ci.NumAckPending > 0) {
						return true
					}
				}
			}
			if lister.Err() != nil {
				return true
			}
		}
		return false
	}
	for {
		// Events raised by the last batches reach dispatch-events after geofence acks:
		// a second look after a pause confirms nothing is moving.
		if !busy(bus.TelemetryStream, bus.EventStream) {
			time.Sleep(2 * time.Second)
			if !busy(bus.TelemetryStream, bus.EventStream) {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatal("services did not catch up within 5 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// expectedZoneEvents replays the stored records through geofence's engine in stream
// order, as the service applies them.
func expectedZoneEvents(t *testing.T, recs []stored, ix *fence.Index) []fence.Event {
	t.Helper()
	rules := geofence.DefaultConfig().Rules
	states := map[string]*fence.State{}
	var events []fence.Event
	for _, m := range recs {
		addr, err := bus.ParseSubject(m.subject)
		if err != nil || (addr.Kind != bus.KindTelemetry && addr.Kind != bus.KindAlarm) {
			continue
		}
		rs, _, err := wire.DecodeBatch(addr.Vehicle, m.data, m.json)
		if err != nil {
			continue
		}
		st := states[addr.Vehicle]
		if st == nil {
			st = &fence.State{Vehicle: addr.Vehicle}
			states[addr.Vehicle] = st
		}
		slices.SortStableFunc(rs, func(a, b telemetry.Record) int { return a.DeviceTime.Compare(b.DeviceTime) })
		for _, r := range rs {
			if r.CheckPosition() != nil {
				continue
			}
			events, _ = rules.Step(ix, st, fence.Fix{Time: r.DeviceTime, Lat: r.Lat, Lon: r.Lon, SpeedKmh: r.SpeedKmh}, events)
		}
	}
	return events
}

// expectedAlerts maps expected events to the alert events dispatch publishes for them,
// per vehicle in order: dispatch's mapping and default rules decide which raise an alert
// and which resolve one, and its own store logic (a MemoryStore) merges an occurrence into
// the open alert of its incident; every occurrence publishes its alert's event, whose id
// names the incident and the first cause, so a merged one repeats an id JetStream stores
// once.
func expectedAlerts(t *testing.T, ctx context.Context, events []*fleetv1.Event) map[string][]string {
	t.Helper()
	cfg := dispatch.DefaultConfig()
	st := dispatch.NewMemoryStore()
	out := map[string][]string{}
	seen := map[string]bool{}
	for _, pe := range events {
		data, err := proto.Marshal(pe)
		if err != nil {
			t.Fatal(err)
		}
		e, err := dispatch.DecodeEvent(data, "", pe.GetTime().AsTime())
		if err != nil {
			t.Fatal(err)
		}
		a, act := dispatch.AlertFromEvent(&e)
		switch cfg.Rules.Decide(&a, act) {
		case dispatch.EventRaise:
		case dispatch.EventResolve:
			if _, _, err := st.ResolveIncident(ctx, a.IncidentKey, "system", "vehicle back online", e.Time); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			continue
		}
		got, _, err := st.RaiseAlert(ctx, a, cfg.AlertCooldown)
		if err != nil {
			t.Fatal(err)
		}
		h := fnv.New64a()
		h.Write([]byte(got.IncidentKey + "|" + got.CauseID))
		id := "dispatch-alert-" + strconv.FormatUint(h.Sum64(), 36)
		if !seen[id] {
			seen[id] = true
			out[got.Vehicle] = append(out[got.Vehicle], id)
		}
	}
	return out
}
