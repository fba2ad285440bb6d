package fuel

import (
	"errors"
	"math"
	"slices"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// Config holds the detector's thresholds. DefaultConfig documents the defaults.
type Config struct {
	// MedianWindow is how many consecutive readings the median filter spans (5). Small on
	// purpose: heavy smoothing spreads a drain over so long that it hides under the noise.
	MedianWindow int
	// MovingKmh is the speed at or above which the vehicle counts as moving (5 km/h).
	MovingKmh float64
	// SettleAfterStop: readings taken less than this after the last moving reading are
	// ignored while the fuel stops sloshing (30 s).
	SettleAfterStop time.Duration
	// SloshIgnore: when detection while moving is enabled, readings during this long
	// after motion starts are ignored (120 s).
	SloshIgnore time.Duration
	// BandL and BandPct set the noise band: readings within max(BandL, BandPct % of the
	// tank) of the stable level belong to it (2 L, 1.5 %).
	BandL   float64
	BandPct float64
	// StableReadings is how many consecutive readings within the band make a new stable
	// level after a change (4).
	StableReadings int
	// MinRefuelL is the smallest rise reported as a refuel (10 L).
	MinRefuelL float64
	// MinDrainL and MinDrainPct: a fall, after subtracting the expected consumption, is a
	// suspected drain only when it exceeds both MinDrainL litres and MinDrainPct % of the
	// tank (8 L, 3 %).
	MinDrainL   float64
	MinDrainPct float64
	// IdleBurnLph is the expected consumption of a running, standing engine in litres per
	// hour (1.5 L/h). Engine running time comes from engine hours or the ignition.
	IdleBurnLph float64
	// MergeGap: a change that starts within this long of the end of the previous change of
	// the same kind is merged with it, so a refuel paused to switch pumps is one refuel
	// (10 min). An event is reported once this long has passed without a further change,
	// or when the vehicle moves off.
	MergeGap time.Duration
	// MaxChange bounds how long the level may keep changing before the change is judged
	// anyway (2 h), so a sensor that never settles cannot hold an event back for ever.
	MaxChange time.Duration
	// MaxGap: a gap between readings longer than this is not counted as engine running
	// time even with the ignition on (10 min); the tracker was probably off.
	MaxGap time.Duration
	// RefuelWhileMoving and DrainWhileMoving also judge readings taken while moving (after
	// SloshIgnore). Off by default: slosh makes such judgements unreliable.
	RefuelWhileMoving bool
	DrainWhileMoving  bool
	// DriveKmh is the speed at or above which readings count as driving, for the
	// across-stop judgement and for ending the in-stop judgement's stop (10 km/h):
	// creeping at walking pace is part of the stop (its readings are not judged).
	DriveKmh float64
	// AcrossMinPct is the smallest change, in percent of the tank, the across-stop
	// judgement reports (5 %): its references are read on the road, where slosh moves
	// the level by a few percent of the tank.
	AcrossMinPct float64

	// RangeTolerancePct: a level up to this much above the tank capacity is clamped to the
	// capacity (sensor over-range at the brim); beyond it the reading is refused (5 %).
	RangeTolerancePct float64
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MedianWindow:      5,
		MovingKmh:         5,
		SettleAfterStop:   30 * time.Second,
		SloshIgnore:       120 * time.Second,
		BandL:             2,
		BandPct:           1.5,
		StableReadings:    4,
		MinRefuelL:        10,
		MinDrainL:         8,
		MinDrainPct:       3,
		IdleBurnLph:       1.5,
		MergeGap:          10 * time.Minute,
		MaxChange:         2 * time.Hour,
		MaxGap:            10 * time.Minute,
		RangeTolerancePct: 5,
		DriveKmh:          10,
		AcrossMinPct:      5,
	}
}

// Reading is what the detector needs of one record.
type Reading struct {
	Time     time.Time
	Level    float64 // litres, calibrated
	HasLevel bool

	SpeedKmh    float64
	Ignition    bool
	HasIgnition bool
	EngineHours float64
	HasHours    bool
	OdometerM   float64
	HasOdometer bool
	Lat, Lon    float64
	HasPosition bool
}

// Kind is what a fuel event is.
type Kind uint8

const (
	KindUnspecified Kind = iota
	KindRefuel
	KindDrain
)

func (k Kind) String() string {
	switch k {
	case KindRefuel:
		return "refuel"
	case KindDrain:
		return "fuel_drain"
	}
	return "unspecified"
}

// Event is a detected refuel or suspected drain.
type Event struct {
	Kind   Kind      `json:"kind"`
	Start  time.Time `json:"start"` // last stable reading before the change
	End    time.Time `json:"end"`   // first reading of the stable level after it
	Litres float64   `json:"litres"`
	Before float64   `json:"before_l"` // stable level before
	After  float64   `json:"after_l"`  // stable level after
	// ExpectedL is the consumption subtracted (drains) or added back (refuels).
	ExpectedL   float64 `json:"expected_l"`
	Lat         float64 `json:"lat"`
	Lon         float64 `json:"lon"`
	HasPosition bool    `json:"has_position"`
	Moving      bool    `json:"moving,omitempty"` // judged from readings taken while moving
	// Across: judged from the levels the vehicle arrived and left with, not from stable
	// levels during the stop (see across.go).
	Across bool `json:"across,omitempty"`
	// Confidence in 0..1: how firmly the readings support the event. See confidence.
	Confidence float64 `json:"confidence"`
	// StartEng is the engine running time (State.EngineSec) at Start, so the consumption
	// can follow a volume refined with later readings.
	StartEng float64 `json:"start_eng,omitempty"`
	// unsettled: reported as the vehicle left before its new level was measured well;
	// the across-stop judgement may measure it better.
	unsettled bool
	// parked: held because its level before was read before the vehicle had settled on
	// its slope (see slopeSettle).
	parked bool
}

// Confidence levels. An event is alerted when its confidence reaches the fleet's
// threshold (dispatch; DefaultMinConfidence unless set): below it the event is still
// stored and reported, marked as a suggestion.
const (
	// ConfidenceStable: measured between two stable levels during the stop.
	ConfidenceStable = 0.9
	// DefaultMinConfidence is the threshold the benchmark scores at and dispatch applies
	// by default.
	DefaultMinConfidence = 0.5
)

