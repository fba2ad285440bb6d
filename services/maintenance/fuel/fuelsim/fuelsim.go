// Package fuelsim generates synthetic fleets with known refuels and fuel drains, to
// judge a fuel detector on data it was not written against.
//
// It was written from a description of real fleets, not from the detector: it shares no
// code, no thresholds and no noise model with package fuel, and imports nothing of it.
// Its sensor is damped (first-order lag of up to 2 min), reads the fuel's thermal
// expansion (a daily swing and the cooling after a drive), sees the tank tilted when the
// vehicle parks on a slope (an offset of up to ±4 % of the tank that appears while the
// vehicle settles, and goes when it drives off), spikes and drops to zero now and then,
// and is quantised (vans 1 % of 80 L, trucks 0.5 L of 300 L, cars 0.25 L of 50 L). The
// tracker reports every 30 s with the ignition on, every 10 s to 5 min with it off
// (chosen per vehicle), once at each ignition change, and goes silent for up to 40 min.
//
// Every refuel and drain is recorded as ground truth with the patterns that make it hard
// (see the Pattern constants). Seeds are split: DevSeeds for developing a detector,
// HeldOutSeeds for judging it once development is done.
package fuelsim

import (
	"math"
	"math/rand/v2"
	"time"
)

// Seeds. A detector is tuned on DevSeeds only; HeldOutSeeds are run once, when the tuning
// is over, so the figure they give is an honest estimate of an unseen fleet.
//
// Seeds 77000-77023 were the held-out set first; they were run during development (before
// tuning, and once by mistake in the middle of it), so they were retired and the
// held-out set moved to seeds never run before the tuning was over.
const (
	DevSeedBase     = 5_000 // DevSeeds(n) are 5000, 5001, ...
	HeldOutSeedBase = 31_000
)

// DevSeeds returns the first n development seeds.
func DevSeeds(n int) []uint64 { return seeds(DevSeedBase, n) }

// HeldOutSeeds returns the first n held-out seeds.
func HeldOutSeeds(n int) []uint64 { return seeds(HeldOutSeedBase, n) }

