// Package trackgen generates one day of tracker records for a fleet, with the true path,
// the true distance and a label on every record saying what kind of GPS noise it carries.
//
// It exists to measure the tracking service's filters honestly: it shares no code with
// them (its own kinematics, its own recording rules, its own noise) and is written from a
// description of what real trackers do, not from the filters' thresholds. Two seed sets
// are fixed: DevSeeds may be looked at while tuning, HeldOutSeeds are only run once the
// tuning is done (see docs/bench-tracking.md).
//
// The noise, each labelled:
//   - jitter: every fix carries a slowly varying error (Gauss–Markov, a few metres) plus a
//     little white noise, as GNSS receivers do;
//   - parked drift: a parked receiver wanders by tens of metres (multipath near buildings);
//   - invalid fixes: the device says the fix is not valid;
//   - low-quality fixes: 0–2 satellites, HDOP 15–40, 100–3 000 m off, yet flagged valid;
//   - parked teleport spikes: one fix 1–20 km away while parked, reported speed 0 and
//     ignition off, at whatever interval the tracker reports while parked;
//   - driving spikes: one fix 300–3 000 m off while driving, then back on the road;
//   - duplicates: records sent twice;
//   - a late batch: a stretch of driving delivered minutes after newer records;
//   - tunnels: a stretch of road without fixes (silence or invalid fixes);
//   - future-stamped records: device time hours ahead of the real time;
//   - short trips: manoeuvres shorter than a minute or a few hundred metres.
package trackgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Label is the kind of noise a record carries.
type Label uint8

const (
	// Good: an ordinary fix with receiver jitter. Filters must keep it.
	Good Label = iota
	// ParkedDrift: a fix of a parked vehicle; its error is parked drift. A good fix: the
	// filters may hold the parked position but must not drop it.
	ParkedDrift
	// Invalid: the device flags the fix as not valid.
	Invalid
	// LowQuality: 0–2 satellites, HDOP 15–40, 100–3 000 m off, flagged valid.
	LowQuality
	// ParkedSpike: a teleport while parked (1–20 km off, speed 0, ignition off).
	ParkedSpike
	// DrivingSpike: one fix 300–3 000 m off the road while driving.
	DrivingSpike
	// Duplicate: an exact resend of an earlier record.
	Duplicate
	// FutureStamp: device time hours ahead of when the fix was taken.
	FutureStamp
	labelCount
)

var labelNames = [...]string{"good", "parked_drift", "invalid", "low_quality", "parked_spike", "driving_spike", "duplicate", "future_stamp"}

func (l Label) String() string {
	if int(l) < len(labelNames) {
		return labelNames[l]
	}
	return fmt.Sprintf("label(%d)", l)
}

// Labels lists every label, for tables.
func Labels() []Label {
	out := make([]Label, labelCount)
	for i := range out {
		out[i] = Label(i)
	}
	return out
}

// GoodFix reports whether a record with this label carries a position a filter must keep.
func (l Label) GoodFix() bool { return l == Good || l == ParkedDrift }

// Spike reports whether the label is a position far from the truth that a filter must not
// admit.
func (l Label) Spike() bool { return l == LowQuality || l == ParkedSpike || l == DrivingSpike }

// Item is one record as it reaches the platform.
type Item struct {
	Record  telemetry.Record
	Label   Label
	Deliver time.Time // when the platform receives it (server clock)
	Late    bool      // part of the late batch: delivered after newer records
	// The truth at the moment the fix was taken.
	TrueTime  time.Time
	TrueLat   float64
	TrueLon   float64
	TrueOdoM  float64 // true distance driven since the start of the day
	Parked    bool    // ignition off and standing
	TrueSpeed float64 // km/h
}

// Trip is a true journey: ignition on, driving, ignition off.
type Trip struct {
	Start, End time.Time // first and last motion
	DistanceM  float64
}

// Park is a true period with the ignition off, standing still.
type Park struct {
	Start, End time.Time
}

