// Package theftscen generates theft scenarios with ground truth to judge a theft
// detector from the outside: real incidents (tows with and without GNSS fixes, slow flatbed
// tows, jammers, device tow and jamming alarms) and the harmless situations that look like
// them (multipath outliers, valet moves, parking drift, garages, tunnels, ferries, trains,
// parked vehicles whose cell or supply voltage changes).
//
// It is deliberately independent of simulators/fleetsim: a detector tuned against the
// simulator that also scripts its incidents would only learn that simulator's habits. The
// vehicles here move on free kinematics (no road network), report like a Teltonika-style
// tracker (a moving and a parked interval, movement wakes the device, an event record
// when the fix is lost) and transmit only with a cellular signal: records taken with GSM
// level 0 are buffered and arrive with the next record that can be sent, or never.
//
// Two fixed sets of seeds are published: Development for tuning, HeldOut for judging
// once tuning is over (docs/benchmarks.md).
package theftscen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Kind names a scenario.
type Kind string

// Positive scenarios: a real incident the detector must alert.
const (
	Tow            Kind = "tow"              // towed with fixes, 20–60 km/h, ignition off
	TowSlow        Kind = "tow_slow"         // flatbed at 1.5–5 km/h, ignition off
	TowNoFix       Kind = "tow_nofix"        // towed with no fix at all; movement, cells, voltage
	Jammer         Kind = "jammer"           // GNSS invalid and GSM falling to 0 while driving, 3–15 min
	JammerStays    Kind = "jammer_stays"     // the same, and the jammer never goes off
	DeviceTowAlarm Kind = "device_tow_alarm" // the tracker reports TOW itself
	DeviceJamAlarm Kind = "device_jam_alarm" // a GNSS-only jammer the tracker reports itself
)

// Look-alikes: harmless situations the detector must not alert.
const (
	Multipath     Kind = "multipath"      // parked; single fixes 200–650 m off, 4 satellites, HDOP 4.5
	Valet         Kind = "valet"          // ignition off, moved 50 m, one speed reading of 11 km/h
	ParkingDrift  Kind = "parking_drift"  // hours parked with drifting and poor fixes, bumps
	Garage        Kind = "garage"         // GNSS lost while entering, parked and leaving
	TunnelShort   Kind = "tunnel_short"   // GNSS lost 20–90 s while driving, GSM steady
	TunnelLong    Kind = "tunnel_long"    // GNSS lost 4–5 min while driving, GSM steady
	Ferry         Kind = "ferry"          // moving with ignition off and no accelerometer movement
	Train         Kind = "train"          // the same at train speed, with tunnels
	ParkedSignals Kind = "parked_signals" // parked, ignition off; cell changes, supply voltage drops
)

// Positives and LookAlikes list every kind, in table order.
var (
	Positives  = []Kind{Tow, TowSlow, TowNoFix, Jammer, JammerStays, DeviceTowAlarm, DeviceJamAlarm}
	LookAlikes = []Kind{Multipath, Valet, ParkingDrift, Garage, TunnelShort, TunnelLong, Ferry, Train, ParkedSignals}
)

// Family groups incident kinds by what a detector should call them.
type Family string

// Families.
const (
	FamilyNone    Family = ""
	FamilyTow     Family = "tow"
	FamilyJamming Family = "jamming"
)

// FamilyOf returns the incident family of a positive kind (FamilyNone for look-alikes).
func FamilyOf(k Kind) Family {
	switch k {
	case Tow, TowSlow, TowNoFix, DeviceTowAlarm:
		return FamilyTow
	case Jammer, JammerStays, DeviceJamAlarm:
		return FamilyJamming
	}
	return FamilyNone
}

// CellIDKey is the IO element carrying the serving cell id (Teltonika IO 205).
const CellIDKey = "205"