func seeds(base uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

// Kind of a true event.
type Kind string

const (
	Refuel Kind = "refuel"
	Drain  Kind = "drain"
)

// Patterns that make an event (or a stop) hard.
const (
	// PatternShortStop: a refuel with 3 or fewer readings while standing.
	PatternShortStop = "short stop"
	// PatternAfterParking: a drain starting within 5 minutes of the vehicle stopping.
	PatternAfterParking = "drain right after parking"
	// PatternSlowDrain: a drain slower than 0.5 L/min (15 L over about an hour).
	PatternSlowDrain = "slow drain"
	// PatternIdling: a drain while the engine idles.
	PatternIdling = "idling siphon"
	// PatternCreeping: a drain while the vehicle creeps at walking pace.
	PatternCreeping = "creeping siphon"
	// PatternSlopeLag: a stop on a slope of at least 2 % of the tank seen through a
	// sensor lag of at least 60 s.
	PatternSlopeLag = "slope with lag"
	// PatternDouble: a refuel in two fillings (two pumps, or a top-up minutes later),
	// counted as one event whose volume is the sum.
	PatternDouble = "double refuel"
)

// Record is one tracker report.
type Record struct {
	Time        time.Time
	LevelL      float64 // what the sensor reports, litres (quantised)
	HasLevel    bool    // false in a record without a usable sensor value
	SpeedKmh    float64
	Ignition    bool
	EngineHours float64
	HasHours    bool
	OdometerM   float64
	Lat, Lon    float64
	// TrueL and OffsetL are ground truth for diagnosing a detector, never input to one:
	// the litres in the tank and the slope offset the sensor sees at the report.
	TrueL, OffsetL float64
}

// Event is a true refuel or drain. Litres is the volume dispensed into or taken out of
// the tank. A refuel in two fillings at one stop is one event (PatternDouble).
type Event struct {
	Kind       Kind
	Start, End time.Time
	Litres     float64
	Patterns   []string
}

// Stop is a period the vehicle stood (or crept), with the patterns of the stop itself;
// it lets a false detection be attributed to the situation that caused it.
type Stop struct {
	Start, End time.Time
	Patterns   []string
}

// Vehicle types.
const (
	Car   = "car"
	Van   = "van"
	Truck = "truck"
)

// Track is one simulated vehicle.
type Track struct {
	Seed      uint64
	Type      string
	CapacityL float64
	StepL     float64       // sensor resolution, litres
	Lag       time.Duration // sensor time constant
	Parked    time.Duration // report interval with the ignition off
	IdleLph   float64       // what the engine burns idling
	Records   []Record
	Truth     []Event
	Stops     []Stop
	Drives    [][2]time.Time // periods of normal driving
}

// tick is the simulation step: the smallest report interval.
const tick = 10 * time.Second

type sim struct {
	rng *rand.Rand
	tr  Track

	t        time.Time
	level    float64 // true litres
	odoM     float64
	hrs      float64
	lat, lon float64
	speed    float64
	ign      bool
	pumped   float64 // litres added (or, negative, taken) by hand, for the truth

	lp100       float64
	noiseL      float64
	spikeP      float64
	thermalAmp  float64 // fraction of the level, daily swing
	thermalDay  float64 // phase
	coolAmp     float64 // fraction of the level the fuel contracts by after a drive
	coolTau     time.Duration
	warm        float64 // current warm-fuel expansion, fraction
	offset      float64 // current slope offset, litres
	offsetGoal  float64
	settleTau   time.Duration
	slosh       float64
	sensor      float64 // lagged sensor input
	lastEmit    time.Time
	lastIgn     bool
	silentUntil time.Time
	nextSilence time.Time
}

// Generate simulates one vehicle for days days.
func Generate(seed uint64, days int) Track {
	rng := rand.New(rand.NewPCG(seed, seed*0x2545F4914F6CDD1D+1))
	s := &sim{rng: rng}
	tr := &s.tr
	tr.Seed = seed
	switch rng.IntN(3) {
	case 0:
		tr.Type, tr.CapacityL, tr.StepL = Car, 50, 0.25
		s.lp100, tr.IdleLph = 6+3*rng.Float64(), 0.6+0.4*rng.Float64()
	case 1:
		tr.Type, tr.CapacityL, tr.StepL = Van, 80, 0.8
		s.lp100, tr.IdleLph = 9+4*rng.Float64(), 0.9+0.6*rng.Float64()
	default:
		tr.Type, tr.CapacityL, tr.StepL = Truck, 300, 0.5
		s.lp100, tr.IdleLph = 24+10*rng.Float64(), 1.8+1.7*rng.Float64()
	}
	// Damped sensors are common: two vehicles in five have a lag of a minute or more.
	switch rng.IntN(5) {
	case 0, 1:
		tr.Lag = time.Duration(60+rng.IntN(61)) * time.Second
	case 2:
		tr.Lag = time.Duration(15+rng.IntN(45)) * time.Second
	default:
		tr.Lag = time.Duration(rng.IntN(10)) * time.Second
	}
	cadences := []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute}
	tr.Parked = cadences[rng.IntN(len(cadences))]
	s.noiseL = tr.CapacityL * (0.001 + 0.003*rng.Float64())
	s.spikeP = 0.001 + 0.004*rng.Float64()
	s.thermalAmp = 0.002 + 0.006*rng.Float64()
	s.thermalDay = rng.Float64() * 2 * math.Pi
	s.coolAmp = 0.002 + 0.006*rng.Float64()
	s.coolTau = time.Duration(20+rng.IntN(40)) * time.Minute
	s.t = time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(3600)) * time.Second)
	s.level = tr.CapacityL * (0.35 + 0.55*rng.Float64())
	s.odoM = 2e8 * rng.Float64()
	s.hrs = 8000 * rng.Float64()
	s.lat, s.lon = 44+2*rng.Float64(), 7+4*rng.Float64()
	s.sensor = s.level
	s.nextSilence = s.t.Add(s.silenceGap())
	hasHours := rng.IntN(2) == 0
	for range days {
		s.day()
	}
	if !hasHours {
		for i := range tr.Records {
			tr.Records[i].HasHours = false
			tr.Records[i].EngineHours = 0
		}
	}
	return *tr
}

func (s *sim) silenceGap() time.Duration {
	return time.Duration(2+s.rng.IntN(14)) * time.Hour
}

func (s *sim) uniform(a, b float64) float64 { return a + (b-a)*s.rng.Float64() }

func (s *sim) minutes(a, b float64) time.Duration {
	return time.Duration(s.uniform(a, b) * float64(time.Minute))
}

