package dispatch

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// BenchmarkDetectorApply: theft detection on one moving vehicle's records.
func BenchmarkDetectorApply(b *testing.B) {
	d, err := NewDetector(DefaultConfig().Detect)
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]telemetry.Record, 1024)
	for i := range recs {
		p := geo.Destination(home, 90, float64(i)*15)
		recs[i] = telemetry.Record{VehicleID: "v1", DeviceTime: t0.Add(time.Duration(i) * time.Second), Lat: p.Lat, Lon: p.Lon, SpeedKmh: 54, FixValid: true}
		recs[i].Ignition = true
		recs[i].Set(telemetry.HasIgnition)
	}
	var st VehicleState
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := recs[i%len(recs)]
		r.DeviceTime = t0.Add(time.Duration(i) * time.Second)
		d.Apply(&st, &r)
	}
}

// benchBatch builds one consumer batch: msgs messages of one record each, spread over
// vehicles, as the dispatch-pNN consumer receives them.
func benchBatch(b *testing.B, msgs, vehicles int, at time.Time) []bus.Msg {
	b.Helper()
	out := make([]bus.Msg, msgs)
	for i := range out {
		v := "veh-" + strconv.Itoa(i%vehicles)
		p := geo.Destination(home, float64(i%360), float64(i))
		r := telemetry.Record{VehicleID: v, DeviceTime: at.Add(time.Duration(i) * time.Millisecond), Sequence: uint64(i),
			Lat: p.Lat, Lon: p.Lon, SpeedKmh: 40, FixValid: true, Satellites: 9}
		r.Ignition = true
		r.Set(telemetry.HasIgnition)
		data, err := wire.EncodeBatch(v, at, []telemetry.Record{r})
		if err != nil {
			b.Fatal(err)
		}
		out[i] = bus.Msg{Subject: "fleet.in.0." + v + ".tele", Data: data, StreamSeq: uint64(i + 1), Time: at}
	}
	return out
}

// BenchmarkHandleDevice: the telemetry consumer's handler (decode, detect, load and
// store each vehicle's state, look for queued commands) on 512-message batches of 256
// vehicles, against each store.
func BenchmarkHandleDevice(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(b *testing.B) Store
	}{
		{"memory", func(*testing.B) Store { return NewMemoryStore() }},
		{"redis", func(b *testing.B) Store {
			c := redistest.Client(b)
			return NewRedisStore(c, redistest.Prefix(b, c))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := New(DefaultConfig(), nil, tc.store(b), testLog(), nil)
			if err != nil {
				b.Fatal(err)
			}
			const msgs = 512
			ctx := context.Background()
			batches := make([][]bus.Msg, 8)
			for i := range batches {
				batches[i] = benchBatch(b, msgs, 256, time.Now().Add(time.Duration(i)*time.Minute))
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch := batches[i%len(batches)]
				if i%len(batches) == 0 && i > 0 {
					// Fresh device times so every record is newer than the stored state.
					b.StopTimer()
					for j := range batches {
						batches[j] = benchBatch(b, msgs, 256, time.Now().Add(time.Duration(i+j)*time.Hour))
					}
					batch = batches[0]
					b.StartTimer()
				}
				if err := s.handleDevice(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*msgs)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkRaiseAlert: new alerts (distinct incidents) into each store.
func BenchmarkRaiseAlert(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(b *testing.B) Store
	}{
		{"memory", func(*testing.B) Store { return NewMemoryStore() }},
		{"redis", func(b *testing.B) Store {
			c := redistest.Client(b)
			return NewRedisStore(c, redistest.Prefix(b, c))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := tc.store(b)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				a := occurrence("v"+strconv.Itoa(i%1000), "panic", "c"+strconv.Itoa(i), t0)
				a.IncidentKey += ":" + strconv.Itoa(i)
				if _, _, err := st.RaiseAlert(ctx, a, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
		})
	}
}

// BenchmarkAlarmToWatch: end to end, one at a time, from a tracker publishing an alarm
// record on the real (embedded) NATS server to the alert arriving on a WatchAlerts gRPC
// stream over loopback. Reports the median and 99th percentile.
func BenchmarkAlarmToWatch(b *testing.B) {
	h := newHarness(b, NewMemoryStore())
	stream, err := h.alerts.WatchAlerts(context.Background(), &fleetv1.WatchAlertsRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // the watch has its starting point
		b.Fatal(err)
	}
	devs := make([]*device, 64)
	for i := range devs {
		devs[i] = newDevice(b, h.b, "lat-"+strconv.Itoa(i))
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := telemetry.Record{DeviceTime: time.Now().UTC(), Lat: home.Lat, Lon: home.Lon, FixValid: true,
			Alarms: []telemetry.AlarmKind{telemetry.AlarmKind(1 + i%10)}}
		// A new incident each time: vehicle and kind rotate, and the cool-down is
		// outrun by spacing device times an hour apart per vehicle.
		r.DeviceTime = t0.Add(time.Duration(i) * time.Hour)
		start := time.Now()
		devs[i%len(devs)].send(r)
		if _, err := stream.Recv(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
}