// Scenario is one vehicle's records and what really happened.
type Scenario struct {
	Vehicle string
	Kind    Kind
	Family  Family // FamilyNone: a look-alike, nothing should be alerted
	// The incident's start (the first moment a detector could know: the tow truck starts
	// lifting, the jammer comes on) and end; zero for look-alikes.
	Start, End time.Time
	// Records in arrival order, ReceivedTime set (platform clock = device clock here).
	// Records taken without a cellular signal arrive with the next one that could be sent;
	// those still buffered at ObserveEnd never arrive.
	Records []telemetry.Record
	// ObserveEnd is when the scenario's observation stops (platform clock).
	ObserveEnd time.Time
	// Dropped counts records that never arrived.
	Dropped int
}

// Published seeds. Tune on Development; run HeldOut only to judge a finished detector.
var (
	DevelopmentSeeds = []uint64{101, 102}
	HeldOutSeeds     = []uint64{90210, 90211, 90212}
)

// PerKind is how many scenarios of every kind one seed produces.
const PerKind = 3

// Development returns the development scenarios.
func Development() []Scenario { return generateSeeds("dev", DevelopmentSeeds) }

// HeldOut returns the held-out scenarios.
func HeldOut() []Scenario { return generateSeeds("ho", HeldOutSeeds) }

func generateSeeds(prefix string, seeds []uint64) []Scenario {
	var out []Scenario
	for _, s := range seeds {
		out = append(out, Generate(fmt.Sprintf("%s%d", prefix, s), s, PerKind)...)
	}
	return out
}

// Generate returns perKind scenarios of every kind from seed; vehicle ids start with prefix.
func Generate(prefix string, seed uint64, perKind int) []Scenario {
	rng := rand.New(rand.NewPCG(seed, seed^0x7e57ab1e))
	base := time.Date(2026, 6, 10, 5, 0, 0, 0, time.UTC)
	var out []Scenario
	n := 0
	for _, kinds := range [][]Kind{Positives, LookAlikes} {
		for _, k := range kinds {
			for i := range perKind {
				n++
				b := newBuilder(rng, fmt.Sprintf("%s-%s-%d", prefix, k, i), k, base.Add(time.Duration(rng.IntN(3600))*time.Second))
				scripts[k](b)
				out = append(out, b.finish())
			}
		}
	}
	return out
}

// device is how one tracker reports.
type device struct {
	movingIv, parkedIv time.Duration
	movement           bool // reports the accelerometer's movement flag
	cell               bool // reports the serving cell id
}

type builder struct {
	rng     *rand.Rand
	sc      Scenario
	dev     device
	t       time.Time
	pos     geo.Point // true position
	heading float64
	speed   float64 // true km/h
	ign     bool
	gsm     int // baseline level where the vehicle is
	cell    int
	cellM   float64 // metres travelled since the last cell change
	cellAt  float64 // ... and the distance of the next change
	extV    float64
	seq     uint64
	recs    []telemetry.Record
}

func newBuilder(rng *rand.Rand, vehicle string, k Kind, start time.Time) *builder {
	b := &builder{
		rng: rng, sc: Scenario{Vehicle: vehicle, Kind: k, Family: FamilyOf(k)}, t: start,
		dev: device{
			movingIv: time.Duration(10+rng.IntN(21)) * time.Second,
			parkedIv: time.Duration(60+rng.IntN(241)) * time.Second,
			movement: true,
			cell:     rng.Float64() < 0.7,
		},
		pos:     geo.Point{Lat: 48 + rng.Float64()*6, Lon: 6 + rng.Float64()*12},
		heading: rng.Float64() * 360,
		gsm:     3 + rng.IntN(3),
		cell:    10000 + rng.IntN(50000),
		extV:    12.2 + rng.Float64()*0.6,
	}
	b.cellAt = 1500 + rng.Float64()*2000
	return b
}

func (b *builder) uniform(lo, hi float64) float64 { return lo + b.rng.Float64()*(hi-lo) }

func (b *builder) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(b.rng.Int64N(int64(hi-lo)+1))
}

// jitter varies a reporting interval by ±10 %.
func (b *builder) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * b.uniform(0.9, 1.1))
}

// fix is what the receiver reports.
type fix uint8