// Reading errors; the caller counts them. The rest of the record is still usable.
var (
	ErrStale      = errors.New("reading not newer than the last judged one")
	ErrLevelRange = errors.New("fuel level outside 0..capacity")
)

// Phases of the level judgement.
const (
	phaseNone     = 0 // no stable level yet (new vehicle, or the vehicle just moved)
	phaseStable   = 1 // readings agree with a stable level
	phaseChanging = 2 // the level left the band; waiting for it to settle
)

const (
	// slopeSettle: a vehicle settles on its suspension, and its tank on the slope it
	// parked on, within minutes (the slope offset, up to 4 % of the tank, comes with a
	// time constant of up to 3 min). A drain measured from a level read earlier than this
	// after the stop may include part of that offset, so when it is still pending as the
	// vehicle leaves it waits for the road levels (see judgeAcross).
	slopeSettle = 10 * time.Minute
	// settleLags: a damped sensor shows the road's slosh for about a time constant after
	// the fuel came to rest, so standing readings are judged from SettleAfterStop plus
	// this many lags after the last moving reading (development drains +0.5 %).
	settleLags      = 1.0
	maxStableWindow = 20
	driveWindow     = 10
)

// State is everything the detector remembers about one vehicle. It is plain data so a
// store can persist it and a restarted service resume exactly where it stopped.
type State struct {
	LastTime     time.Time `json:"last_time"`
	Moving       bool      `json:"moving"`
	LastMoveTime time.Time `json:"last_move_time"`
	MotionStart  time.Time `json:"motion_start"`

	Raw      []float64 `json:"raw,omitempty"` // median filter window
	RawTimes []int64   `json:"raw_times,omitempty"`
	// DriveRaw holds the last raw levels read while moving; their median is the level the
	// vehicle arrived with, the reference for a refuel that starts before the stop has a
	// stable level of its own.
	DriveRaw    []float64 `json:"drive_raw,omitempty"`
	PreStop     float64   `json:"pre_stop"`
	HasPreStop  bool      `json:"has_pre_stop"`
	PreStopTime time.Time `json:"pre_stop_time"`
	PreStopEng  float64   `json:"pre_stop_eng"`
	Smoothed    float64   `json:"smoothed"` // last filtered level
	HasLevel    bool      `json:"has_level"`

	Phase       int       `json:"phase"`
	Stable      []float64 `json:"stable,omitempty"`     // first filtered readings of the stable level (its anchor)
	StableRaw   []float64 `json:"stable_raw,omitempty"` // latest raw readings of it (its volume estimate)
	StableRawT  []int64   `json:"stable_raw_t,omitempty"`
	StableTime  time.Time `json:"stable_time"`
	StableLat   float64   `json:"stable_lat"`
	StableLon   float64   `json:"stable_lon"`
	StablePos   bool      `json:"stable_pos"`
	StableEng   float64   `json:"stable_eng"` // EngineSec at StableTime
	ChangeMoved bool      `json:"change_moved"`
	ChangeVals  []float64 `json:"change_vals,omitempty"` // filtered readings since the change began
	ChangeRaw   []float64 `json:"change_raw,omitempty"`  // raw readings since the change began
	ChangeTimes []int64   `json:"change_times,omitempty"`

	// StandSince: the first standing reading after the last drive. FirstOfStop: the
	// stable level is the stop's first (no change ended before it). OnsetL: the level
	// before a drain that began before the stop's first stable readings (see onset).
	StandSince  time.Time `json:"stand_since"`
	FirstOfStop bool      `json:"first_of_stop,omitempty"`
	OnsetL      float64   `json:"onset_l,omitempty"`
	HasOnset    bool      `json:"has_onset,omitempty"`

	Pending *Event `json:"pending,omitempty"` // judged, waiting for MergeGap
	// PendingOpen: the stable level since Pending is still the one it ended on, so its
	// "after" level may be refined with more readings.
	PendingOpen bool   `json:"pending_open,omitempty"`
	Judging     bool   `json:"judging,omitempty"` // the last reading was judged
	Carry       *Carry `json:"carry,omitempty"`   // a small change that may continue

	// Across-stop judgement (across.go).
	Driving       bool         `json:"driving,omitempty"`
	DriveSince    time.Time    `json:"drive_since"`
	DriveFromDist float64      `json:"drive_from_dist,omitempty"`
	StopSeen      time.Time    `json:"stop_seen"`
	StopFrom      time.Time    `json:"stop_from"` // StopSeen, or the last record before a silence
	StopIdle      float64      `json:"stop_idle,omitempty"`
	StopLat       float64      `json:"stop_lat,omitempty"`
	StopLon       float64      `json:"stop_lon,omitempty"`
	StopPos       bool         `json:"stop_pos,omitempty"`
	StopCommitted bool         `json:"stop_committed,omitempty"`
	DriveBuf      []RefReading `json:"drive_buf,omitempty"`
	Across        *Across      `json:"across,omitempty"`
	DepL          float64      `json:"dep_l,omitempty"`
	DepDist       float64      `json:"dep_dist,omitempty"`
	HasDep        bool         `json:"has_dep,omitempty"`
	Lkm           float64      `json:"lkm,omitempty"` // learned litres per km
	// Learned sensor step (when the profile gives none): the smallest change between
	// consecutive standing readings over the first StepN of them.
	StepL float64 `json:"step_l,omitempty"`
	// LagSamples: sensor lags (seconds) measured on the first refuels when the profile
	// gives none (lag.go).
	LagSamples []float64 `json:"lag_samples,omitempty"`
	StepN      int       `json:"step_n,omitempty"`
	LastRaw    float64   `json:"last_raw,omitempty"`

	// Running totals, for reports.
	EngineSec   float64   `json:"engine_sec"` // engine running time
	IdleSec     float64   `json:"idle_sec"`   // engine running while standing
	DistanceM   float64   `json:"distance_m"` // odometer (or GPS) distance
	LastIgn     bool      `json:"last_ign"`
	LastHours   float64   `json:"last_hours"`
	HasHours    bool      `json:"has_hours"`
	LastOdoM    float64   `json:"last_odo_m"`
	HasOdo      bool      `json:"has_odo"`
	LastLat     float64   `json:"last_lat"`
	LastLon     float64   `json:"last_lon"`
	HasLastPos  bool      `json:"has_last_pos"`
	LastPosKmh  float64   `json:"last_pos_kmh,omitempty"` // reported speed at the last position
	LastPosTime time.Time `json:"last_pos_time"`
	GPSSkips    int       `json:"gps_skips,omitempty"` // fixes skipped in a row as spikes
}