// Vehicle is one vehicle's day.
type Vehicle struct {
	ID    string
	Model string // tracker model; what a per-model filter profile would key on
	// Items in delivery order.
	Items []Item
	Trips []Trip
	Parks []Park
	// DistanceM is the true distance driven during the day.
	DistanceM float64
	// Capabilities of its tracker.
	HasMovement bool
	HasPDOP     bool
	HasOdometer bool // reports a device odometer (IO 16 or CAN)
	// Recording rules of its tracker while driving.
	Period      time.Duration
	AngleDeg    float64
	DistanceRec float64
	ParkPeriod  time.Duration
}

// Config says what to generate.
type Config struct {
	Seed     uint64
	Vehicles int
	Day      time.Time // midnight UTC of the day
}

// DevSeeds may be used while tuning the filters.
var DevSeeds = []uint64{101, 102, 103}

// HeldOutSeeds are only run once the tuning is done.
var HeldOutSeeds = []uint64{90001, 90002, 90003}

// Generate returns the fleet's day. The same Config gives the same output.
func Generate(cfg Config) []Vehicle {
	if cfg.Vehicles <= 0 {
		cfg.Vehicles = 50
	}
	if cfg.Day.IsZero() {
		cfg.Day = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	}
	out := make([]Vehicle, cfg.Vehicles)
	for i := range out {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)*0x9e3779b97f4a7c15+1))
		out[i] = genVehicle(rng, fmt.Sprintf("tg%03d", i), cfg.Day)
	}
	return out
}

const earthR = 6371008.8
const deg = 180 / math.Pi

// world is a vehicle's true motion over the day, one step a second.
type world struct {
	rng      *rand.Rand
	t        time.Time
	lat, lon float64
	heading  float64 // degrees from north, clockwise
	v        float64 // m/s
	odo      float64
	ign      bool
	parked   bool
	// receiver error, metres east/north
	errE, errN float64
}

// move advances the true position by a path of length ds along an arc of the given
// curvature (1/m, positive to the right), exactly.
func (w *world) move(ds, curv float64) {
	if ds <= 0 {
		return
	}
	dh := ds * curv * deg // heading change in degrees
	chord := ds
	if math.Abs(curv) > 1e-9 {
		chord = 2 / math.Abs(curv) * math.Sin(math.Abs(ds*curv)/2)
	}
	h := (w.heading + dh/2) / deg
	w.offset(chord*math.Sin(h), chord*math.Cos(h), &w.lat, &w.lon)
	w.heading = math.Mod(w.heading+dh+360, 360)
	w.odo += ds
}

// offset moves (lat, lon) by e metres east and n metres north.
func (w *world) offset(e, n float64, lat, lon *float64) {
	*lat += n / earthR * deg
	*lon += e / (earthR * math.Cos(*lat/deg)) * deg
}

// segment is a piece of road: straight (curv 0) or an arc.
type segment struct {
	length  float64
	curv    float64
	cruise  float64 // m/s
	stop    time.Duration
	tunnel  bool
	invalid bool // the tracker sends invalid fixes in the tunnel instead of nothing
}

// recorder is the vehicle's tracker.
type recorder struct {
	veh     *Vehicle
	rng     *rand.Rand
	seq     uint64
	last    time.Time
	lastH   float64
	lastOdo float64
	items   []Item
	devOdo  float64 // device odometer scale error
	// noise rates
	pInvalid, pLow, pDup, pFuture float64
	jitterSigma, jitterTau        float64
	driftSigma                    float64
}