// step advances the world by one tick: fuel burnt, sensor physics, and a report when
// one is due.
func (s *sim) step(rate float64) {
	s.t = s.t.Add(tick)
	h := tick.Hours()
	if s.ign {
		s.hrs += h
		if s.speed > 0 {
			km := s.speed * h
			s.odoM += km * 1000
			s.level -= km * s.lp100 / 100
			s.lat += km / 111 * 0.6
			s.lon += km / 111 * 0.8
		} else {
			s.level -= s.tr.IdleLph * h
		}
	}
	before := s.level
	s.level = math.Max(0, math.Min(s.tr.CapacityL, s.level+rate*tick.Minutes()))
	s.pumped += s.level - before
	// The tank tilts toward its resting angle with the vehicle's settling time constant.
	s.offset += (s.offsetGoal - s.offset) * (1 - math.Exp(-tick.Seconds()/s.settleTau.Seconds()))
	if s.speed > 3 {
		s.slosh = 0.85*s.slosh + 0.15*s.rng.NormFloat64()*0.08*s.tr.CapacityL
		s.warm = math.Min(s.coolAmp, s.warm+s.coolAmp*tick.Seconds()/1800)
	} else {
		s.slosh *= math.Exp(-tick.Seconds() / 15)
		s.warm *= math.Exp(-tick.Seconds() / s.coolTau.Seconds())
	}
	day := float64(s.t.Unix()%86400) / 86400 * 2 * math.Pi
	thermal := s.level * (s.thermalAmp*math.Sin(day+s.thermalDay) + s.warm)
	in := s.level + s.offset + s.slosh + thermal
	if lag := s.tr.Lag; lag > 0 {
		s.sensor += (in - s.sensor) * (1 - math.Exp(-tick.Seconds()/lag.Seconds()))
	} else {
		s.sensor = in
	}
	every := s.tr.Parked
	if s.ign {
		every = 30 * time.Second
	}
	if s.ign != s.lastIgn || s.t.Sub(s.lastEmit) >= every {
		s.emit()
	}
}

func (s *sim) emit() {
	s.lastIgn = s.ign
	s.lastEmit = s.t
	if !s.t.Before(s.nextSilence) {
		s.silentUntil = s.t.Add(s.minutes(3, 40))
		s.nextSilence = s.silentUntil.Add(s.silenceGap())
	}
	if s.t.Before(s.silentUntil) {
		return // out of coverage, or the tracker asleep: the report is lost
	}
	capL := s.tr.CapacityL
	v := s.sensor + s.rng.NormFloat64()*s.noiseL
	has := true
	if s.rng.Float64() < s.spikeP {
		switch s.rng.IntN(3) {
		case 0:
			v = 0 // the sensor line drops out
		case 1:
			has = false // the sensor did not answer the tracker
		default:
			v += s.uniform(0.05, 0.3) * capL * float64(1-2*s.rng.IntN(2))
		}
	}
	v = math.Round(v/s.tr.StepL) * s.tr.StepL
	v = math.Max(0, math.Min(capL*1.02, v))
	s.tr.Records = append(s.tr.Records, Record{
		Time: s.t, LevelL: v, HasLevel: has, SpeedKmh: math.Round(s.speed*10) / 10, Ignition: s.ign,
		EngineHours: s.hrs, HasHours: true, OdometerM: s.odoM, Lat: s.lat, Lon: s.lon,
		TrueL: s.level, OffsetL: s.offset,
	})
}

// run advances for d at a constant speed, ignition and level rate (litres per minute).
func (s *sim) run(d time.Duration, speed float64, ign bool, rate float64) {
	s.speed, s.ign = speed, ign
	for end := s.t.Add(d); s.t.Before(end); {
		s.step(rate)
	}
}

// park starts a stop: the tank tilts to a new resting angle.
func (s *sim) park() (slope float64) {
	s.speed = 0
	capL := s.tr.CapacityL
	if s.rng.Float64() < 0.4 {
		s.offsetGoal = s.uniform(-0.04, 0.04) * capL
	} else {
		s.offsetGoal = s.uniform(-0.005, 0.005) * capL
	}
	s.settleTau = s.minutes(0.3, 3)
	return s.offsetGoal
}

func (s *sim) unpark() { s.offsetGoal = 0; s.settleTau = 20 * time.Second }

func (s *sim) stopPatterns(slope float64) []string {
	if math.Abs(slope) >= 0.02*s.tr.CapacityL && s.tr.Lag >= time.Minute {
		return []string{PatternSlopeLag}
	}
	return nil
}