// Detector judges one vehicle's readings. It is not safe for concurrent use; the
// service runs one vehicle's records through it in device-time order.
type Detector struct {
	cfg  Config
	prof Profile
	st   *State
}

// NewDetector wraps st (which it updates in place).
func NewDetector(cfg Config, prof Profile, st *State) *Detector {
	return &Detector{cfg: cfg, prof: prof, st: st}
}

func (d *Detector) band() float64 {
	// A coarse sensor flickers between neighbouring steps: two and a half steps are noise.
	return max(d.cfg.BandL, d.cfg.BandPct/100*d.prof.CapacityL, 2.5*d.step())
}

// step is the sensor's resolution: the profile's, or the one learned from the data.
func (d *Detector) step() float64 {
	if d.prof.StepL > 0 {
		return d.prof.StepL
	}
	if d.st.StepN >= stepLearnReadings {
		return d.st.StepL
	}
	return 0
}

// stepLearnReadings: the sensor step is learned from this many changes between
// consecutive standing readings (a few hours of a parked vehicle).
const stepLearnReadings = 200

// learnStep keeps the smallest change between consecutive readings, which for a
// quantised sensor is one step (noise moves the reading by whole steps). Changes above
// 5 % of the tank are events or spikes, not resolution.
func (d *Detector) learnStep(l float64) {
	st := d.st
	if d.prof.StepL > 0 || st.StepN >= stepLearnReadings || !st.HasLevel {
		return
	}
	diff := math.Abs(l - st.LastRaw)
	if diff < 1e-6 || d.prof.CapacityL > 0 && diff > 0.05*d.prof.CapacityL {
		return
	}
	if st.StepN == 0 || diff < st.StepL {
		st.StepL = diff
	}
	st.StepN++
}

// CheckLevel applies the range rule to a level: below zero, or above the capacity by
// more than RangeTolerancePct, is refused; slightly above is clamped to the capacity.
func CheckLevel(cfg Config, prof Profile, l float64) (float64, error) {
	if !finite(l) || l < 0 {
		return 0, ErrLevelRange
	}
	if prof.CapacityL > 0 && l > prof.CapacityL {
		if l > prof.CapacityL*(1+cfg.RangeTolerancePct/100) {
			return 0, ErrLevelRange
		}
		return prof.CapacityL, nil
	}
	return l, nil
}

// Add judges one reading and returns the events it completes. A reading not newer than
// the last one returns ErrStale and changes nothing (redelivered or late records).
func (d *Detector) Add(r Reading) ([]Event, error) {
	st := d.st
	if !st.LastTime.IsZero() && !r.Time.After(st.LastTime) {
		return nil, ErrStale
	}
	var levelErr error
	if r.HasLevel {
		l, err := CheckLevel(d.cfg, d.prof, r.Level)
		if err != nil {
			levelErr = err
			r.HasLevel = false
		} else {
			r.Level = l
		}
	}
	d.account(r)
	moving := r.SpeedKmh >= d.cfg.MovingKmh
	// Creeping at walking pace (below DriveKmh: a yard manoeuvre, a queue at the pump)
	// is part of the stop. Its readings slosh and are not judged, but the stop's level
	// and a change in progress carry on: ending the stop at every creep would cut a
	// siphon done while creeping into pieces, each measured from the middle of it.
	leaving := moving && r.SpeedKmh >= d.cfg.DriveKmh
	var out []Event
	if moving {
		st.LastMoveTime = r.Time
	}
	if leaving {
		if !st.Moving {
			st.Moving = true
			st.MotionStart = r.Time
			// The stop is over: judge what it left unfinished and forget its level, which
			// the drive will consume.
			out = d.endStop(r, out)
		}
	} else if !moving && st.Moving {
		st.Moving = false
		st.StandSince = r.Time
		st.HasPreStop = false
		if len(st.DriveRaw) >= driveWindow/2 {
			st.PreStop, st.HasPreStop = median(st.DriveRaw), true
			st.PreStopTime, st.PreStopEng = st.LastMoveTime, st.EngineSec
		}
		st.DriveRaw = st.DriveRaw[:0]
	}
	judge := !moving && (st.LastMoveTime.IsZero() || r.Time.Sub(st.LastMoveTime) >= d.settle())
	if moving && (d.cfg.RefuelWhileMoving || d.cfg.DrainWhileMoving) && r.Time.Sub(st.MotionStart) >= d.cfg.SloshIgnore {
		judge = true
	}
	if judge != st.Judging {
		// The filter window never mixes sloshing readings with settled ones.
		st.Judging = judge
		st.Raw, st.RawTimes = st.Raw[:0], st.RawTimes[:0]
	}
	if r.HasLevel && moving && st.Moving {
		st.DriveRaw = append(st.DriveRaw, r.Level)
		if len(st.DriveRaw) > driveWindow {
			st.DriveRaw = st.DriveRaw[len(st.DriveRaw)-driveWindow:]
		}
	}
	if r.HasLevel {
		if !moving {
			d.learnStep(r.Level)
		}
		st.LastRaw = r.Level
		st.Raw = append(st.Raw, r.Level)
		st.RawTimes = append(st.RawTimes, r.Time.UnixMilli())
		if n := max(d.cfg.MedianWindow, 1); len(st.Raw) > n {
			st.Raw = st.Raw[len(st.Raw)-n:]
			st.RawTimes = st.RawTimes[len(st.RawTimes)-n:]
		}
		st.Smoothed = median(st.Raw)
		st.HasLevel = true
		if judge {
			out = d.judge(r, st.Smoothed, r.Level, moving, out)
		}
	}
	out = d.across(r, out)
	st.LastTime = r.Time
	return out, levelErr
}