const (
	fixGood fix = iota
	fixPoor     // few satellites, high HDOP, metres to tens of metres off
	fixNone
)

// obs is one record's observation; the builder fills in the rest from its state.
type obs struct {
	fix       fix
	offsetM   float64 // reported position this far from the true one (random bearing)
	speed     float64 // reported speed (negative: from the true speed with noise)
	movement  bool
	gsm       int // -1: the baseline with its jitter
	sats      uint32
	hdop      float64
	alarms    []telemetry.AlarmKind
	extV      float64 // 0: the builder's
	noCell    bool    // GNSS-independent fields still come; only the cell is withheld
	forcedPos *geo.Point
}

func (b *builder) emit(o obs) {
	b.seq++
	r := telemetry.Record{VehicleID: b.sc.Vehicle, DeviceTime: b.t, Sequence: b.seq}
	r.Ignition = b.ign
	r.Set(telemetry.HasIgnition)
	if b.dev.movement {
		r.Movement = o.movement
		r.Set(telemetry.HasMovement)
	}
	gsm := o.gsm
	if gsm < 0 {
		gsm = b.gsm
		if b.rng.Float64() < 0.15 {
			gsm += []int{-1, 1}[b.rng.IntN(2)]
		}
		gsm = max(1, min(5, gsm))
	}
	r.GSMLevel = uint8(gsm)
	r.Set(telemetry.HasGSMLevel)
	r.ExternalVoltage = b.extV
	if o.extV != 0 {
		r.ExternalVoltage = max(0, o.extV)
	}
	if b.ign && r.ExternalVoltage > 11 {
		r.ExternalVoltage += 1.6 // the alternator charges
	}
	r.ExternalVoltage += b.uniform(-0.05, 0.05)
	r.BatteryVoltage = 4.0 + b.uniform(-0.05, 0.05)
	r.Set(telemetry.HasExternalVoltage | telemetry.HasBatteryVoltage)
	if b.dev.cell && !o.noCell {
		r.IO = map[string]float64{CellIDKey: float64(b.cell)}
	}
	r.Alarms = o.alarms
	switch o.fix {
	case fixNone:
		r.FixValid = false
		r.Satellites = uint32(b.rng.IntN(3))
		r.HDOP, r.PDOP = 99, 99
		r.Set(telemetry.HasPDOP)
		// Trackers repeat the last known coordinates on records without a fix.
		r.Lat, r.Lon = b.pos.Lat, b.pos.Lon
	default:
		r.FixValid = true
		p := b.pos
		if o.forcedPos != nil {
			p = *o.forcedPos
		}
		noise := b.uniform(0, 6)
		if o.fix == fixPoor {
			noise = b.uniform(10, 40)
		}
		p = geo.Destination(p, b.rng.Float64()*360, noise+o.offsetM)
		r.Lat, r.Lon = p.Lat, p.Lon
		r.Satellites = uint32(7 + b.rng.IntN(7))
		r.HDOP = math.Round(b.uniform(0.6, 1.6)*10) / 10
		if o.fix == fixPoor {
			r.Satellites, r.HDOP = uint32(4+b.rng.IntN(2)), math.Round(b.uniform(2.5, 4)*10)/10
		}
		if o.sats != 0 {
			r.Satellites, r.HDOP = o.sats, o.hdop
		}
		r.PDOP = math.Round(r.HDOP*b.uniform(1.1, 1.5)*10) / 10
		r.Set(telemetry.HasPDOP)
		sp := o.speed
		if sp < 0 {
			sp = math.Max(0, b.speed+b.uniform(-1, 1))
		}
		r.SpeedKmh = math.Round(sp*10) / 10
		r.HeadingDeg = b.heading
	}
	b.recs = append(b.recs, r)
}

// advance moves the true position on by the true speed for d and counts cell changes.
func (b *builder) advance(d time.Duration) {
	m := b.speed / 3.6 * d.Seconds()
	b.heading = math.Mod(b.heading+b.uniform(-12, 12)+360, 360)
	b.pos = geo.Destination(b.pos, b.heading, m)
	b.cellM += m
	if b.cellM >= b.cellAt {
		b.cell++
		b.cellM, b.cellAt = 0, 1500+b.rng.Float64()*2000
	}
	b.t = b.t.Add(d)
}

