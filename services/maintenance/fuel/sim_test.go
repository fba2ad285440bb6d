package fuel

import (
	"math"
	"math/rand/v2"
	"time"
)

// The synthetic fleet below is the ground truth for the accuracy test. Every vehicle
// drives day shifts with stops and traffic lights, idles at some stops, parks overnight
// with the tracker reporting slowly, refuels when low, and now and then has fuel
// siphoned while parked. The level sensor adds Gaussian noise, rare spikes and, while
// driving, slosh that decays within seconds of stopping.

type truthEvent struct {
	kind       Kind
	start, end time.Time
	litres     float64
}

type simVehicle struct {
	capL, lp100, idleLph, noiseL float64
}

type simTrack struct {
	capL     float64
	readings []Reading
	truth    []truthEvent
	drives   [][2]time.Time // periods of normal driving
}

type simulator struct {
	rng *rand.Rand
	v   simVehicle
	out simTrack

	t          time.Time
	level      float64 // true litres in the tank
	odoM, hrs  float64
	lat, lon   float64
	slosh      float64
	lastMoving time.Time
}

// simulateVehicle generates days of records for one vehicle.
func simulateVehicle(seed uint64, days int) simTrack {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	caps := []float64{60, 80, 120, 200, 300, 400}
	capL := caps[rng.IntN(len(caps))]
	s := &simulator{
		rng: rng,
		v: simVehicle{
			capL:    capL,
			lp100:   6 + capL/400*26 + rng.Float64()*4,
			idleLph: 0.8 + rng.Float64()*1.7,
			noiseL:  capL * (0.003 + rng.Float64()*0.004),
		},
		t:     time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC),
		level: capL * (0.4 + 0.5*rng.Float64()),
		odoM:  1e7 * rng.Float64(),
		hrs:   5000 * rng.Float64(),
		lat:   45 + rng.Float64(),
		lon:   9 + rng.Float64(),
	}
	s.out.capL = capL
	for day := 0; day < days; day++ {
		s.day()
	}
	return s.out
}

func (s *simulator) emit(speed float64, ign bool) {
	noise := s.rng.NormFloat64() * s.v.noiseL
	if s.rng.Float64() < 0.005 { // a spike: electrical noise on the sensor line
		noise += (s.rng.Float64()*2 - 1) * 0.1 * s.v.capL
	}
	// Slosh: while moving a random, correlated swing of a few percent of the tank; once
	// stopped it fades with a time constant of ~8 s.
	if speed > 0 {
		s.slosh = 0.7*s.slosh + 0.3*(s.rng.Float64()*2-1)*0.06*s.v.capL
		s.lastMoving = s.t
	} else {
		s.slosh *= math.Exp(-s.t.Sub(s.lastMoving).Seconds() / 8)
	}
	lvl := s.level + noise + s.slosh
	lvl = math.Max(0, math.Min(s.v.capL, lvl))
	s.out.readings = append(s.out.readings, Reading{
		Time: s.t, Level: math.Round(lvl*10) / 10, HasLevel: true,
		SpeedKmh: speed, Ignition: ign, HasIgnition: true,
		EngineHours: s.hrs, HasHours: true, OdometerM: s.odoM, HasOdometer: true,
		Lat: s.lat, Lon: s.lon, HasPosition: true,
	})
}

// advance moves the clock by dt with the engine state given, burning fuel.
func (s *simulator) advance(dt time.Duration, speed float64, ign bool) {
	s.t = s.t.Add(dt)
	h := dt.Hours()
	if ign {
		s.hrs += h
		if speed > 0 {
			km := speed * h
			s.odoM += km * 1000
			s.level -= km * s.v.lp100 / 100
			s.lat += km / 111 * 0.3
			s.lon += km / 111 * 0.3
		} else {
			s.level -= s.v.idleLph * h
		}
	}
	s.level = math.Max(0, s.level)
}