func genVehicle(rng *rand.Rand, id string, day time.Time) Vehicle {
	v := Vehicle{ID: id}
	models := []string{"FMB920", "FMC130", "GT06N", "TK103", "CAN-OBD"}
	v.Model = models[rng.IntN(len(models))]
	v.HasMovement = rng.Float64() < 0.7
	v.HasPDOP = rng.Float64() < 0.6
	v.HasOdometer = rng.Float64() < 0.3
	v.Period = []time.Duration{time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}[rng.IntN(6)]
	v.AngleDeg = 8 + rng.Float64()*12
	v.DistanceRec = 100 + rng.Float64()*400
	v.ParkPeriod = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}[rng.IntN(4)]

	w := &world{rng: rng, t: day, lat: 44 + rng.Float64()*10, lon: 2 + rng.Float64()*18, heading: rng.Float64() * 360, parked: true}
	rec := &recorder{veh: &v, rng: rng,
		pInvalid: 0.005 + rng.Float64()*0.01, pLow: 0.003 + rng.Float64()*0.01,
		pDup: 0.005 + rng.Float64()*0.015, pFuture: 0.001 + rng.Float64()*0.003,
		jitterSigma: 1.5 + rng.Float64()*2.5, jitterTau: 30 + rng.Float64()*90,
		driftSigma: 5 + rng.Float64()*20,
		devOdo:     1 + (rng.Float64()-0.5)*0.006,
	}
	end := day.Add(24 * time.Hour)
	// Leave the depot between 05:00 and 09:00.
	depart := day.Add(5*time.Hour + time.Duration(rng.Float64()*4*float64(time.Hour)))
	parkStart := day
	rec.emit(w) // first record of the day
	nTrips := 3 + rng.IntN(7)
	for k := 0; k < nTrips; k++ {
		rec.park(w, depart)
		v.Parks = append(v.Parks, Park{Start: parkStart, End: depart})
		trip := rec.drive(w, k)
		v.Trips = append(v.Trips, trip)
		parkStart = w.t
		var stay time.Duration
		switch {
		case rng.Float64() < 0.15:
			stay = time.Duration(30+rng.IntN(120)) * time.Second // quick stop before a short hop
		default:
			stay = time.Duration(5+rng.IntN(115)) * time.Minute
		}
		depart = w.t.Add(stay)
		if depart.After(end.Add(-2 * time.Hour)) {
			break
		}
	}
	rec.park(w, end)
	v.Parks = append(v.Parks, Park{Start: parkStart, End: end})
	v.DistanceM = w.odo
	rec.deliver()
	v.Items = rec.items
	return v
}

// park stands with the ignition off until until, reporting every ParkPeriod.
func (r *recorder) park(w *world, until time.Time) {
	w.ign, w.parked, w.v = false, true, 0
	r.emit(w) // ignition off event
	// A parked teleport spike in about half of the long parks.
	spikeAt := time.Time{}
	if until.Sub(w.t) > 20*time.Minute && r.rng.Float64() < 0.5 {
		spikeAt = w.t.Add(time.Duration(r.rng.Float64() * float64(until.Sub(w.t)-5*time.Minute)))
	}
	for w.t.Before(until) {
		w.t = w.t.Add(time.Second)
		r.parkedError(w)
		if !spikeAt.IsZero() && !w.t.Before(spikeAt) {
			spikeAt = time.Time{}
			r.spike(w, ParkedSpike, 1000+r.rng.Float64()*19000)
			continue
		}
		if w.t.Sub(r.last) >= r.veh.ParkPeriod {
			r.emit(w)
		}
	}
	w.parked = false
}

// parkedError evolves the receiver error of a parked vehicle: a slow wander of tens of
// metres (multipath), reset towards a small error once it drives.
func (r *recorder) parkedError(w *world) {
	const tau = 900.0
	a := math.Exp(-1 / tau)
	s := r.driftSigma * math.Sqrt(1-a*a)
	w.errE = a*w.errE + s*r.rng.NormFloat64()
	w.errN = a*w.errN + s*r.rng.NormFloat64()
}

func (r *recorder) movingError(w *world) {
	a := math.Exp(-1 / r.jitterTau)
	s := r.jitterSigma * math.Sqrt(1-a*a)
	// A parked error decays quickly once the receiver sees open sky and moves.
	w.errE = 0.97*a*w.errE + s*r.rng.NormFloat64()
	w.errN = 0.97*a*w.errN + s*r.rng.NormFloat64()
}

