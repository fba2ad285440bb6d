package dispatch

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Incident is one theft incident the server-side rules track on a vehicle: opened once
// when its evidence is confirmed, updated while it lasts, closed by its rule's condition.
type Incident struct {
	Open     bool
	Key      string    // incident key of its alert: kind, vehicle and Start
	Kind     string    // alert kind
	Start    time.Time // device time of the first evidence
	Opened   time.Time // device time it was confirmed (the alert's time)
	Evidence []string  // evidence kinds already reported in its alert
}

// VehicleState is what theft detection and the command gate remember about a vehicle.
// It is stored after every batch, so detection continues across restarts mid-incident.
type VehicleState struct {
	Vehicle        string
	LastDeviceTime time.Time // newest record applied to the state machine
	LastReceived   time.Time // stream time of the newest record (server clock): online-ness
	SpeedKmh       float64   // speed of the newest good fix

	HasFix         bool // a good fix was seen (FixLat, FixLon, FixTime)
	FixLat, FixLon float64
	FixTime        time.Time
	FixMoving      bool // the newest good fix was faster than MovingKmh
	// RecentFixes are the newest valid fixes, newest last (the command gate's evidence).
	RecentFixes []FixSample
	HasMovement bool // the tracker reports its accelerometer
	LastMoving  bool // the newest record showed the vehicle moving (accelerometer or fixes)
	LastGSM     int8 // cellular level of the newest record; -1 unknown

	// GNSS loss: records without a valid fix since LossStart.
	GNSSLost    bool
	LossStart   time.Time
	LossGSM     int8 // cellular level just before the loss; -1 unknown
	LossMinGSM  int8
	LossRecords int
	LossStopped bool // a record during the loss showed the vehicle stopped or the ignition off
	GoodRun     int  // consecutive good fixes with a usable cellular signal (ends jamming)

	IgnitionKnown    bool
	Ignition         bool
	IgnitionOffSince time.Time
	ParkSet          bool // where the vehicle parked is known
	ParkLat, ParkLon float64
	ParkCells        []int64   // serving cells seen while parked and still
	MoveSince        time.Time // first record of the current run of accelerometer movement, ignition off
	LastMove         time.Time // newest record with accelerometer movement
	Displaced        int       // consecutive good fixes beyond TowDistanceM from the parked position
	Fast             int       // consecutive good fixes faster than TowSpeedKmh
	DisplacedSince   time.Time
	CellChanged      bool      // the serving cell left ParkCells during the current movement
	Repark           bool      // a movement ended without an incident: the next still good fix is where it parked
	SupplyLost       bool      // the external supply fell below TowSupplyLowV while parked
	StillSince       time.Time // first record of the current standstill during a tow
	PrevMovingFix    bool      // the previous good fix was moving (after-hours confirmation)
	HoursStill       time.Time // first record of the current standstill outside the hours

	Tow, Jam, Hours Incident
}

// FixSample is one valid fix as the command gate sees it.
type FixSample struct {
	Time     time.Time
	SpeedKmh float64
	Good     bool // enough satellites, low dilution
}

// recentFixes bounds VehicleState.RecentFixes.
const recentFixes = 6

// Thresholds are the theft rules' tunables. DetectConfig holds the defaults; a group of
// vehicles may have its own (DetectConfig.GroupThresholds). docs/dispatch.md gives the
// reason for every default.
type Thresholds struct {
	// MovingKmh: a good fix faster than this counts as moving.
	MovingKmh float64
	// A fix is good with at least MinSatellites and HDOP at most MaxHDOP (PDOP at most
	// MaxPDOP when reported). Other valid fixes are kept for the record but are never
	// evidence of movement: multipath outliers come with few satellites and high HDOP.
	MinSatellites uint32
	MaxHDOP       float64
	MaxPDOP       float64

	// Towing, armed TowArmAfter after the ignition went off.
	TowArmAfter time.Duration
	// Fix evidence: good fixes beyond TowDistanceM from the parked position, or faster
	// than TowSpeedKmh.
	TowDistanceM float64
	TowSpeedKmh  float64
	// Accelerometer evidence: movement with the ignition off for TowMovementFor, plus a
	// serving-cell change or a lost supply; or for TowMovementAlone without more.
	TowMovementFor   time.Duration
	TowMovementAlone time.Duration
	// TowSupplyLowV: an external supply below this is disconnected (a thief's first step).
	TowSupplyLowV float64
	// IncidentCloseAfter: a tow or after-hours incident closes after standing still this
	// long, counted from the later of its opening and its last movement.
	IncidentCloseAfter time.Duration

	// Jamming while moving: GNSS lost on at least two records over JamConfirm, and the
	// cellular level at most JamGSMMax after falling by at least JamGSMDrop since the loss.
	JamConfirm time.Duration
	JamGSMMax  int8
	JamGSMDrop int8
	// JamSilentAfter: a vehicle that lost GNSS while moving and then sent nothing for this
	// long is reported as jammed (a jammer that stays on silences the tracker).
	JamSilentAfter time.Duration
	// JamLongLoss: GNSS lost this long while moving, with the cellular signal fine, is a
	// GNSS-only jammer (longer than any road tunnel); a warning of low confidence.
	JamLongLoss time.Duration
}

// DefaultThresholds returns the documented defaults.
func DefaultThresholds() Thresholds {
	return Thresholds{
		MovingKmh:          5,
		MinSatellites:      5,
		MaxHDOP:            3,
		MaxPDOP:            6,
		TowArmAfter:        60 * time.Second,
		TowDistanceM:       150,
		TowSpeedKmh:        10,
		TowMovementFor:     2 * time.Minute,
		TowMovementAlone:   3 * time.Minute,
		TowSupplyLowV:      6,
		IncidentCloseAfter: 10 * time.Minute,
		JamConfirm:         20 * time.Second,
		JamGSMMax:          1,
		JamGSMDrop:         2,
		JamSilentAfter:     2 * time.Minute,
		JamLongLoss:        20 * time.Minute,
	}
}

