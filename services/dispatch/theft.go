package dispatch

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// VehicleState is what theft detection and the command gate remember about a vehicle.
// It is stored after every batch, so detection continues across restarts mid-incident.
type VehicleState struct {
	Vehicle        string
	LastDeviceTime time.Time // newest record applied to the state machine
	LastReceived   time.Time // stream time of the newest record (server clock): online-ness
	SpeedKmh       float64   // speed of the newest valid fix: the immobiliser's gate

	HasFix           bool
	FixLat, FixLon   float64
	FixTime          time.Time
	FixMoving        bool
	GNSSLost         bool // records without a usable fix since the last fix
	GNSSLostMoving   bool // ... and the vehicle was moving when it was lost
	IgnitionKnown    bool
	Ignition         bool
	IgnitionOffSince time.Time
	ParkSet          bool // the parked position is known (first fix after ignition off)
	ParkLat, ParkLon float64
	StillSince       time.Time // first fix of the current run of non-moving fixes

	TowActive        bool // a tow incident is open: no new server-side tow alert
	AfterHoursActive bool // a movement-outside-hours incident is open
}

// DetectConfig holds the theft-detection thresholds; see DefaultConfig and docs/dispatch.md.
type DetectConfig struct {
	// MovingKmh: a fix faster than this counts as moving (after-hours, jamming, close rules).
	MovingKmh float64
	// Towing: ignition off for at least TowArmAfter, then a fix farther than TowDistanceM
	// from where the vehicle parked, or faster than TowSpeedKmh.
	TowArmAfter  time.Duration
	TowDistanceM float64
	TowSpeedKmh  float64
	// IncidentCloseAfter: a tow or after-hours incident closes when the vehicle has stood
	// still this long (or the ignition comes on, or the allowed hours begin); the next
	// movement is a new incident.
	IncidentCloseAfter time.Duration
	// Jamming pattern: the fix is lost while moving, and comes back at least JamMinLoss
	// later at least JamJumpM away.
	JamMinLoss time.Duration
	JamJumpM   float64
	// Schedules of allowed hours, by vehicle id or by group name; Groups maps a vehicle to
	// its group. A vehicle's own schedule wins over its group's. No schedule: no rule.
	Schedules map[string]Schedule
	Groups    map[string]string
}

// Detector turns records into theft alerts. It is pure: state lives in VehicleState.
type Detector struct {
	cfg   DetectConfig
	sched map[string]*compiledSchedule
}

// NewDetector checks cfg (schedules, time zones) and returns a detector.
func NewDetector(cfg DetectConfig) (*Detector, error) {
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
	if g, ok := d.cfg.Groups[vehicle]; ok {
		return d.sched[g]
	}
	return nil
}

// alarmSeverity: every theft or safety alarm is critical; a low backup battery is not.
func alarmSeverity(k telemetry.AlarmKind) Severity {
	if k == telemetry.AlarmLowBattery {
		return SeverityWarning
	}
	return SeverityCritical
}

// IncidentKey is the key occurrences of kind on vehicle merge under, for the kinds that
// have one incident per vehicle at a time.
func IncidentKey(kind, vehicle string) string { return kind + ":" + vehicle }

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

