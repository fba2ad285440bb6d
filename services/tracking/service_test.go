package tracking

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testBus(t *testing.T) *bus.Bus {
	t.Helper()
	return natstest.Bus(t)
}

// running is a Service whose Run is in progress.
type running struct {
	*Service
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run returned %v, want nil on a clean stop", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func startService(t *testing.T, cfg Config, b *bus.Bus, st Store, log *slog.Logger) *running {
	t.Helper()
	s, err := New(cfg, b, st, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Service: s, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = s.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
	})
	return r
}

func publish(t *testing.T, b *bus.Bus, vehicle, kind string, data []byte, hdr nats.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := &nats.Msg{Subject: bus.UpSubject(vehicle, kind), Data: data, Header: hdr}
	if _, err := b.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

func publishRecords(t *testing.T, b *bus.Bus, vehicle string, recs ...telemetry.Record) {
	t.Helper()
	data, err := wire.EncodeBatch(vehicle, time.Now(), recs)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, vehicle, bus.KindTelemetry, data, nil)
}

// liveRec is a valid record 10·seq seconds after base (keep distM/seq at about 100 m: 36 km/h).
func liveRec(vehicle string, seq uint64, base time.Time, distM float64) telemetry.Record {
	p := east0(distM)
	r := telemetry.Record{VehicleID: vehicle, DeviceTime: base.Add(time.Duration(seq) * 10 * time.Second), Sequence: seq,
		Lat: p[0], Lon: p[1], SpeedKmh: 36, FixValid: true}
	r.Ignition = true
	r.Set(telemetry.HasIgnition)
	return r
}