func (t *Thresholds) validate() error {
	switch {
	case t.MovingKmh < 0, t.MaxHDOP <= 0, t.MaxPDOP <= 0, t.TowDistanceM <= 0, t.TowSpeedKmh <= 0,
		t.TowArmAfter < 0, t.TowMovementFor <= 0, t.TowMovementAlone < t.TowMovementFor,
		t.IncidentCloseAfter <= 0, t.JamConfirm < 0, t.JamGSMMax < 0, t.JamGSMDrop < 1,
		t.JamSilentAfter <= 0, t.JamLongLoss <= 0:
		return fmt.Errorf("%w: theft thresholds out of range: %+v", ErrInvalid, *t)
	}
	return nil
}

// DetectConfig holds the theft-detection settings; see DefaultConfig and docs/dispatch.md.
type DetectConfig struct {
	Thresholds
	// GroupThresholds replaces the thresholds for the vehicles of a group (Groups).
	GroupThresholds map[string]Thresholds
	// Schedules of allowed hours, by vehicle id or by group name; Groups maps a vehicle to
	// its group. A vehicle's own schedule wins over its group's. No schedule: no rule.
	Schedules map[string]Schedule
	Groups    map[string]string
	// GroupsOf is the vehicle registry's groups (Service.UseRegistry sets it): a vehicle
	// with no entry in Groups uses the first of its registry groups that has a schedule
	// (or thresholds, or a fuel confidence), so the schedules file may name the groups
	// every other service knows instead of listing vehicles.
	GroupsOf func(vehicle string) []string
}

// groupWith returns the group whose setting applies to vehicle: its entry in Groups, else
// the first of its registry groups for which has reports a setting.
func (c *DetectConfig) groupWith(vehicle string, has func(group string) bool) (string, bool) {
	if g, ok := c.Groups[vehicle]; ok {
		return g, true
	}
	if c.GroupsOf != nil {
		for _, g := range c.GroupsOf(vehicle) {
			if has(g) {
				return g, true
			}
		}
	}
	return "", false
}

// Detector turns records into theft alerts. It is pure: state lives in VehicleState.
type Detector struct {
	cfg   DetectConfig
	sched map[string]*compiledSchedule
}

// NewDetector checks cfg (thresholds, schedules, time zones) and returns a detector.
func NewDetector(cfg DetectConfig) (*Detector, error) {
	if err := cfg.Thresholds.validate(); err != nil {
		return nil, err
	}
	for g, t := range cfg.GroupThresholds {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("group %q: %w", g, err)
		}
	}
	d := &Detector{cfg: cfg, sched: map[string]*compiledSchedule{}}
	for name, s := range cfg.Schedules {
		cs, err := compileSchedule(s)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w", name, err)
		}
		d.sched[name] = cs
	}
	return d, nil
}

func (d *Detector) schedule(vehicle string) *compiledSchedule {
	if s, ok := d.sched[vehicle]; ok {
		return s
	}
	if g, ok := d.cfg.groupWith(vehicle, func(g string) bool { return d.sched[g] != nil }); ok {
		return d.sched[g]
	}
	return nil
}

func (d *Detector) thresholds(vehicle string) *Thresholds {
	has := func(g string) bool { _, ok := d.cfg.GroupThresholds[g]; return ok }
	if g, ok := d.cfg.groupWith(vehicle, has); ok {
		if t, ok := d.cfg.GroupThresholds[g]; ok {
			return &t
		}
	}
	return &d.cfg.Thresholds
}

// alarmSeverity: every theft or safety alarm is critical; a low backup battery is not.
func alarmSeverity(k telemetry.AlarmKind) Severity {
	if k == telemetry.AlarmLowBattery {
		return SeverityWarning
	}
	return SeverityCritical
}

// IncidentKey is the key occurrences of kind on vehicle merge under, for the kinds that
// have one incident per vehicle at a time and no lifecycle of their own.
func IncidentKey(kind, vehicle string) string { return kind + ":" + vehicle }

// trackedKey is the key of an incident whose lifecycle the rules track: the same
// incident always has the same key (its first evidence's time), whoever raises it.
func trackedKey(kind, vehicle string, start time.Time) string {
	return kind + ":" + vehicle + ":" + strconv.FormatInt(start.UnixMilli(), 36)
}

func recordCause(prefix string, r *telemetry.Record) string {
	return prefix + ":" + r.VehicleID + ":" + strconv.FormatInt(r.DeviceTime.UnixNano(), 36) + ":" + strconv.FormatUint(r.Sequence, 36)
}

func (d *Detector) newAlert(r *telemetry.Record, kind string, sev Severity, source, cause, msg string, hasFix bool) Alert {
	a := Alert{
		Vehicle: r.VehicleID, Kind: kind, Severity: sev, State: AlertOpen,
		IncidentKey: IncidentKey(kind, r.VehicleID), CauseID: cause, Sources: []string{source},
		Message: msg, FirstTime: r.DeviceTime, LastTime: r.DeviceTime, Occurrences: 1,
	}
	if hasFix {
		a.HasPosition, a.Lat, a.Lon, a.SpeedKmh = true, r.Lat, r.Lon, r.SpeedKmh
	}
	return a
}

// Evidence kinds, as listed on alerts.
const (
	EvDeviceAlarm   = "device_alarm"
	EvFixes         = "fixes"         // good fixes away from where it parked, or fast
	EvAccelerometer = "accelerometer" // the tracker's movement flag
	EvIgnitionOff   = "ignition_off"
	EvCellChange    = "cell_change"
	EvSupplyLost    = "supply_lost"
	EvGNSSLoss      = "gnss_loss"
	EvGSMLoss       = "gsm_loss"
	EvSilence       = "silence"
	EvMoving        = "moving"
	EvLastPosition  = "last_position"
)

// independent evidence classes: confidence counts how many of them agree.
var evidenceClass = map[string]string{
	EvDeviceAlarm: "device", EvFixes: "gnss", EvGNSSLoss: "gnss", EvAccelerometer: "motion",
	EvMoving: "motion", EvCellChange: "cell", EvGSMLoss: "cell", EvSilence: "cell", EvSupplyLost: "supply",
}

