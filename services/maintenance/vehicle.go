package maintenance

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// VehicleState is what the service remembers of one vehicle between batches: the last
// values, fault codes, alert episodes, plan tracks and the fuel detector. It is stored
// as one value so a batch's changes land together.
type VehicleState struct {
	VehicleID string    `json:"vehicle_id"`
	LastTime  time.Time `json:"last_time"` // device time of the newest telemetry record applied
	LastSeq   uint64    `json:"last_seq"`
	// SideTime is the device time of the newest alarm or diagnostics record applied.
	// Trackers send those at once while they buffer telemetry, so they run on their own
	// clock: an alarm must not make the buffered telemetry before it "late".
	SideTime time.Time `json:"side_time"`
	SideSeq  uint64    `json:"side_seq"`
	// DiagTime is the device time of the newest record whose diagnostics (fault codes,
	// MIL, alert values) were applied, from either clock: older news never overwrites them.
	DiagTime time.Time `json:"diag_time"`
	Records  uint64    `json:"records"`
	// Partition is the telemetry partition the vehicle's records come from: the
	// calendar check of the instance that consumes it owns the vehicle's state.
	Partition    int  `json:"partition"`
	HasPartition bool `json:"has_partition"`

	OdometerM    float64 `json:"odometer_m"`
	HasOdometer  bool    `json:"has_odometer"`
	EngineHours  float64 `json:"engine_hours"`
	HasHours     bool    `json:"has_hours"`
	Ignition     bool    `json:"ignition"`
	HasIgnition  bool    `json:"has_ignition"`
	ExternalV    float64 `json:"external_v"`
	HasExternalV bool    `json:"has_external_v"`
	BatteryV     float64 `json:"battery_v"`
	HasBatteryV  bool    `json:"has_battery_v"`
	CoolantC     float64 `json:"coolant_c"`
	HasCoolant   bool    `json:"has_coolant"`
	RPM          float64 `json:"rpm"`
	HasRPM       bool    `json:"has_rpm"`
	MIL          bool    `json:"mil"`
	HasMIL       bool    `json:"has_mil"`
	Lat          float64 `json:"lat"`
	Lon          float64 `json:"lon"`
	HasPosition  bool    `json:"has_position"`
	SpeedKmh     float64 `json:"speed_kmh"`

	Faults map[string]*FaultCode  `json:"faults,omitempty"`
	Alerts map[string]*AlertState `json:"alerts,omitempty"`
	Plans  map[string]*PlanTrack  `json:"plans,omitempty"`

	Fuel       fuel.State `json:"fuel"`
	LastSample time.Time  `json:"last_sample"`
}

func newVehicleState(id string) *VehicleState {
	return &VehicleState{VehicleID: id}
}

// usage returns the vehicle's counters at its last record.
func (v *VehicleState) usage(now time.Time) Usage {
	return Usage{
		OdometerKm: v.OdometerM / 1000, HasOdometer: v.HasOdometer,
		EngineHours: v.EngineHours, HasHours: v.HasHours, Time: now,
	}
}

// Event is something the service announces on the bus. ID is deterministic: the same
// input raises the same id, so a redelivered batch is deduplicated downstream.
type Event struct {
	ID          string
	Kind        string
	VehicleID   string
	Time        time.Time
	Lat, Lon    float64
	HasPosition bool
	SpeedKmh    float64
	Attrs       map[string]string
}

// Event kinds (fleet.evt.maintenance.<kind>.<vehicle>).
const (
	EventPlanDueSoon   = "plan_due_soon"
	EventPlanOverdue   = "plan_overdue"
	EventDTCNew        = "dtc_new"
	EventMILOn         = "mil_on"
	EventDiagThreshold = "diag_threshold"
	EventRefuel        = "refuel"
	EventFuelDrain     = "fuel_drain"
)

// Reject reasons this package counts (fleetwire_maintenance_rejected_total{reason}).
const (
	RejectLateRecord        = "late_record"
	RejectOdometerBackwards = "odometer_backwards"
	RejectOdometerJump      = "odometer_jump"
	RejectHoursBackwards    = "engine_hours_backwards"
	RejectHoursJump         = "engine_hours_jump"
	RejectFuelOutOfRange    = "fuel_level_out_of_range"
	RejectDTCUnknownFormat  = "dtc_unknown_format"
	RejectDTCInvalid        = "dtc_invalid"
)