func (s *sim) day() {
	// Overnight: parked, ignition off, until 05:30-07:30.
	morning := time.Date(s.t.Year(), s.t.Month(), s.t.Day(), 5, 30, 0, 0, time.UTC)
	if !s.t.Before(morning) {
		morning = morning.AddDate(0, 0, 1)
	}
	morning = morning.Add(s.minutes(0, 120))
	s.stop(morning.Sub(s.t), false, s.rng.Float64() < 0.3)
	evening := time.Date(s.t.Year(), s.t.Month(), s.t.Day(), 17, 0, 0, 0, time.UTC).Add(s.minutes(0, 180))
	refuelled := false
	for s.t.Before(evening) {
		s.drive(s.minutes(8, 50))
		capL := s.tr.CapacityL
		switch r := s.rng.Float64(); {
		case s.level < 0.3*capL || !refuelled && s.level < 0.75*capL && r < 0.25:
			s.refuel()
			refuelled = true
		case r < 0.12:
			s.creep()
		case r < 0.35:
			s.stop(s.minutes(3, 40), true, s.rng.Float64() < 0.35)
		default:
			long := s.rng.Float64() < 0.4
			d := s.minutes(2, 20)
			if long {
				d = s.minutes(20, 120)
			}
			s.stop(d, false, s.rng.Float64() < 0.3)
		}
	}
	s.drive(s.minutes(5, 20))
}

func (s *sim) drive(d time.Duration) {
	from := s.t
	s.unpark()
	s.ign = true
	speed := s.uniform(30, 80)
	for end := s.t.Add(d); s.t.Before(end); {
		if s.rng.Float64() < 0.025 { // traffic: standing with the engine on
			s.run(s.minutes(0.3, 2), 0, true, 0)
			continue
		}
		speed = math.Max(8, math.Min(120, speed+s.rng.NormFloat64()*10))
		s.run(30*time.Second, speed, true, 0)
	}
	s.tr.Drives = append(s.tr.Drives, [2]time.Time{from, s.t})
}

// drainPlan picks a drain's volume and rate for a stop of length room, starting at the
// offset start into it. It returns a zero volume when the tank has too little to steal.
func (s *sim) drainPlan(room time.Duration) (vol, rate float64, slow bool) {
	capL := s.tr.CapacityL
	minVol := math.Max(10, 0.06*capL)
	maxVol := math.Min(math.Max(25, 0.2*capL), s.level-0.08*capL)
	if maxVol < minVol {
		return 0, 0, false
	}
	if s.rng.Float64() < 0.3 && room >= 70*time.Minute {
		// Slow: about 15 L an hour.
		vol = math.Min(maxVol, s.uniform(minVol, minVol+8))
		rate = s.uniform(0.2, 0.35)
		if vol/rate > room.Minutes()-12 {
			vol = rate * (room.Minutes() - 12)
		}
		if vol < minVol {
			return 0, 0, false
		}
		return vol, rate, true
	}
	vol = s.uniform(minVol, maxVol)
	rate = s.uniform(1, 8) // litres per minute; 10 L in 3 min is ~3.3
	if vol/rate > room.Minutes() {
		rate = vol / room.Minutes()
	}
	return vol, rate, rate < 0.5
}

// stop stands for d, with the engine idling or off, with a drain or not.
func (s *sim) stop(d time.Duration, idle, drain bool) {
	start := s.t
	slope := s.park()
	pats := s.stopPatterns(slope)
	s.ign = idle
	every := s.tr.Parked
	if idle {
		every = 30 * time.Second
	}
	// A drain must leave two reports and 3 minutes of the stop after it.
	tail := max(3*time.Minute, 2*every)
	var vol, rate float64
	var slow bool
	if drain && d > tail+4*time.Minute {
		vol, rate, slow = s.drainPlan(d - tail)
	}
	var dur, latest time.Duration
	if vol > 0 {
		dur = time.Duration(vol / rate * float64(time.Minute))
		latest = d - tail - dur
	}
	if vol == 0 || latest < 0 {
		s.run(d, 0, idle, 0)
		s.tr.Stops = append(s.tr.Stops, Stop{Start: start, End: s.t, Patterns: pats})
		return
	}
	var wait time.Duration
	if s.rng.Float64() < 0.35 {
		wait = time.Duration(s.rng.Int64N(int64(min(latest, 5*time.Minute)) + 1))
	} else {
		wait = time.Duration(s.rng.Int64N(int64(latest) + 1))
	}
	s.run(wait, 0, idle, 0)
	ev := Event{Kind: Drain, Start: s.t, Patterns: append([]string(nil), pats...)}
	if wait < 5*time.Minute {
		ev.Patterns = append(ev.Patterns, PatternAfterParking)
	}
	if slow {
		ev.Patterns = append(ev.Patterns, PatternSlowDrain)
	}
	if idle {
		ev.Patterns = append(ev.Patterns, PatternIdling)
	}
	before := s.pumped
	s.run(dur, 0, idle, -rate)
	ev.End = s.t
	ev.Litres = before - s.pumped
	s.tr.Truth = append(s.tr.Truth, ev)
	s.run(d-wait-dur, 0, idle, 0)
	s.tr.Stops = append(s.tr.Stops, Stop{Start: start, End: s.t, Patterns: pats})
}