// confidenceOf: a device's own alarm is high; otherwise three independent classes of
// evidence are high, two medium, one low.
func confidenceOf(ev []Evidence) Confidence {
	classes := map[string]bool{}
	for _, e := range ev {
		if c, ok := evidenceClass[e.Kind]; ok {
			if c == "device" {
				return ConfidenceHigh
			}
			classes[c] = true
		}
	}
	switch {
	case len(classes) >= 3:
		return ConfidenceHigh
	case len(classes) == 2:
		return ConfidenceMedium
	}
	return ConfidenceLow
}

// incidentAlert builds an occurrence of a tracked incident.
func (d *Detector) incidentAlert(r *telemetry.Record, inc *Incident, cause, msg string, ev []Evidence, hasFix bool) Alert {
	a := d.newAlert(r, inc.Kind, SeverityCritical, SourceDispatch, cause, msg, hasFix)
	a.IncidentKey, a.Tracked, a.Evidence = inc.Key, true, ev
	a.Confidence = confidenceOf(ev)
	if a.Confidence == ConfidenceLow {
		a.Severity = SeverityWarning
	}
	a.Attributes = map[string]string{"incident_start": inc.Start.UTC().Format(time.RFC3339)}
	return a
}

// open starts incident inc and returns its first occurrence.
func (d *Detector) open(inc *Incident, kind, vehicle string, start time.Time, r *telemetry.Record, cause, msg string, ev []Evidence, hasFix bool) Alert {
	*inc = Incident{Open: true, Kind: kind, Key: trackedKey(kind, vehicle, start), Start: start, Opened: r.DeviceTime}
	for _, e := range ev {
		inc.Evidence = appendUnique(inc.Evidence, e.Kind)
	}
	return d.incidentAlert(r, inc, cause, msg, ev, hasFix)
}

// update returns an occurrence when ev holds evidence the incident has not reported yet.
func (d *Detector) update(inc *Incident, r *telemetry.Record, ev []Evidence, hasFix bool, out []Alert) []Alert {
	var fresh []Evidence
	for _, e := range ev {
		if !contains(inc.Evidence, e.Kind) {
			fresh = append(fresh, e)
			inc.Evidence = append(inc.Evidence, e.Kind)
		}
	}
	if len(fresh) == 0 {
		return out
	}
	return append(out, d.incidentAlert(r, inc, recordCause("upd-"+inc.Kind, r), "new evidence", fresh, hasFix))
}

// close ends inc and returns the occurrence that says so.
func (d *Detector) close(inc *Incident, r *telemetry.Record, why string, hasFix bool, out []Alert) []Alert {
	a := d.incidentAlert(r, inc, recordCause("end-"+inc.Kind, r), "incident closed: "+why, nil, hasFix)
	a.Attributes["closed"] = why
	a.Attributes["closed_at"] = r.DeviceTime.UTC().Format(time.RFC3339)
	*inc = Incident{}
	return append(out, a)
}

func appendUnique(ss []string, s string) []string {
	if contains(ss, s) {
		return ss
	}
	return append(ss, s)
}

// CellID returns the serving cell a record reports (Teltonika IO 205, or "cell_id").
func CellID(r *telemetry.Record) (int64, bool) {
	for _, k := range [...]string{"205", "cell_id"} {
		if v, ok := r.IO[k]; ok && v > 0 && v < 1<<53 {
			return int64(v), true
		}
	}
	return 0, false
}

// good reports whether a valid fix has the geometry to be believed.
func (t *Thresholds) good(r *telemetry.Record) bool {
	if r.Satellites != 0 && r.Satellites < t.MinSatellites {
		return false
	}
	if r.HDOP > t.MaxHDOP {
		return false
	}
	if r.Has(telemetry.HasPDOP) && r.PDOP > t.MaxPDOP {
		return false
	}
	return true
}

func ev(kind string, at time.Time, format string, a ...any) Evidence {
	return Evidence{Kind: kind, Time: at, Detail: fmt.Sprintf(format, a...)}
}

// ApplyUntimed takes a record whose device time is outside the record time bounds
// (telemetry.TimeBounds): its clock is broken, so it cannot be placed among the others
// and the detection rules never see it, but a device alarm it carries is real and
// current. Each alarm is raised as of the time the stream stored the record, without the
// record's position (a tracker with a valid fix has the right time); it joins an open
// incident but opens none. The record still shows the tracker is alive.
func (d *Detector) ApplyUntimed(st *VehicleState, r *telemetry.Record) []Alert {
	if st.LastDeviceTime.IsZero() {
		st.LastGSM, st.LossGSM, st.LossMinGSM = -1, -1, -1
	}
	st.Vehicle = r.VehicleID
	if r.ReceivedTime.After(st.LastReceived) {
		st.LastReceived = r.ReceivedTime
	}
	at := *r
	at.DeviceTime = r.ReceivedTime
	var out []Alert
	for i, k := range at.Alarms {
		if !k.Valid() || slicesIndex(at.Alarms[:i], k) >= 0 {
			continue
		}
		out = d.deviceAlarm(st, &at, k, false, false, out)
	}
	return out
}