// Thresholds of the counter plausibility rules.
const (
	counterTolerance = 0.001 // km or h a counter may step back by rounding
	maxImpliedKmh    = 400   // odometer growth faster than this is a glitch
)

// input is one decoded record, whether it came on the alarm or diag subject (side),
// and whether on the diag subject (a complete fault-code report).
type input struct {
	rec     telemetry.Record
	side    bool
	diag    bool
	part    int // telemetry partition it came from
	hasPart bool
}

// newer reports whether r comes after the clock (time, then sequence).
func newer(r *telemetry.Record, t time.Time, seq uint64) bool {
	return t.IsZero() || r.DeviceTime.After(t) || r.DeviceTime.Equal(t) && r.Sequence > seq
}

// vehicleContext is what processing one vehicle needs besides its state.
type vehicleContext struct {
	plans      []Plan
	latest     map[string]ServiceEntry
	profile    fuel.Profile
	hasProfile bool
}

// result is what processing a vehicle's records produced.
type result struct {
	events     []Event
	fuelEvents []FuelEvent
	samples    []FuelSample
	changed    bool
}

// rejectFunc counts one rejected input.
type rejectFunc func(reason, vehicle string, err error)

// process applies one vehicle's records, in device-time order, to st. Records not newer
// than the last one applied are skipped and counted (late or redelivered).
func (p *processor) process(st *VehicleState, ins []input, vc vehicleContext, reject rejectFunc) result {
	slices.SortStableFunc(ins, func(a, b input) int {
		if c := a.rec.DeviceTime.Compare(b.rec.DeviceTime); c != 0 {
			return c
		}
		switch {
		case a.rec.Sequence < b.rec.Sequence:
			return -1
		case a.rec.Sequence > b.rec.Sequence:
			return 1
		}
		return 0
	})
	var res result
	det := fuel.NewDetector(p.cfg.Fuel, vc.profile, &st.Fuel)
	for i := range ins {
		in := &ins[i]
		r := &in.rec
		if in.hasPart && (!st.HasPartition || st.Partition != in.part) {
			st.Partition, st.HasPartition = in.part, true
			res.changed = true
		}
		if in.side {
			// Alarm and diagnostics records: fault codes, alerts and diagnostic values,
			// on their own clock. They carry no fuel or counter judgement.
			if !newer(r, st.SideTime, st.SideSeq) {
				reject(RejectLateRecord, st.VehicleID, errors.New("alarm or diagnostics record not newer than the last one applied"))
				continue
			}
			res.changed = true
			res.events = p.diagnostics(st, in, reject, res.events)
			st.SideTime, st.SideSeq = r.DeviceTime, r.Sequence
			st.Records++
			continue
		}
		if !newer(r, st.LastTime, st.LastSeq) {
			reject(RejectLateRecord, st.VehicleID, errors.New("record not newer than the last one applied"))
			continue
		}
		res.changed = true
		p.counters(st, r, reject)
		p.lastValues(st, r)
		res.events = p.diagnostics(st, in, reject, res.events)
		res = p.fuel(st, r, det, vc, reject, res)
		res.events = p.planStates(st, r.DeviceTime, vc, res.events)
		st.LastTime, st.LastSeq = r.DeviceTime, r.Sequence
		st.Records++
	}
	// Forget tracks of plans that no longer apply.
	for id := range st.Plans {
		if !slices.ContainsFunc(vc.plans, func(p Plan) bool { return p.ID == id }) {
			delete(st.Plans, id)
			res.changed = true
		}
	}
	return res
}

// processor holds the configuration processing needs.
type processor struct {
	cfg Config
}