// Apply feeds one record to the vehicle's state and returns the alerts it raises. Device
// alarms are raised whatever the position quality or record order; the server-side rules
// only see records newer than the last one applied, and only fixes that pass
// CheckPosition. Applying the same record twice raises the same alerts with the same
// cause ids, which the store ignores the second time.
func (d *Detector) Apply(st *VehicleState, r *telemetry.Record) []Alert {
	var out []Alert
	posErr := r.CheckPosition()
	hasFix := posErr == nil
	for i, k := range r.Alarms {
		if !k.Valid() || slicesIndex(r.Alarms[:i], k) >= 0 {
			continue
		}
		out = append(out, d.newAlert(r, k.String(), alarmSeverity(k), SourceDevice,
			recordCause("dev-"+k.String(), r), "device alarm: "+strings.ReplaceAll(k.String(), "_", " "), hasFix))
	}
	if r.ReceivedTime.After(st.LastReceived) {
		st.LastReceived = r.ReceivedTime
	}
	st.Vehicle = r.VehicleID
	if !st.LastDeviceTime.IsZero() && !r.DeviceTime.After(st.LastDeviceTime) {
		return out // older than what the state has seen: a backlog or a redelivery
	}
	st.LastDeviceTime = r.DeviceTime

	if r.Has(telemetry.HasIgnition) {
		switch {
		case r.Ignition:
			st.TowActive, st.ParkSet = false, false
			st.IgnitionOffSince = time.Time{}
		case !st.IgnitionKnown || st.Ignition:
			st.ParkSet, st.TowActive = false, false
			st.IgnitionOffSince = r.DeviceTime
		}
		st.IgnitionKnown, st.Ignition = true, r.Ignition
	}

	if !hasFix {
		// No usable position (no fix, NaN, out of range, (0,0)): the fix is lost.
		if st.HasFix && !st.GNSSLost {
			st.GNSSLost, st.GNSSLostMoving = true, st.FixMoving
		}
		return out
	}

	here := geo.Point{Lat: r.Lat, Lon: r.Lon}
	moving := r.SpeedKmh > d.cfg.MovingKmh

	// Jamming pattern: the fix vanished while moving and reappears far away, long after.
	if st.GNSSLost {
		gap := r.DeviceTime.Sub(st.FixTime)
		jump := geo.DistanceM(geo.Point{Lat: st.FixLat, Lon: st.FixLon}, here)
		if st.GNSSLostMoving && gap >= d.cfg.JamMinLoss && jump >= d.cfg.JamJumpM {
			a := d.newAlert(r, KindGNSSJamming, SeverityCritical, SourceDispatch, recordCause("jam", r),
				fmt.Sprintf("GNSS lost while moving for %s, reappeared %.0f m away", gap.Round(time.Second), jump), true)
			a.Attributes = map[string]string{"gap_s": strconv.FormatFloat(gap.Seconds(), 'f', 0, 64), "jump_m": strconv.FormatFloat(jump, 'f', 0, 64)}
			out = append(out, a)
		}
		st.GNSSLost, st.GNSSLostMoving = false, false
	}

	// Towing: parked with ignition off (armed after TowArmAfter), then moved or moving.
	if st.IgnitionKnown && !st.Ignition {
		armed := r.DeviceTime.Sub(st.IgnitionOffSince) >= d.cfg.TowArmAfter
		if !st.ParkSet || (!armed && !st.TowActive) {
			// Until armed, follow the vehicle into its parking space.
			st.ParkSet, st.ParkLat, st.ParkLon = true, r.Lat, r.Lon
		} else if armed && !st.TowActive {
			dist := geo.DistanceM(geo.Point{Lat: st.ParkLat, Lon: st.ParkLon}, here)
			if dist > d.cfg.TowDistanceM || r.SpeedKmh > d.cfg.TowSpeedKmh {
				st.TowActive = true
				a := d.newAlert(r, KindTow, SeverityCritical, SourceDispatch, recordCause("tow", r),
					fmt.Sprintf("ignition off and moving: %.0f m from the parked position at %.0f km/h", dist, r.SpeedKmh), true)
				a.Attributes = map[string]string{"distance_m": strconv.FormatFloat(dist, 'f', 0, 64)}
				out = append(out, a)
			}
		}
	}

	// Movement outside the allowed hours.
	if cs := d.schedule(r.VehicleID); cs != nil {
		allowed := cs.allowed(r.DeviceTime)
		switch {
		case allowed:
			st.AfterHoursActive = false
		case moving && !st.AfterHoursActive:
			st.AfterHoursActive = true
			out = append(out, d.newAlert(r, KindMovementOutsideHours, SeverityCritical, SourceDispatch,
				recordCause("hours", r), fmt.Sprintf("moving at %.0f km/h outside the allowed hours", r.SpeedKmh), true))
		}
	}

	// Close rules: standing still long enough ends the open incidents.
	if moving {
		st.StillSince = time.Time{}
	} else {
		if st.StillSince.IsZero() {
			st.StillSince = r.DeviceTime
		}
		if r.DeviceTime.Sub(st.StillSince) >= d.cfg.IncidentCloseAfter {
			if st.TowActive {
				st.TowActive = false
				st.ParkSet, st.ParkLat, st.ParkLon = true, r.Lat, r.Lon // re-arm where it now stands
			}
			st.AfterHoursActive = false
		}
	}

	st.HasFix, st.FixLat, st.FixLon, st.FixTime, st.FixMoving = true, r.Lat, r.Lon, r.DeviceTime, moving
	st.SpeedKmh = r.SpeedKmh
	return out
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
)

