package tracking

import (
	"math"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// rec builds a valid record at t0+sec seconds.
func rec(sec int, seq uint64, lat, lon, speed float64) telemetry.Record {
	return telemetry.Record{
		VehicleID: "v1", DeviceTime: t0.Add(time.Duration(sec) * time.Second), Sequence: seq,
		Lat: lat, Lon: lon, SpeedKmh: speed, FixValid: true, Satellites: 9,
	}
}

// storedAt sets the time the stream stored r, sec seconds after t0.
func storedAt(r telemetry.Record, sec int) telemetry.Record {
	r.ReceivedTime = t0.Add(time.Duration(sec) * time.Second)
	return r
}

func withIgnition(r telemetry.Record, on bool) telemetry.Record {
	r.Ignition = on
	r.Set(telemetry.HasIgnition)
	return r
}

func withQuality(r telemetry.Record, sats uint32, hdop, pdop float64) telemetry.Record {
	r.Satellites, r.HDOP = sats, hdop
	if pdop > 0 {
		r.PDOP = pdop
		r.Set(telemetry.HasPDOP)
	}
	return r
}

func withMovement(r telemetry.Record, on bool) telemetry.Record {
	r.Movement = on
	r.Set(telemetry.HasMovement)
	return r
}

func withAlarm(r telemetry.Record) telemetry.Record {
	r.Alarms = []telemetry.AlarmKind{telemetry.AlarmPanic}
	return r
}

func withOdometer(r telemetry.Record, m float64) telemetry.Record {
	r.OdometerM = m
	r.Set(telemetry.HasOdometer)
	return r
}

// east returns the point distM metres east of (lat, lon).
func east(lat, lon, distM float64) (float64, float64) {
	p := geo.Destination(geo.Point{Lat: lat, Lon: lon}, 90, distM)
	return p.Lat, p.Lon
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestFilterRules(t *testing.T) {
	now := t0.Add(time.Hour)
	lat1, lon1 := east(52.5, 13.4, 500) // 500 m from the start in 60 s: 30 km/h
	latFar, lonFar := east(52.5, 13.4, 50_000)
	latDrift, lonDrift := east(52.5, 13.4, 12)
	tests := []struct {
		name        string
		records     []telemetry.Record
		wantReasons Reason // of the last record
		wantDropped bool   // the last record changed nothing
		wantPoint   bool   // the last record's position went to history
		wantLat     float64
		wantLon     float64
		wantIgn     *bool
		wantAlarmOK bool // the last record still counted (Records grew)
	}{
		{
			name:      "valid fix accepted",
			records:   []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, lat1, lon1, 30)},
			wantPoint: true, wantLat: lat1, wantLon: lon1,
		},
		{
			name: "invalid fix keeps previous position",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), func() telemetry.Record {
				r := rec(60, 2, lat1, lon1, 30)
				r.FixValid = false
				return r
			}()},
			wantReasons: ReasonInvalidFix, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "null island",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, 0, 0, 30)},
			wantReasons: ReasonNullIsland, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "latitude out of range",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, 91, 13.4, 30)},
			wantReasons: ReasonOutOfRange, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "NaN coordinate",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, math.NaN(), 13.4, 30)},
			wantReasons: ReasonNaN, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "device time too far in the future",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(3600+600, 2, lat1, lon1, 30)},
			wantReasons: ReasonFutureTime, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "device time past the behind bound (GNSS week rollover)",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(-1024*7*86400, 2, lat1, lon1, 30)},
			wantReasons: ReasonTooOld, wantLat: 52.5, wantLon: 13.4,
		},
		{
			// The bound is judged against the time the stream stored the record: one
			// stored ahead of its device time is refused though the wall clock at
			// processing is later still.
			name:        "device time ahead of the stored time",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), storedAt(rec(15*60, 2, lat1, lon1, 30), 60)},
			wantReasons: ReasonFutureTime, wantLat: 52.5, wantLon: 13.4,
		},
		{
			// Records that waited 40 days in the stream for a starved consumer are
			// judged as they were when stored, not against the clock at processing.
			name: "stored long before it is applied",
			records: []telemetry.Record{storedAt(rec(-40*86400, 1, 52.5, 13.4, 30), -40*86400+1),
				storedAt(rec(-40*86400+60, 2, lat1, lon1, 30), -40*86400+61)},
			wantPoint: true, wantLat: lat1, wantLon: lon1,
		},
		{
			name:        "exact duplicate dropped",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, lat1, lon1, 30), rec(60, 2, lat1, lon1, 30)},
			wantReasons: ReasonDuplicate, wantDropped: true, wantLat: lat1, wantLon: lon1,
		},
		{
			name:      "same time, other sequence is not a duplicate",
			records:   []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(0, 2, 52.5, 13.4, 30)},
			wantPoint: true, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:    "teleport held back until the next fix decides",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, latFar, lonFar, 30)},
			wantLat: 52.5, wantLon: 13.4,
		},
		{
			name: "jump and return rejected as a spike, the fix after it kept",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, latFar, lonFar, 30),
				rec(120, 3, lat1, lon1, 30)},
			wantReasons: ReasonSpike, wantPoint: true, wantLat: lat1, wantLon: lon1,
		},
		{
			name: "jump and return while parked with a long interval rejected",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 0), rec(1800, 2, latFar, lonFar, 0),
				rec(3000, 3, 52.5, 13.4, 0)},
			wantReasons: ReasonSpike | ReasonParkedDrift, wantPoint: true, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:    "jump the reported speed cannot explain is held back",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 10), rec(60, 2, lat1, lon1, 10)},
			wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "too few satellites discarded",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), withQuality(rec(60, 2, lat1, lon1, 30), 2, 20, 0)},
			wantReasons: ReasonLowSatellites, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "high HDOP discarded",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), withQuality(rec(60, 2, lat1, lon1, 30), 9, 25, 0)},
			wantReasons: ReasonHighDOP, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "high PDOP discarded",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), withQuality(rec(60, 2, lat1, lon1, 30), 9, 2, 30)},
			wantReasons: ReasonHighDOP, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name: "good fix after a bad one kept",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), withQuality(rec(30, 2, latFar, lonFar, 30), 1, 30, 0),
				rec(60, 3, lat1, lon1, 30)},
			wantPoint: true, wantLat: lat1, wantLon: lon1,
		},
		{
			name: "parked with ignition off: position held, teleport too",
			records: []telemetry.Record{withIgnition(rec(0, 1, 52.5, 13.4, 0), false), withIgnition(rec(600, 2, latDrift, lonDrift, 2), false),
				withIgnition(rec(1200, 3, latFar, lonFar, 0), false)},
			wantReasons: ReasonStatic, wantPoint: true, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name: "parked but the accelerometer feels movement: not held",
			records: []telemetry.Record{withIgnition(rec(0, 1, 52.5, 13.4, 0), false),
				withMovement(withIgnition(rec(600, 2, latDrift, lonDrift, 2), false), true)},
			wantReasons: ReasonParkedDrift, wantPoint: true, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:        "parked drift keeps coordinates",
			records:     []telemetry.Record{rec(0, 1, 52.5, 13.4, 0), rec(60, 2, latDrift, lonDrift, 1)},
			wantReasons: ReasonParkedDrift, wantPoint: true, wantLat: 52.5, wantLon: 13.4,
		},
		{
			name:      "small jump while moving is not drift",
			records:   []telemetry.Record{rec(0, 1, 52.5, 13.4, 20), rec(2, 2, latDrift, lonDrift, 20)},
			wantPoint: true, wantLat: latDrift, wantLon: lonDrift,
		},
		{
			name: "alarm with a teleport position still counts",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 30),
				withAlarm(rec(60, 2, latFar, lonFar, 30))},
			wantLat: 52.5, wantLon: 13.4, wantAlarmOK: true,
		},
		{
			name: "ignition change with (0,0) still applied",
			records: []telemetry.Record{withIgnition(rec(0, 1, 52.5, 13.4, 0), true),
				withIgnition(rec(60, 2, 0, 0, 0), false)},
			wantReasons: ReasonNullIsland, wantLat: 52.5, wantLon: 13.4, wantIgn: new(false), wantAlarmOK: true,
		},
		{
			name: "ignition change in the future still applied",
			records: []telemetry.Record{withIgnition(rec(0, 1, 52.5, 13.4, 0), false),
				withIgnition(rec(3600+600, 2, 52.5, 13.4, 0), true)},
			wantReasons: ReasonFutureTime, wantLat: 52.5, wantLon: 13.4, wantIgn: new(true), wantAlarmOK: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(DefaultConfig())
			st := NewState("v1")
			var res Result
			for i := range tc.records {
				res = tr.Apply(st, &tc.records[i], now)
			}
			if res.Reasons != tc.wantReasons {
				t.Errorf("got reasons %v, want %v", reasonList(res.Reasons), reasonList(tc.wantReasons))
			}
			if res.Dropped != tc.wantDropped {
				t.Errorf("got dropped %v, want %v", res.Dropped, tc.wantDropped)
			}
			if res.HasPoint != tc.wantPoint {
				t.Errorf("got history point %v, want %v", res.HasPoint, tc.wantPoint)
			}
			if !near(st.Fix.Lat, tc.wantLat, 1e-9) || !near(st.Fix.Lon, tc.wantLon, 1e-9) {
				t.Errorf("got position %.6f,%.6f, want %.6f,%.6f", st.Fix.Lat, st.Fix.Lon, tc.wantLat, tc.wantLon)
			}
			if tc.wantIgn != nil && st.Ignition != *tc.wantIgn {
				t.Errorf("got ignition %v, want %v", st.Ignition, *tc.wantIgn)
			}
			if tc.wantAlarmOK && st.Records != uint64(len(tc.records)) {
				t.Errorf("got %d records applied, want %d (a filtered position must not drop the record)", st.Records, len(tc.records))
			}
		})
	}
}

