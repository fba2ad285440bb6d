package geofence

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// TestServiceHarness measures the whole service: records published to NATS, consumed
// by the geofence service from the durable stream, events published to the event stream
// and read back by a subscriber. It is the figure behind docs/bench-geofence.md and runs
// only when asked (it takes about a minute and loads both cores):
//
//	GEOFENCE_HARNESS=1 go test -run TestServiceHarness -v -timeout 10m ./services/geofence/
//
// Settings (environment): HARNESS_ZONES (10000), HARNESS_VEHICLES (10000),
// HARNESS_RECORDS (300000, throughput phase), HARNESS_PER_MSG (1 record per message),
// HARNESS_RATE (20000 records/s, latency phase), HARNESS_LAT_PER_MSG (1 record per
// message in the latency phase), HARNESS_SECONDS (10).
func TestServiceHarness(t *testing.T) {
	if os.Getenv("GEOFENCE_HARNESS") == "" {
		t.Skip("set GEOFENCE_HARNESS=1 to run the whole-service harness")
	}
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	zones, vehicles := env("HARNESS_ZONES", 10_000), env("HARNESS_VEHICLES", 10_000)
	records, perMsg := env("HARNESS_RECORDS", 300_000), env("HARNESS_PER_MSG", 1)
	rate, seconds := env("HARNESS_RATE", 20_000), env("HARNESS_SECONDS", 10)
	latPerMsg := env("HARNESS_LAT_PER_MSG", 1)

	b := openBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	s, err := New(DefaultConfig(), b, NewMemoryStore(), testLog(), reg)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := s.bucket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	loadZones(t, ctx, kv, zones)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = s.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	waitFor(t, "zones loaded", func() bool { return s.Zones().Len() == zones })

	// Read every event back, recording latency from the fix's device time (set to the
	// wall clock at publish) to arrival.
	var (
		mu        sync.Mutex
		latencies []time.Duration
		events    atomic.Int64
		measuring atomic.Bool
	)
	sub, err := b.Conn().Subscribe(bus.EventSourceFilter(Source), func(m *nats.Msg) {
		now := time.Now()
		events.Add(1)
		if !measuring.Load() {
			return
		}
		var e fleetv1.Event
		if proto.Unmarshal(m.Data, &e) != nil || e.GetKind() == string(fence.Crossed) {
			return // crossed carries an interpolated time
		}
		mu.Lock()
		latencies = append(latencies, now.Sub(e.GetTime().AsTime()))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)

	fleet := newHarnessFleet(vehicles)
	// The trackers publish over their own connection, as devices would.
	devices := clientBus(t, b)
	processed := func() float64 { return counterValue(t, reg, "fleetwire_geofence_records_total") }

	// Warm-up: one record per vehicle, so every vehicle has state.
	fleet.publish(t, ctx, devices, vehicles, 1, time.Now)
	waitFor(t, "warm-up", func() bool { return processed() >= float64(vehicles) })

	// Throughput: publish as fast as the producer can, wait until all are evaluated.
	base := processed()
	ev0 := events.Load()
	start := time.Now()
	fleet.publish(t, ctx, devices, records, perMsg, time.Now)
	pubDone := time.Since(start)
	deadline := time.Now().Add(5 * time.Minute)
	for processed() < base+float64(records) {
		if time.Now().After(deadline) {
			t.Fatalf("only %.0f of %d records processed", processed()-base, records)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("throughput: %d zones, %d vehicles, %d records (%d per message) in %v (published in %v): %.0f records/s, %d events",
		zones, vehicles, records, perMsg, took.Round(time.Millisecond), pubDone.Round(time.Millisecond), float64(records)/took.Seconds(), events.Load()-ev0)

	// Latency at a fixed rate.
	time.Sleep(500 * time.Millisecond)
	measuring.Store(true)
	total := rate * seconds
	start = time.Now()
	tick := time.NewTicker(time.Millisecond)
	sent := 0
	for sent < total {
		<-tick.C
		due := int(float64(rate) * time.Since(start).Seconds())
		if due > total {
			due = total
		}
		if n := due - sent; n > 0 {
			fleet.publish(t, ctx, devices, n, latPerMsg, time.Now)
			sent += n
		}
	}
	tick.Stop()
	base = processed()
	waitFor(t, "latency phase drained", func() bool { return processed() >= base-float64(rate) })
	time.Sleep(time.Second)
	measuring.Store(false)
	mu.Lock()
	defer mu.Unlock()
	if len(latencies) == 0 {
		t.Fatal("no events in the latency phase")
	}
	slices.Sort(latencies)
	q := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	t.Logf("latency at %d records/s (%d per message) for %ds: %d events, p50 %v, p90 %v, p99 %v, max %v",
		rate, latPerMsg, seconds, len(latencies), q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), latencies[len(latencies)-1].Round(10*time.Microsecond))
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// loadZones writes n random 32-vertex zones straight into the bucket.
func loadZones(t *testing.T, ctx context.Context, kv jetstream.KeyValue, n int) {
	rng := rand.New(rand.NewPCG(42, 1))
	for i := 0; i < n; i++ {
		lat := 52 + rng.Float64()
		lon := 13 + rng.Float64()
		r := (200 + rng.Float64()*1300) / 111195.0
		var pts []string
		var first string
		for k := 0; k < 31; k++ {
			a := 2 * math.Pi * (float64(k) + rng.Float64()*0.8) / 31
			rr := r * (0.5 + 0.5*rng.Float64())
			p := fmt.Sprintf("[%f,%f]", lon+rr*math.Cos(a)/math.Cos(lat*math.Pi/180), lat+rr*math.Sin(a))
			if k == 0 {
				first = p
			}
			pts = append(pts, p)
		}
		pts = append(pts, first)
		spec := fence.Spec{ID: fmt.Sprintf("z%05d", i), Name: "harness", Alert: fence.AlertBoth,
			GeoJSON: `{"type":"Polygon","coordinates":[[` + strings.Join(pts, ",") + `]]}`}
		data, _ := json.Marshal(spec)
		if _, err := kv.Put(ctx, spec.ID, data); err != nil {
			t.Fatal(err)
		}
	}
}

// harnessFleet drives vehicles in straight 100 m steps, turning at the area's edge.
type harnessFleet struct {
	pos     []geo.Point
	heading []float64
	next    int
}

func newHarnessFleet(n int) *harnessFleet {
	rng := rand.New(rand.NewPCG(43, 2))
	f := &harnessFleet{pos: make([]geo.Point, n), heading: make([]float64, n)}
	for i := range f.pos {
		f.pos[i] = geo.Point{Lat: 52.05 + rng.Float64()*0.9, Lon: 13.05 + rng.Float64()*0.9}
		f.heading[i] = rng.Float64() * 360
	}
	return f
}

// publish sends n records, perMsg to a message, round-robin over the vehicles.
func (f *harnessFleet) publish(t *testing.T, ctx context.Context, b *bus.Bus, n, perMsg int, now func() time.Time) {
	recs := make([]telemetry.Record, 0, perMsg)
	for sent := 0; sent < n; {
		v := f.next % len(f.pos)
		f.next++
		id := fmt.Sprintf("h%05d", v)
		recs = recs[:0]
		for k := 0; k < perMsg && sent < n; k++ {
			p := geo.Destination(f.pos[v], f.heading[v], 100)
			if p.Lat < 52 || p.Lat > 53 || p.Lon < 13 || p.Lon > 14 {
				f.heading[v] = math.Mod(f.heading[v]+180, 360)
				p = geo.Destination(f.pos[v], f.heading[v], 100)
			}
			f.pos[v] = p
			ts := now().Add(time.Duration(k) * time.Microsecond)
			recs = append(recs, telemetry.Record{VehicleID: id, DeviceTime: ts, Lat: p.Lat, Lon: p.Lon, SpeedKmh: 36, FixValid: true, Satellites: 9, HDOP: 1})
			sent++
		}
		data, err := wire.EncodeBatch(id, time.Now(), recs)
		if err != nil {
			t.Fatal(err)
		}
		js := natstest.JetStream(t, b)
		for {
			_, err = js.PublishAsync(bus.UpSubject(id, bus.KindTelemetry), data)
			if err == nil {
				break
			}
			// Too many publishes in flight: let the acknowledgements catch up.
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Second):
			}
		}
	}
	select {
	case <-natstest.JetStream(t, b).PublishAsyncComplete():
	case <-ctx.Done():
	case <-time.After(time.Minute):
		t.Fatal("publishes not acknowledged after a minute")
	}
}