// FuelMinConfidence: a fuel drain reported with a lower confidence (the maintenance
// service's "confidence" attribute) is a warning marked unconfirmed instead of a critical
// fuel-theft alarm. It matches the fuel detector's DefaultMinConfidence. Every drain is
// its own alert, so the alerts and the fuel report agree event for event.
const FuelMinConfidence = 0.5

type eventRule struct {
	kind     string
	severity Severity
	keyAttr  string // attribute that identifies the incident besides kind and vehicle; "" = one per vehicle; "-" = every event is its own
	message  string
}

var eventRules = map[[2]string]eventRule{
	{"geofence", "enter"}:             {"geofence_enter", SeverityInfo, "-", "entered zone"},
	{"geofence", "exit"}:              {"geofence_exit", SeverityInfo, "-", "left zone"},
	{"geofence", "dwell"}:             {"geofence_dwell", SeverityInfo, "-", "dwelling in zone"},
	{"geofence", "crossed"}:           {"geofence_crossed", SeverityInfo, "-", "crossed zone"},
	{"geofence", "overspeed_in_zone"}: {"overspeed_in_zone", SeverityWarning, "zone_id", "overspeed in zone"},
	{"maintenance", "fuel_drain"}:     {KindFuelTheft, SeverityCritical, "-", "fuel drained"},
	{"maintenance", "refuel"}:         {"refuel", SeverityInfo, "-", "refuelled"},
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

// AlertFromEvent maps a service event to the feed. Exits from a must-stay-inside zone
// become zone_exit theft alerts; fuel drains become fuel_theft; offline status opens an
// offline alert and the return online resolves it. Events of kinds the feed does not
// show are ignored.
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
	switch {
	case e.Source == "tracking" && e.Kind == "status_changed":
		a.Kind, a.Severity, a.IncidentKey = KindOffline, SeverityWarning, IncidentKey(KindOffline, e.Vehicle)
		if e.Attributes["status"] == "offline" {
			a.Message = "vehicle offline"
			return a, EventRaise
		}
		if e.Attributes["previous"] == "offline" {
			return a, EventResolve
		}
		return a, EventIgnore
	case e.Source == "geofence" && e.Kind == "exit" && e.Attributes["must_stay_inside"] == "true":
		a.Kind, a.Severity = KindZoneExit, SeverityCritical
		a.IncidentKey = KindZoneExit + ":" + e.Vehicle + ":" + keyPart(e.Attributes["zone_id"])
		a.Message = "left must-stay-inside zone " + zone
		return a, EventRaise
	}
	rule, ok := eventRules[[2]string{e.Source, e.Kind}]
	if !ok {
		return a, EventIgnore
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
	if c, err := strconv.ParseFloat(e.Attributes["confidence"], 64); err == nil && a.Kind == KindFuelTheft && c < FuelMinConfidence {
		// The readings suggest a drain but cannot confirm it: the dispatcher sees it,
		// marked so, without a critical alarm.
		a.Severity = SeverityWarning
		a.Message = "possible fuel drain (unconfirmed, confidence " + e.Attributes["confidence"] + ")"
	}
	if l := e.Attributes["litres"]; l != "" {
		a.Message += ": " + l + " l"
	}
	return a, EventRaise
}
