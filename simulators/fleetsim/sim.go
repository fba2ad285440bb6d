package fleetsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// phaseSlots spreads vehicles over sub-second phases so a fleet reporting every second
// does not publish in one burst.
const phaseSlots = 10

// emitter receives the packets the trackers send. data is only valid during the call.
type emitter interface {
	emit(v *vehicle, kind string, data []byte, recs []sample)
}

// Sim is the deterministic fleet generator: the same Config (seed, start, vehicles)
// advanced to the same simulated instants emits the same packets. It is safe for
// concurrent use; calls are serialised.
type Sim struct {
	mu        sync.Mutex
	cfg       Config
	start     time.Time
	roads     *roads
	router    *router
	vehicles  []*vehicle
	byID      map[string]*vehicle
	next      []float64 // each vehicle's next step, simulated seconds
	dt        float64
	now       float64
	enc       encoder
	mLat      float64 // metres per degree of latitude and longitude at the centre
	mLon      float64
	incidents []Incident
	// sentClock stamps packets; nil means the simulated clock.
	sentClock func() int64
	counts    simCounts
	late      bool // flushBacklog is sending stored records
}

type simCounts struct {
	records, batches, lateBatches, lateRecords, duplicates, backlogDropped uint64
}

// NewSim builds the fleet. cfg.Start zero means now.
func NewSim(cfg Config) (*Sim, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Now()
	}
	s := &Sim{cfg: cfg, start: cfg.Start}
	s.roads = newRoads(rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5EED)))
	s.router = newRouter(s.roads)
	s.mLat = 111_132.954 - 559.822*math.Cos(2*cfg.Center.Lat*rad) + 1.175*math.Cos(4*cfg.Center.Lat*rad)
	s.mLon = 111_412.84*math.Cos(cfg.Center.Lat*rad) - 93.5*math.Cos(3*cfg.Center.Lat*rad)
	s.dt = 1
	if fi := cfg.FixedInterval.Seconds(); fi > 0 && fi < 1 {
		s.dt = fi
	}
	s.vehicles = make([]*vehicle, cfg.Vehicles)
	s.byID = make(map[string]*vehicle, cfg.Vehicles)
	s.next = make([]float64, cfg.Vehicles)
	if cfg.Scenarios {
		s.incidents = s.planIncidents()
	}
	for i := range s.vehicles {
		v := s.newVehicle(i)
		s.vehicles[i] = v
		s.byID[v.id] = v
		s.next[i] = float64(i%phaseSlots) / phaseSlots * s.dt
		if cfg.FixedInterval > 0 {
			// Spread reports evenly over the interval (golden-ratio sequence).
			frac := math.Mod(float64(i)*0.6180339887498949, 1)
			v.nextFixed = frac * cfg.FixedInterval.Seconds()
		}
	}
	s.attachIncidents()
	return s, nil
}

const rad = math.Pi / 180

// SetInterval changes the fixed reporting interval of every vehicle (FixedInterval) from
// the current simulated instant on, spreading the next reports evenly over the new
// interval as at start, so the fleet reports at the new rate at once instead of after a
// ramp. The load tester's ceiling search uses it to raise the rate of one fleet step by
// step: the same vehicles keep their positions, sequences and zone memberships.
func (s *Sim) SetInterval(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w: fixed interval %v", ErrConfig, d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.FixedInterval = d
	s.dt = 1
	if fi := d.Seconds(); fi < 1 {
		s.dt = fi
	}
	for i, v := range s.vehicles {
		frac := math.Mod(float64(i)*0.6180339887498949, 1)
		v.nextFixed = s.now + frac*d.Seconds()
		if s.next[i] > s.now+s.dt {
			s.next[i] = s.now + float64(i%phaseSlots)/phaseSlots*s.dt
		}
	}
	return nil
}

// Start is the simulated clock's zero.
func (s *Sim) Start() time.Time { return s.start }

// Now is how far the simulation has advanced.
func (s *Sim) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at(s.now)
}

func (s *Sim) at(t float64) time.Time {
	return s.start.Add(time.Duration(math.Round(t * 1e9)))
}

// VehicleIDs lists the vehicles in order.
func (s *Sim) VehicleIDs() []string {
	ids := make([]string, len(s.vehicles))
	for i, v := range s.vehicles {
		ids[i] = v.id
	}
	return ids
}

func (s *Sim) latLon(x, y float64) (float64, float64) {
	return s.cfg.Center.Lat + y/s.mLat, s.cfg.Center.Lon + x/s.mLon
}

func (s *Sim) xy(lat, lon float64) (float64, float64) {
	return (lon - s.cfg.Center.Lon) * s.mLon, (lat - s.cfg.Center.Lat) * s.mLat
}

// localHour is the local time of day at simulated second t, in hours.
func (s *Sim) localHour(t float64) float64 {
	lt := s.at(t).Add(s.cfg.UTCOffset).UTC()
	return float64(lt.Hour()) + float64(lt.Minute())/60 + float64(lt.Second())/3600
}

// advance steps every vehicle up to simulated instant to, emitting packets to out.
func (s *Sim) advance(to time.Time, out emitter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := to.Sub(s.start).Seconds()
	for i, v := range s.vehicles {
		for s.next[i] <= limit {
			s.step(v, s.next[i], out)
			s.next[i] += s.dt
		}
	}
	if limit > s.now {
		s.now = limit
	}
}

