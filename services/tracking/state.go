package tracking

import (
	"errors"
	"math"
	"slices"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Status is what a vehicle is doing.
type Status uint8

const (
	StatusUnknown Status = iota
	StatusNeverSeen
	StatusMoving
	StatusIdle
	StatusStopped
	StatusOffline
)

var statusNames = [...]string{"unknown", "never_seen", "moving", "idle", "stopped", "offline"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Fix is an accepted position.
type Fix struct {
	Time       time.Time // device time
	Seq        uint64
	Lat, Lon   float64
	AltitudeM  float64
	SpeedKmh   float64
	HeadingDeg float64
	Ignition   int8 // -1 off, 0 unknown, 1 on
}

// Point returns the fix's position.
func (f *Fix) Point() geo.Point { return geo.Point{Lat: f.Lat, Lon: f.Lon} }

// recent is a record remembered for duplicate detection and late-fix odometer fitting.
type recent struct {
	T      int64 // device time, unix ns
	Seq    uint64
	HasPos bool
	Lat    float64
	Lon    float64
	Speed  float32 // reported km/h, for the late-fix plausibility check
}

// State is the live state of one vehicle.
type State struct {
	VehicleID string

	Status     Status
	PrevStatus Status
	StatusTime time.Time // device time (or server time for offline) of the last status change

	HasFix bool
	Fix    Fix // last accepted fix (newest by device time)

	LastSeen       time.Time // server time the newest record was stored
	LastDeviceTime time.Time // device time of the newest record applied to the live state
	LastSequence   uint64
	LastSentTime   time.Time

	Fields          telemetry.Field // which of the values below are known
	Ignition        bool
	EngineHours     float64
	FuelLitres      float64
	FuelPercent     float64
	ExternalVoltage float64

	OdometerM      float64 // the odometer the API shows: the device's when sane, else GPSOdometerM's growth
	OdoFromDevice  bool    // the odometer follows the device's own counter
	DeviceOdometer float64 // last sane device odometer reading
	GPSOdometerM   float64 // distance between accepted fixes, kept alongside whatever the source
	Records        uint64

	StillSince time.Time // device time the vehicle stopped moving; zero while moving

	// Parked: the last accepted fix was taken with the ignition off and no movement, so
	// the static rule holds the position at Fix.
	Parked bool
	// Static release: consecutive parked fixes far from the held position and the last of
	// them (a vehicle carried away by a tracker without a movement sensor).
	AwayStreak uint8
	Away       recent

	// Backlog: the last late fix accepted and the accepted fix after it, so a backlog
	// longer than the Recent window keeps counting toward the odometer.
	Backlog [2]recent

	// Pending holds suspect fixes (ordered by device time, at most maxPending) waiting for
	// the next fix to confirm or reject them.
	Pending []Fix

	// Applied remembers the last stream messages applied (see MessageApplied), ordered by
	// stream sequence, at most maxApplied.
	Applied []msgRef

	Recent []recent // ordered by (T, Seq), at most Config.RecentFixes
	Forgot bool     // Recent has dropped records: it no longer reaches back to the first
}

// msgRef identifies a stream message: its sequence and the time the stream stored it.
type msgRef struct {
	Seq uint64
	T   int64 // unix ns
}

// maxApplied is how many applied messages a state remembers per vehicle. A message is
// redelivered out of order only when an instance stopped or failed before acknowledging
// it (after AckWait, 30 s by default); a vehicle sends far fewer than this many messages
// in that time.
const maxApplied = 128

// MessageApplied reports whether the stream message (seq, stored at t) was already applied
// to this state: it is one of the remembered ones, or older (in sequence and in time) than
// all of them when the memory is full, as when a rebuilding consumer re-reads the stream.
// A recreated stream restarts its sequences but not its clock, so its messages are new.
func (st *State) MessageApplied(seq uint64, t time.Time) bool {
	if len(st.Applied) == 0 {
		return false
	}
	tn := t.UnixNano()
	i, found := slices.BinarySearchFunc(st.Applied, seq, func(m msgRef, s uint64) int {
		switch {
		case m.Seq < s:
			return -1
		case m.Seq > s:
			return 1
		}
		return 0
	})
	if found {
		return st.Applied[i].T == tn
	}
	return i == 0 && len(st.Applied) >= maxApplied && tn < st.Applied[0].T
}

// MarkApplied remembers that the stream message (seq, stored at t) has been applied.
func (st *State) MarkApplied(seq uint64, t time.Time) {
	ref := msgRef{Seq: seq, T: t.UnixNano()}
	n := len(st.Applied)
	if n == 0 || st.Applied[n-1].Seq < seq {
		st.Applied = append(st.Applied, ref)
	} else {
		i, found := slices.BinarySearchFunc(st.Applied, seq, func(m msgRef, s uint64) int {
			switch {
			case m.Seq < s:
				return -1
			case m.Seq > s:
				return 1
			}
			return 0
		})
		if found {
			st.Applied[i] = ref
			return
		}
		st.Applied = slices.Insert(st.Applied, i, ref)
	}
	if n := len(st.Applied); n > maxApplied {
		copy(st.Applied, st.Applied[n-maxApplied:])
		st.Applied = st.Applied[:maxApplied]
	}
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := *s
	c.Recent = slices.Clone(s.Recent)
	c.Applied = slices.Clone(s.Applied)
	c.Pending = slices.Clone(s.Pending)
	return &c
}

// Reason names why a record, or its position, was filtered. The names are the metric
// label values of fleetwire_tracking_rejected_total.
type Reason uint16

const (
	ReasonInvalidFix Reason = 1 << iota
	ReasonNullIsland
	ReasonOutOfRange
	ReasonNaN
	ReasonFutureTime
	ReasonDuplicate
	ReasonTeleport
	ReasonParkedDrift
	ReasonOdometer
	ReasonLowSatellites
	ReasonHighDOP
	ReasonSpike
	ReasonStatic
	ReasonTooOld
	reasonEnd
)

var reasonNames = map[Reason]string{
	ReasonInvalidFix:    "invalid_fix",
	ReasonNullIsland:    "null_island",
	ReasonOutOfRange:    "out_of_range",
	ReasonNaN:           "nan_coordinate",
	ReasonFutureTime:    "future_time",
	ReasonDuplicate:     "duplicate",
	ReasonTeleport:      "teleport",
	ReasonParkedDrift:   "parked_drift",
	ReasonOdometer:      "odometer_insane",
	ReasonLowSatellites: "low_satellites",
	ReasonHighDOP:       "high_dop",
	ReasonSpike:         "spike",
	ReasonStatic:        "static",
	ReasonTooOld:        "too_old",
}

func (r Reason) String() string { return reasonNames[r] }

// Each calls f for every reason set in r.
func (r Reason) Each(f func(Reason)) {
	for b := Reason(1); b < reasonEnd; b <<= 1 {
		if r&b != 0 {
			f(b)
		}
	}
}

// Result is what applying one record did.
type Result struct {
	Reasons       Reason // filters that fired
	Dropped       bool   // the record changed nothing (duplicate or redelivery)
	Late          bool   // older than the live state: history and odometer only
	HasPoint      bool   // Point holds a fix for the history
	Point         Fix
	Pending       bool  // the position is suspect and held back until the next fix decides
	Released      []Fix // earlier suspect fixes this record confirmed: history too, older than Point
	Retracted     []Fix // fixes accepted earlier that this record showed to be spikes: out of the history
	StatusChanged bool
	Changed       bool // the live state changed
}

// Tracker applies records to vehicle states under one configuration. It holds no state of
// its own and is safe for concurrent use on different States.
type Tracker struct {
	cfg       Config
	f         FilterConfig
	movingKmh float64
	models    map[string]*Tracker
}

// NewTracker returns a tracker for cfg.
func NewTracker(cfg Config) *Tracker {
	t := &Tracker{cfg: cfg, f: cfg.Filter, movingKmh: cfg.MovingSpeedKmh}
	if len(cfg.ModelFilters) > 0 {
		t.models = make(map[string]*Tracker, len(cfg.ModelFilters))
		for m, f := range cfg.ModelFilters {
			t.models[m] = &Tracker{cfg: cfg, f: f, movingKmh: cfg.MovingSpeedKmh}
		}
	}
	return t
}

// ForModel returns the tracker for a device model's filter profile (the default one for
// a model without a profile).
func (t *Tracker) ForModel(model string) *Tracker {
	if m, ok := t.models[model]; ok {
		return m
	}
	return t
}

// NewState returns the state of a vehicle that has never sent anything.
func NewState(vehicle string) *State {
	return &State{VehicleID: vehicle, Status: StatusNeverSeen}
}

// Apply applies r to st. now is the server clock, used as "last seen" and as the
// reference of the record-time rule when the record has no ReceivedTime (the time the
// stream stored it, which is the reference otherwise). A record that is an exact duplicate or
// a redelivery of an already applied message changes nothing, so Apply is idempotent.
//
// Order of the rules: redelivery → duplicate → record time → position validity →
// teleport → parked drift → odometer → live state and status. A record whose position is
// discarded still updates ignition, counters and alarms: no filter drops a whole record
// except the duplicate rules.
func (t *Tracker) Apply(st *State, r *telemetry.Record, now time.Time) Result {
	var res Result
	if r.StreamSeq != 0 && st.MessageApplied(r.StreamSeq, r.ReceivedTime) {
		res.Dropped = true
		return res
	}
	devTime := r.DeviceTime
	tns := devTime.UnixNano()
	idx, dup := st.findRecent(tns, r.Sequence)
	if dup {
		res.Reasons |= ReasonDuplicate
		res.Dropped = true
		return res
	}
	seen := r.ReceivedTime
	if seen.IsZero() {
		seen = now
	}
	posOK := true
	if err := t.cfg.RecordTime.Check(devTime, seen); err != nil {
		// The clock is broken, so the record cannot be placed in time: it is not history
		// and not a fix. Its ignition and alarms still count, stamped with the time the
		// stream stored it.
		if errors.Is(err, telemetry.ErrFutureTime) {
			res.Reasons |= ReasonFutureTime
		} else {
			res.Reasons |= ReasonTooOld
		}
		posOK = false
		devTime = seen
		tns = devTime.UnixNano()
		idx, _ = st.findRecent(tns, r.Sequence)
	}
	if err := r.CheckPosition(); err != nil {
		posOK = false
		res.Reasons |= positionReason(err)
	}
	if posOK {
		if reason := t.quality(r); reason != 0 {
			posOK = false
			res.Reasons |= reason
		}
	}
	late := !st.LastDeviceTime.IsZero() && (devTime.Before(st.LastDeviceTime) ||
		(devTime.Equal(st.LastDeviceTime) && r.Sequence < st.LastSequence))
	res.Late = late

	ign := int8(0)
	if r.Has(telemetry.HasIgnition) {
		ign = -1
		if r.Ignition {
			ign = 1
		}
	}
	cur := Fix{Time: devTime, Seq: r.Sequence, Lat: r.Lat, Lon: r.Lon, AltitudeM: r.AltitudeM,
		SpeedKmh: r.SpeedKmh, HeadingDeg: r.HeadingDeg, Ignition: ign}
	static := t.f.Static && ign < 0 && cur.SpeedKmh < t.movingKmh &&
		(!r.Has(telemetry.HasMovement) || !r.Movement)
	var addM float64
	if posOK {
		if late {
			posOK, addM = t.placeLate(st, &res, &cur, idx, static)
		} else {
			posOK, addM = t.placeNew(st, &res, &cur, idx, static)
		}
	}

	// Odometer: the device's counter when it is sane, else the distance between fixes
	// continued from it. The GPS odometer always counts the fixes.
	// addM is negative when a spike accepted earlier was retracted.
	st.GPSOdometerM = max(st.GPSOdometerM+addM, 0)
	switch {
	case !late && r.Has(telemetry.HasOdometer):
		if t.saneOdometer(st, r.OdometerM, devTime) {
			st.OdometerM = r.OdometerM
			st.DeviceOdometer = r.OdometerM
			st.OdoFromDevice = true
		} else {
			res.Reasons |= ReasonOdometer
			st.OdoFromDevice = false
			st.OdometerM += addM
		}
	case !late && st.OdoFromDevice:
		// The device stopped reporting its counter: continue from it with fix distances.
		st.OdoFromDevice = false
		st.OdometerM += addM
	case !st.OdoFromDevice:
		st.OdometerM += addM
	}

	if posOK {
		res.HasPoint = true
		res.Point = cur
	}
	lat, lon, speed := cur.Lat, cur.Lon, cur.SpeedKmh
	rc := recent{T: tns, Seq: r.Sequence, HasPos: posOK, Speed: round1(speed)}
	if posOK {
		// Rounded to the 1 cm the stored state keeps, so a state read back from a store
		// behaves exactly like the one in memory.
		rc.Lat, rc.Lon = round7(lat), round7(lon)
	}
	st.remember(idx, rc, t.cfg.RecentFixes)
	st.Records++
	if seen.After(st.LastSeen) {
		st.LastSeen = seen
	}
	res.Changed = true
	if late {
		if st.Status == StatusOffline || st.Status == StatusNeverSeen {
			// Data arrived, even if old: the vehicle is back.
			t.setStatus(st, &res, t.statusAfter(st, st.LastDeviceTime), st.LastDeviceTime)
		}
		return res
	}

	st.LastDeviceTime = devTime
	st.LastSequence = r.Sequence
	if !r.SentTime.IsZero() {
		st.LastSentTime = r.SentTime
	}
	if posOK {
		st.HasFix = true
		st.Fix = res.Point
		st.Parked = static
	}
	if r.Has(telemetry.HasIgnition) {
		st.Ignition = r.Ignition
		st.Fields |= telemetry.HasIgnition
	}
	if r.Has(telemetry.HasEngineHours) {
		st.EngineHours = r.EngineHours
		st.Fields |= telemetry.HasEngineHours
	}
	if r.Has(telemetry.HasFuelLitres) {
		st.FuelLitres = r.FuelLitres
		st.Fields |= telemetry.HasFuelLitres
	}
	if r.Has(telemetry.HasFuelPercent) {
		st.FuelPercent = r.FuelPercent
		st.Fields |= telemetry.HasFuelPercent
	}
	if r.Has(telemetry.HasExternalVoltage) {
		st.ExternalVoltage = r.ExternalVoltage
		st.Fields |= telemetry.HasExternalVoltage
	}

	// Motion: the reported speed of an accepted fix; a record without a usable position
	// says nothing about motion and leaves it as it was.
	if posOK {
		if speed >= t.movingKmh {
			st.StillSince = time.Time{}
		} else if st.StillSince.IsZero() {
			st.StillSince = devTime
		}
	}
	t.setStatus(st, &res, t.statusAfter(st, devTime), devTime)
	return res
}

// statusAfter derives the status from the motion and ignition state at device time at.
func (t *Tracker) statusAfter(st *State, at time.Time) Status {
	if !st.HasFix && st.StillSince.IsZero() {
		if st.Fields&telemetry.HasIgnition != 0 && st.Ignition {
			return StatusIdle
		}
		return StatusStopped
	}
	if st.StillSince.IsZero() {
		return StatusMoving
	}
	if st.Fields&telemetry.HasIgnition != 0 && st.Ignition && at.Sub(st.StillSince) >= t.cfg.IdleAfter {
		return StatusIdle
	}
	return StatusStopped
}

func (t *Tracker) setStatus(st *State, res *Result, s Status, at time.Time) {
	if s == st.Status {
		return
	}
	st.PrevStatus, st.Status, st.StatusTime = st.Status, s, at
	res.StatusChanged = true
}

// Sweep marks st offline when nothing arrived for longer than OfflineAfter before now.
// It reports whether the status changed.
func (t *Tracker) Sweep(st *State, now time.Time) bool {
	if st.Status == StatusOffline || st.Status == StatusNeverSeen || st.LastSeen.IsZero() {
		return false
	}
	if now.Sub(st.LastSeen) <= t.cfg.OfflineAfter {
		return false
	}
	st.PrevStatus, st.Status = st.Status, StatusOffline
	// The moment it went offline, derived from the state alone so a repeated sweep raises
	// an identical event.
	st.StatusTime = st.LastSeen.Add(t.cfg.OfflineAfter)
	return true
}

// saneOdometer reports whether a device odometer reading fits the previous one: it may
// not run backwards (10 m tolerance) nor grow faster than MaxSpeedKmh allows (+1 km).
func (t *Tracker) saneOdometer(st *State, v float64, at time.Time) bool {
	if st.DeviceOdometer == 0 && !st.OdoFromDevice {
		return true // first reading
	}
	if v < st.DeviceOdometer-10 {
		return false
	}
	dt := at.Sub(st.LastDeviceTime).Seconds()
	return v-st.DeviceOdometer <= t.f.MaxSpeedKmh/3.6*max(dt, 1)+1000
}

func positionReason(err error) Reason {
	switch {
	case errors.Is(err, telemetry.ErrNaNCoordinate):
		return ReasonNaN
	case errors.Is(err, telemetry.ErrOutOfRange):
		return ReasonOutOfRange
	case errors.Is(err, telemetry.ErrNullIsland):
		return ReasonNullIsland
	}
	return ReasonInvalidFix
}

// round1 rounds a speed to the 0.1 km/h the stored state keeps of it.
func round1(kmh float64) float32 { return float32(math.Round(math.Max(kmh, 0)*10) / 10) }

// findRecent returns where (t, seq) belongs in st.Recent and whether it is already there.
func (st *State) findRecent(t int64, seq uint64) (int, bool) {
	rs := st.Recent
	// Records nearly always arrive in order: check the end first.
	if n := len(rs); n == 0 || rs[n-1].T < t || (rs[n-1].T == t && rs[n-1].Seq < seq) {
		return n, false
	}
	i, found := slices.BinarySearchFunc(rs, recent{T: t, Seq: seq}, func(a, b recent) int {
		switch {
		case a.T < b.T:
			return -1
		case a.T > b.T:
			return 1
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return i, found
}

// neighbours returns the nearest remembered fixes before and after insertion index i.
func (st *State) neighbours(i int) (prev, next *recent) {
	for j := i - 1; j >= 0; j-- {
		if st.Recent[j].HasPos {
			prev = &st.Recent[j]
			break
		}
	}
	for j := i; j < len(st.Recent); j++ {
		if st.Recent[j].HasPos {
			next = &st.Recent[j]
			break
		}
	}
	return prev, next
}

func (st *State) remember(i int, r recent, limit int) {
	if i == len(st.Recent) {
		st.Recent = append(st.Recent, r)
	} else {
		st.Recent = slices.Insert(st.Recent, i, r)
	}
	if n := len(st.Recent); n > limit {
		// Drop the oldest; shifting in place keeps the backing array.
		copy(st.Recent, st.Recent[n-limit:])
		st.Recent = st.Recent[:limit]
		st.Forgot = true
	}
}
