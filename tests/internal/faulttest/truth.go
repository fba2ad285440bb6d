package faulttest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
	"github.com/fleetwire/fleetwire/services/tracking"
)

// Result counts what Compare found.
type Result struct{ Lost, Dup, Extra, Disordered int }

// Compare checks got against want, per vehicle: every wanted id exactly once, nothing
// else, and in the wanted order. It reports the first ten findings of each kind as
// test errors, prefixed with what.
func Compare(t *testing.T, what string, want, got map[string][]string) Result {
	t.Helper()
	var r Result
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
				r.Dup += n - 1
				if r.Dup <= 10 {
					t.Errorf("%s: %s of %s stored %d times", what, id, v, n)
				}
			}
			if !wanted[id] {
				report(&r.Extra, "%s of %s was not implied by the stream (raised from lost state?)", id, v)
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
				report(&r.Lost, "%s of %s lost", id, v)
			}
		}
		if g := slices.Compact(slices.Clone(got[v])); len(g) == len(ids) && !slices.Equal(g, ids) {
			report(&r.Disordered, "%s out of order: got %v, want %v", v, g, ids)
		}
	}
	return r
}

// Stored is a message as the stream stores it.
type Stored struct {
	Subject string
	Data    []byte
	Seq     uint64
	Time    time.Time
	JSON    bool
}

// DecodeEvent decodes a message of the event stream.
func DecodeEvent(t *testing.T, m Stored) *fleetv1.Event {
	t.Helper()
	var e fleetv1.Event
	if err := proto.Unmarshal(m.Data, &e); err != nil {
		t.Fatalf("undecodable event at %d: %v", m.Seq, err)
	}
	return &e
}

// PointKey identifies a history point: device time (the history's score, ms) and the
// record's sequence number.
func PointKey(f *tracking.Fix) string {
	return strconv.FormatInt(f.Time.UnixMilli(), 10) + "/" + strconv.FormatUint(f.Seq, 10)
}

// ExpectedTracking replays the stored records through tracking's Tracker in stream order,
// as the service applies them, and returns per vehicle the history it keeps (in time
// order) and the status events it raises (in order): the records' status changes and,
// when offlineAfter is set (tracking's threshold in the run), an offline when the stream
// holds nothing from a vehicle for longer than the threshold, and the offline of every
// vehicle after the end of the run. With offlineAfter zero the replay uses tracking's
// default configuration and raises no offline.
func ExpectedTracking(t *testing.T, recs []Stored, offlineAfter time.Duration) (points map[string][]string, status map[string][]*fleetv1.Event) {
	t.Helper()
	cfg := tracking.DefaultConfig()
	sweeps := offlineAfter > 0
	if sweeps {
		cfg.OfflineAfter = offlineAfter
	}
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
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil || addr.Partition < 0 || addr.Kind == bus.KindReply {
			continue
		}
		rs, _, err := wire.DecodeBatch(addr.Vehicle, m.Data, m.JSON)
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
		if sweeps && len(rs) > 0 && tr.Sweep(st, m.Time) {
			raise(st, nil)
		}
		for i := range rs {
			r := &rs[i]
			r.ReceivedTime, r.StreamSeq = m.Time, m.Seq
			res := tr.Apply(st, r, m.Time)
			if res.Dropped {
				continue
			}
			for _, f := range res.Released {
				hist[v][PointKey(&f)] = f
			}
			for _, f := range res.Retracted {
				delete(hist[v], PointKey(&f))
			}
			if res.HasPoint {
				hist[v][PointKey(&res.Point)] = res.Point
			}
			if res.StatusChanged {
				raise(st, r)
			}
		}
		st.MarkApplied(m.Seq, m.Time)
	}
	if sweeps {
		for _, st := range states {
			if !telemetry.IsLoadTest(st.VehicleID) && tr.Sweep(st, time.Now().Add(24*time.Hour)) {
				raise(st, nil)
			}
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
			points[v] = append(points[v], PointKey(&fixes[i]))
		}
	}
	return points, status
}