// holdMax bounds how long a pending event waits for enough readings of its new level.
const holdMax = time.Hour

// Flush reports a pending event once its merge window has passed by now (device time
// of the newest record), its new level has 2×StableReadings readings for an accurate
// volume and is not drifting on in the event's direction (see drifting), or at the
// latest an hour after it ended. A vehicle that stops reporting keeps
// its event pending until the next record or until the vehicle moves.
func (d *Detector) Flush(now time.Time) []Event {
	p := d.st.Pending
	if p == nil {
		return nil
	}
	age := now.Sub(p.End)
	enough := !d.st.PendingOpen || len(d.st.StableRaw) >= 2*d.cfg.StableReadings
	if enough && d.st.PendingOpen && d.drifting(kindDirection(p.Kind)) {
		// The level it ended on keeps moving its way: a slow drain (15 L over an hour
		// stays within a truck's band for a quarter of an hour) is not over, and what
		// follows merges into it instead of being measured, or missed, on its own.
		enough = false
	}
	if age >= d.cfg.MergeGap && enough || age >= holdMax {
		d.st.Pending, d.st.PendingOpen = nil, false
		return []Event{*p}
	}
	return nil
}

// FlushAll reports the pending event whatever its age: the end of a replay.
func (d *Detector) FlushAll() []Event {
	if p := d.st.Pending; p != nil {
		d.st.Pending, d.st.PendingOpen = nil, false
		return []Event{*p}
	}
	return nil
}

// FlushQuiet reports the pending event of a vehicle that has gone quiet, once it ended
// an hour before now (wall clock): the periodic check calls it, records call Flush.
func (d *Detector) FlushQuiet(now time.Time) []Event {
	if p := d.st.Pending; p != nil && now.Sub(p.End) >= holdMax {
		d.st.Pending, d.st.PendingOpen = nil, false
		return []Event{*p}
	}
	return nil
}

// account adds engine, idle and distance time between the previous reading and r.
func (d *Detector) account(r Reading) {
	st := d.st
	if !st.LastTime.IsZero() {
		dt := r.Time.Sub(st.LastTime)
		engine := 0.0
		switch {
		case r.HasHours && st.HasHours && r.EngineHours >= st.LastHours && (r.EngineHours-st.LastHours)*3600 <= dt.Seconds()*1.1+1:
			engine = (r.EngineHours - st.LastHours) * 3600
		case st.LastIgn && dt <= d.cfg.MaxGap:
			engine = dt.Seconds()
		}
		st.EngineSec += engine
		if !st.Moving && r.SpeedKmh < d.cfg.MovingKmh {
			st.IdleSec += engine
		}
		switch {
		case r.HasOdometer && st.HasOdo && r.OdometerM >= st.LastOdoM:
			st.DistanceM += r.OdometerM - st.LastOdoM
		case !r.HasOdometer && r.HasPosition && st.HasLastPos:
			if !d.gpsDistance(r) {
				r.HasPosition = false // an implausible fix: the next is measured from the last good one
			}
		}
	}
	if r.HasIgnition {
		st.LastIgn = r.Ignition
	} else if r.HasHours && st.HasHours {
		st.LastIgn = r.EngineHours > st.LastHours
	}
	if r.HasHours {
		st.LastHours, st.HasHours = r.EngineHours, true
	}
	if r.HasOdometer {
		st.LastOdoM, st.HasOdo = r.OdometerM, true
	}
	if r.HasPosition {
		st.LastLat, st.LastLon, st.HasLastPos = r.Lat, r.Lon, true
		st.LastPosKmh, st.LastPosTime = r.SpeedKmh, r.Time
	}
}

// GPS distance, for trackers without an odometer. Summing the distance between every
// pair of fixes counts a parked receiver's wander (tens of metres every few minutes,
// all day) and every spike twice (out and back): on an independent generator the raw
// sum read 2-4 times the true distance. Two rules:
//   - a leg counts only when the vehicle reported a speed of at least MovingKmh at
//     either end of it: standing still, the fixes move but the vehicle does not;
//   - a fix further from the last good one than the reported speed allows (half as
//     much again, plus 5 m/s and 50 m for receiver error) is a spike: it is skipped,
//     and the next fix is measured from the last good one. After gpsMaxSkips skipped
//     fixes in a row the vehicle really is elsewhere (towed, or moved while the tracker
//     slept): the position is taken without counting the distance.
const gpsMaxSkips = 3

// PositionUsable says whether a fix from sats satellites with the given HDOP may be
// used for distance: at least 3 satellites (the fewest a 2-D fix needs) and an HDOP of
// at most 10; fixes from 0-2 satellites, or above that dilution, are typically hundreds
// of metres to kilometres off, yet flagged valid. A tracker that reports neither
// (0 satellites, HDOP 0) is not judged.
func PositionUsable(sats uint32, hdop float64) bool {
	if sats == 0 && hdop == 0 {
		return true
	}
	return sats >= 3 && hdop <= 10
}

// gpsDistance counts the leg to r's fix; it returns false when the fix is skipped.
func (d *Detector) gpsDistance(r Reading) bool {
	st := d.st
	// Measured from the last position, not the last record: in a tunnel the tracker
	// keeps reporting, without a fix.
	dt := r.Time.Sub(st.LastPosTime)
	seg := geo.DistanceM(geo.Point{Lat: st.LastLat, Lon: st.LastLon}, geo.Point{Lat: r.Lat, Lon: r.Lon})
	v := max(r.SpeedKmh, st.LastPosKmh) / 3.6
	if seg > (1.5*v+5)*dt.Seconds()+50 {
		st.GPSSkips++
		if st.GPSSkips < gpsMaxSkips {
			return false
		}
		st.GPSSkips = 0
		return true
	}
	st.GPSSkips = 0
	if r.SpeedKmh >= d.cfg.MovingKmh || st.LastPosKmh >= d.cfg.MovingKmh {
		st.DistanceM += seg
	}
	return true
}

