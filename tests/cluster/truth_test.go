package cluster

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
// order) and the ids of the status events it raises (in order).
func expectedTracking(t *testing.T, recs []stored) (points, status map[string][]string) {
	t.Helper()
	tr := tracking.NewTracker(tracking.DefaultConfig())
	states := map[string]*tracking.State{}
	hist := map[string]map[string]tracking.Fix{}
	status = map[string][]string{}
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
				status[v] = append(status[v], tracking.StatusEventID(st, r))
			}
		}
		st.MarkApplied(m.seq, m.time)
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

// putZones writes zones around the simulated city into the geofence bucket and returns
// them compiled, as geofence compiles them.
func putZones(t *testing.T, b *bus.Bus, c geo.Point) *fence.Index {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := b.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: geofence.DefaultZoneBucket, History: 5, Replicas: 3, MaxValueSize: fence.MaxDefinitionBytes + 4096,
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

// expectedAlerts maps expected zone events to the alert events dispatch publishes for
// them, per vehicle in order: dispatch's mapping and default rules decide which raise an
// alert, and its own store logic (a MemoryStore) merges an occurrence into the open alert
// of its incident; every occurrence publishes its alert's event, whose id names the
// incident and the first cause, so a merged one repeats an id JetStream stores once.
func expectedAlerts(t *testing.T, ctx context.Context, events []fence.Event) map[string][]string {
	t.Helper()
	cfg := dispatch.DefaultConfig()
	st := dispatch.NewMemoryStore()
	out := map[string][]string{}
	seen := map[string]bool{}
	now := timestamppb.Now()
	for i := range events {
		data, err := proto.Marshal(geofence.ToProtoEvent(&events[i], now))
		if err != nil {
			t.Fatal(err)
		}
		e, err := dispatch.DecodeEvent(data, "", events[i].Time)
		if err != nil {
			t.Fatal(err)
		}
		a, act := dispatch.AlertFromEvent(&e)
		if cfg.Rules.Decide(&a, act) != dispatch.EventRaise {
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