func east0(distM float64) [2]float64 {
	lat, lon := east(45, 7, distM)
	return [2]float64{lat, lon}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func storedState(t *testing.T, st Store, id string) *State {
	t.Helper()
	ss, err := st.States(context.Background(), []string{id})
	if err != nil {
		t.Fatal(err)
	}
	return ss[0]
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBadInputRejectedCountedAndSkipped(t *testing.T) {
	b := testBus(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	st := NewMemoryStore()
	svc := startService(t, DefaultConfig(), b, st, log)
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)

	// Malformed payloads, twice: counted twice, logged once.
	publish(t, b, "bad1", bus.KindTelemetry, []byte("\xff\xff\xff not protobuf"), nil)
	publish(t, b, "bad1", bus.KindTelemetry, []byte("\xff\xff\xff not protobuf"), nil)
	// An unknown record kind on a device subject.
	publish(t, b, "v1", "weird", []byte("x"), nil)
	// A batch mixing NaN and out-of-range coordinates with a good record.
	nan := liveRec("v1", 1, base, 0)
	nan.Lat = math.NaN()
	out := liveRec("v1", 2, base, 100)
	out.Lon = 200
	publishRecords(t, b, "v1", nan, out, liveRec("v1", 3, base, 200))
	// JSON is accepted with its content type; then more good records.
	js, err := protojson.Marshal(&fleetv1.TelemetryBatch{VehicleId: "v1", Records: []*fleetv1.TelemetryRecord{wire.ToRecord(new(liveRec("v1", 4, base, 300)))}})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, "v1", bus.KindTelemetry, js, nats.Header{wire.HeaderContentType: []string{wire.ContentTypeJSON}})
	publishRecords(t, b, "v1", liveRec("v1", 5, base, 400))

	waitFor(t, "the good records after the bad input", func() bool {
		s := storedState(t, st, "v1")
		return s != nil && s.LastSequence == 5
	})
	// bad1 lives in another partition, consumed independently of v1's: wait for it too.
	waitFor(t, "the malformed payloads of another partition", func() bool {
		return svc.Rejected("malformed") >= 2
	})
	s := storedState(t, st, "v1")
	if s.Records != 5 { // every record counts; the two bad positions are discarded, not the records
		t.Errorf("got %d records applied, want 5", s.Records)
	}
	if want := east0(400); !near(s.Fix.Lat, want[0], 1e-9) || !near(s.Fix.Lon, want[1], 1e-9) {
		t.Errorf("got position %.6f,%.6f, want %.6f,%.6f", s.Fix.Lat, s.Fix.Lon, want[0], want[1])
	}
	for reason, want := range map[string]float64{
		"malformed": 2, rejectUnknownSubject: 1, "nan_coordinate": 1, "out_of_range": 1,
	} {
		if got := svc.Rejected(reason); got != want {
			t.Errorf("reason %s: got %v rejections, want %v", reason, got, want)
		}
	}
	text := logs.String()
	for _, reason := range []string{"malformed", rejectUnknownSubject, "nan_coordinate", "out_of_range"} {
		if n := strings.Count(text, "reason="+reason); n != 1 {
			t.Errorf("reason %s logged %d times, want once", reason, n)
		}
	}
	if v, _ := st.Vehicles(context.Background(), []string{"bad1"}); len(v) != 0 {
		t.Errorf("a vehicle that sent only garbage got state: %+v", v)
	}
}

func TestRestartLosesNothingMemory(t *testing.T) {
	testRestart(t, NewMemoryStore())
}

func TestRestartLosesNothingRedis(t *testing.T) {
	c := redistest.Client(t)
	testRestart(t, NewRedisStore(c, redistest.Prefix(t, c)))
}

// testRestart stops the service mid-stream, publishes more while it is down, starts a new
// one over the same store and checks every record counted exactly once.
func testRestart(t *testing.T, st Store) {
	b := testBus(t)
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	vehicles := []string{"r1", "r2", "r3", "r4", "r5"}
	const perRound, stepM = 40, 100.0
	seq := map[string]uint64{}
	publishRound := func() {
		for i := 0; i < perRound; i++ {
			for _, v := range vehicles {
				seq[v]++
				publishRecords(t, b, v, liveRec(v, seq[v], base, float64(seq[v])*stepM))
			}
		}
	}
	// Records the stopped instance had fetched but not acknowledged come back after AckWait.
	cfg := DefaultConfig()
	cfg.AckWait = time.Second
	svc := startService(t, cfg, b, st, discardLog())
	publishRound()
	waitFor(t, "some records applied", func() bool {
		s := storedState(t, st, "r1")
		return s != nil && s.Records > 0
	})
	svc.stop(t) // mid-stream: part of the round is still unprocessed
	publishRound()
	publishRound()

	startService(t, cfg, b, st, discardLog())
	total := uint64(3 * perRound)
	waitFor(t, "every record after the restart", func() bool {
		for _, v := range vehicles {
			s := storedState(t, st, v)
			if s == nil || s.LastSequence != total || s.Records < total {
				return false
			}
		}
		return true
	})
	for _, v := range vehicles {
		s := storedState(t, st, v)
		if s.Records != total {
			t.Errorf("%s: got %d records, want %d (none lost, none counted twice)", v, s.Records, total)
		}
		// The first fix is at stepM; the odometer is the driven distance since.
		if want := float64(total-1) * stepM; !near(s.OdometerM, want, 1) {
			t.Errorf("%s: got odometer %.1f m, want %.1f", v, s.OdometerM, want)
		}
		track, err := st.Track(context.Background(), v, base, base.Add(time.Hour))
		if err != nil || uint64(len(track)) != total {
			t.Errorf("%s: got %d history fixes, %v; want %d", v, len(track), err, total)
		}
	}
}

func TestRebuildFromStreamCountsOnce(t *testing.T) {
	// In-memory mode re-reads the whole stream at start; a store that survived (the same
	// object) must not count anything twice.
	b := testBus(t)
	st := NewMemoryStore()
	cfg := DefaultConfig()
	cfg.Rebuild = true
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	for i := uint64(1); i <= 20; i++ {
		publishRecords(t, b, "rb", liveRec("rb", i, base, float64(i)*50))
	}
	svc := startService(t, cfg, b, st, discardLog())
	waitFor(t, "first run", func() bool { s := storedState(t, st, "rb"); return s != nil && s.LastSequence == 20 })
	svc.stop(t)
	startService(t, cfg, b, st, discardLog())
	publishRecords(t, b, "rb", liveRec("rb", 21, base, 21*50))
	waitFor(t, "second run", func() bool { s := storedState(t, st, "rb"); return s != nil && s.LastSequence == 21 })
	if s := storedState(t, st, "rb"); s.Records != 21 || !near(s.OdometerM, 1000, 1) {
		t.Errorf("got %d records, odometer %.1f; want 21 and 1000 m", s.Records, s.OdometerM)
	}
}

func TestStatusEventsAndOffline(t *testing.T) {
	b := testBus(t)
	cfg := DefaultConfig()
	cfg.OfflineAfter = time.Second
	cfg.SweepInterval = 100 * time.Millisecond
	st := NewMemoryStore()
	events := make(chan *fleetv1.Event, 16)
	sub, err := b.Conn().Subscribe(bus.EventSourceFilter("tracking"), func(m *nats.Msg) {
		var e fleetv1.Event
		if err := proto.Unmarshal(m.Data, &e); err == nil {
			events <- &e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	startService(t, cfg, b, st, discardLog())
	publishRecords(t, b, "ev1", liveRec("ev1", 1, time.Now().Add(-time.Minute), 0))

	want := []struct{ status, previous string }{{"moving", "never_seen"}, {"offline", "moving"}}
	for _, w := range want {
		select {
		case e := <-events:
			if e.GetKind() != "status_changed" || e.GetVehicleId() != "ev1" || e.GetAttributes()["status"] != w.status || e.GetAttributes()["previous"] != w.previous {
				t.Fatalf("got event %v, want ev1 %s (was %s)", e, w.status, w.previous)
			}
			if e.GetEventId() == "" || e.GetTime() == nil {
				t.Errorf("event without id or time: %v", e)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", w.status)
		}
	}
	// The event is stored before the state (a crash in between must not lose it).
	waitFor(t, "stored status offline", func() bool { s := storedState(t, st, "ev1"); return s != nil && s.Status == StatusOffline })
}

func TestGRPCWatchAndQueries(t *testing.T) {
	b := testBus(t)
	st := NewMemoryStore()
	svc := startService(t, DefaultConfig(), b, st, discardLog())
	gs := grpcserver.New(discardLog(), nil)
	svc.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go gs.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := fleetv1.NewTrackingServiceClient(conn)

	if _, err := client.RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: "w0", Name: "Truck 0", Groups: []string{"blue"}}); err != nil {
		t.Fatal(err)
	}
	stream, err := client.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || !first.GetSnapshot() || first.GetVehicle().GetVehicleId() != "w0" ||
		first.GetVehicle().GetState().GetStatus() != fleetv1.VehicleStatus_VEHICLE_STATUS_NEVER_SEEN {
		t.Fatalf("got first message %v, %v; want the snapshot of never-seen w0", first, err)
	}
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	vehicles := []string{"w0", "w1", "w2"}
	for i := uint64(1); i <= 3; i++ {
		for _, v := range vehicles {
			publishRecords(t, b, v, liveRec(v, i, base, float64(i)*100))
		}
	}
	last := map[string]uint64{}
	for len(last) < len(vehicles) || last["w0"] != 3 || last["w1"] != 3 || last["w2"] != 3 {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v (seen %v)", err, last)
		}
		if m.GetSnapshot() {
			t.Fatalf("got a snapshot message after the snapshot: %v", m)
		}
		last[m.GetVehicle().GetVehicleId()] = m.GetVehicle().GetState().GetLastSequence()
	}

	got, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "w0"})
	if err != nil || got.GetVehicle().GetName() != "Truck 0" || !got.GetVehicle().GetRegistered() || got.GetVehicle().GetState().GetRecords() != 3 {
		t.Errorf("GetVehicle w0: got %v, %v", got, err)
	}
	if got.GetVehicle().GetState().GetLastSentTime() == nil {
		t.Error("last_sent_time not filled")
	}
	if _, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetVehicle of unknown: got %v, want NotFound", err)
	}
	if _, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "a.b"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetVehicle of a bad id: got %v, want InvalidArgument", err)
	}
	if _, err := client.RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: "w0"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second RegisterVehicle: got %v, want AlreadyExists", err)
	}

	// ListVehicles pages through everyone; unregistered vehicles are listed as such.
	page1, err := client.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 2})
	if err != nil || len(page1.GetVehicles()) != 2 || page1.GetTotalSize() != 3 || page1.GetNextPageToken() == "" {
		t.Fatalf("ListVehicles page 1: got %v, %v", page1, err)
	}
	page2, err := client.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 2, PageToken: page1.GetNextPageToken()})
	if err != nil || len(page2.GetVehicles()) != 1 || page2.GetVehicles()[0].GetVehicleId() != "w2" || page2.GetVehicles()[0].GetRegistered() || page2.GetNextPageToken() != "" {
		t.Fatalf("ListVehicles page 2: got %v, %v", page2, err)
	}
	blue, err := client.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{Group: "blue"})
	if err != nil || len(blue.GetVehicles()) != 1 || blue.GetTotalSize() != 1 {
		t.Errorf("ListVehicles group blue: got %v, %v", blue, err)
	}

	// A watch with a filter sees only its vehicles; an update of the registry is an update.
	fstream, err := client.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{Groups: []string{"red"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.UpdateVehicle(ctx, &fleetv1.UpdateVehicleRequest{VehicleId: "w0", Groups: []string{"red"}}); err != nil {
		t.Fatal(err)
	}
	m, err := fstream.Recv()
	if err != nil || m.GetVehicle().GetVehicleId() != "w0" || m.GetVehicle().GetName() != "" {
		t.Fatalf("filtered watch: got %v, %v; want w0 (name cleared by the full update)", m, err)
	}

	near, err := client.SearchNearestVehicles(ctx, &fleetv1.SearchNearestVehiclesRequest{Point: &fleetv1.LatLng{Latitude: 45, Longitude: 7}, Limit: 2})
	if err != nil || len(near.GetVehicles()) != 2 || near.GetVehicles()[0].GetDistanceM() > near.GetVehicles()[1].GetDistanceM() {
		t.Errorf("SearchNearestVehicles: got %v, %v", near, err)
	}
	track, err := client.GetTrack(ctx, &fleetv1.GetTrackRequest{VehicleId: "w1", StartTime: timestamppb.New(base), EndTime: timestamppb.New(base.Add(time.Hour))})
	if err != nil || len(track.GetFixes()) != 3 || track.GetTotalFixes() != 3 {
		t.Errorf("GetTrack: got %v, %v", track, err)
	}
	if _, err := client.GetTrack(ctx, &fleetv1.GetTrackRequest{VehicleId: "w1"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetTrack without a range: got %v, want InvalidArgument", err)
	}
	if _, err := client.ListTrips(ctx, &fleetv1.ListTripsRequest{VehicleId: "w1", StartTime: timestamppb.New(base), EndTime: timestamppb.New(base.Add(time.Hour))}); err != nil {
		t.Errorf("ListTrips: %v", err)
	}
}

func TestTwoInstancesSplitPartitions(t *testing.T) {
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c)
	b := testBus(t)
	cfgA, cfgB := DefaultConfig(), DefaultConfig()
	cfgA.Partitions = []int{0, 1, 2, 3, 4, 5, 6, 7}
	cfgB.Partitions = []int{8, 9, 10, 11, 12, 13, 14, 15}
	a := startService(t, cfgA, b, NewRedisStore(c, prefix), discardLog())
	bb := startService(t, cfgB, b, NewRedisStore(c, prefix), discardLog())
	st := NewRedisStore(c, prefix)
	// A watcher on one instance must see the vehicles the other instance applies.
	waitFor(t, "both instances running", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		bb.mu.RLock()
		defer bb.mu.RUnlock()
		return a.nParts > 0 && bb.nParts > 0
	})
	w := a.hub.subscribe(WatchFilter{})
	defer a.hub.unsubscribe(w)
	watched := map[string]uint64{}
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	const vehicles, records = 20, 10
	for i := uint64(1); i <= records; i++ {
		for v := range vehicles {
			id := "split-" + string(rune('a'+v))
			publishRecords(t, b, id, liveRec(id, i, base, float64(i)*100))
		}
	}
	waitFor(t, "every vehicle's records", func() bool {
		for v := range vehicles {
			s := storedState(t, st, "split-"+string(rune('a'+v)))
			if s == nil || s.Records < records {
				return false
			}
		}
		return true
	})
	waitFor(t, "a watcher on one instance seeing every vehicle's last record", func() bool {
		updates, _ := w.take()
		for _, v := range updates {
			if v.State != nil {
				watched[v.Info.ID] = max(watched[v.Info.ID], v.State.Records)
			}
		}
		for v := range vehicles {
			if watched["split-"+string(rune('a'+v))] < records {
				return false
			}
		}
		return true
	})
	for v := range vehicles {
		s := storedState(t, st, "split-"+string(rune('a'+v)))
		if s.Records != records || !near(s.OdometerM, (records-1)*100, 1) {
			t.Errorf("%s: got %d records, odometer %.1f; want %d and %d m", s.VehicleID, s.Records, s.OdometerM, records, (records-1)*100)
		}
	}
	// Each instance holds only the vehicles of its own partitions.
	for _, r := range []*running{a, bb} {
		r.mu.RLock()
		n := len(r.cache)
		for id := range r.cache {
			if !r.owns(bus.PartitionOf(id, bus.DefaultPartitions)) {
				t.Errorf("instance with partitions %v applied %s of partition %d", r.cfg.Partitions, id, bus.PartitionOf(id, bus.DefaultPartitions))
			}
		}
		r.mu.RUnlock()
		if n == 0 {
			t.Errorf("instance with partitions %v applied nothing", r.cfg.Partitions)
		}
	}
}

