package fleetsim

import (
	"math"
	"math/rand/v2"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// vehicleType holds what differs between a car, a van and a truck.
type vehicleType struct {
	name       string
	tankL      float64 // tank capacity
	idleLph    float64 // idle consumption, litres per hour
	per100km   float64 // cruising consumption, litres per 100 km
	accel      float64 // comfortable acceleration, m/s²
	brake      float64 // comfortable braking, m/s²
	maxSpeedMS float64 // the vehicle's own top cruising speed
}

var vehicleTypes = [...]vehicleType{
	{"car", 55, 0.7, 6.5, 2.0, 3.0, 130 / 3.6},
	{"van", 80, 1.0, 9.5, 1.5, 2.8, 120 / 3.6},
	{"truck", 300, 2.5, 28, 0.8, 2.2, 85 / 3.6},
}

// faultCodes are common OBD-II trouble codes a vehicle may raise.
var faultCodes = [...]string{"P0301", "P0420", "P0171", "P0128", "P0442", "P0300", "P0113", "P0500"}

// activity is what a vehicle is doing.
type activity uint8

const (
	actParked  activity = iota // ignition off at the depot, off shift
	actWarmup                  // ignition on, standing, about to leave
	actDriving                 // following a route
	actVisit                   // at a customer: idling for a while, then ignition off
	actRefuel                  // at a fuel station, ignition off, tank filling
	actHold                    // stopped where it is with ignition off (incidents, immobiliser)
	actTowed                   // ignition off, moving on a tow truck
)

// purpose is why a vehicle drives where it drives.
type purpose uint8

const (
	toCustomer purpose = iota
	toDepot
	toStation
	toExit // leaving the service area (leave-zone incident), then back
)

// vehicle is one simulated vehicle and its tracker. Everything it does derives from its
// own random stream, so vehicles are independent of each other and of stepping order.
type vehicle struct {
	id  string
	idx int
	rng *rand.Rand
	typ *vehicleType

	depot                int32
	shiftStart, shiftLen float64 // local hours
	driver               float64 // speed factor of the driver, 0.85..1.05

	// Kinematics (metres, m/s).
	x, y, heading, speed, accel float64
	route                       []int32
	seg                         int // route[seg] → route[seg+1] is the current edge
	segPos, segLen              float64
	segKind                     roadKind
	segTunnel                   bool
	endSpeed                    float64 // speed wanted at the end of the edge
	stopAtEnd                   bool    // a red light or stop sign at the end of the edge
	lightUntil                  float64
	midRoute                    bool // held (immobiliser, incident) part-way along its route
	act                         activity
	actEnd                      float64 // sim seconds
	idleUntil                   float64 // during a visit: ignition on until then
	why                         purpose
	refuelTo                    float64

	// Vehicle state.
	ignition                    bool
	odoM, tripM, engineH, fuelL float64
	slosh, coolant              float64
	offSince                    float64 // when the ignition last went off
	batV                        float64
	fault                       string
	faultUntil                  float64
	seq                         uint64

	// Tracker.
	movingIv, parkedIv float64 // seconds; SET_REPORT_INTERVAL changes them
	lastRec            float64
	nextFixed          float64 // FixedInterval schedule: when the next record is due
	lastRecHeading     float64
	lastRecIgn         bool
	distSinceRec       float64
	lastLat, lastLon   float64 // last valid fix, repeated when the fix is lost
	buf                []sample
	backlog            []sample
	gapWas             bool
	locateNow          bool
	alarm              telemetry.AlarmKind // pending alarm for the next record

	// Commands.
	immobilized bool
	commands    map[string][]cmdReply // replies already given, by command id
	cmdOrder    []string

	// Scripted incident, when this vehicle has one.
	inc *incidentRun
}

const (
	maxBacklog   = 20000 // records a tracker stores while out of coverage
	ambientC     = 12.0
	turnSlowMS   = 20 / 3.6
	turnMediumMS = 30 / 3.6
	towSpeedMS   = 30 / 3.6
)

func (s *Sim) newVehicle(i int) *vehicle {
	seed := uint64(s.cfg.Seed)*0x9E3779B97F4A7C15 + uint64(i)*0xBF58476D1CE4E5B9
	rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
	v := &vehicle{
		id:     VehicleID(s.cfg.Prefix, i),
		idx:    i,
		rng:    rng,
		driver: 0.85 + 0.2*rng.Float64(),
	}
	switch p := rng.Float64(); {
	case p < 0.3:
		v.typ = &vehicleTypes[0]
	case p < 0.85:
		v.typ = &vehicleTypes[1]
	default:
		v.typ = &vehicleTypes[2]
	}
	v.depot = s.roads.depots[rng.IntN(len(s.roads.depots))]
	v.shiftStart = s.cfg.ShiftStartMin + rng.Float64()*(s.cfg.ShiftStartMax-s.cfg.ShiftStartMin)
	v.shiftLen = s.cfg.ShiftHours - 1 + 2*rng.Float64()
	v.odoM = (5_000 + rng.Float64()*295_000) * 1000
	v.engineH = v.odoM / 1000 / (28 + rng.Float64()*10)
	v.fuelL = v.typ.tankL * (0.35 + 0.6*rng.Float64())
	v.batV = 4.1
	v.seq = uint64(rng.IntN(1_000_000))
	v.movingIv = s.cfg.MovingInterval.Seconds()
	v.parkedIv = s.cfg.ParkedInterval.Seconds()
	v.buf = make([]sample, 0, s.cfg.BatchRecords)
	v.lastRec = -math.MaxFloat64 / 4
	// Where the vehicle is when the simulation starts.
	if s.onShift(v, 0) {
		n := s.roads.gridNodes[rng.IntN(len(s.roads.gridNodes))]
		v.x, v.y = s.roads.nodes[n].x, s.roads.nodes[n].y
		v.route = append(v.route[:0], n)
		v.act, v.actEnd = actVisit, rng.Float64()*120
		v.coolant = 60 + 30*rng.Float64()
		if rng.Float64() < 0.6 {
			// Most of the working fleet is on the road already.
			s.startTrip(v, s.roads.gridNodes[rng.IntN(len(s.roads.gridNodes))], toCustomer, 0)
			if v.act == actWarmup {
				v.act = actDriving
				v.speed = roadSpeed[v.segKind] * 0.6
			}
		}
	} else {
		d := s.roads.nodes[v.depot]
		v.x, v.y = d.x+(rng.Float64()-0.5)*40, d.y+(rng.Float64()-0.5)*40
		v.route = append(v.route[:0], v.depot)
		v.act = actParked
		v.coolant = ambientC
		v.offSince = -3600 * rng.Float64() * 8
	}
	if v.act != actDriving {
		v.heading = rng.Float64() * 360
	}
	v.lastRecHeading = v.heading
	return v
}

// onShift reports whether v works at simulated second t.
func (s *Sim) onShift(v *vehicle, t float64) bool {
	h := s.localHour(t)
	d := math.Mod(h-v.shiftStart+48, 24)
	return d < v.shiftLen
}

// nodeXY returns a node's position.
func (s *Sim) nodeXY(n int32) (float64, float64) { return s.roads.nodes[n].x, s.roads.nodes[n].y }

// currentNode is the node the vehicle is at, or for one on the road the node it is
// heading for.
func (v *vehicle) currentNode() int32 {
	switch {
	case v.act == actDriving && v.seg+1 < len(v.route):
		return v.route[v.seg+1]
	case v.act == actWarmup && v.seg+1 < len(v.route):
		return v.route[v.seg] // about to set off along route[seg] → route[seg+1]
	}
	return v.route[len(v.route)-1]
}

// onRoute reports whether v is somewhere along a route's edge (driving, stopped on the
// way, or warming up to set off) rather than standing at its end.
func (v *vehicle) onRoute() bool {
	return v.seg+1 < len(v.route) && (v.act == actDriving || v.act == actWarmup || v.midRoute)
}

// startTrip routes v from where it is to dest.
func (s *Sim) startTrip(v *vehicle, dest int32, why purpose, t float64) {
	from := v.currentNode()
	v.route = s.router.route(v.route, from, dest)
	v.why = why
	if len(v.route) < 2 {
		s.arrive(v, t)
		return
	}
	v.act = actWarmup
	v.actEnd = t + 20 + v.rng.Float64()*70
	if !v.ignition {
		v.tripM = 0 // the trip odometer restarts with the ignition
	}
	v.ignition = true
	v.seg = 0
	s.enterEdge(v)
	v.segPos = 0
}

// enterEdge prepares the edge route[seg] → route[seg+1].
func (s *Sim) enterEdge(v *vehicle) {
	a, b := v.route[v.seg], v.route[v.seg+1]
	e := s.roads.edgeBetween(a, b)
	v.segLen, v.segKind, v.segTunnel = e.length, e.kind, e.tunnel
	ax, ay := s.nodeXY(a)
	bx, by := s.nodeXY(b)
	h := math.Atan2(bx-ax, by-ay) * 180 / math.Pi
	v.heading = math.Mod(h+360, 360)
	v.stopAtEnd = false
	if v.seg+2 >= len(v.route) {
		v.endSpeed = 0
		return
	}
	c := v.route[v.seg+2]
	cx, cy := s.nodeXY(c)
	h2 := math.Mod(math.Atan2(cx-bx, cy-by)*180/math.Pi+360, 360)
	turn := angleDiff(v.heading, h2)
	next := s.roads.edgeBetween(b, c)
	v.endSpeed = math.Min(roadSpeed[e.kind], roadSpeed[next.kind]) * v.driver
	switch {
	case turn > 60:
		v.endSpeed = turnSlowMS
	case turn > 25:
		v.endSpeed = math.Min(v.endSpeed, turnMediumMS)
	}
	// Traffic lights at grid intersections, more often where big roads meet.
	if s.roads.nodes[b].grid && e.kind != roadRamp {
		p := 0.08
		if e.kind == roadArterial || next.kind == roadArterial {
			p = 0.3
		}
		if v.rng.Float64() < p {
			v.stopAtEnd = true
			v.endSpeed = 0
		}
	}
}

func angleDiff(a, b float64) float64 {
	d := math.Abs(math.Mod(a-b+540, 360) - 180)
	return d
}

// drive moves v along its route for dt seconds. towed vehicles follow the same roads at
// tow-truck speed.
func (s *Sim) drive(v *vehicle, t, dt float64) (moved float64) {
	if t < v.lightUntil {
		v.accel, v.speed = 0, 0
		return 0
	}
	vmax := math.Min(roadSpeed[v.segKind]*v.driver, v.typ.maxSpeedMS)
	if v.act == actTowed {
		vmax = towSpeedMS
	}
	end := v.endSpeed
	halted := v.halted(t) && v.act != actTowed // cutting the engine does not stop a tow truck
	if halted {
		vmax, end = 0, 0
	}
	remaining := math.Max(0, v.segLen-v.segPos)
	allowed := math.Sqrt(end*end + 2*v.typ.brake*math.Max(0, remaining-v.speed*dt*0.5))
	target := math.Min(vmax, allowed)
	a := (target - v.speed) / dt
	a = math.Max(-v.typ.brake*1.3, math.Min(v.typ.accel, a))
	prev := v.speed
	v.speed = math.Max(0, v.speed+a*dt)
	v.accel = (v.speed - prev) / dt
	step := (prev + v.speed) / 2 * dt
	if halted {
		step = math.Min(step, remaining)
	}
	v.segPos += step
	for v.segPos >= v.segLen {
		carry := v.segPos - v.segLen
		stopped := v.stopAtEnd
		turnSpeed := v.endSpeed
		v.seg++
		if v.seg+1 >= len(v.route) {
			v.x, v.y = s.nodeXY(v.route[len(v.route)-1])
			s.arrive(v, t)
			return step - carry
		}
		s.enterEdge(v)
		v.segPos = carry
		if stopped {
			v.segPos = 0
			v.speed, v.accel = 0, 0
			v.lightUntil = t + 8 + v.rng.Float64()*40
			step -= carry
			break
		}
		// A one-second step can carry the vehicle through a corner faster than the
		// braking curve allowed; take the corner at its speed.
		v.speed = math.Min(v.speed, turnSpeed+1)
	}
	ax, ay := s.nodeXY(v.route[v.seg])
	bx, by := s.nodeXY(v.route[v.seg+1])
	f := v.segPos / v.segLen
	v.x, v.y = ax+(bx-ax)*f, ay+(by-ay)*f
	return step
}

// arrive decides what v does at the end of its route.
func (s *Sim) arrive(v *vehicle, t float64) {
	v.speed, v.accel = 0, 0
	v.route = append(v.route[:0], v.currentNode())
	v.seg = 0
	switch {
	case v.act == actTowed:
		v.act, v.actEnd = actHold, math.Inf(1) // the incident decides when it ends
	case v.why == toExit:
		// Outside the service area: turn round and go back to the depot.
		s.startTrip(v, v.depot, toDepot, t)
		v.act, v.actEnd = actWarmup, t+60
	case v.why == toStation:
		v.act, v.actEnd = actRefuel, t+180+v.rng.Float64()*240
		v.refuelTo = v.typ.tankL * (0.93 + 0.07*v.rng.Float64())
		v.ignition = false
		v.offSince = t
	case v.why == toDepot && !s.onShift(v, t):
		v.act, v.ignition, v.offSince = actParked, false, t
		if v.fault != "" && v.rng.Float64() < 0.5 {
			v.fault = "" // repaired overnight
		}
	default:
		v.act = actVisit
		v.actEnd = t + 300 + v.rng.Float64()*1200
		v.idleUntil = t
		if v.rng.Float64() < 0.4 {
			v.idleUntil = t + 60 + v.rng.Float64()*180
		} else {
			v.ignition = false
			v.offSince = t
		}
	}
}

// plan starts the next trip after an activity ends.
func (s *Sim) plan(v *vehicle, t float64) {
	if v.immobilized {
		return
	}
	switch {
	case !s.onShift(v, t):
		if v.currentNode() == v.depot {
			v.act, v.ignition = actParked, false
			return
		}
		s.startTrip(v, v.depot, toDepot, t)
	case v.fuelL < 0.25*v.typ.tankL:
		st := s.roads.nearest(s.roads.stations, v.x, v.y)
		s.startTrip(v, st, toStation, t)
	default:
		dest := s.roads.gridNodes[v.rng.IntN(len(s.roads.gridNodes))]
		s.startTrip(v, dest, toCustomer, t)
	}
}

// move advances v's activity by dt and returns the metres it covered.
func (s *Sim) move(v *vehicle, t, dt float64) float64 {
	if v.inc != nil {
		s.incidentStep(v, t)
	}
	switch v.act {
	case actParked:
		v.speed, v.accel = 0, 0
		if !v.immobilized && s.onShift(v, t) {
			s.plan(v, t)
		}
	case actWarmup:
		v.speed, v.accel = 0, 0
		if v.immobilized {
			v.ignition = false
			return 0
		}
		v.ignition = true
		if t >= v.actEnd {
			v.act = actDriving
		}
	case actDriving, actTowed:
		if v.act == actTowed {
			v.ignition = false
		}
		d := s.drive(v, t, dt)
		if v.act == actDriving && v.speed == 0 && v.halted(t) {
			v.act, v.actEnd, v.ignition, v.offSince = actHold, math.Inf(1), false, t
			v.midRoute = true
		}
		return d
	case actVisit:
		v.speed, v.accel = 0, 0
		if v.ignition && (t >= v.idleUntil || v.immobilized) {
			v.ignition = false
			v.offSince = t
		}
		if t >= v.actEnd {
			s.plan(v, t)
		}
	case actRefuel:
		v.speed, v.accel = 0, 0
		v.fuelL = math.Min(v.refuelTo, v.fuelL+0.6*dt) // ~36 l/min pump
		if t >= v.actEnd && v.fuelL >= v.refuelTo-0.01 {
			s.plan(v, t)
		}
	case actHold:
		v.speed, v.accel = 0, 0
		if v.immobilized || v.inc != nil && v.inc.holding(t) {
			v.ignition = false
			return 0
		}
		if v.midRoute {
			// Stopped on the way: start the engine and carry on along the same route.
			v.midRoute = false
			v.act, v.actEnd, v.ignition = actWarmup, t+10+20*v.rng.Float64(), true
			return 0
		}
		s.plan(v, t)
	}
	return 0
}

// physics updates the counters and sensors after a move of dist metres.
func (s *Sim) physics(v *vehicle, t, dt, dist float64) {
	v.odoM += dist
	v.tripM += dist
	if v.ignition {
		v.engineH += dt / 3600
		burn := v.typ.idleLph * dt / 3600
		if dist > 0 {
			kmh := v.speed * 3.6
			f := 1 + 0.6*math.Max(0, v.accel)/v.typ.accel
			if kmh > 80 {
				f += math.Pow((kmh-80)/60, 2)
			}
			burn += dist * v.typ.per100km / 100_000 * f
		}
		v.fuelL = math.Max(0, v.fuelL-burn)
		v.coolant += (92 - v.coolant) * math.Min(1, dt/240)
	} else {
		v.coolant += (ambientC - v.coolant) * math.Min(1, dt/1800)
	}
	if v.speed > 0 {
		// Fuel slosh: a damped swing driven by acceleration and road roughness.
		v.slosh = 0.85*v.slosh + 0.008*v.typ.tankL*(v.accel/3+0.3*(v.rng.Float64()-0.5))
	} else {
		v.slosh *= 0.5
	}
	if v.fault == "" && v.speed > 0 && v.rng.Float64() < s.cfg.FaultsPerHour*dt/3600 {
		v.fault = faultCodes[v.rng.IntN(len(faultCodes))]
	}
	powerCut := v.inc != nil && v.inc.powerCut(t)
	if powerCut {
		v.batV = math.Max(3.55, v.batV-0.0006*dt)
	} else {
		v.batV = math.Min(4.12, v.batV+0.0003*dt)
	}
}

// sense produces the record the tracker would take now.
func (s *Sim) sense(v *vehicle, unixNano int64, t float64) sample {
	rng := v.rng
	v.seq++
	sm := sample{
		unixNano: unixNano,
		seq:      v.seq,
		ignition: v.ignition,
		odoM:     math.Round(v.odoM),
		engineH:  math.Round(v.engineH*100) / 100,
		trip:     math.Round(v.tripM),
		door:     0,
		gsm:      float64(3 + rng.IntN(3)),
		alarm:    v.alarm,
	}
	v.alarm = telemetry.AlarmUnspecified
	jam := 0.0
	fixLost := false
	if v.inc != nil {
		jam, fixLost = v.inc.jamming(t)
	}
	sm.jam = jam
	sm.sats = uint32(7 + rng.IntN(7))
	sm.hdop = math.Round((0.7+rng.Float64()*1.3)*10) / 10
	sm.fix = !fixLost && !(v.segTunnel && v.act == actDriving) && rng.Float64() >= s.cfg.InvalidFixProb
	if sm.fix {
		σ := s.cfg.GPSNoiseM * sm.hdop
		lat, lon := s.latLon(v.x+rng.NormFloat64()*σ, v.y+rng.NormFloat64()*σ)
		sm.lat, sm.lon = round7(lat), round7(lon)
		v.lastLat, v.lastLon = sm.lat, sm.lon
		sm.gnss = 1
		sm.alt = math.Round((34+12*math.Sin(v.x/3100)*math.Cos(v.y/4300)+rng.NormFloat64())*10) / 10
	} else {
		sm.sats = uint32(rng.IntN(3))
		sm.hdop = 99.9
		sm.lat, sm.lon = v.lastLat, v.lastLon
		if sm.lat == 0 && sm.lon == 0 {
			sm.lat, sm.lon = s.latLon(v.x, v.y) // a tracker that never had a fix reports its last stored one
			sm.lat, sm.lon = round7(sm.lat), round7(sm.lon)
		}
		sm.gnss = 2
	}
	if v.speed > 0.2 {
		sm.speedKmh = math.Round(v.speed*3.6*(1+0.01*rng.NormFloat64())*10) / 10
		sm.moving = 1
	}
	sm.heading = math.Round(v.heading)
	if sm.heading >= 360 {
		sm.heading = 0
	}
	noise := rng.NormFloat64() * 0.004 * v.typ.tankL
	level := math.Max(0, math.Min(v.typ.tankL, v.fuelL+v.slosh+noise))
	sm.fuelL = math.Round(level*10) / 10
	sm.fuelPct = math.Round(level/v.typ.tankL*1000) / 10
	switch {
	case v.inc != nil && v.inc.powerCut(t):
		sm.extV = 0
	case v.ignition:
		sm.extV = round2(14.1 + 0.05*rng.NormFloat64())
	default:
		sag := math.Min(1, (t-v.offSince)/36000)
		sm.extV = round2(12.65 - 0.25*sag + 0.02*rng.NormFloat64())
	}
	sm.batV = round2(v.batV + 0.005*rng.NormFloat64())
	if v.ignition {
		kmh := v.speed * 3.6
		if kmh < 1 {
			sm.rpm = math.Round(750 + 30*rng.NormFloat64())
			sm.load = 18
		} else {
			gear := math.Min(6, 1+math.Floor(kmh/18))
			sm.rpm = math.Round(700 + kmh/gear*60 + math.Max(0, v.accel)*300)
			sm.load = math.Round(math.Min(100, 25+30*math.Max(0, v.accel)/v.typ.accel+kmh/4))
		}
	}
	sm.coolantC = math.Round(v.coolant*10) / 10
	sm.fault = v.fault
	sm.mil = v.fault != ""
	return sm
}

func round7(f float64) float64 { return math.Round(f*1e7) / 1e7 }
func round2(f float64) float64 { return math.Round(f*100) / 100 }

// wantRecord applies the tracker's triggers.
func (s *Sim) wantRecord(v *vehicle, t float64) bool {
	if v.locateNow || v.alarm != telemetry.AlarmUnspecified {
		return true
	}
	if fi := s.cfg.FixedInterval.Seconds(); fi > 0 {
		if t < v.nextFixed-1e-9 {
			return false
		}
		// Keep the average rate exact even when the interval is not a whole number of
		// steps; after a long stall, restart the schedule rather than burst.
		v.nextFixed += fi
		if v.nextFixed <= t {
			v.nextFixed = t + fi
		}
		return true
	}
	if v.ignition != v.lastRecIgn {
		return true
	}
	moving := v.speed > 0.5
	iv := v.parkedIv
	if moving || v.ignition {
		iv = v.movingIv
	}
	if t-v.lastRec >= iv-1e-9 {
		return true
	}
	if moving && v.speed > 1.5 && angleDiff(v.heading, v.lastRecHeading) >= s.cfg.HeadingDeltaDeg {
		return true
	}
	return moving && v.distSinceRec >= s.cfg.DistanceM
}