// Apply feeds one record to the vehicle's state and returns the alerts it raises. Device
// alarms are raised whatever the position quality or record order; the server-side rules
// only see records newer than the last one applied. Applying the same record twice raises
// the same alerts with the same cause ids, which the store ignores the second time.
func (d *Detector) Apply(st *VehicleState, r *telemetry.Record) []Alert {
	var out []Alert
	hasFix := r.CheckPosition() == nil
	newer := st.LastDeviceTime.IsZero() || r.DeviceTime.After(st.LastDeviceTime)
	th := d.thresholds(r.VehicleID)
	if st.LastDeviceTime.IsZero() {
		st.LastGSM, st.LossGSM, st.LossMinGSM = -1, -1, -1
	}
	st.Vehicle = r.VehicleID
	if r.ReceivedTime.After(st.LastReceived) {
		st.LastReceived = r.ReceivedTime
	}
	for i, k := range r.Alarms {
		if !k.Valid() || slicesIndex(r.Alarms[:i], k) >= 0 {
			continue
		}
		out = d.deviceAlarm(st, r, k, newer, hasFix, out)
	}
	if !newer {
		return out // older than what the state has seen: a backlog or a redelivery
	}
	st.LastDeviceTime = r.DeviceTime
	good := hasFix && th.good(r)
	gsm := int8(-1)
	if r.Has(telemetry.HasGSMLevel) {
		gsm = int8(min(r.GSMLevel, 5))
	}
	if r.Has(telemetry.HasMovement) {
		st.HasMovement = true
	}
	moveFlag := r.Has(telemetry.HasMovement) && r.Movement
	cell, hasCell := CellID(r)

	if r.Has(telemetry.HasIgnition) {
		switch {
		case r.Ignition:
			if st.Tow.Open {
				out = d.close(&st.Tow, r, "ignition on", hasFix, out)
			}
			st.ParkSet, st.ParkCells = false, nil
			st.IgnitionOffSince = time.Time{}
			d.resetTow(st)
		case !st.IgnitionKnown || st.Ignition:
			st.IgnitionOffSince = r.DeviceTime
			// Where it parked: the last good fix, refined until the rule is armed.
			st.ParkSet, st.ParkLat, st.ParkLon, st.ParkCells = st.HasFix, st.FixLat, st.FixLon, nil
			d.resetTow(st)
		}
		st.IgnitionKnown, st.Ignition = true, r.Ignition
	}

	// GNSS loss and the cellular signal.
	if !hasFix {
		if !st.GNSSLost {
			st.GNSSLost, st.LossStart, st.LossRecords, st.LossStopped = true, r.DeviceTime, 0, false
			st.LossGSM = st.LastGSM
			if st.LossGSM < 0 {
				st.LossGSM = gsm
			}
			st.LossMinGSM = gsm
		}
		st.LossRecords++
		if gsm >= 0 && (st.LossMinGSM < 0 || gsm < st.LossMinGSM) {
			st.LossMinGSM = gsm
		}
		st.GoodRun = 0
	} else {
		st.GNSSLost = false
	}
	// Moving: the accelerometer says so, or (without one) the ignition is on and the last
	// good fix was moving.
	movingNow := moveFlag || (!r.Has(telemetry.HasMovement) && (!st.IgnitionKnown || st.Ignition) &&
		(good && r.SpeedKmh > th.MovingKmh || !hasFix && st.FixMoving))
	if good {
		movingNow = movingNow || (!st.HasMovement && r.SpeedKmh > th.MovingKmh)
	}

	stopped := !movingNow || (st.IgnitionKnown && !st.Ignition)
	if st.GNSSLost && !hasFixBefore(st, r) && st.LossStopped && !stopped {
		// Moving again after a stop without a fix (leaving an underground car park): the
		// signals where it stood are the baseline, not those from before it parked.
		st.LossStart, st.LossGSM, st.LossMinGSM, st.LossRecords, st.LossStopped = r.DeviceTime, gsm, gsm, 1, false
	} else if st.GNSSLost && stopped {
		st.LossStopped = true
	}
	out = d.jamming(st, th, r, gsm, movingNow, hasFix, good, out)
	out = d.towing(st, th, r, moveFlag, cell, hasCell, hasFix, good, out)
	out = d.afterHours(st, th, r, moveFlag, good, out)

	if gsm >= 0 || !r.Has(telemetry.HasGSMLevel) {
		st.LastGSM = gsm
	}
	st.LastMoving = movingNow
	if hasFix {
		// A new slice each time: the previous one may be shared with a stored copy.
		keep := st.RecentFixes[max(0, len(st.RecentFixes)-recentFixes+1):]
		fs := make([]FixSample, 0, recentFixes)
		st.RecentFixes = append(append(fs, keep...), FixSample{Time: r.DeviceTime, SpeedKmh: r.SpeedKmh, Good: good})
	}
	if good {
		st.HasFix, st.FixLat, st.FixLon, st.FixTime = true, r.Lat, r.Lon, r.DeviceTime
		st.FixMoving = r.SpeedKmh > th.MovingKmh
		st.SpeedKmh = r.SpeedKmh
	}
	return out
}

// deviceAlarm raises a tracker's own alarm. TOW and the jamming alarms join the open tow
// or jamming incident (or open one): the same incident reported by the tracker and by the
// rules is one alert.
func (d *Detector) deviceAlarm(st *VehicleState, r *telemetry.Record, k telemetry.AlarmKind, newer, hasFix bool, out []Alert) []Alert {
	name := k.String()
	a := d.newAlert(r, name, alarmSeverity(k), SourceDevice, recordCause("dev-"+name, r),
		"device alarm: "+strings.ReplaceAll(name, "_", " "), hasFix)
	var inc *Incident
	switch k {
	case telemetry.AlarmTow:
		inc = &st.Tow
	case telemetry.AlarmGNSSJamming, telemetry.AlarmGSMJamming:
		inc = &st.Jam
	}
	if inc == nil {
		return append(out, a)
	}
	e := []Evidence{ev(EvDeviceAlarm, r.DeviceTime, "tracker reported %s", strings.ReplaceAll(name, "_", " "))}
	if !inc.Open {
		if !newer {
			// An alarm from a backlog older than the state: no lifecycle to join.
			a.Evidence, a.Confidence = e, ConfidenceHigh
			return append(out, a)
		}
		*inc = Incident{Open: true, Kind: name, Key: trackedKey(name, r.VehicleID, r.DeviceTime), Start: r.DeviceTime, Opened: r.DeviceTime}
		if inc == &st.Tow {
			d.resetTow(st)
		}
	}
	inc.Evidence = appendUnique(inc.Evidence, EvDeviceAlarm)
	a.Kind, a.IncidentKey, a.Tracked, a.Evidence, a.Confidence = inc.Kind, inc.Key, true, e, ConfidenceHigh
	a.Attributes = map[string]string{"incident_start": inc.Start.UTC().Format(time.RFC3339)}
	if inc.Kind != name {
		a.Attributes["device_alarm"] = name
	}
	return append(out, a)
}