// counters applies the counter rules: an odometer or engine-hours value that runs
// backwards, or jumps forward faster than a vehicle can, is ignored (the rest of the
// record is used) and counted.
func (p *processor) counters(st *VehicleState, r *telemetry.Record, reject rejectFunc) {
	dtH := 0.0
	if !st.LastTime.IsZero() {
		dtH = r.DeviceTime.Sub(st.LastTime).Hours()
	}
	if r.Has(telemetry.HasOdometer) && st.HasOdometer {
		d := (r.OdometerM - st.OdometerM) / 1000
		switch {
		case d < -counterTolerance:
			reject(RejectOdometerBackwards, st.VehicleID, errors.New("odometer "+ftoa(r.OdometerM)+" m below "+ftoa(st.OdometerM)+" m"))
			r.Fields &^= telemetry.HasOdometer
		case d > 1 && d > maxImpliedKmh*dtH:
			reject(RejectOdometerJump, st.VehicleID, errors.New("odometer jumped "+ftoa(d)+" km in "+ftoa(dtH)+" h"))
			r.Fields &^= telemetry.HasOdometer
		}
	}
	if r.Has(telemetry.HasEngineHours) && st.HasHours {
		d := r.EngineHours - st.EngineHours
		switch {
		case d < -counterTolerance:
			reject(RejectHoursBackwards, st.VehicleID, errors.New("engine hours "+ftoa(r.EngineHours)+" below "+ftoa(st.EngineHours)))
			r.Fields &^= telemetry.HasEngineHours
		case d > dtH+0.1:
			reject(RejectHoursJump, st.VehicleID, errors.New("engine hours grew "+ftoa(d)+" h in "+ftoa(dtH)+" h"))
			r.Fields &^= telemetry.HasEngineHours
		}
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func (p *processor) lastValues(st *VehicleState, r *telemetry.Record) {
	if r.Has(telemetry.HasOdometer) {
		st.OdometerM, st.HasOdometer = r.OdometerM, true
	}
	if r.Has(telemetry.HasEngineHours) {
		st.EngineHours, st.HasHours = r.EngineHours, true
	}
	if r.Has(telemetry.HasIgnition) {
		st.Ignition, st.HasIgnition = r.Ignition, true
	}
	if r.CheckPosition() == nil {
		st.Lat, st.Lon, st.HasPosition = r.Lat, r.Lon, true
	}
	st.SpeedKmh = r.SpeedKmh
}

// diagnostics applies a record's diagnostic values, fault codes, MIL and alert rules,
// unless a newer record's already were (an alarm or diagnostics record sent ahead of
// buffered telemetry is newer than the telemetry that arrives after it).
func (p *processor) diagnostics(st *VehicleState, in *input, reject rejectFunc, out []Event) []Event {
	r := &in.rec
	if r.DeviceTime.Before(st.DiagTime) {
		return out
	}
	st.DiagTime = r.DeviceTime
	p.diagValues(st, r)
	out = p.faults(st, in, reject, out)
	return p.alerts(st, r, out)
}

// diagValues keeps the newest diagnostic values.
func (p *processor) diagValues(st *VehicleState, r *telemetry.Record) {
	if r.Has(telemetry.HasExternalVoltage) {
		st.ExternalV, st.HasExternalV = r.ExternalVoltage, true
	}
	if r.Has(telemetry.HasBatteryVoltage) {
		st.BatteryV, st.HasBatteryV = r.BatteryVoltage, true
	}
	if r.Has(telemetry.HasCoolantTemp) {
		st.CoolantC, st.HasCoolant = r.CoolantTempC, true
	}
	if r.Has(telemetry.HasRPM) {
		st.RPM, st.HasRPM = r.RPM, true
	}
}

func (p *processor) event(st *VehicleState, kind, key string, t time.Time, attrs map[string]string) Event {
	return Event{
		ID:   "maintenance." + kind + "." + st.VehicleID + "." + key,
		Kind: kind, VehicleID: st.VehicleID, Time: t,
		Lat: st.Lat, Lon: st.Lon, HasPosition: st.HasPosition, SpeedKmh: st.SpeedKmh,
		Attrs: attrs,
	}
}

// faults applies the fault-code rule. A record from the diag subject, or one that lists
// at least one code, is a complete report: listed codes are active, others cleared.
// Other records (a periodic record without codes) leave the codes as they are.
func (p *processor) faults(st *VehicleState, in *input, reject rejectFunc, out []Event) []Event {
	r := &in.rec
	if r.Has(telemetry.HasMIL) {
		if r.MIL && !(st.HasMIL && st.MIL) {
			out = append(out, p.event(st, EventMILOn, strconv.FormatInt(r.DeviceTime.UnixMilli(), 10), r.DeviceTime, nil))
		}
		st.MIL, st.HasMIL = r.MIL, true
	}
	if !in.diag && len(r.FaultCodes) == 0 {
		return out
	}
	codes := make([]string, 0, len(r.FaultCodes))
	for _, raw := range r.FaultCodes {
		c, standard, err := ParseDTC(raw)
		if err != nil {
			reject(RejectDTCInvalid, st.VehicleID, err)
			continue
		}
		if !standard {
			reject(RejectDTCUnknownFormat, st.VehicleID, errors.New("fault code "+strconv.Quote(c)+" kept as sent"))
		}
		codes = append(codes, c)
	}
	if st.Faults == nil {
		st.Faults = map[string]*FaultCode{}
	}
	for _, ch := range applyDTCs(st.Faults, codes, r.DeviceTime) {
		fc := ch.code
		out = append(out, p.event(st, EventDTCNew, fc.Code+"."+strconv.Itoa(fc.Occurrences), r.DeviceTime, map[string]string{
			"code": fc.Code, "description": fc.Description, "severity": fc.Severity.String(),
			"occurrence": strconv.Itoa(fc.Occurrences), "standard_format": strconv.FormatBool(fc.Standard),
		}))
	}
	return out
}

func (p *processor) alerts(st *VehicleState, r *telemetry.Record, out []Event) []Event {
	for _, rule := range p.cfg.Alerts {
		as := st.Alerts[rule.Name]
		if as == nil {
			as = &AlertState{}
		}
		fired := applyAlert(rule, as, r, st.HasIgnition && st.Ignition)
		if as.Since.IsZero() {
			delete(st.Alerts, rule.Name)
		} else {
			if st.Alerts == nil {
				st.Alerts = map[string]*AlertState{}
			}
			st.Alerts[rule.Name] = as
		}
		if fired {
			out = append(out, p.event(st, EventDiagThreshold, rule.Name+"."+strconv.FormatInt(as.Since.UnixMilli(), 10), r.DeviceTime, map[string]string{
				"rule": rule.Name, "signal": rule.Signal, "value": ftoa(as.Value), "threshold": ftoa(rule.Threshold),
				"since": as.Since.UTC().Format(time.RFC3339), "duration_s": ftoa(r.DeviceTime.Sub(as.Since).Seconds()),
			}))
		}
	}
	return out
}

// fuelLevel resolves a record's fuel level in litres: the raw sensor value through the
// calibration table when the vehicle has one and the record carries the value; else the
// device's litres; else its percent times the tank capacity.
func fuelLevel(r *telemetry.Record, vc vehicleContext) (float64, bool) {
	if vc.hasProfile && len(vc.profile.Calibration) > 0 {
		if raw, ok := r.IO[vc.profile.SensorKey]; ok && !math.IsNaN(raw) && !math.IsInf(raw, 0) {
			return vc.profile.Litres(raw), true
		}
	}
	if r.Has(telemetry.HasFuelLitres) {
		return r.FuelLitres, true
	}
	if r.Has(telemetry.HasFuelPercent) && vc.profile.CapacityL > 0 {
		return r.FuelPercent / 100 * vc.profile.CapacityL, true
	}
	return 0, false
}

func (p *processor) fuel(st *VehicleState, r *telemetry.Record, det *fuel.Detector, vc vehicleContext, reject rejectFunc, res result) result {
	rd := fuel.Reading{
		Time: r.DeviceTime, SpeedKmh: r.SpeedKmh,
		Ignition: r.Ignition, HasIgnition: r.Has(telemetry.HasIgnition),
		EngineHours: r.EngineHours, HasHours: r.Has(telemetry.HasEngineHours),
		OdometerM: r.OdometerM, HasOdometer: r.Has(telemetry.HasOdometer),
	}
	if r.CheckPosition() == nil && fuel.PositionUsable(r.Satellites, r.HDOP) {
		rd.Lat, rd.Lon, rd.HasPosition = r.Lat, r.Lon, true
	}
	rd.Level, rd.HasLevel = fuelLevel(r, vc)
	evs, err := det.Add(rd)
	switch {
	case errors.Is(err, fuel.ErrLevelRange):
		reject(RejectFuelOutOfRange, st.VehicleID, err)
	case errors.Is(err, fuel.ErrStale):
		return res // same device time as the last record: counters only
	}
	fes, out := fuelEventsOut(st, evs)
	res.fuelEvents = append(res.fuelEvents, fes...)
	res.events = append(res.events, out...)
	if st.LastSample.IsZero() || r.DeviceTime.Sub(st.LastSample) >= p.cfg.SampleEvery {
		lvl, ok := det.Level()
		res.samples = append(res.samples, FuelSample{
			Time: r.DeviceTime, LevelL: lvl, HasLevel: ok,
			DistanceM: st.Fuel.DistanceM, EngineSec: st.Fuel.EngineSec, IdleSec: st.Fuel.IdleSec,
		})
		st.LastSample = r.DeviceTime
	}
	return res
}

// fuelEventsOut turns detected fuel events into stored events and bus events, with ids
// from the vehicle, the kind and the start of the change.
func fuelEventsOut(st *VehicleState, evs []fuel.Event) ([]FuelEvent, []Event) {
	var (
		stored []FuelEvent
		out    []Event
	)
	for _, e := range evs {
		fe := FuelEvent{VehicleID: st.VehicleID, Event: e}
		fe.ID = "maintenance." + e.Kind.String() + "." + st.VehicleID + "." + strconv.FormatInt(e.Start.UnixMilli(), 10)
		stored = append(stored, fe)
		ev := Event{
			ID: fe.ID, Kind: e.Kind.String(), VehicleID: st.VehicleID, Time: e.End,
			Lat: e.Lat, Lon: e.Lon, HasPosition: e.HasPosition,
			Attrs: map[string]string{
				"litres":   strconv.FormatFloat(e.Litres, 'f', 1, 64),
				"before_l": strconv.FormatFloat(e.Before, 'f', 1, 64),
				"after_l":  strconv.FormatFloat(e.After, 'f', 1, 64),
				"start":    e.Start.UTC().Format(time.RFC3339),
				"end":      e.End.UTC().Format(time.RFC3339),
				// How firmly the readings support the event (0..1); dispatch alerts a
				// drain below its threshold as unconfirmed.
				"confidence": strconv.FormatFloat(e.Confidence, 'f', 2, 64),
			},
		}
		if e.Across {
			ev.Attrs["basis"] = "across_stop"
		}
		out = append(out, ev)
	}
	return stored, out
}

// planStates raises plan_due_soon / plan_overdue when a plan rises above the state
// already announced for the current interval; a recorded service starts a new interval.
func (p *processor) planStates(st *VehicleState, at time.Time, vc vehicleContext, out []Event) []Event {
	if len(vc.plans) == 0 {
		return out
	}
	if st.Plans == nil {
		st.Plans = map[string]*PlanTrack{}
	}
	u := st.usage(at)
	for _, pl := range vc.plans {
		tr := st.Plans[pl.ID]
		if tr == nil {
			tr = &PlanTrack{}
			st.Plans[pl.ID] = tr
		}
		var last *ServiceEntry
		if e, ok := vc.latest[pl.ID]; ok {
			last = &e
		}
		base := baselineFor(pl, tr, last, u)
		s := Evaluate(pl, st.VehicleID, base, u)
		if s.State <= tr.Notified || s.State < StateDueSoon {
			continue
		}
		tr.Notified = s.State
		kind := EventPlanDueSoon
		if s.State == StateOverdue {
			kind = EventPlanOverdue
		}
		attrs := map[string]string{"plan_id": pl.ID, "plan_name": pl.Name, "state": s.State.String(), "cycle": strconv.Itoa(tr.Cycle)}
		if s.HasKm {
			attrs["remaining_km"] = strconv.FormatFloat(s.RemainingKm, 'f', 1, 64)
		}
		if s.HasHours {
			attrs["remaining_engine_hours"] = strconv.FormatFloat(s.RemainingHours, 'f', 1, 64)
		}
		if s.HasDays {
			attrs["remaining_days"] = strconv.FormatFloat(s.RemainingDays, 'f', 1, 64)
		}
		out = append(out, p.event(st, kind, pl.ID+"."+strconv.Itoa(tr.Cycle), at, attrs))
	}
	return out
}

// clone returns a deep copy of v (see fuel.State.Clone for why).
func (v *VehicleState) clone() *VehicleState {
	c := *v
	c.Faults = cloneMap(v.Faults)
	c.Alerts = cloneMap(v.Alerts)
	c.Plans = cloneMap(v.Plans)
	c.Fuel = v.Fuel.Clone()
	return &c
}

// cloneMap copies a map of pointers to flat structs, values included.
func cloneMap[T any](m map[string]*T) map[string]*T {
	if m == nil {
		return nil
	}
	out := make(map[string]*T, len(m))
	for k, p := range m {
		if p == nil {
			out[k] = nil
			continue
		}
		v := *p
		out[k] = &v
	}
	return out
}