func reasonList(r Reason) []string {
	var out []string
	r.Each(func(x Reason) { out = append(out, x.String()) })
	return out
}

func TestTeleportConfirmedAfterConsistentFixes(t *testing.T) {
	tr := NewTracker(DefaultConfig())
	st := NewState("v1")
	now := t0.Add(time.Hour)
	// The first fix is the bad one; the vehicle is really 50 km away and stays there.
	r := rec(0, 1, 52.5, 13.4, 0)
	tr.Apply(st, &r, now)
	lat, lon := east(52.5, 13.4, 50_000)
	confirm := DefaultConfig().Filter.TeleportConfirm
	var released int
	for i := 1; i <= confirm+1; i++ {
		r := rec(i*10, uint64(i+1), lat, lon, 0)
		res := tr.Apply(st, &r, now)
		released += len(res.Released)
		if got, want := res.Pending, i < confirm; got != want {
			t.Fatalf("fix %d: got pending %v, want %v", i, got, want)
		}
	}
	if !near(st.Fix.Lat, lat, 1e-9) || !near(st.Fix.Lon, lon, 1e-9) {
		t.Fatalf("got position %.5f,%.5f, want the confirmed %.5f,%.5f", st.Fix.Lat, st.Fix.Lon, lat, lon)
	}
	if released != confirm-1 {
		t.Errorf("got %d held-back fixes released into the history, want %d", released, confirm-1)
	}
}