// IDs are the event ids of events, per vehicle.
func IDs(events map[string][]*fleetv1.Event) map[string][]string {
	out := make(map[string][]string, len(events))
	for v, es := range events {
		for _, e := range es {
			out[v] = append(out[v], e.GetEventId())
		}
	}
	return out
}

// PutZones writes zones around the simulated city into the geofence bucket (at replicas,
// 0 for one) and returns them compiled, as geofence compiles them.
func PutZones(t *testing.T, b *bus.Bus, c geo.Point, replicas int) *fence.Index {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := b.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: geofence.DefaultZoneBucket, History: 5, Replicas: replicas, MaxValueSize: fence.MaxDefinitionBytes + 4096,
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

// ReadStream reads every message of stream matching filter, in order.
func ReadStream(t *testing.T, ctx context.Context, b *bus.Bus, stream, filter string) []Stored {
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
	var out []Stored
	for {
		batch, err := oc.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			out = append(out, Stored{Subject: m.Subject(), Data: m.Data(), Seq: md.Sequence.Stream, Time: md.Timestamp,
				JSON: m.Headers().Get(wire.HeaderContentType) == wire.ContentTypeJSON})
		}
		if n > 0 && out[len(out)-1].Seq >= last {
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

// WaitCaughtUp waits until every durable of services has nothing pending or
// unacknowledged, bounded only by ctx.
func WaitCaughtUp(t *testing.T, ctx context.Context, b *bus.Bus, services []string) {
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
			t.Fatal("services did not catch up before the test's deadline")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ExpectedZoneEvents replays the stored records through geofence's engine in stream
// order, as the service applies them.
func ExpectedZoneEvents(t *testing.T, recs []Stored, ix *fence.Index) []fence.Event {
	t.Helper()
	rules := geofence.DefaultConfig().Rules
	states := map[string]*fence.State{}
	var events []fence.Event
	for _, m := range recs {
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil || (addr.Kind != bus.KindTelemetry && addr.Kind != bus.KindAlarm) {
			continue
		}
		rs, _, err := wire.DecodeBatch(addr.Vehicle, m.Data, m.JSON)
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

// ZoneProtoEvents are zone events as geofence publishes them.
func ZoneProtoEvents(events []fence.Event) []*fleetv1.Event {
	out := make([]*fleetv1.Event, 0, len(events))
	now := timestamppb.Now()
	for i := range events {
		out = append(out, geofence.ToProtoEvent(&events[i], now))
	}
	return out
}

// ExpectedAlerts maps expected events to the alert events dispatch publishes for them,
// per vehicle in order: dispatch's mapping and default rules decide which raise an alert
// and which resolve one, and its own store logic (a MemoryStore) merges an occurrence into
// the open alert of its incident; every occurrence publishes its alert's event, whose id
// names the incident and the first cause, so a merged one repeats an id JetStream stores
// once.
func ExpectedAlerts(t *testing.T, ctx context.Context, events []*fleetv1.Event) map[string][]string {
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

// Report runs checks with Compare and keeps a line of figures for each, for the test's
// summary.
type Report struct {
	T     *testing.T
	Lines []string
}

// Check compares got with want (Compare) and adds its figures to the report. A check
// over nothing fails: it would pass whatever the services did.
func (r *Report) Check(what string, want, got map[string][]string) {
	r.T.Helper()
	n := 0
	for _, ids := range want {
		n += len(ids)
	}
	if n == 0 {
		r.T.Errorf("%s: the scenario implies none: the check compares nothing", what)
	}
	c := Compare(r.T, what, want, got)
	r.Lines = append(r.Lines, fmt.Sprintf("%s: expected %d, lost %d, duplicated %d, unexplained %d, vehicles out of order %d",
		what, n, c.Lost, c.Dup, c.Extra, c.Disordered))
}

// StoredTrack reads back from tracking's store the history of every vehicle of want, as
// point keys per vehicle.
func StoredTrack(t *testing.T, ctx context.Context, trk *tracking.RedisStore, want map[string][]string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for v := range want {
		fixes, err := trk.Track(ctx, v, time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatalf("track of %s: %v", v, err)
		}
		for i := range fixes {
			got[v] = append(got[v], PointKey(&fixes[i]))
		}
	}
	return got
}