// TestOfflineFromStreamSilence: a vehicle the stream holds nothing from for longer than
// OfflineAfter was offline, whether or not a sweep ran in that time. Here none can (the
// sweep period is an hour): the service applies the silence from the stream when the
// next record comes, with the sweep's own event id, as a rebuild or a catch-up does.
func TestOfflineFromStreamSilence(t *testing.T) {
	b := testBus(t)
	cfg := DefaultConfig()
	cfg.OfflineAfter = 500 * time.Millisecond
	cfg.SweepInterval = time.Hour
	st := NewMemoryStore()
	events := make(chan *fleetv1.Event, 16)
	sub, err := b.Conn().Subscribe(bus.EventSourceFilter("tracking"), func(m *nats.Msg) {
		var e fleetv1.Event
		if err := proto.Unmarshal(m.Data, &e); err == nil {
			events <- &e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	startService(t, cfg, b, st, discardLog())
	base := time.Now().Add(-time.Minute)
	publishRecords(t, b, "sil", liveRec("sil", 1, base, 0))
	waitFor(t, "first record applied", func() bool { s := storedState(t, st, "sil"); return s != nil && s.LastSequence == 1 })
	first := storedState(t, st, "sil")
	// The stream's silence: the next record is stored more than OfflineAfter later.
	for time.Since(first.LastSeen) <= cfg.OfflineAfter {
		time.Sleep(50 * time.Millisecond)
	}
	publishRecords(t, b, "sil", liveRec("sil", 2, base, 100))

	offline := first.Clone()
	if !NewTracker(cfg).Sweep(offline, first.LastSeen.Add(time.Hour)) {
		t.Fatal("the sweep does not take the first state offline")
	}
	want := []struct{ status, previous, id string }{
		{"moving", "never_seen", ""},
		{"offline", "moving", StatusEventID(offline, nil)},
		{"moving", "offline", ""},
	}
	for _, w := range want {
		select {
		case e := <-events:
			if e.GetVehicleId() != "sil" || e.GetAttributes()["status"] != w.status || e.GetAttributes()["previous"] != w.previous {
				t.Fatalf("got event %v, want sil %s (was %s)", e, w.status, w.previous)
			}
			if w.id != "" && e.GetEventId() != w.id {
				t.Errorf("offline event id %s, want the sweep's %s", e.GetEventId(), w.id)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", w.status)
		}
	}
}