// judge feeds one filtered level into the stable/changing state machine.
func (d *Detector) judge(r Reading, s, raw float64, moving bool, out []Event) []Event {
	st := d.st
	band := d.band()
	switch st.Phase {
	case phaseNone:
		// A stable level needs two agreeing raw readings: early in a stop the filter
		// window is short, so a spike would otherwise become the reference level.
		n := len(st.Raw)
		if n < 2 || math.Abs(st.Raw[n-1]-st.Raw[n-2]) > band {
			break
		}
		level := (st.Raw[n-1] + st.Raw[n-2]) / 2
		if st.HasPreStop && n >= 3 {
			// The stop's first readings disagreed: the level was already moving. The level
			// the vehicle arrived with is then the reference for a refuel (the pump started
			// at once). A stop whose first two readings agree never uses it: the median of
			// sloshing readings is too rough to judge anything smaller than a refuel.
			endAt := time.UnixMilli(st.RawTimes[n-2]).UTC()
			out = d.conclude(change{before: st.PreStop, start: st.PreStopTime, startEng: st.PreStopEng, lat: r.Lat, lon: r.Lon, hasPos: r.HasPosition}, level, endAt, KindRefuel, out)
			if p := st.Pending; p != nil && p.Kind == KindRefuel && p.Start.Equal(st.PreStopTime) {
				// Its level before was read on the road, its level after standing: a slope
				// offset and road slosh lie between them. The departure reference, read on
				// the road too, measures it (see judgeAcross).
				p.unsettled = true
			}
			st.HasPreStop = false
		}
		d.startStable(r, []float64{st.Raw[n-2], st.Raw[n-1]}, []float64{st.Raw[n-2], st.Raw[n-1]}, []int64{st.RawTimes[n-2], st.RawTimes[n-1]})
	case phaseStable:
		level := median(st.Stable)
		if math.Abs(s-level) <= band {
			// The reference is anchored on the first readings of the level, not a sliding
			// window: a slow drain would drag a sliding median down with it and never leave
			// the band. Idle consumption that drifts out of the band ends the level as a
			// change the consumption explains, which is no event.
			if len(st.Stable) < maxStableWindow {
				st.Stable = append(st.Stable, s)
			}
			st.StableRaw = append(st.StableRaw, raw)
			st.StableRawT = append(st.StableRawT, r.Time.UnixMilli())
			if len(st.StableRaw) > maxStableWindow {
				st.StableRaw = st.StableRaw[len(st.StableRaw)-maxStableWindow:]
				st.StableRawT = st.StableRawT[len(st.StableRawT)-maxStableWindow:]
			}
			st.StableTime = r.Time
			st.StableEng = st.EngineSec
			if r.HasPosition {
				st.StableLat, st.StableLon, st.StablePos = r.Lat, r.Lon, true
			}
			// Refine the pending event's "after" level while it is still open: the more
			// readings of the new level, the better its volume.
			if p := st.Pending; p != nil && st.PendingOpen {
				d.refine(p)
			}
			break
		}
		st.Phase = phaseChanging
		st.ChangeMoved = moving
		st.ChangeVals = append(st.ChangeVals[:0], s)
		st.ChangeRaw = st.ChangeRaw[:0]
		st.ChangeTimes = st.ChangeTimes[:0]
		// The filter notices a step up to MedianWindow/2 readings late: the newest raw
		// readings taken as stable that lie outside the band already belong to the change.
		// They move to it, and the change starts before them.
		lag := 0
		for n := len(st.StableRaw); lag < d.cfg.MedianWindow/2 && n-lag > 1 && math.Abs(st.StableRaw[n-1-lag]-level) > band; lag++ {
		}
		// A change also starts inside the band: on a large tank the band is litres wide,
		// and a drain's first litres (or a damped sensor's first response) are read as
		// the stable level. The newest readings already a third of the band out on the
		// change's side belong to the change too, so the level before is not dragged
		// toward the level after.
		dir := 1.0
		if s < level {
			dir = -1
		}
		for n := len(st.StableRaw); n-lag > 2 && (st.StableRaw[n-1-lag]-level)*dir > band/3; lag++ {
		}
		on := d.onset(raw, r.Time, dir, band)
		if on.ok {
			lag = max(lag, len(st.StableRaw)-1-on.k)
		}
		if lag > 0 {
			n := len(st.StableRaw)
			st.ChangeRaw = append(st.ChangeRaw, st.StableRaw[n-lag:]...)
			st.ChangeTimes = append(st.ChangeTimes, st.StableRawT[n-lag:]...)
			st.StableRaw, st.StableRawT = st.StableRaw[:n-lag], st.StableRawT[:n-lag]
			st.StableTime = time.UnixMilli(st.StableRawT[n-lag-1]).UTC()
			if p := st.Pending; p != nil && st.PendingOpen {
				d.setAfter(p, d.stableLevel())
			}
		}
		if on.ok && on.extrapolate {
			// The level fell from the stop's first stable readings on: the drain began
			// before any of them, as the vehicle parked. Its level before is the fitted
			// line carried back to the first standing reading, not a reading taken
			// part-way down.
			st.OnsetL, st.HasOnset = on.atStand, true
			st.StableTime = st.StandSince
		}
		st.ChangeRaw = append(st.ChangeRaw, raw)
		st.ChangeTimes = append(st.ChangeTimes, r.Time.UnixMilli())
	case phaseChanging:
		st.ChangeMoved = st.ChangeMoved || moving
		st.ChangeVals = append(st.ChangeVals, s)
		st.ChangeRaw = append(st.ChangeRaw, raw)
		st.ChangeTimes = append(st.ChangeTimes, r.Time.UnixMilli())
		if n := 64; len(st.ChangeVals) > n {
			st.ChangeVals = st.ChangeVals[len(st.ChangeVals)-n:]
			st.ChangeRaw = st.ChangeRaw[len(st.ChangeRaw)-n:]
			st.ChangeTimes = st.ChangeTimes[len(st.ChangeTimes)-n:]
		}
		m := max(d.cfg.StableReadings, 2)
		if len(st.ChangeVals) >= m {
			last := st.ChangeVals[len(st.ChangeVals)-m:]
			// Settled: the last readings lie within the band and show no trend (a slow
			// drain stays within the band over a few readings but keeps falling).
			settled := slices.Max(last)-slices.Min(last) <= band && math.Abs(last[len(last)-1]-last[0]) <= band/2
			if settled || r.Time.Sub(st.StableTime) >= d.cfg.MaxChange {
				endAt := time.UnixMilli(st.ChangeTimes[len(st.ChangeTimes)-m]).UTC()
				after := median(st.ChangeRaw[len(st.ChangeRaw)-m:])
				if c := d.stableChange(); !c.moved && after-c.before >= d.cfg.MinRefuelL {
					d.learnLag(st.ChangeRaw, st.ChangeTimes)
				}
				out = d.conclude(d.stableChange(), after, endAt, KindUnspecified, out)
				d.startStable(r, append([]float64(nil), last...), append([]float64(nil), st.ChangeRaw[len(st.ChangeRaw)-m:]...), append([]int64(nil), st.ChangeTimes[len(st.ChangeTimes)-m:]...))
			}
		}
	}
	if st.Phase != phaseChanging {
		// A change in progress may still merge with the pending event.
		out = append(out, d.Flush(r.Time)...)
	}
	return out
}