func TestSpikeAcceptedThenRetracted(t *testing.T) {
	tr := NewTracker(DefaultConfig())
	st := NewState("v1")
	now := t0.Add(time.Hour)
	// 60 km/h east. After a three-minute gap (beyond SpeedCheckWindow, so only the speed
	// limit judges it) a fix 400 m off the road passes; the next one, ten seconds later and
	// back on the road, shows it was a spike.
	var recs []telemetry.Record
	for i, sec := range []int{0, 10, 20, 200, 210, 220} {
		lat, lon := east(52.5, 13.4, float64(sec)*60/3.6)
		if sec == 200 {
			p := geo.Destination(geo.Point{Lat: lat, Lon: lon}, 0, 400)
			lat, lon = p.Lat, p.Lon
		}
		recs = append(recs, rec(sec, uint64(i+1), lat, lon, 60))
	}
	var retracted []Fix
	for i := range recs {
		res := tr.Apply(st, &recs[i], now)
		retracted = append(retracted, res.Retracted...)
	}
	if len(retracted) != 1 || retracted[0].Seq != 4 {
		t.Fatalf("got retracted %+v, want the fix of sequence 4", retracted)
	}
	if want := 220 * 60 / 3.6; !near(st.OdometerM, want, 1) || !near(st.GPSOdometerM, want, 1) {
		t.Errorf("got odometer %.1f m (GPS %.1f m), want %.1f", st.OdometerM, st.GPSOdometerM, want)
	}
}