// creep: a yard manoeuvre at walking pace, engine on, while fuel is siphoned.
func (s *sim) creep() {
	start := s.t
	s.park()
	s.ign = true
	s.run(s.minutes(1, 4), 0, true, 0)
	vol, rate, slow := s.drainPlan(90 * time.Minute)
	if vol == 0 || s.rng.Float64() < 0.5 {
		// Most manoeuvres in a yard are just that.
		s.run(s.minutes(5, 15), 0, true, 0)
		s.tr.Stops = append(s.tr.Stops, Stop{Start: start, End: s.t})
		return
	}
	ev := Event{Kind: Drain, Start: s.t, Patterns: []string{PatternCreeping}}
	if slow {
		ev.Patterns = append(ev.Patterns, PatternSlowDrain)
	}
	before := s.pumped
	for end := s.t.Add(time.Duration(vol / rate * float64(time.Minute))); s.t.Before(end); {
		sp := 0.0
		if s.rng.Float64() < 0.6 {
			sp = s.uniform(1, 6)
		}
		s.run(30*time.Second, sp, true, -rate)
	}
	ev.End = s.t
	ev.Litres = before - s.pumped
	s.tr.Truth = append(s.tr.Truth, ev)
	s.run(s.minutes(3, 10), 0, true, 0)
	s.tr.Stops = append(s.tr.Stops, Stop{Start: start, End: s.t})
}

// refuel: into the station (sometimes after standing in traffic just before it), the
// engine off or idling, one or two fillings, pay, drive off.
func (s *sim) refuel() {
	capL := s.tr.CapacityL
	if s.rng.Float64() < 0.4 {
		s.run(s.minutes(0.5, 2), 0, true, 0)
		s.run(s.minutes(0.2, 0.5), 4, true, 0)
	}
	start, n0 := s.t, len(s.tr.Records)
	slope := s.park()
	pats := s.stopPatterns(slope)
	idle := s.rng.Float64() < 0.15
	s.ign = idle
	s.run(s.minutes(0.3, 2), 0, idle, 0)
	rate := s.uniform(20, 45)
	if s.tr.Type == Truck {
		rate = s.uniform(40, 90)
	}
	target := capL * s.uniform(0.85, 0.97)
	if s.rng.Float64() < 0.3 { // a partial fill
		target = s.level + (target-s.level)*s.uniform(0.4, 0.8)
	}
	double := s.rng.Float64() < 0.2
	first := target - s.level
	if double {
		first *= s.uniform(0.5, 0.85)
	}
	minVol := math.Max(10, 0.08*capL)
	if target-s.level < minVol {
		// Not worth a stop: just a short break.
		s.run(s.minutes(1, 4), 0, idle, 0)
		s.tr.Stops = append(s.tr.Stops, Stop{Start: start, End: s.t, Patterns: pats})
		return
	}
	ev := Event{Kind: Refuel, Start: s.t, Patterns: append([]string(nil), pats...)}
	before := s.pumped
	s.run(time.Duration(first/rate*float64(time.Minute)), 0, idle, rate)
	if double {
		ev.Patterns = append(ev.Patterns, PatternDouble)
		s.run(s.minutes(0.5, 5), 0, idle, 0) // switch pumps, or a top-up after a moment
		s.run(time.Duration((target-s.level)/rate*float64(time.Minute)), 0, idle, rate)
	}
	ev.End = s.t
	ev.Litres = s.pumped - before
	s.run(s.minutes(0.5, 4), 0, idle, 0) // pay
	standing := 0
	for _, r := range s.tr.Records[n0:] {
		if r.SpeedKmh == 0 {
			standing++
		}
	}
	if standing <= 3 {
		ev.Patterns = append(ev.Patterns, PatternShortStop)
	}
	s.tr.Truth = append(s.tr.Truth, ev)
	s.tr.Stops = append(s.tr.Stops, Stop{Start: start, End: s.t, Patterns: pats})
}