func (s *simulator) day() {
	// Night: parked, ignition off, a report every 5 minutes until about 06:00.
	dayStart := time.Date(s.t.Year(), s.t.Month(), s.t.Day(), 6, 0, 0, 0, time.UTC)
	if !s.t.Before(dayStart) {
		dayStart = dayStart.AddDate(0, 0, 1)
	}
	dayStart = dayStart.Add(time.Duration(s.rng.IntN(3600)) * time.Second)
	s.park(dayStart, 5*time.Minute, false, s.rng.Float64() < 0.3)
	end := time.Date(s.t.Year(), s.t.Month(), s.t.Day(), 18, 0, 0, 0, time.UTC).Add(time.Duration(s.rng.IntN(7200)) * time.Second)
	for s.t.Before(end) {
		s.drive(time.Duration(10+s.rng.IntN(50)) * time.Minute)
		switch {
		case s.level < s.v.capL*0.3:
			s.refuel()
		default:
			stop := time.Duration(3+s.rng.IntN(40)) * time.Minute
			idle := s.rng.Float64() < 0.4
			drain := !idle && stop >= 20*time.Minute && s.rng.Float64() < 0.12
			s.park(s.t.Add(stop), time.Minute, idle, drain)
		}
	}
}

func (s *simulator) drive(d time.Duration) {
	from := s.t
	until := s.t.Add(d)
	speed := 30 + s.rng.Float64()*60
	for s.t.Before(until) {
		if s.rng.Float64() < 0.03 { // a traffic light: 30..90 s standing, engine on
			for i := 0; i < 1+s.rng.IntN(3); i++ {
				s.advance(30*time.Second, 0, true)
				s.emit(0, true)
			}
			continue
		}
		speed = math.Max(10, math.Min(110, speed+s.rng.NormFloat64()*8))
		s.advance(30*time.Second, speed, true)
		s.emit(speed, true)
	}
	s.out.drives = append(s.out.drives, [2]time.Time{from, s.t})
}

// park stands until until, reporting every every; with drain, fuel is siphoned at some
// point of the stop, at least 25 minutes before it ends.
func (s *simulator) park(until time.Time, every time.Duration, idle, drain bool) {
	var dStart time.Time
	var dVol, dRate float64
	if drain {
		room := until.Sub(s.t) - 35*time.Minute
		minVol := math.Max(15, 0.06*s.v.capL)
		maxVol := math.Min(math.Max(60, 0.25*s.v.capL), s.level-0.1*s.v.capL)
		if room > 0 && maxVol > minVol {
			dStart = s.t.Add(5*time.Minute + time.Duration(s.rng.Int64N(int64(room))))
			dVol = minVol + s.rng.Float64()*(maxVol-minVol)
			dRate = math.Max(1+s.rng.Float64()*4, dVol/20) // litres per minute; done within 20 min
		}
	}
	drained := 0.0
	for s.t.Before(until) {
		s.advance(every, 0, idle)
		if dVol > 0 && !s.t.Before(dStart) && drained < dVol {
			if drained == 0 {
				s.out.truth = append(s.out.truth, truthEvent{kind: KindDrain, start: dStart, litres: dVol})
			}
			step := math.Min(dVol-drained, dRate*every.Minutes())
			drained += step
			s.level -= step
			if drained >= dVol {
				s.out.truth[len(s.out.truth)-1].end = s.t
			}
		}
		s.emit(0, idle)
	}
}

func (s *simulator) refuel() {
	every := time.Minute
	for range 2 + s.rng.IntN(4) { // pull in, switch off, open the cap
		s.advance(every, 0, false)
		s.emit(0, false)
	}
	target := s.v.capL * (0.93 + 0.07*s.rng.Float64())
	vol := target - s.level
	rate := 20 + s.rng.Float64()*40 // litres per minute
	ev := truthEvent{kind: KindRefuel, start: s.t, litres: vol}
	for s.level < target-1e-9 {
		s.advance(every, 0, false)
		s.level = math.Min(target, s.level+rate)
		s.emit(0, false)
	}
	ev.end = s.t
	s.out.truth = append(s.out.truth, ev)
	for range 2 + s.rng.IntN(5) { // pay, drive off
		s.advance(every, 0, false)
		s.emit(0, false)
	}
}
