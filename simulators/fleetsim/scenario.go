package fleetsim

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// IncidentKind names a scripted incident.
type IncidentKind string

// The scripted incidents, in the order they are scheduled.
const (
	// IncidentFuelDrain: the vehicle is parked with the ignition off and loses Litres of
	// fuel over five minutes.
	IncidentFuelDrain IncidentKind = "fuel_drain"
	// IncidentTowing: ignition off and the vehicle moves at tow-truck speed; the device
	// raises a tow alarm.
	IncidentTowing IncidentKind = "towing"
	// IncidentNightMovement: a day-shift vehicle (WorkHours) drives at 02:00 local time.
	IncidentNightMovement IncidentKind = "night_movement"
	// IncidentLeaveZone: the vehicle drives out of its must-stay Zone (the service area)
	// on a motorway, then back. Start is when it crosses the zone's edge.
	IncidentLeaveZone IncidentKind = "leave_zone"
	// IncidentGNSSJamming: a jamming alarm, 30 s of warning, then the fix is lost while
	// the vehicle keeps driving, so the first fix afterwards jumps.
	IncidentGNSSJamming IncidentKind = "gnss_jamming"
	// IncidentPowerCut: external voltage drops to 0 with a power-cut alarm; the tracker
	// runs on its backup battery.
	IncidentPowerCut IncidentKind = "power_cut"
	// IncidentCoverageGap: no network while driving; the records are sent afterwards as
	// a late batch.
	IncidentCoverageGap IncidentKind = "coverage_gap"
)

// IncidentKinds lists every kind in schedule order.
var IncidentKinds = []IncidentKind{
	IncidentFuelDrain, IncidentTowing, IncidentNightMovement, IncidentLeaveZone,
	IncidentGNSSJamming, IncidentPowerCut, IncidentCoverageGap,
}

var incidentLength = map[IncidentKind]time.Duration{
	IncidentFuelDrain:     5 * time.Minute,
	IncidentTowing:        10 * time.Minute,
	IncidentNightMovement: 20 * time.Minute,
	IncidentLeaveZone:     30 * time.Minute,
	IncidentGNSSJamming:   4 * time.Minute,
	IncidentPowerCut:      10 * time.Minute,
	IncidentCoverageGap:   10 * time.Minute,
}

// Point is a position in the ground-truth file.
type Point struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// Zone is a circular area.
type Zone struct {
	Center  Point   `json:"center"`
	RadiusM float64 `json:"radius_m"`
}

// Incident is the ground truth of one scripted incident.
type Incident struct {
	ID      string       `json:"id"`
	Kind    IncidentKind `json:"kind"`
	Vehicle string       `json:"vehicle_id"`
	// Start and End bound the condition a service should detect (device time).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Happened is false while the simulation has not reached the incident yet.
	Happened bool `json:"happened"`
	// Alarm is the device alarm the tracker raises, if any.
	Alarm string `json:"alarm,omitempty"`
	// Litres drained (fuel_drain).
	Litres float64 `json:"litres,omitempty"`
	// Zone the vehicle must stay in (leave_zone).
	Zone *Zone `json:"zone,omitempty"`
	// WorkHours of the vehicle, local time "07:00-16:00" (night_movement).
	WorkHours string `json:"work_hours,omitempty"`
	// UTCOffset of the local time, e.g. "+01:00".
	UTCOffset string `json:"utc_offset,omitempty"`
}

// GroundTruth is what the simulator scripted, for scoring detections.
type GroundTruth struct {
	Seed      int64      `json:"seed"`
	Start     time.Time  `json:"start"`
	Vehicles  int        `json:"vehicles"`
	Center    Point      `json:"center"`
	Incidents []Incident `json:"incidents"`
}

// GroundTruth returns the incidents as far as the simulation has played them.
func (s *Sim) GroundTruth() GroundTruth {
	s.mu.Lock()
	defer s.mu.Unlock()
	return GroundTruth{
		Seed: s.cfg.Seed, Start: s.start, Vehicles: len(s.vehicles), Center: Point(s.cfg.Center),
		Incidents: append([]Incident(nil), s.incidents...),
	}
}

// WriteGroundTruth writes the ground truth as indented JSON to path.
func (s *Sim) WriteGroundTruth(path string) error {
	data, err := json.MarshalIndent(s.GroundTruth(), "", "  ")
	if err != nil {
		return fmt.Errorf("encode ground truth: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write ground truth: %w", err)
	}
	return nil
}