func (d *Detector) resetTow(st *VehicleState) {
	st.MoveSince, st.LastMove, st.Displaced, st.Fast, st.DisplacedSince = time.Time{}, time.Time{}, 0, 0, time.Time{}
	st.CellChanged, st.SupplyLost, st.StillSince, st.Repark = false, false, time.Time{}, false
}

// jamming runs the jamming rules on a newer record.
func (d *Detector) jamming(st *VehicleState, th *Thresholds, r *telemetry.Record, gsm int8, movingNow, hasFix, good bool, out []Alert) []Alert {
	if st.Jam.Open {
		if good && (gsm < 0 || gsm > th.JamGSMMax) {
			st.GoodRun++
		} else if hasFix {
			st.GoodRun = 0
		}
		// Two good fixes with a usable signal end it: one fix proves nothing.
		if st.GoodRun >= 2 && r.DeviceTime.After(st.Jam.Start) {
			st.GoodRun = 0
			return d.close(&st.Jam, r, "GNSS fix and cellular signal back", hasFix, out)
		}
		if st.GNSSLost && gsm >= 0 && st.LossGSM-gsm >= th.JamGSMDrop {
			return d.update(&st.Jam, r, []Evidence{ev(EvGSMLoss, r.DeviceTime, "cellular level %d, was %d", gsm, st.LossGSM)}, hasFix, out)
		}
		return out
	}
	if !st.GNSSLost || !movingNow {
		return out
	}
	lost := r.DeviceTime.Sub(st.LossStart)
	if st.LossRecords >= 2 && lost >= th.JamConfirm && gsm >= 0 && gsm <= th.JamGSMMax && st.LossGSM-gsm >= th.JamGSMDrop {
		e := []Evidence{
			ev(EvGNSSLoss, st.LossStart, "no GNSS fix for %s (%d records)", lost.Round(time.Second), st.LossRecords),
			ev(EvGSMLoss, r.DeviceTime, "cellular level fell from %d to %d", st.LossGSM, gsm),
			ev(EvMoving, r.DeviceTime, "moving (%s)", movingWhy(st, r)),
		}
		if st.HasFix {
			e = append(e, ev(EvLastPosition, st.FixTime, "%.5f,%.5f", st.FixLat, st.FixLon))
		}
		a := d.open(&st.Jam, KindGNSSJamming, r.VehicleID, st.LossStart, r, recordCause("jam", r),
			fmt.Sprintf("jamming: GNSS lost for %s and cellular level down from %d to %d while moving", lost.Round(time.Second), st.LossGSM, gsm), e, false)
		return append(out, d.withLastPosition(st, a))
	}
	if lost >= th.JamLongLoss && !st.LossStopped {
		e := []Evidence{
			ev(EvGNSSLoss, st.LossStart, "no GNSS fix for %s while moving, cellular level %d", lost.Round(time.Second), gsm),
		}
		a := d.open(&st.Jam, KindGNSSJamming, r.VehicleID, st.LossStart, r, recordCause("jamlong", r),
			fmt.Sprintf("possible GNSS jamming: no fix for %s while moving", lost.Round(time.Second)), e, false)
		return append(out, d.withLastPosition(st, a))
	}
	return out
}

// hasFixBefore reports whether the loss began with this very record.
func hasFixBefore(st *VehicleState, r *telemetry.Record) bool {
	return st.LossStart.Equal(r.DeviceTime)
}

func movingWhy(st *VehicleState, r *telemetry.Record) string {
	switch {
	case r.Has(telemetry.HasMovement) && r.Movement:
		return "accelerometer"
	case st.Ignition:
		return "ignition on, last fix moving"
	}
	return "last fix moving"
}

// withLastPosition gives an alert raised without a fix the last known position.
func (d *Detector) withLastPosition(st *VehicleState, a Alert) Alert {
	if !a.HasPosition && st.HasFix {
		a.HasPosition, a.Lat, a.Lon = true, st.FixLat, st.FixLon
		a.Attributes["position"] = "last known, " + st.FixTime.UTC().Format(time.RFC3339)
	}
	return a
}

// SilenceCheck reports whether a vehicle in state st may need Silent: it lost GNSS while
// moving and no jamming incident is open.
func SilenceCheck(st *VehicleState) bool { return st.GNSSLost && st.LastMoving && !st.Jam.Open }

// Silent raises a jamming alert for a vehicle that lost GNSS while moving and then went
// silent for JamSilentAfter (now is the server clock): a jammer that stays on also blocks
// the cellular uplink, and the records it hides may never arrive. The occurrence has the
// incident key the record rules would use for the same loss, so records that do arrive
// later join the same alert. It does not change st; calling it again raises the same
// cause id, which the store ignores.
func (d *Detector) Silent(st *VehicleState, now time.Time) []Alert {
	if !SilenceCheck(st) {
		return nil
	}
	th := d.thresholds(st.Vehicle)
	quiet := now.Sub(st.LastReceived)
	if quiet < th.JamSilentAfter {
		return nil
	}
	at := st.LastDeviceTime.Add(quiet)
	r := telemetry.Record{VehicleID: st.Vehicle, DeviceTime: at}
	e := []Evidence{
		ev(EvGNSSLoss, st.LossStart, "no GNSS fix since %s", st.LossStart.UTC().Format(time.RFC3339)),
		ev(EvSilence, st.LastDeviceTime, "nothing received for %s while moving", quiet.Round(time.Second)),
	}
	if st.LastGSM >= 0 && st.LossGSM >= 0 && st.LossGSM-st.LastGSM >= 1 {
		e = append(e, ev(EvGSMLoss, st.LastDeviceTime, "cellular level fell from %d to %d before the silence", st.LossGSM, st.LastGSM))
	}
	e = append(e, ev(EvMoving, st.LastDeviceTime, "moving when last heard"))
	if st.HasFix {
		e = append(e, ev(EvLastPosition, st.FixTime, "%.5f,%.5f", st.FixLat, st.FixLon))
	}
	inc := Incident{}
	cause := "silent:" + st.Vehicle + ":" + strconv.FormatInt(st.LossStart.UnixNano(), 36)
	a := d.open(&inc, KindGNSSJamming, st.Vehicle, st.LossStart, &r, cause,
		fmt.Sprintf("jamming suspected: GNSS lost while moving, then silent for %s", quiet.Round(time.Second)), e, false)
	return []Alert{d.withLastPosition(st, a)}
}