func TestOutOfOrderRecords(t *testing.T) {
	tr := NewTracker(DefaultConfig())
	st := NewState("v1")
	now := t0.Add(time.Hour)
	// A straight drive east at 36 km/h (10 m/s), fixes every 10 s.
	pos := func(i int) (float64, float64) { return east(52.5, 13.4, float64(i)*100) }
	order := []int{1, 0, 2, 5, 3, 4, 6} // 0, 3 and 4 were buffered and arrive late
	var late int
	for _, i := range order {
		lat, lon := pos(i)
		r := rec(i*10, uint64(i+1), lat, lon, 36)
		res := tr.Apply(st, &r, now)
		if res.Late {
			late++
			if !res.HasPoint {
				t.Errorf("late fix %d: not kept for history", i)
			}
		}
	}
	if late != 3 {
		t.Errorf("got %d late records, want 3", late)
	}
	lat6, lon6 := pos(6)
	if !near(st.Fix.Lat, lat6, 1e-9) || !near(st.Fix.Lon, lon6, 1e-9) || !st.LastDeviceTime.Equal(t0.Add(60*time.Second)) {
		t.Errorf("live state at %v %.6f,%.6f, want the newest fix", st.LastDeviceTime, st.Fix.Lat, st.Fix.Lon)
	}
	if st.LastSequence != 7 {
		t.Errorf("got last sequence %d, want 7", st.LastSequence)
	}
	// The odometer is the driven path: 600 m, whatever the arrival order.
	if !near(st.OdometerM, 600, 0.5) {
		t.Errorf("got odometer %.2f m, want 600", st.OdometerM)
	}
}

func TestOdometer(t *testing.T) {
	now := t0.Add(time.Hour)
	lat1, lon1 := east(52.5, 13.4, 1000)
	lat2, lon2 := east(52.5, 13.4, 2000)
	tests := []struct {
		name    string
		records []telemetry.Record
		want    float64
		insane  bool
	}{
		{
			name:    "sum of fix distances without a device odometer",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 60), rec(60, 2, lat1, lon1, 60), rec(120, 3, lat2, lon2, 60)},
			want:    2000,
		},
		{
			name: "device odometer when sane",
			records: []telemetry.Record{withOdometer(rec(0, 1, 52.5, 13.4, 60), 100_000),
				withOdometer(rec(60, 2, lat1, lon1, 60), 101_010)},
			want: 101_010,
		},
		{
			name: "device odometer running backwards is ignored",
			records: []telemetry.Record{withOdometer(rec(0, 1, 52.5, 13.4, 60), 100_000),
				withOdometer(rec(60, 2, lat1, lon1, 60), 5_000)},
			want: 101_000, insane: true,
		},
		{
			name: "device odometer jumping faster than possible is ignored",
			records: []telemetry.Record{withOdometer(rec(0, 1, 52.5, 13.4, 60), 100_000),
				withOdometer(rec(60, 2, lat1, lon1, 60), 900_000)},
			want: 101_000, insane: true,
		},
		{
			name: "device stops reporting: fix distances continue from it",
			records: []telemetry.Record{withOdometer(rec(0, 1, 52.5, 13.4, 60), 100_000),
				rec(60, 2, lat1, lon1, 60)},
			want: 101_000,
		},
		{
			name:    "duplicate does not count twice",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 60), rec(60, 2, lat1, lon1, 60), rec(60, 2, lat1, lon1, 60)},
			want:    1000,
		},
		{
			name:    "teleport does not count",
			records: []telemetry.Record{rec(0, 1, 52.5, 13.4, 60), rec(60, 2, 40, 13.4, 60)},
			want:    0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(DefaultConfig())
			st := NewState("v1")
			var reasons Reason
			for i := range tc.records {
				reasons |= tr.Apply(st, &tc.records[i], now).Reasons
			}
			if !near(st.OdometerM, tc.want, 1) {
				t.Errorf("got odometer %.1f m, want %.1f", st.OdometerM, tc.want)
			}
			if got := reasons&ReasonOdometer != 0; got != tc.insane {
				t.Errorf("got odometer rejected %v, want %v", got, tc.insane)
			}
		})
	}
}