// nightHour is the local hour the night-movement incident starts.
const nightHour = 2.0

// planIncidents schedules one incident of each kind (as many as there are vehicles).
func (s *Sim) planIncidents() []Incident {
	n := min(len(IncidentKinds), s.cfg.Vehicles)
	out := make([]Incident, 0, n)
	for k := 0; k < n; k++ {
		kind := IncidentKinds[k]
		vi := k * s.cfg.Vehicles / len(IncidentKinds)
		startS := (s.cfg.ScenarioStart + time.Duration(k)*s.cfg.ScenarioEvery).Seconds()
		if kind == IncidentNightMovement {
			// The first 02:00 local at or after the scenario start.
			h := s.localHour(s.cfg.ScenarioStart.Seconds())
			wait := math.Mod(nightHour-h+24, 24)
			startS = s.cfg.ScenarioStart.Seconds() + math.Round(wait*3600)
		}
		inc := Incident{
			ID:      fmt.Sprintf("inc-%02d-%s", k+1, kind),
			Kind:    kind,
			Vehicle: VehicleID(s.cfg.Prefix, vi),
			Start:   s.at(startS),
			End:     s.at(startS).Add(incidentLength[kind]),
		}
		switch kind {
		case IncidentTowing:
			inc.Alarm = telemetry.AlarmTow.String()
		case IncidentGNSSJamming:
			inc.Alarm = telemetry.AlarmGNSSJamming.String()
		case IncidentPowerCut:
			inc.Alarm = telemetry.AlarmPowerCut.String()
		case IncidentLeaveZone:
			inc.Zone = &Zone{Center: Point(s.cfg.Center), RadiusM: ZoneRadiusM}
		case IncidentNightMovement:
			inc.WorkHours = "07:00-16:00"
			off := s.cfg.UTCOffset
			sign := "+"
			if off < 0 {
				sign, off = "-", -off
			}
			inc.UTCOffset = fmt.Sprintf("%s%02d:%02d", sign, int(off.Hours()), int(off.Minutes())%60)
		}
		out = append(out, inc)
	}
	return out
}

// incidentRun is a vehicle's scripted incident while it plays.
type incidentRun struct {
	gt     *Incident
	kind   IncidentKind
	s, e   float64 // simulated seconds
	litres float64
	begun  bool
	out    bool // leave_zone: has crossed the edge
	// prepared: the vehicle was sent on a long trip ahead of the incident
	prepared bool
}

// attachIncidents gives the scripted vehicles their incident and the shifts it needs.
func (s *Sim) attachIncidents() {
	for i := range s.incidents {
		inc := &s.incidents[i]
		v := s.byID[inc.Vehicle]
		r := &incidentRun{gt: inc, kind: inc.Kind, s: inc.Start.Sub(s.start).Seconds(), e: inc.End.Sub(s.start).Seconds()}
		v.inc = r
		switch inc.Kind {
		case IncidentNightMovement:
			v.shiftStart, v.shiftLen = 7, 9
			if !s.onShift(v, 0) && v.act != actParked {
				// Off shift at the start: parked at its depot (nothing was reported yet).
				d := s.roads.nodes[v.depot]
				v.x, v.y, v.speed, v.seg, v.segPos, v.midRoute = d.x, d.y, 0, 0, 0, false
				v.route = append(v.route[:0], v.depot)
				v.act, v.ignition, v.coolant = actParked, false, ambientC
			}
		case IncidentLeaveZone, IncidentGNSSJamming, IncidentCoverageGap, IncidentPowerCut:
			v.shiftLen = 24 // always on the road, so the incident happens while driving
		}
	}
}

// holding reports whether the incident keeps the vehicle parked at t.
func (r *incidentRun) holding(t float64) bool {
	switch r.kind {
	case IncidentFuelDrain:
		return t >= r.s-600 && t < r.e+600
	case IncidentTowing:
		return t >= r.s-600 && t < r.e+600
	}
	return false
}

func (r *incidentRun) powerCut(t float64) bool {
	return r.kind == IncidentPowerCut && t >= r.s && t < r.e
}

func (r *incidentRun) gap(t float64) bool {
	return r.kind == IncidentCoverageGap && t >= r.s && t < r.e
}