// towing runs the tow rules on a newer record.
func (d *Detector) towing(st *VehicleState, th *Thresholds, r *telemetry.Record, moveFlag bool, cell int64, hasCell, hasFix, good bool, out []Alert) []Alert {
	if !st.IgnitionKnown || st.Ignition {
		return out
	}
	armed := r.DeviceTime.Sub(st.IgnitionOffSince) >= th.TowArmAfter
	if !armed || (!st.ParkSet && good) {
		// Until armed, follow the vehicle into its parking space (GPS drift and the last
		// metres after ignition off are not towing).
		if good {
			st.ParkSet, st.ParkLat, st.ParkLon = true, r.Lat, r.Lon
		}
		if hasCell {
			st.ParkCells = rememberCell(st.ParkCells, cell)
		}
		if !armed {
			return out
		}
	}
	if moveFlag {
		if st.MoveSince.IsZero() {
			st.MoveSince = r.DeviceTime
		}
		st.LastMove = r.DeviceTime
		st.StillSince = time.Time{}
	} else if r.Has(telemetry.HasMovement) {
		if !st.MoveSince.IsZero() && !st.Tow.Open {
			// A movement that ended without being a tow (moved in the car park, pushed by
			// a valet): the vehicle is parked where it now stands.
			st.Repark = true
		}
		st.MoveSince = time.Time{}
	}
	if st.Repark && good && !moveFlag && !st.Tow.Open {
		st.ParkSet, st.ParkLat, st.ParkLon, st.Repark = true, r.Lat, r.Lon, false
		st.Displaced, st.Fast, st.DisplacedSince, st.CellChanged = 0, 0, time.Time{}, false
		if hasCell {
			st.ParkCells = rememberCell(st.ParkCells, cell)
		}
	}
	dist := 0.0
	if good && st.ParkSet {
		dist = geo.DistanceM(geo.Point{Lat: st.ParkLat, Lon: st.ParkLon}, geo.Point{Lat: r.Lat, Lon: r.Lon})
		if dist > th.TowDistanceM {
			if st.Displaced == 0 {
				st.DisplacedSince = r.DeviceTime
			}
			st.Displaced++
		} else {
			st.Displaced = 0
		}
		if r.SpeedKmh > th.TowSpeedKmh {
			st.Fast++
		} else {
			st.Fast = 0
		}
	}
	moving := moveFlag || (good && (dist > th.TowDistanceM || r.SpeedKmh > th.MovingKmh))
	if hasCell {
		if moving || !st.MoveSince.IsZero() {
			if len(st.ParkCells) > 0 && !containsCell(st.ParkCells, cell) {
				st.CellChanged = true
			}
		} else if !st.Tow.Open {
			st.ParkCells = rememberCell(st.ParkCells, cell)
		}
	}
	supplyLost := r.Has(telemetry.HasExternalVoltage) && r.ExternalVoltage < th.TowSupplyLowV || slicesIndex(r.Alarms, telemetry.AlarmPowerCut) >= 0
	if supplyLost {
		st.SupplyLost = true
	}

	var e []Evidence
	moveRun := time.Duration(0)
	if !st.MoveSince.IsZero() {
		moveRun = r.DeviceTime.Sub(st.MoveSince)
		e = append(e, ev(EvAccelerometer, st.MoveSince, "moving for %s with the ignition off", moveRun.Round(time.Second)))
	}
	if st.Displaced > 0 || st.Fast > 0 {
		e = append(e, ev(EvFixes, r.DeviceTime, "%d good fixes away, %.0f m from where it parked at %.0f km/h", max(st.Displaced, st.Fast), dist, r.SpeedKmh))
	}
	if st.CellChanged {
		e = append(e, ev(EvCellChange, r.DeviceTime, "serving cell %d, parked under %v", cell, st.ParkCells))
	}
	if st.SupplyLost {
		e = append(e, ev(EvSupplyLost, r.DeviceTime, "external supply %.1f V", r.ExternalVoltage))
	}

	if st.Tow.Open {
		// Standing still: no accelerometer movement, and good fixes slow and where the
		// previous one was.
		moving := moveFlag
		if good {
			moving = moving || r.SpeedKmh > th.MovingKmh ||
				st.HasFix && geo.DistanceM(geo.Point{Lat: st.FixLat, Lon: st.FixLon}, geo.Point{Lat: r.Lat, Lon: r.Lon}) > th.TowDistanceM
		}
		if moving {
			st.StillSince = time.Time{}
		} else if st.StillSince.IsZero() {
			st.StillSince = r.DeviceTime
		}
		from := st.StillSince
		if from.Before(st.Tow.Opened) {
			from = st.Tow.Opened
		}
		if !st.StillSince.IsZero() && r.DeviceTime.Sub(from) >= th.IncidentCloseAfter {
			out = d.close(&st.Tow, r, fmt.Sprintf("stood still for %s", th.IncidentCloseAfter), hasFix, out)
			// Re-armed where it now stands; without a fix now, the next good fix says where.
			st.ParkSet = good
			if good {
				st.ParkLat, st.ParkLon = r.Lat, r.Lon
			}
			st.ParkCells = nil
			if hasCell {
				st.ParkCells = []int64{cell}
			}
			d.resetTow(st)
			return out
		}
		return d.update(&st.Tow, r, e, hasFix, out)
	}

	// Confirmation: two consecutive good fixes, or one plus independent evidence. With an
	// accelerometer, fixes count only while it senses movement (a ferry or a car train
	// moves the vehicle smoothly; a tow truck does not).
	accelOK := !st.HasMovement || (!st.LastMove.IsZero() && r.DeviceTime.Sub(st.LastMove) <= th.TowMovementFor)
	var why string
	switch {
	case (st.Displaced >= 2 || st.Fast >= 2 && st.Displaced >= 1) && accelOK:
		why = fmt.Sprintf("%.0f m from where it parked", dist)
	case st.Displaced >= 1 && accelOK && (moveFlag || st.CellChanged || supplyLost):
		why = fmt.Sprintf("%.0f m from where it parked", dist)
	case moveRun >= th.TowMovementFor && (st.CellChanged || st.SupplyLost):
		why = "moving with the ignition off"
	case moveRun >= th.TowMovementAlone:
		why = "moving with the ignition off"
	default:
		return out
	}
	start := st.MoveSince
	if start.IsZero() || (!st.DisplacedSince.IsZero() && st.DisplacedSince.Before(start)) {
		start = st.DisplacedSince
	}
	if start.IsZero() {
		start = r.DeviceTime
	}
	e = append(e, ev(EvIgnitionOff, st.IgnitionOffSince, "ignition off since %s", st.IgnitionOffSince.UTC().Format(time.RFC3339)))
	if st.ParkSet {
		e = append(e, ev(EvLastPosition, st.IgnitionOffSince, "parked at %.5f,%.5f", st.ParkLat, st.ParkLon))
	}
	st.StillSince = time.Time{}
	a := d.open(&st.Tow, KindTow, r.VehicleID, start, r, recordCause("tow", r), "towing: "+why, e, good)
	a.Attributes["distance_m"] = strconv.FormatFloat(dist, 'f', 0, 64)
	if !good && st.ParkSet {
		a.HasPosition, a.Lat, a.Lon = true, st.ParkLat, st.ParkLon
		a.Attributes["position"] = "parked position"
	}
	return append(out, a)
}