func TestRedeliveryChangesNothing(t *testing.T) {
	tr := NewTracker(DefaultConfig())
	st := NewState("v1")
	now := t0.Add(time.Hour)
	lat1, lon1 := east(52.5, 13.4, 1000)
	msgTime := t0.Add(2 * time.Minute)
	batch := []telemetry.Record{rec(0, 1, 52.5, 13.4, 60), rec(60, 2, lat1, lon1, 60)}
	apply := func() {
		for i := range batch {
			r := batch[i]
			r.StreamSeq, r.ReceivedTime = 42, msgTime
			tr.Apply(st, &r, now)
		}
		st.MarkApplied(42, msgTime)
	}
	apply()
	before := *st
	apply()
	if st.OdometerM != before.OdometerM || st.Records != before.Records {
		t.Fatalf("redelivery changed the state: odometer %.1f→%.1f, records %d→%d", before.OdometerM, st.OdometerM, before.Records, st.Records)
	}
}

func TestStatus(t *testing.T) {
	cfg := DefaultConfig()
	tr := NewTracker(cfg)
	st := NewState("v1")
	now := t0.Add(time.Hour)
	steps := []struct {
		r    telemetry.Record
		want Status
	}{
		{withIgnition(rec(0, 1, 52.5, 13.4, 40), true), StatusMoving},
		{withIgnition(rec(10, 2, 52.5011, 13.4, 0), true), StatusStopped},
		{withIgnition(rec(10+int(cfg.IdleAfter.Seconds()), 3, 52.5011, 13.4, 0), true), StatusIdle},
		{withIgnition(rec(400, 4, 52.5011, 13.4, 0), false), StatusStopped},
		{withIgnition(rec(500, 5, 52.5011, 13.4, 30), true), StatusMoving},
	}
	for i, s := range steps {
		tr.Apply(st, &s.r, now)
		if st.Status != s.want {
			t.Fatalf("step %d: got status %v, want %v", i, st.Status, s.want)
		}
	}
	seen := st.LastSeen
	if tr.Sweep(st, seen.Add(cfg.OfflineAfter)) {
		t.Fatal("offline at exactly the threshold, want still online")
	}
	if !tr.Sweep(st, seen.Add(cfg.OfflineAfter+time.Second)) || st.Status != StatusOffline || st.PrevStatus != StatusMoving {
		t.Fatalf("got status %v (previous %v) after the offline threshold, want offline (moving)", st.Status, st.PrevStatus)
	}
	if tr.Sweep(st, seen.Add(2*cfg.OfflineAfter)) {
		t.Fatal("second sweep changed an offline vehicle again")
	}
	r := rec(600, 6, 52.5011, 13.4, 30)
	if res := tr.Apply(st, &r, now); !res.StatusChanged || st.Status != StatusMoving {
		t.Fatalf("got status %v after new data, want moving", st.Status)
	}
}

// TestOdometerSourceInAPI checks that the API shows where the odometer comes from, with
// the GPS odometer alongside.
func TestOdometerSourceInAPI(t *testing.T) {
	lat1, lon1 := east(52.5, 13.4, 500)
	tests := []struct {
		name       string
		records    []telemetry.Record
		wantSource fleetv1.OdometerSource
		wantOdo    float64
	}{
		{"fixes only", []telemetry.Record{rec(0, 1, 52.5, 13.4, 30), rec(60, 2, lat1, lon1, 30)},
			fleetv1.OdometerSource_ODOMETER_SOURCE_GPS, 500},
		{"device counter", []telemetry.Record{withOdometer(rec(0, 1, 52.5, 13.4, 30), 100_000),
			withOdometer(rec(60, 2, lat1, lon1, 30), 100_510)},
			fleetv1.OdometerSource_ODOMETER_SOURCE_DEVICE, 100_510},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(DefaultConfig())
			st := NewState("v1")
			for i := range tc.records {
				tr.Apply(st, &tc.records[i], t0.Add(time.Hour))
			}
			ps := toProtoVehicle(&Vehicle{Info: Info{ID: "v1"}, State: st}).GetState()
			if ps.GetOdometerSource() != tc.wantSource || !near(ps.GetOdometerM(), tc.wantOdo, 1) {
				t.Errorf("got odometer %.1f from %v, want %.1f from %v", ps.GetOdometerM(), ps.GetOdometerSource(), tc.wantOdo, tc.wantSource)
			}
			if !near(ps.GetGpsOdometerM(), 500, 1) {
				t.Errorf("got GPS odometer %.1f, want 500", ps.GetGpsOdometerM())
			}
		})
	}
}