func (d *Detector) startStable(r Reading, vals, raws []float64, times []int64) {
	st := d.st
	st.FirstOfStop = st.Phase == phaseNone
	st.HasOnset = false
	st.Phase = phaseStable
	st.Stable = vals
	st.StableRaw, st.StableRawT = raws, times
	st.StableTime = r.Time
	st.StableEng = st.EngineSec
	st.StablePos = r.HasPosition
	st.StableLat, st.StableLon = r.Lat, r.Lon
	st.ChangeVals, st.ChangeRaw, st.ChangeTimes = st.ChangeVals[:0], st.ChangeRaw[:0], st.ChangeTimes[:0]
	st.ChangeMoved = false
}

// change is where a level change started from.
type change struct {
	before   float64
	start    time.Time
	startEng float64
	lat, lon float64
	hasPos   bool
	moved    bool
}

func (d *Detector) stableChange() change {
	st := d.st
	return change{
		before: d.stableLevel(), start: st.StableTime, startEng: st.StableEng,
		lat: st.StableLat, lon: st.StableLon, hasPos: st.StablePos, moved: st.ChangeMoved,
	}
}

// conclude judges a finished change from c.before to after (only as kind, when kind is
// set), and returns any event that an unmergeable new one pushes out of Pending.
func (d *Detector) conclude(c change, after float64, endAt time.Time, only Kind, out []Event) []Event {
	st := d.st
	dir := direction(after - c.before)
	if only == KindUnspecified {
		// A change that continues the pending event in its direction soon after it is
		// part of it, whatever its own size: a slow drain with noise can look settled
		// for a few readings half-way.
		drift := d.drifting(dir)
		if p := st.Pending; p != nil && st.PendingOpen && dir == kindDirection(p.Kind) && (c.start.Sub(p.End) <= d.cfg.MergeGap || drift) {
			p.End = endAt
			p.ExpectedL += d.cfg.IdleBurnLph * (st.EngineSec - c.startEng) / 3600
			p.Moving = p.Moving || c.moved
			d.setAfter(p, after)
			st.Carry = nil
			return out
		}
		// Likewise a change that continues a smaller one is judged from where that began.
		if cr := st.Carry; cr != nil && dir == cr.Dir && (c.start.Sub(cr.End) <= d.cfg.MergeGap || drift) {
			c.before, c.start, c.startEng = cr.Before, cr.Start, cr.StartEng
			c.lat, c.lon, c.hasPos = cr.Lat, cr.Lon, cr.HasPos
			c.moved = c.moved || cr.Moved
		}
	}
	st.Carry = nil
	expected := d.cfg.IdleBurnLph * (st.EngineSec - c.startEng) / 3600
	delta := after - c.before
	ev := Event{
		Start: c.start, End: endAt, Before: c.before, After: after, ExpectedL: expected, StartEng: c.startEng,
		Confidence: ConfidenceStable,
		Lat:        c.lat, Lon: c.lon, HasPosition: c.hasPos, Moving: c.moved,
	}
	switch {
	case delta+expected >= d.cfg.MinRefuelL:
		ev.Kind, ev.Litres = KindRefuel, delta+expected
	case -delta-expected >= d.cfg.MinDrainL && -delta-expected >= d.cfg.MinDrainPct/100*d.prof.CapacityL:
		ev.Kind, ev.Litres = KindDrain, -delta-expected
	}
	if only != KindUnspecified && ev.Kind != only {
		return out
	}
	if ev.Kind == KindUnspecified || ev.Moving && (ev.Kind == KindRefuel && !d.cfg.RefuelWhileMoving || ev.Kind == KindDrain && !d.cfg.DrainWhileMoving) {
		// The level moved to a new stable value that is not an event (consumption, a
		// small step): the pending event's level is no longer the current one.
		st.PendingOpen = false
		if only == KindUnspecified {
			st.Carry = &Carry{Dir: direction(delta), End: endAt, Before: c.before, Start: c.start, StartEng: c.startEng, Lat: c.lat, Lon: c.lon, HasPos: c.hasPos, Moved: c.moved}
		}
		return out
	}
	if p := st.Pending; p != nil {
		if p.Kind == ev.Kind && ev.Start.Sub(p.End) <= d.cfg.MergeGap {
			p.End = ev.End
			p.ExpectedL += ev.ExpectedL
			p.Moving = p.Moving || ev.Moving
			d.setAfter(p, ev.After)
			st.PendingOpen = true
			return out
		}
		out = append(out, *p)
	}
	st.Pending = &ev
	st.PendingOpen = true
	return out
}