// mod changes the observation of a record taken at t.
type mod func(t time.Time, o *obs)

// drive drives with the ignition on for d at lo..hi km/h.
func (b *builder) drive(d time.Duration, lo, hi float64, m mod) {
	b.ign = true
	if b.speed < lo || b.speed > hi {
		b.speed = b.uniform(lo, hi)
	}
	end := b.t.Add(d)
	for b.t.Before(end) {
		b.advance(b.jitter(b.dev.movingIv))
		b.speed = math.Max(lo, math.Min(hi, b.speed+b.uniform(-6, 6)))
		o := obs{fix: fixGood, speed: -1, movement: true, gsm: -1}
		if m != nil {
			m(b.t, &o)
		}
		b.emit(o)
	}
}

// park stops, turns the ignition off and stays for d, reporting at the parked interval.
func (b *builder) park(d time.Duration, m mod) {
	b.speed = 0
	b.t = b.t.Add(2 * time.Second)
	b.ign = false
	o := obs{fix: fixGood, speed: 0, gsm: -1}
	if m != nil {
		m(b.t, &o)
	}
	b.emit(o)
	end := b.t.Add(d)
	for {
		next := b.t.Add(b.jitter(b.dev.parkedIv))
		if next.After(end) {
			break
		}
		b.t = next
		o := obs{fix: fixGood, speed: 0, gsm: -1}
		if b.rng.Float64() < 0.1 {
			o.speed = b.uniform(0.5, 3)
		}
		if b.rng.Float64() < 0.15 {
			o.offsetM = b.uniform(5, 30) // drift
		}
		if m != nil {
			m(b.t, &o)
		}
		b.emit(o)
	}
	b.t = end
}

// towed moves the vehicle with the ignition off and the accelerometer sensing it,
// reporting at the moving interval (movement wakes the device).
func (b *builder) towed(d time.Duration, lo, hi float64, m mod) {
	b.ign = false
	end := b.t.Add(d)
	b.speed = b.uniform(lo, hi)
	for b.t.Before(end) {
		b.advance(b.jitter(b.dev.movingIv))
		b.speed = math.Max(lo, math.Min(hi, b.speed+b.uniform(-4, 4)))
		o := obs{fix: fixGood, speed: -1, movement: true, gsm: -1}
		if m != nil {
			m(b.t, &o)
		}
		b.emit(o)
	}
}

// handled: the vehicle is worked on in place (lifted, loaded) for d, movement sensed.
func (b *builder) handled(d time.Duration, m mod) {
	b.speed = 0
	end := b.t.Add(d)
	for b.t.Before(end) {
		b.t = b.t.Add(b.jitter(b.dev.movingIv))
		o := obs{fix: fixGood, speed: b.uniform(0, 1.5), movement: true, gsm: -1}
		if m != nil {
			m(b.t, &o)
		}
		b.emit(o)
	}
}

// finish models transmission and returns the scenario.
func (b *builder) finish() Scenario {
	sc := b.sc
	sc.ObserveEnd = b.t.Add(time.Minute)
	var pending []telemetry.Record
	for _, r := range b.recs {
		if r.GSMLevel == 0 {
			pending = append(pending, r)
			continue
		}
		arrive := r.DeviceTime.Add(time.Duration(500+b.rng.IntN(2500)) * time.Millisecond)
		for _, p := range pending {
			p.ReceivedTime = arrive
			sc.Records = append(sc.Records, p)
		}
		pending = pending[:0]
		r.ReceivedTime = arrive
		sc.Records = append(sc.Records, r)
	}
	sc.Dropped = len(pending)
	return sc
}