func rememberCell(cells []int64, c int64) []int64 {
	if containsCell(cells, c) {
		return cells
	}
	if len(cells) >= 6 {
		cells = cells[1:]
	}
	return append(cells, c)
}

func containsCell(cells []int64, c int64) bool {
	for _, x := range cells {
		if x == c {
			return true
		}
	}
	return false
}

// afterHours runs the movement-outside-hours rule: two consecutive moving good fixes, or
// one plus the ignition or the accelerometer, outside the vehicle's schedule.
func (d *Detector) afterHours(st *VehicleState, th *Thresholds, r *telemetry.Record, moveFlag, good bool, out []Alert) []Alert {
	cs := d.schedule(r.VehicleID)
	if cs == nil {
		return out
	}
	movingFix := good && r.SpeedKmh > th.MovingKmh
	prevMoving := st.PrevMovingFix
	if good {
		st.PrevMovingFix = movingFix
	}
	allowed := cs.allowed(r.DeviceTime)
	if st.Hours.Open {
		if allowed {
			return d.close(&st.Hours, r, "allowed hours began", good, out)
		}
		if movingFix || moveFlag {
			st.HoursStill = time.Time{}
			return out
		}
		if st.HoursStill.IsZero() {
			st.HoursStill = r.DeviceTime
		}
		from := st.HoursStill
		if from.Before(st.Hours.Opened) {
			from = st.Hours.Opened
		}
		if r.DeviceTime.Sub(from) >= th.IncidentCloseAfter {
			return d.close(&st.Hours, r, fmt.Sprintf("stood still for %s", th.IncidentCloseAfter), good, out)
		}
		return out
	}
	if allowed || !movingFix {
		return out
	}
	var e []Evidence
	switch {
	case prevMoving:
		e = append(e, ev(EvFixes, r.DeviceTime, "two consecutive fixes moving, now %.0f km/h", r.SpeedKmh))
	case moveFlag:
		e = append(e, ev(EvFixes, r.DeviceTime, "moving at %.0f km/h", r.SpeedKmh), ev(EvAccelerometer, r.DeviceTime, "accelerometer senses movement"))
	case st.IgnitionKnown && st.Ignition:
		e = append(e, ev(EvFixes, r.DeviceTime, "moving at %.0f km/h", r.SpeedKmh), ev(EvMoving, r.DeviceTime, "ignition on"))
	default:
		return out
	}
	st.HoursStill = time.Time{}
	a := d.open(&st.Hours, KindMovementOutsideHours, r.VehicleID, r.DeviceTime, r, recordCause("hours", r),
		fmt.Sprintf("moving at %.0f km/h outside the allowed hours", r.SpeedKmh), e, true)
	// Outside the schedule is itself the finding: one class of evidence is enough.
	a.Severity = SeverityCritical
	return append(out, a)
}

func slicesIndex(s []telemetry.AlarmKind, k telemetry.AlarmKind) int {
	for i, x := range s {
		if x == k {
			return i
		}
	}
	return -1
}

// EventIn is a service event as the alert feed sees it (converted from fleet.v1.Event at
// the bus edge).
type EventIn struct {
	ID, Source, Kind, Vehicle string
	Time                      time.Time
	HasPosition               bool
	Lat, Lon, SpeedKmh        float64
	Attributes                map[string]string
}

// EventAction is what an event does to the feed.
type EventAction uint8

const (
	EventIgnore  EventAction = iota
	EventRaise               // raise (or merge into) an alert
	EventResolve             // close the open alert of an incident (vehicle back online)
	EventOnly                // an event whose source asks for no alert; the alert rules may still raise one
)

// FuelMinConfidence is the default of Config.FuelMinConfidence; it matches the fuel
// detector's DefaultMinConfidence. Every drain is its own alert, so the alerts and the
// fuel report agree event for event.
const FuelMinConfidence = 0.5

// GradeFuelAlert marks a fuel alert unconfirmed when its event's confidence is below
// threshold: the readings suggest a drain (or a refuel) but cannot confirm it, so the
// dispatcher sees it marked so; a drain becomes a warning instead of a critical alarm, a
// refuel stays informational. An event without a confidence (older maintenance
// versions) is taken as confirmed.
func GradeFuelAlert(a *Alert, threshold float64) {
	if a.Kind != KindFuelTheft && a.Kind != KindRefuel {
		return
	}
	conf := a.Attributes["confidence"]
	c, err := strconv.ParseFloat(conf, 64)
	if err != nil || c >= threshold {
		return
	}
	if a.Kind == KindRefuel {
		a.Message = "possible refuel (unconfirmed, confidence " + conf + ")"
	} else {
		a.Severity = SeverityWarning
		a.Message = "possible fuel drain (unconfirmed, confidence " + conf + ")"
	}
	if l := a.Attributes["litres"]; l != "" {
		a.Message += ": " + l + " l"
	}
}