// drifting reports whether the stable level a change left kept moving in direction dir
// while it was taken as stable: a slow drain (15 L over an hour) falls by a few tenths
// of a litre a minute, slow enough for four readings to look settled half-way and for
// the rest to stay within the band for longer than MergeGap. Its readings' least-squares
// slope over the time they span, less what the engine burnt meanwhile, must move the
// level by a third of the band.
func (d *Detector) drifting(dir int) bool {
	st := d.st
	n := len(st.StableRaw)
	if n < 6 || dir == 0 {
		return false
	}
	t0 := st.StableRawT[0]
	span := float64(st.StableRawT[n-1]-t0) / 1000
	if span < 300 {
		return false
	}
	var sx, sy, sxx, sxy float64
	for i, y := range st.StableRaw {
		x := float64(st.StableRawT[i]-t0) / 1000
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	fn := float64(n)
	den := fn*sxx - sx*sx
	if den <= 0 {
		return false
	}
	slope := (fn*sxy - sx*sy) / den // litres per second
	move := slope * span
	if dir < 0 {
		move = -move - d.cfg.IdleBurnLph*span/3600
	}
	return move >= d.band()/3
}

// Carry is a level change too small to report, remembered for MergeGap in case the
// level keeps going the same way.
type Carry struct {
	Dir      int       `json:"dir"`
	End      time.Time `json:"end"`
	Before   float64   `json:"before"`
	Start    time.Time `json:"start"`
	StartEng float64   `json:"start_eng"`
	Lat      float64   `json:"lat"`
	Lon      float64   `json:"lon"`
	HasPos   bool      `json:"has_pos"`
	Moved    bool      `json:"moved,omitempty"`
}

func direction(delta float64) int {
	switch {
	case delta > 0:
		return 1
	case delta < 0:
		return -1
	}
	return 0
}

func kindDirection(k Kind) int {
	if k == KindRefuel {
		return 1
	}
	return -1
}

// refine measures an open pending event's "after" level from the newest readings of the
// level it ended on (a damped sensor, or the tail of a drain, keeps moving within the
// band for minutes), with the consumption up to now.
func (d *Detector) refine(p *Event) {
	st := d.st
	// Readings three sensor time constants after the change are the settled level; the
	// newest few stand in while there are not yet enough of them.
	lag := d.lagSec()
	if lag <= 0 {
		lag = defaultLagSec / 3
	}
	settled := p.End.Add(time.Duration(3 * lag * float64(time.Second))).UnixMilli()
	var raw []float64
	for i, t := range st.StableRawT {
		if t >= settled {
			raw = append(raw, st.StableRaw[i])
		}
	}
	if len(raw) < refMinReadings {
		raw = st.StableRaw[max(0, len(st.StableRaw)-2*refMinReadings):]
	}
	if len(raw) == 0 {
		return
	}
	if p.StartEng > 0 || st.EngineSec == 0 {
		p.ExpectedL = d.cfg.IdleBurnLph * (st.EngineSec - p.StartEng) / 3600
	}
	d.setAfter(p, levelEstimate(raw))
}

// setAfter moves an event's "after" level and recomputes its volume.
func (d *Detector) setAfter(p *Event, after float64) {
	p.After = after
	switch p.Kind {
	case KindRefuel:
		p.Litres = p.After - p.Before + p.ExpectedL
	case KindDrain:
		p.Litres = p.Before - p.After - p.ExpectedL
	}
}

// endStop runs when motion starts: a change still in progress is judged from the last
// readings before the move, and the pending event is reported.
func (d *Detector) endStop(r Reading, out []Event) []Event {
	st := d.st
	if d.cfg.RefuelWhileMoving || d.cfg.DrainWhileMoving {
		// Levels keep being judged while moving; the drive does not end anything.
		return out
	}
	if st.Phase == phaseStable || st.Phase == phaseChanging {
		// The stop ends before the level settled for StableReadings readings (or before
		// the filter caught up with a step): judge the newest raw readings that agree with
		// the last one, the level the vehicle leaves with.
		band := d.band()
		n := len(st.Raw)
		k := 0
		if n > 0 {
			k = 1
			for k < n && k < d.cfg.StableReadings && math.Abs(st.Raw[n-1-k]-st.Raw[n-1]) <= band {
				k++
			}
		}
		monotonic := false
		if k < 2 && n >= 3 && st.Phase == phaseChanging {
			// The level was still moving when the vehicle left. Readings that keep going
			// one way are a change caught before its end (a pump still running as the
			// last reading was taken, a damped sensor still following): the last reading
			// is the nearest to the end. Otherwise the end is noisy, and the median of
			// the last three readings rejects a spike.
			a, b, c := st.Raw[n-3], st.Raw[n-2], st.Raw[n-1]
			monotonic = a <= b && b <= c || a >= b && b >= c
			k = 3
		}
		if k >= 2 {
			after := median(st.Raw[n-k:])
			if monotonic {
				after = st.Raw[n-1]
			}
			if math.Abs(after-median(st.Stable)) > band {
				endAt := time.UnixMilli(st.RawTimes[n-k]).UTC()
				if c := d.stableChange(); st.Phase == phaseChanging && !c.moved && after-c.before >= d.cfg.MinRefuelL {
					d.learnLag(st.ChangeRaw, st.ChangeTimes)
				}
				out = d.conclude(d.stableChange(), after, endAt, KindUnspecified, out)
			}
		}
	}
	if p := st.Pending; p != nil {
		lag := d.lagSec()
		if lag <= 0 {
			lag = defaultLagSec / 3
		}
		p.unsettled = p.unsettled || st.PendingOpen && st.LastTime.Sub(p.End) < time.Duration(3*lag*float64(time.Second))
		if !p.unsettled && p.Kind == KindDrain && !p.Across && !st.StandSince.IsZero() && p.Start.Sub(st.StandSince) < slopeSettle {
			p.unsettled, p.parked = true, true
		}
		out = append(out, *p)
		st.Pending, st.PendingOpen = nil, false
	}
	st.Phase = phaseNone
	st.HasOnset = false
	st.Stable, st.StableRaw, st.StableRawT = nil, nil, nil
	st.Carry = nil
	st.ChangeVals, st.ChangeRaw, st.ChangeTimes = st.ChangeVals[:0], st.ChangeRaw[:0], st.ChangeTimes[:0]
	return out
}

// Level returns the filtered level and whether any reading has been seen.
func (d *Detector) Level() (float64, bool) { return d.st.Smoothed, d.st.HasLevel }

// stableLevel estimates the current stable level from its raw readings that lie within
// the band of its anchor (a reading the filter had not yet seen leave is not part of it).
func (d *Detector) stableLevel() float64 {
	st := d.st
	if st.HasOnset {
		return st.OnsetL
	}
	anchor, band := median(st.Stable), d.band()
	v := make([]float64, 0, len(st.StableRaw))
	for _, x := range st.StableRaw {
		if math.Abs(x-anchor) <= band {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return anchor
	}
	return levelEstimate(v)
}

// levelEstimate estimates a level from raw readings: a trimmed mean (a fifth of the
// readings dropped at each end), which rejects spikes like a median but uses the
// independent noise of every reading.
func levelEstimate(v []float64) float64 {
	if len(v) < 4 {
		return median(v)
	}
	s := slices.Clone(v)
	slices.Sort(s)
	k := max(1, len(s)/5)
	s = s[k : len(s)-k]
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return sum / float64(len(s))
}

func median(v []float64) float64 {
	switch len(v) {
	case 0:
		return 0
	case 1:
		return v[0]
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Clone returns a deep copy of s: the memory store hands out copies, so a batch that fails
// half-way leaves the stored state untouched.
func (s *State) Clone() State {
	c := *s
	c.Raw = slices.Clone(s.Raw)
	c.RawTimes = slices.Clone(s.RawTimes)
	c.DriveRaw = slices.Clone(s.DriveRaw)
	c.Stable = slices.Clone(s.Stable)
	c.StableRaw = slices.Clone(s.StableRaw)
	c.StableRawT = slices.Clone(s.StableRawT)
	c.ChangeVals = slices.Clone(s.ChangeVals)
	c.ChangeRaw = slices.Clone(s.ChangeRaw)
	c.ChangeTimes = slices.Clone(s.ChangeTimes)
	if s.Pending != nil {
		p := *s.Pending
		c.Pending = &p
	}
	if s.Carry != nil {
		cr := *s.Carry
		c.Carry = &cr
	}
	c.DriveBuf = slices.Clone(s.DriveBuf)
	c.LagSamples = slices.Clone(s.LagSamples)
	if s.Across != nil {
		a := *s.Across
		if a.Held != nil {
			h := *a.Held
			a.Held = &h
		}
		c.Across = &a
	}
	return c
}

// onsetFit is where a change began among the readings of the stable level it leaves.
type onsetFit struct {
	ok          bool
	k           int     // index in StableRaw of the last reading before the change
	extrapolate bool    // the change began before the stable level's first reading
	atStand     float64 // then: the level carried back to the first standing reading
}

// onset finds where a change began among the readings taken as its stable level: a
// drain of a few litres a minute stays inside a truck's band of several litres for
// minutes, so those readings lie on its line, not on the level before it. The readings
// of the level and the one that left the band are fitted with a hinge, flat up to one
// of them and straight after it (least squares over every candidate hinge); the
// straight part must go the change's way by at least a third of the band. A drain the
// fit finds already under way at the stop's first stable reading began as the vehicle
// parked: its level before is the line carried back to the first standing reading.
func (d *Detector) onset(raw float64, t time.Time, dir, band float64) onsetFit {
	st := d.st
	n := len(st.StableRaw)
	if n < 3 || dir > 0 {
		return onsetFit{}
	}
	t0 := st.StableRawT[0]
	xs := make([]float64, n+1)
	ys := make([]float64, n+1)
	for i := range n {
		xs[i], ys[i] = float64(st.StableRawT[i]-t0)/1000, st.StableRaw[i]
	}
	xs[n], ys[n] = float64(t.UnixMilli()-t0)/1000, raw
	best, bestK, bestA, bestR := math.Inf(1), -1, 0.0, 0.0
	// The hinge at reading k: y = a for x <= xs[k], a + r(x-xs[k]) after. At least two
	// readings (the leaving one included) on the straight part.
	for k := n - 2; k >= 0; k-- {
		var sx, sy, sxx, sxy float64
		for i := range n + 1 {
			x := math.Max(0, xs[i]-xs[k])
			sx, sy, sxx, sxy = sx+x, sy+ys[i], sxx+x*x, sxy+x*ys[i]
		}
		m := float64(n + 1)
		den := m*sxx - sx*sx
		if den <= 0 {
			continue
		}
		rr := (m*sxy - sx*sy) / den
		a := (sy - rr*sx) / m
		if rr*dir <= 0 {
			continue
		}
		sse := 0.0
		for i := range n + 1 {
			e := ys[i] - a - rr*math.Max(0, xs[i]-xs[k])
			sse += e * e
		}
		// Ties go to the later hinge: readings move to the change only on evidence.
		if sse < best*0.999 {
			best, bestK, bestA, bestR = sse, k, a, rr
		}
	}
	if bestK < 0 || bestK == n-1 {
		return onsetFit{}
	}
	// The straight part inside the stable readings must move the level by a third of
	// the band: less is noise, and the readings stay with the level.
	if (bestR*(xs[n-1]-xs[bestK]))*dir < band/3 {
		return onsetFit{}
	}
	f := onsetFit{ok: true, k: bestK}
	if dir < 0 && bestK == 0 && st.FirstOfStop && !st.StandSince.IsZero() && st.StandSince.UnixMilli() <= t0 {
		back := float64(t0-st.StandSince.UnixMilli()) / 1000
		f.extrapolate, f.atStand = true, bestA-bestR*back
	}
	return f
}

// settle is how long after the last moving reading standing readings are judged:
// SettleAfterStop for the fuel to stop sloshing, and for a damped sensor SettleLags
// time constants more, since it shows the road's slosh for that long after the fuel
// has come to rest.
func (d *Detector) settle() time.Duration {
	return d.cfg.SettleAfterStop + time.Duration(settleLags*d.lagSec()*float64(time.Second))
}