var scripts = map[Kind]func(*builder){
	Tow:            func(b *builder) { towScript(b, 20, 60, false, false) },
	TowSlow:        func(b *builder) { towScript(b, 1.5, 5, false, false) },
	TowNoFix:       func(b *builder) { towScript(b, 15, 50, true, false) },
	DeviceTowAlarm: func(b *builder) { towScript(b, 10, 50, b.rng.Float64() < 0.5, true) },
	Jammer:         func(b *builder) { jammerScript(b, false, false) },
	JammerStays:    func(b *builder) { jammerScript(b, true, false) },
	DeviceJamAlarm: func(b *builder) { jammerScript(b, false, true) },
	Multipath:      multipathScript,
	Valet:          valetScript,
	ParkingDrift:   driftScript,
	Garage:         garageScript,
	TunnelShort:    func(b *builder) { tunnelScript(b, 20*time.Second, 90*time.Second, 2+b.rng.IntN(3)) },
	TunnelLong:     func(b *builder) { tunnelScript(b, 4*time.Minute, 5*time.Minute, 1+b.rng.IntN(2)) },
	Ferry:          func(b *builder) { transportScript(b, 12, 35, false) },
	Train:          func(b *builder) { transportScript(b, 60, 140, true) },
	ParkedSignals:  parkedSignalsScript,
}

func (b *builder) prologue() {
	b.drive(b.dur(10*time.Minute, 25*time.Minute), 25, 70, nil)
}

// towScript: parked long enough for any arming delay, then lifted and towed away.
func towScript(b *builder, lo, hi float64, noFix, alarm bool) {
	b.prologue()
	b.park(b.dur(15*time.Minute, 40*time.Minute), nil)
	b.t = b.t.Add(b.dur(5*time.Second, 60*time.Second))
	b.sc.Start = b.t
	cutPower := noFix && b.rng.Float64() < 0.5
	alarmAt := b.t.Add(b.dur(10*time.Second, 40*time.Second))
	alarmSent := false
	m := func(t time.Time, o *obs) {
		if noFix {
			o.fix = fixNone
		}
		if cutPower && t.Sub(b.sc.Start) > 30*time.Second {
			o.extV = -1 // battery disconnected: the tracker runs on its backup battery
		}
		if alarm && !alarmSent && !t.Before(alarmAt) {
			o.alarms, alarmSent = []telemetry.AlarmKind{telemetry.AlarmTow}, true
		}
	}
	b.handled(b.dur(time.Minute, 3*time.Minute), m)
	b.towed(b.dur(8*time.Minute, 30*time.Minute), lo, hi, m)
	b.handled(b.dur(time.Minute, 2*time.Minute), m)
	b.sc.End = b.t
	b.park(b.dur(20*time.Minute, 40*time.Minute), func(t time.Time, o *obs) {
		if noFix && t.Sub(b.sc.End) < 15*time.Minute {
			o.fix = fixNone
		}
		if cutPower {
			o.extV = -1
		}
	})
}

// jammerScript: a jammer comes on while driving. GNSS is lost at once; unless gnssOnly,
// the cellular level falls to 0 within a minute (records then stay on the device, except
// a few taken at level 1 on the jammer's edge), and stays there while the jammer is on.
func jammerScript(b *builder, stays, gnssOnly bool) {
	b.prologue()
	b.drive(b.dur(2*time.Minute, 8*time.Minute), 30, 80, nil)
	on := b.t.Add(b.dur(time.Second, 10*time.Second))
	b.sc.Start = on
	fall := b.dur(10*time.Second, 60*time.Second)
	length := b.dur(3*time.Minute, 15*time.Minute)
	if stays {
		length = 10 * time.Hour
	}
	off := on.Add(length)
	base := b.gsm
	jam := func(t time.Time, o *obs) {
		if t.Before(on) || !t.Before(off) {
			return
		}
		o.fix = fixNone
		if gnssOnly {
			return
		}
		el := t.Sub(on)
		if el < fall {
			o.gsm = int(math.Round(float64(base) * (1 - float64(el)/float64(fall))))
		} else {
			o.gsm = 0
			if !stays && b.rng.Float64() < 0.15 {
				o.gsm = 1
			}
		}
	}
	// The event record a tracker sends when its fix status changes.
	b.t = on.Add(b.dur(time.Second, 3*time.Second))
	b.advance(0)
	o := obs{fix: fixGood, speed: -1, movement: true, gsm: -1}
	jam(b.t, &o)
	b.emit(o)
	alarmSent := false
	m := func(t time.Time, o *obs) {
		jam(t, o)
		if gnssOnly && !alarmSent && t.Sub(on) >= 5*time.Second {
			o.alarms, alarmSent = []telemetry.AlarmKind{telemetry.AlarmGNSSJamming}, true
		}
	}
	if stays {
		b.drive(b.dur(15*time.Minute, 25*time.Minute), 30, 80, m)
		b.sc.End = b.t
		b.park(b.dur(10*time.Minute, 20*time.Minute), m)
		return
	}
	b.drive(length, 30, 80, m)
	b.sc.End = b.t
	b.drive(b.dur(5*time.Minute, 15*time.Minute), 30, 80, m)
	b.park(b.dur(10*time.Minute, 20*time.Minute), nil)
}