// plan lays out the road of one trip.
func (r *recorder) plan(k int) []segment {
	rng := r.rng
	var target float64
	short := rng.Float64() < 0.12
	switch {
	case short:
		target = 40 + rng.Float64()*400 // a manoeuvre or a hop round the corner
	case rng.Float64() < 0.5:
		target = 1500 + rng.Float64()*8000
	default:
		target = 8000 + rng.Float64()*45000
	}
	var segs []segment
	total := 0.0
	tunnels := 0
	for total < target {
		var s segment
		class := 0 // urban
		if !short && total > 1500 && target-total > 2000 {
			class = 1 + rng.IntN(2)
		}
		switch class {
		case 0:
			s = segment{length: 60 + rng.Float64()*500, cruise: (30 + rng.Float64()*22) / 3.6}
			if rng.Float64() < 0.3 {
				s.stop = time.Duration(5+rng.IntN(55)) * time.Second
			}
		case 1:
			s = segment{length: 300 + rng.Float64()*2500, cruise: (65 + rng.Float64()*25) / 3.6}
		default:
			s = segment{length: 1000 + rng.Float64()*6000, cruise: (95 + rng.Float64()*30) / 3.6}
		}
		if short {
			s.stop = 0
		}
		if s.length > 500 && class > 0 && tunnels == 0 && rng.Float64() < 0.1 {
			s.tunnel = true
			s.invalid = rng.Float64() < 0.5
			tunnels++
		}
		segs = append(segs, s)
		total += s.length
		// A turn or a bend after it.
		var angle, radius float64
		switch class {
		case 0:
			angle, radius = 30+rng.Float64()*80, 8+rng.Float64()*20
		case 1:
			angle, radius = 5+rng.Float64()*40, 150+rng.Float64()*500
		default:
			angle, radius = 3+rng.Float64()*15, 800+rng.Float64()*1500
		}
		if rng.IntN(2) == 0 {
			angle = -angle
		}
		arc := math.Abs(angle) / deg * radius
		segs = append(segs, segment{length: arc, curv: math.Copysign(1/radius, angle), cruise: s.cruise})
		total += arc
	}
	_ = k
	return segs
}

// drive makes one trip: ignition on, a short warm-up, the road, a short idle, and returns
// the true trip.
func (r *recorder) drive(w *world, k int) Trip {
	rng := r.rng
	w.ign, w.parked = true, false
	r.emit(w) // ignition on event
	for range 10 + rng.IntN(80) {
		w.t = w.t.Add(time.Second)
		r.movingError(w)
		r.maybeEmit(w)
	}
	segs := r.plan(k)
	trip := Trip{Start: w.t}
	startOdo := w.odo
	spikes := rng.IntN(3)
	var spikeAt []float64
	for range spikes {
		spikeAt = append(spikeAt, startOdo+rng.Float64()*segLen(segs))
	}
	slices.Sort(spikeAt)
	const acc, brake = 1.6, 2.2
	segFrom := 0.0 // distance into the trip where segment i starts
	for i := 0; i < len(segs); {
		s := &segs[i]
		left := s.length - (w.odo - startOdo - segFrom)
		// Speed allowed here and by what lies ahead: stops, the trip's end, tighter bends.
		lim := segLimit(s)
		dist := left
		for j := i; j < len(segs) && dist < 800; j++ {
			endLim := 0.0
			if segs[j].stop == 0 && j+1 < len(segs) {
				endLim = segLimit(&segs[j+1])
			}
			lim = math.Min(lim, math.Sqrt(endLim*endLim+2*brake*math.Max(dist-0.5, 0)))
			if j+1 < len(segs) {
				dist += segs[j+1].length
			}
		}
		lim = math.Max(lim, 1.5)
		nv := w.v
		if nv < lim {
			nv = math.Min(lim, nv+acc)
		} else {
			nv = lim
		}
		ds := (w.v + nv) / 2
		w.v = nv
		w.t = w.t.Add(time.Second)
		if ds >= left {
			// Reach the end of the segment this second.
			w.move(left, s.curv)
			segFrom += s.length
			i++
			if s.stop > 0 || i == len(segs) {
				w.v = 0
			}
			r.movingError(w)
			r.record(w, s, &spikeAt)
			if s.stop > 0 {
				for range int(s.stop / time.Second) {
					w.t = w.t.Add(time.Second)
					r.movingError(w)
					r.maybeEmit(w)
				}
			}
			continue
		}
		w.move(ds, s.curv)
		r.movingError(w)
		r.record(w, s, &spikeAt)
	}
	trip.End = w.t
	trip.DistanceM = w.odo - startOdo
	w.v = 0
	for range rng.IntN(60) {
		w.t = w.t.Add(time.Second)
		r.movingError(w)
		r.maybeEmit(w)
	}
	return trip
}