type eventRule struct {
	kind     string
	severity Severity
	keyAttr  string // attribute that identifies the incident besides kind and vehicle; "" = one per vehicle; "-" = every event is its own
	message  string
}

var eventRules = map[[2]string]eventRule{
	// Zone events a zone asks alerts for: one incident per vehicle and zone, so repeated
	// visits within the cool-down count as occurrences of one alert.
	{"geofence", "enter"}:             {"geofence_enter", SeverityInfo, "zone_id", "entered zone"},
	{"geofence", "exit"}:              {"geofence_exit", SeverityInfo, "zone_id", "left zone"},
	{"geofence", "dwell"}:             {"geofence_dwell", SeverityInfo, "zone_id", "dwelling in zone"},
	{"geofence", "crossed"}:           {"geofence_crossed", SeverityInfo, "zone_id", "crossed zone"},
	{"geofence", "overspeed_in_zone"}: {"overspeed_in_zone", SeverityWarning, "zone_id", "overspeed in zone"},
	{"maintenance", "fuel_drain"}:     {KindFuelTheft, SeverityCritical, "-", "fuel drained"},
	{"maintenance", "refuel"}:         {KindRefuel, SeverityInfo, "-", "refuelled"},
	{"maintenance", "plan_due_soon"}:  {"plan_due_soon", SeverityInfo, "plan_id", "maintenance due soon"},
	{"maintenance", "plan_overdue"}:   {"plan_overdue", SeverityWarning, "plan_id", "maintenance overdue"},
	{"maintenance", "dtc_new"}:        {"dtc_new", SeverityWarning, "code", "new trouble code"},
	{"maintenance", "mil_on"}:         {"mil_on", SeverityWarning, "", "check-engine lamp on"},
	{"maintenance", "diag_threshold"}: {"diag_threshold", SeverityWarning, "parameter", "diagnostic threshold passed"},
}

// keyPart bounds an attribute used in an incident key (a store key): ids are short, and a
// malformed event must not produce kilobyte keys.
func keyPart(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}

// AlertFromEvent maps a service event to the feed. Dead letters (input a service refused)
// become critical dead_letter alerts; exits from a must-stay-inside zone
// become zone_exit theft alerts; fuel drains become fuel_theft; offline status opens an
// offline alert and the return online resolves it. A zone event raises an alert only
// where its zone's alert policy asks for one (the event's "alert" attribute; without it,
// the default: must-stay-inside exits and overspeed); the others come back as EventOnly,
// which the alert rules may still promote. Events of kinds the feed does not show are
// ignored.
func AlertFromEvent(e *EventIn) (Alert, EventAction) {
	a := Alert{
		Vehicle: e.Vehicle, State: AlertOpen, CauseID: "evt:" + e.ID, Sources: []string{e.Source},
		FirstTime: e.Time, LastTime: e.Time, Occurrences: 1, HasPosition: e.HasPosition,
		Lat: e.Lat, Lon: e.Lon, SpeedKmh: e.SpeedKmh, Attributes: e.Attributes,
	}
	zone := e.Attributes["zone_name"]
	if zone == "" {
		zone = e.Attributes["zone_id"]
	}
	if e.Source == "tracking" && e.Kind == "status_changed" {
		a.Kind, a.Severity, a.IncidentKey = KindOffline, SeverityWarning, IncidentKey(KindOffline, e.Vehicle)
		if e.Attributes["status"] == "offline" {
			a.Message = "vehicle offline"
			return a, EventRaise
		}
		if e.Attributes["previous"] == "offline" {
			return a, EventResolve
		}
		return a, EventIgnore
	}
	if e.Kind == KindDeadLetter {
		// One alert per consumer and vehicle while it keeps failing (occurrences merge);
		// the attributes name the dead letter's stream sequence and the error.
		a.Kind, a.Severity = KindDeadLetter, SeverityCritical
		a.IncidentKey = KindDeadLetter + ":" + e.Vehicle + ":" + keyPart(e.Attributes["durable"])
		a.Message = "input refused by " + e.Source + " and moved to the dead-letter stream"
		if why := e.Attributes["error"]; why != "" {
			a.Message += ": " + keyPart(why)
		}
		return a, EventRaise
	}
	rule, ok := eventRules[[2]string{e.Source, e.Kind}]
	if !ok {
		return a, EventIgnore
	}
	mustStay := e.Source == "geofence" && e.Kind == "exit" && e.Attributes["must_stay_inside"] == "true"
	if mustStay {
		rule = eventRule{KindZoneExit, SeverityCritical, "zone_id", "left must-stay-inside zone"}
	}
	a.Kind, a.Severity, a.Message = rule.kind, rule.severity, rule.message
	switch rule.keyAttr {
	case "-":
		a.IncidentKey = rule.kind + ":" + e.Vehicle + ":" + e.ID
	case "":
		a.IncidentKey = IncidentKey(rule.kind, e.Vehicle)
	default:
		a.IncidentKey = rule.kind + ":" + e.Vehicle + ":" + keyPart(e.Attributes[rule.keyAttr])
	}
	if zone != "" && e.Source == "geofence" {
		a.Message += " " + zone
	}
	if l := e.Attributes["litres"]; l != "" {
		a.Message += ": " + l + " l"
	}
	if e.Source == "geofence" && !zoneAsksAlert(e.Kind, mustStay, e.Attributes) {
		return a, EventOnly
	}
	return a, EventRaise
}

// zoneAsksAlert reads a zone event's alert policy: the geofence service states it in the
// "alert" attribute; an event without it (published before zones had a policy) follows
// the default, which raises alerts only for broken rules.
func zoneAsksAlert(kind string, mustStay bool, attrs map[string]string) bool {
	if v, ok := attrs["alert"]; ok {
		return v == "true"
	}
	return kind == "overspeed_in_zone" || (kind == "exit" && mustStay)
}