func (s *Sim) step(v *vehicle, t float64, out emitter) {
	dist := s.move(v, t, s.dt)
	s.physics(v, t, s.dt, dist)
	v.distSinceRec += dist
	if s.wantRecord(v, t) {
		s.record(v, t, out)
	} else if len(v.backlog) > 0 && !s.inGap(v, t) {
		s.flushBacklog(v, t, out)
	}
}

// record takes a record now and hands it to the tracker's send logic.
func (s *Sim) record(v *vehicle, t float64, out emitter) {
	sm := s.sense(v, s.at(t).UnixNano(), t)
	v.lastRec, v.lastRecHeading, v.lastRecIgn, v.distSinceRec = t, v.heading, v.ignition, 0
	locate := v.locateNow
	v.locateNow = false
	s.counts.records++
	if s.inGap(v, t) {
		if len(v.backlog) >= maxBacklog {
			copy(v.backlog, v.backlog[1:]) // the tracker's flash is full: oldest go first
			v.backlog = v.backlog[:len(v.backlog)-1]
			s.counts.backlogDropped++
		}
		v.backlog = append(v.backlog, sm)
		return
	}
	if sm.alarm != telemetry.AlarmUnspecified {
		s.flush(v, t, out)
		s.send(v, t, kindAlarm, []sample{sm}, out)
	} else {
		v.buf = append(v.buf, sm)
		if len(v.buf) >= s.cfg.BatchRecords || locate || !v.ignition {
			s.flush(v, t, out)
		}
	}
	if len(v.backlog) > 0 {
		s.flushBacklog(v, t, out)
	}
}

func (s *Sim) flush(v *vehicle, t float64, out emitter) {
	if len(v.buf) == 0 {
		return
	}
	s.send(v, t, kindTelemetry, v.buf, out)
	v.buf = v.buf[:0]
}

// flushBacklog sends what the tracker stored while out of coverage: alarm records on the
// alarm subject, the rest as late telemetry batches, oldest first.
func (s *Sim) flushBacklog(v *vehicle, t float64, out emitter) {
	s.flush(v, t, out)
	var alarms int
	s.late = true
	for i := range v.backlog {
		if v.backlog[i].alarm != telemetry.AlarmUnspecified {
			s.send(v, t, kindAlarm, v.backlog[i:i+1], out)
			alarms++
		}
	}
	if alarms > 0 {
		n := 0
		for i := range v.backlog {
			if v.backlog[i].alarm == telemetry.AlarmUnspecified {
				v.backlog[n] = v.backlog[i]
				n++
			}
		}
		v.backlog = v.backlog[:n]
	}
	s.late = true
	defer func() { s.late = false }()
	for len(v.backlog) > 0 {
		n := min(len(v.backlog), maxBatch)
		s.counts.lateBatches++
		s.counts.lateRecords += uint64(n)
		s.send(v, t, kindTelemetry, v.backlog[:n], out)
		v.backlog = v.backlog[n:]
	}
	v.backlog = v.backlog[:0:0]
}

// Packet kinds as the bus names them (kept local: the generator does not import the bus).
const (
	kindTelemetry = "tele"
	kindAlarm     = "alarm"
)

func (s *Sim) send(v *vehicle, t float64, kind string, recs []sample, out emitter) {
	sent := s.at(t).UnixNano()
	if s.sentClock != nil {
		sent = s.sentClock()
	}
	data := s.enc.batch(v.id, sent, recs)
	s.counts.batches++
	out.emit(v, kind, data, recs)
	if s.cfg.DuplicateProb > 0 && v.rng.Float64() < s.cfg.DuplicateProb {
		// The tracker missed the acknowledgement and sends the packet again.
		s.counts.duplicates++
		s.counts.batches++
		out.emit(v, kind, data, recs)
	}
}

// inGap reports whether v has no network coverage at t.
func (s *Sim) inGap(v *vehicle, t float64) bool {
	if s.cfg.Tunnels && v.segTunnel && v.act == actDriving {
		return true
	}
	return v.inc != nil && v.inc.gap(t)
}

// locate makes v report at once (LOCATE_NOW).
func (s *Sim) locate(v *vehicle, out emitter) {
	v.locateNow = true
	s.record(v, s.now, out)
}

func (s *Sim) vehicle(id string) (*vehicle, bool) {
	v, ok := s.byID[id]
	return v, ok
}

func (s *Sim) String() string {
	return fmt.Sprintf("sim(%d vehicles, seed %d)", len(s.vehicles), s.cfg.Seed)
}

func timeFromUnixNano(n int64) time.Time { return time.Unix(0, n).UTC() }

// Play advances the simulation to the simulated instant to without any network, calling
// fn for every packet the trackers send, in order. payload is the encoded
// fleet.v1.TelemetryBatch, valid only during the call (decode it with wire.DecodeBatch).
// It is how tests replay a seeded fleet on a simulated clock.
func (s *Sim) Play(to time.Time, fn func(p Packet, payload []byte)) {
	s.advance(to, playSink{s: s, fn: fn})
}

type playSink struct {
	s  *Sim
	fn func(Packet, []byte)
}

func (p playSink) emit(v *vehicle, kind string, data []byte, recs []sample) {
	last := recs[len(recs)-1].unixNano
	sent := last
	if p.s.sentClock != nil {
		sent = p.s.sentClock()
	}
	p.fn(Packet{
		Vehicle: v.id, Kind: kind, Records: len(recs), FirstSeq: recs[0].seq, LastSeq: recs[len(recs)-1].seq,
		Sent: timeFromUnixNano(sent), DeviceTime: timeFromUnixNano(last), Late: p.s.late,
	}, data)
}