func (r *recorder) record(w *world, s *segment, spikeAt *[]float64) {
	if s.tunnel {
		if s.invalid && w.t.Sub(r.last) >= r.veh.Period {
			r.emitLabel(w, Invalid)
		}
		return
	}
	if len(*spikeAt) > 0 && w.odo >= (*spikeAt)[0] {
		*spikeAt = (*spikeAt)[1:]
		r.spike(w, DrivingSpike, 300+r.rng.Float64()*2700)
		return
	}
	r.maybeEmit(w)
}

func segLen(segs []segment) float64 {
	t := 0.0
	for _, s := range segs {
		t += s.length
	}
	return t
}

// segLimit is the speed a driver takes a segment at: its cruise speed, slower in bends
// (lateral acceleration at most 2.5 m/s²).
func segLimit(s *segment) float64 {
	if s.curv == 0 {
		return s.cruise
	}
	return math.Min(s.cruise, math.Sqrt(2.5/math.Abs(s.curv)))
}

// maybeEmit records a fix when the tracker's rules say so: period elapsed, heading
// changed by AngleDeg, or DistanceRec driven.
func (r *recorder) maybeEmit(w *world) {
	dt := w.t.Sub(r.last)
	if dt >= r.veh.Period {
		r.emit(w)
		return
	}
	if w.v > 1 && dt >= time.Second {
		dh := math.Abs(math.Mod(w.heading-r.lastH+540, 360) - 180)
		if dh >= r.veh.AngleDeg || w.odo-r.lastOdo >= r.veh.DistanceRec {
			r.emit(w)
		}
	}
}

// emit records a fix of the noise the situation calls for.
func (r *recorder) emit(w *world) {
	u := r.rng.Float64()
	switch {
	case u < r.pInvalid:
		r.emitLabel(w, Invalid)
	case u < r.pInvalid+r.pLow:
		r.emitLabel(w, LowQuality)
	case u < r.pInvalid+r.pLow+r.pFuture:
		r.emitLabel(w, FutureStamp)
	case w.parked:
		r.emitLabel(w, ParkedDrift)
	default:
		r.emitLabel(w, Good)
	}
}

func (r *recorder) spike(w *world, l Label, distM float64) {
	it := r.base(w, l)
	bearing := r.rng.Float64() * 2 * math.Pi
	w.offset(distM*math.Sin(bearing), distM*math.Cos(bearing), &it.Record.Lat, &it.Record.Lon)
	r.push(w, it)
}

func (r *recorder) emitLabel(w *world, l Label) {
	it := r.base(w, l)
	rec := &it.Record
	switch l {
	case Invalid:
		rec.FixValid = false
		rec.Satellites = uint32(r.rng.IntN(3))
		if r.rng.IntN(2) == 0 {
			rec.Lat, rec.Lon = 0, 0
		}
	case LowQuality:
		rec.Satellites = uint32(r.rng.IntN(3))
		rec.HDOP = 15 + r.rng.Float64()*25
		if r.veh.HasPDOP {
			rec.PDOP = rec.HDOP * (1.2 + r.rng.Float64())
		}
		d := 100 + r.rng.Float64()*2900
		b := r.rng.Float64() * 2 * math.Pi
		w.offset(d*math.Sin(b), d*math.Cos(b), &rec.Lat, &rec.Lon)
	case FutureStamp:
		rec.DeviceTime = rec.DeviceTime.Add(time.Duration(1+r.rng.IntN(48)) * time.Hour)
	}
	r.push(w, it)
}