// jamming returns the device's jamming state (0 none, 1 warning, 2 critical) and
// whether the fix is lost.
func (r *incidentRun) jamming(t float64) (float64, bool) {
	if r.kind != IncidentGNSSJamming || t < r.s || t >= r.e {
		return 0, false
	}
	if t < r.s+30 {
		return 1, false
	}
	return 2, true
}

// incidentStep applies v's incident at t, before the vehicle moves.
func (s *Sim) incidentStep(v *vehicle, t float64) {
	r := v.inc
	if t >= r.s && !r.begun {
		r.begun = true
		r.gt.Happened = true
		switch r.kind {
		case IncidentFuelDrain:
			r.litres = math.Round(math.Min(0.4*v.typ.tankL, v.fuelL-5)*10) / 10
			r.litres = math.Max(r.litres, 0)
			r.gt.Litres = r.litres
		case IncidentTowing:
			v.alarm = telemetry.AlarmTow
			s.reroute(v, s.farNode(v, 1500, 3000), toCustomer, t)
			if len(v.route) > 1 {
				v.act, v.speed, v.ignition, v.midRoute = actTowed, 0, false, false
			}
		case IncidentNightMovement:
			s.startTrip(v, s.farNode(v, 2000, 5000), toCustomer, t)
		case IncidentLeaveZone:
			s.reroute(v, s.roads.nearest(s.roads.exits, v.x, v.y), toExit, t)
			r.gt.Happened = false // it happens when the vehicle crosses the edge
		case IncidentGNSSJamming:
			v.alarm = telemetry.AlarmGNSSJamming
		case IncidentPowerCut:
			v.alarm = telemetry.AlarmPowerCut
		}
	}
	switch r.kind {
	case IncidentFuelDrain, IncidentTowing:
		if r.holding(t) && v.act != actTowed && v.act != actHold {
			switch v.act {
			case actDriving:
				if v.speed == 0 {
					v.act, v.ignition, v.offSince, v.midRoute = actHold, false, t, true
				}
			default:
				v.act, v.ignition, v.offSince, v.speed = actHold, false, t, 0
			}
		}
		if r.kind == IncidentFuelDrain && t >= r.s && t < r.e && r.e > r.s {
			v.fuelL = math.Max(0, v.fuelL-r.litres/(r.e-r.s)*s.dt)
		}
	case IncidentGNSSJamming, IncidentCoverageGap:
		// Be on the road when it starts, with somewhere far to go.
		if t >= r.s-120 && t < r.s && !r.prepared {
			r.prepared = true
			s.reroute(v, s.farNode(v, 6000, 12000), toCustomer, t)
		}
	case IncidentLeaveZone:
		if r.begun && !r.out && math.Hypot(v.x, v.y) > ZoneRadiusM {
			r.out = true
			r.gt.Happened = true
			r.gt.Start = s.at(t)
		}
		if r.out && math.Hypot(v.x, v.y) > ZoneRadiusM {
			r.gt.End = s.at(t + s.dt)
		}
	}
}

// halted reports whether something (immobiliser, incident) makes v stop where it is.
func (v *vehicle) halted(t float64) bool {
	return v.immobilized || v.inc != nil && v.inc.holding(t) && v.act == actDriving
}

// farNode picks a grid node between lo and hi metres (straight line) from v.
func (s *Sim) farNode(v *vehicle, lo, hi float64) int32 {
	for range 200 {
		n := s.roads.gridNodes[v.rng.IntN(len(s.roads.gridNodes))]
		d := math.Hypot(s.roads.nodes[n].x-v.x, s.roads.nodes[n].y-v.y)
		if d >= lo && d <= hi {
			return n
		}
	}
	return s.roads.gridNodes[v.rng.IntN(len(s.roads.gridNodes))]
}

// reroute sends v to dest; a vehicle on the road (or stopped part-way along an edge)
// finishes its current edge first.
func (s *Sim) reroute(v *vehicle, dest int32, why purpose, t float64) {
	if !v.onRoute() {
		s.startTrip(v, dest, why, t)
		return
	}
	cur, next := v.route[v.seg], v.route[v.seg+1]
	rest := s.router.route(nil, next, dest)
	v.route = append(append(v.route[:0], cur), rest...)
	v.seg = 0
	v.why = why
	pos := v.segPos
	s.enterEdge(v)
	v.segPos = pos
	if len(v.route) < 2 {
		s.arrive(v, t)
	}
}