func multipathScript(b *builder) {
	b.prologue()
	parkedAt := b.t
	n := 1 + b.rng.IntN(3)
	glitches := map[int]bool{}
	for len(glitches) < n {
		glitches[3+b.rng.IntN(15)] = true
	}
	i := 0
	b.park(b.dur(90*time.Minute, 150*time.Minute), func(t time.Time, o *obs) {
		i++
		if glitches[i] && t.Sub(parkedAt) > 5*time.Minute {
			o.offsetM, o.sats, o.hdop = b.uniform(200, 650), 4, 4.5
			o.speed = b.uniform(0, 25)
		}
	})
	b.drive(b.dur(5*time.Minute, 10*time.Minute), 25, 60, nil)
}

func valetScript(b *builder) {
	b.prologue()
	for range 1 + b.rng.IntN(2) {
		b.park(b.dur(15*time.Minute, 40*time.Minute), nil)
		// Moved 50 m at walking pace with the ignition off; one speed reading is noisy.
		moveFor := b.dur(30*time.Second, 90*time.Second)
		dist := b.uniform(40, 60)
		b.speed = dist / moveFor.Seconds() * 3.6
		noisy := false
		end := b.t.Add(moveFor)
		for b.t.Before(end) {
			b.advance(b.jitter(b.dev.movingIv))
			o := obs{fix: fixGood, speed: -1, movement: true, gsm: -1}
			if !noisy {
				o.speed, noisy = b.uniform(10, 12), true
			}
			b.emit(o)
		}
	}
	b.park(b.dur(20*time.Minute, 40*time.Minute), nil)
	b.drive(b.dur(5*time.Minute, 10*time.Minute), 25, 60, nil)
}

func driftScript(b *builder) {
	b.prologue()
	b.park(b.dur(2*time.Hour, 3*time.Hour), func(_ time.Time, o *obs) {
		switch x := b.rng.Float64(); {
		case x < 0.15:
			o.fix, o.offsetM = fixPoor, b.uniform(20, 80)
			o.speed = b.uniform(0, 6)
		case x < 0.35:
			o.offsetM = b.uniform(10, 40)
		case x < 0.40:
			o.movement = true // a bump: someone leans on the car, a door slams next to it
		}
	})
	b.drive(b.dur(5*time.Minute, 10*time.Minute), 25, 60, nil)
}

// garageScript: an underground car park. The cellular signal weakens by up to two levels
// (never below 2: garages with repeaters) and GNSS is lost from the ramp on.
func garageScript(b *builder) {
	b.prologue()
	low := max(2, b.gsm-b.rng.IntN(3))
	inside := func(_ time.Time, o *obs) { o.fix, o.gsm = fixNone, low }
	b.drive(b.dur(20*time.Second, 60*time.Second), 3, 12, inside)
	b.park(b.dur(time.Hour, 3*time.Hour), inside)
	b.drive(b.dur(30*time.Second, 90*time.Second), 3, 12, inside)
	b.drive(b.dur(5*time.Minute, 15*time.Minute), 25, 60, nil)
	b.park(b.dur(10*time.Minute, 20*time.Minute), nil)
}