// base is a good record at the current moment.
func (r *recorder) base(w *world, l Label) Item {
	r.seq++
	rec := telemetry.Record{
		VehicleID:  r.veh.ID,
		DeviceTime: w.t,
		Sequence:   r.seq,
		Lat:        w.lat,
		Lon:        w.lon,
		AltitudeM:  200 + r.rng.Float64()*5,
		HeadingDeg: math.Mod(w.heading+r.rng.NormFloat64()*2+360, 360),
		Satellites: uint32(6 + r.rng.IntN(9)),
		HDOP:       0.6 + r.rng.Float64()*1.8,
		FixValid:   true,
	}
	w.offset(w.errE+r.rng.NormFloat64()*0.5, w.errN+r.rng.NormFloat64()*0.5, &rec.Lat, &rec.Lon)
	if w.v > 0 {
		rec.SpeedKmh = math.Max(0, w.v*3.6+r.rng.NormFloat64()*0.8)
	} else if w.parked {
		rec.SpeedKmh = math.Floor(r.rng.Float64() * 3) // receivers report a little speed while parked
	}
	if r.veh.HasPDOP {
		rec.PDOP = rec.HDOP * (1.2 + r.rng.Float64()*0.6)
		rec.Set(telemetry.HasPDOP)
	}
	rec.Set(telemetry.HasIgnition)
	rec.Ignition = w.ign
	if r.veh.HasMovement {
		rec.Set(telemetry.HasMovement)
		rec.Movement = w.ign // the accelerometer feels the running engine
	}
	if r.veh.HasOdometer {
		rec.Set(telemetry.HasOdometer)
		rec.OdometerM = 25_000_000 + math.Round(w.odo*r.devOdo)
	}
	if l == ParkedSpike {
		rec.SpeedKmh = 0
	}
	r.last, r.lastH, r.lastOdo = w.t, w.heading, w.odo
	return Item{Record: rec, Label: l, TrueTime: w.t, TrueLat: w.lat, TrueLon: w.lon, TrueOdoM: w.odo,
		Parked: w.parked, TrueSpeed: w.v * 3.6}
}

func (r *recorder) push(w *world, it Item) {
	_ = w
	r.items = append(r.items, it)
}

// deliver decides when each record reaches the platform: batches every few seconds to a
// couple of minutes, duplicates resent later, and one late batch for some vehicles.
func (r *recorder) deliver() {
	rng := r.rng
	send := time.Duration(5+rng.IntN(115)) * time.Second
	for i := range r.items {
		it := &r.items[i]
		// Sent with the next batch after it was taken.
		t := it.TrueTime.Truncate(send).Add(send) // a batch keeps its order (stable sort below)
		it.Deliver = t
		it.Record.SentTime = t.Add(-time.Second)
	}
	// The late batch: a stretch of driving held back (coverage lost) and sent later.
	if rng.Float64() < 0.5 {
		var moving []int
		for i := range r.items {
			if !r.items[i].Parked && r.items[i].TrueSpeed > 10 {
				moving = append(moving, i)
			}
		}
		if len(moving) > 50 {
			from := moving[rng.IntN(len(moving)-40)]
			span := time.Duration(2+rng.IntN(13)) * time.Minute
			delay := time.Duration(5+rng.IntN(25)) * time.Minute
			start := r.items[from].TrueTime
			for i := from; i < len(r.items) && r.items[i].TrueTime.Sub(start) < span; i++ {
				r.items[i].Late = true
				r.items[i].Deliver = start.Add(span + delay)
			}
		}
	}
	var dups []Item
	for i := range r.items {
		if rng.Float64() < r.pDup {
			d := r.items[i]
			d.Label = Duplicate
			d.Deliver = d.Deliver.Add(time.Duration(20+rng.IntN(200)) * time.Second)
			dups = append(dups, d)
		}
	}
	r.items = append(r.items, dups...)
	slices.SortStableFunc(r.items, func(a, b Item) int { return a.Deliver.Compare(b.Deliver) })
}