// tunnelScript: GNSS lost for lo..hi while driving, n times; the cellular level stays
// within one level of the open road (tunnels are covered by repeaters).
func tunnelScript(b *builder, lo, hi time.Duration, n int) {
	b.prologue()
	for range n {
		b.drive(b.dur(3*time.Minute, 10*time.Minute), 40, 90, nil)
		in := b.t
		length := b.dur(lo, hi)
		b.drive(length, 50, 90, func(t time.Time, o *obs) {
			if t.Sub(in) < length {
				o.fix = fixNone
			}
		})
	}
	b.drive(b.dur(3*time.Minute, 10*time.Minute), 40, 90, nil)
	b.park(b.dur(10*time.Minute, 20*time.Minute), nil)
}

// transportScript: the vehicle rides a ferry or a car train with the ignition off. The
// accelerometer senses nothing (a smooth ride under the threshold); the cellular signal
// fades at sea or in train tunnels, where GNSS is lost too.
func transportScript(b *builder, lo, hi float64, tunnels bool) {
	b.prologue()
	b.park(b.dur(10*time.Minute, 30*time.Minute), nil)
	ride := b.dur(30*time.Minute, 90*time.Minute)
	start := b.t
	var tunnelAt, tunnelLen time.Duration
	if tunnels {
		tunnelAt, tunnelLen = b.dur(5*time.Minute, ride/2), b.dur(time.Minute, 8*time.Minute)
	}
	seaFrom, seaTo := ride/4, ride/4+b.dur(5*time.Minute, ride/2)
	b.ign = false
	b.speed = b.uniform(lo, hi)
	end := b.t.Add(ride)
	for b.t.Before(end) {
		// Without movement the tracker keeps its parked interval; it wakes on its own
		// schedule, here every one to two minutes because the position changes.
		b.advance(b.jitter(90 * time.Second))
		b.speed = math.Max(lo, math.Min(hi, b.speed+b.uniform(-3, 3)))
		o := obs{fix: fixGood, speed: -1, gsm: -1}
		el := b.t.Sub(start)
		if !tunnels && el >= seaFrom && el < seaTo {
			o.gsm = b.rng.IntN(3)
		}
		if tunnels && el >= tunnelAt && el < tunnelAt+tunnelLen {
			o.fix, o.gsm = fixNone, b.rng.IntN(2)
		}
		b.emit(o)
	}
	b.park(b.dur(2*time.Minute, 5*time.Minute), nil)
	b.drive(b.dur(5*time.Minute, 15*time.Minute), 25, 60, nil)
	b.park(b.dur(10*time.Minute, 20*time.Minute), nil)
}

// parkedSignalsScript: parked for hours while the tracker hops between neighbouring
// cells and the supply voltage drops (battery work, a sagging battery), without moving.
func parkedSignalsScript(b *builder) {
	b.prologue()
	cells := []int{b.cell, b.cell + 1 + b.rng.IntN(5), b.cell + 7 + b.rng.IntN(5)}
	parkedAt := b.t
	cutFrom := b.dur(20*time.Minute, 60*time.Minute)
	cutLen := b.dur(5*time.Minute, 25*time.Minute)
	b.park(b.dur(2*time.Hour, 3*time.Hour), func(t time.Time, o *obs) {
		if b.rng.Float64() < 0.3 {
			b.cell = cells[b.rng.IntN(len(cells))]
		}
		el := t.Sub(parkedAt)
		switch {
		case el >= cutFrom && el < cutFrom+cutLen:
			o.extV = -1
		case el >= cutFrom+cutLen:
			o.extV = b.extV - 0.8 // a tired battery after the work
		}
	})
	b.cell = cells[0]
	b.drive(b.dur(5*time.Minute, 10*time.Minute), 25, 60, nil)
}
