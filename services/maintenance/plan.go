package maintenance

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// PlanState is how close a plan is to being due. The order matters: a higher state is
// more urgent, and an event is raised each time a vehicle's plan rises to a new state.
type PlanState int

const (
	StateUnknown PlanState = iota
	StateOK
	StateDueSoon
	StateOverdue
)

func (s PlanState) String() string {
	switch s {
	case StateOK:
		return "ok"
	case StateDueSoon:
		return "due_soon"
	case StateOverdue:
		return "overdue"
	}
	return "unknown"
}

// DefaultMarginFraction is the due-soon margin of an interval whose plan sets none.
const DefaultMarginFraction = 0.10

// Plan is a recurring service: every EveryKm km, EveryHours engine hours or EveryDays
// days, whichever comes first. A zero interval is not used. It applies to one vehicle
// or to every vehicle of a group.
type Plan struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	VehicleID  string    `json:"vehicle_id,omitempty"`
	GroupID    string    `json:"group_id,omitempty"`
	EveryKm    float64   `json:"every_km,omitempty"`
	EveryHours float64   `json:"every_hours,omitempty"`
	EveryDays  float64   `json:"every_days,omitempty"`
	SoonKm     float64   `json:"soon_km,omitempty"` // due-soon margins; 0 = DefaultMarginFraction of the interval
	SoonHours  float64   `json:"soon_hours,omitempty"`
	SoonDays   float64   `json:"soon_days,omitempty"`
	Items      []string  `json:"items,omitempty"`
	Created    time.Time `json:"created"`
}

// Plan errors.
var (
	ErrNoInterval  = errors.New("plan has no interval")
	ErrPlanTarget  = errors.New("plan must name exactly one of a vehicle and a group")
	ErrBadInterval = errors.New("plan interval or margin must be a finite number >= 0")
	ErrBadID       = errors.New("id has characters outside [A-Za-z0-9_-] or is too long")
)

// Validate checks p.
func (p Plan) Validate() error {
	if (p.VehicleID == "") == (p.GroupID == "") {
		return ErrPlanTarget
	}
	for _, id := range []string{p.VehicleID, p.GroupID} {
		if id != "" && telemetry.ValidVehicleID(id) != nil {
			return fmt.Errorf("%w: %q", ErrBadID, id)
		}
	}
	if p.ID != "" && telemetry.ValidVehicleID(p.ID) != nil {
		return fmt.Errorf("%w: plan %q", ErrBadID, p.ID)
	}
	for _, v := range []float64{p.EveryKm, p.EveryHours, p.EveryDays, p.SoonKm, p.SoonHours, p.SoonDays} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return ErrBadInterval
		}
	}
	if p.EveryKm == 0 && p.EveryHours == 0 && p.EveryDays == 0 {
		return ErrNoInterval
	}
	return nil
}

// AppliesTo reports whether p covers vehicle, a member of groups.
func (p Plan) AppliesTo(vehicle string, groups []string) bool {
	if p.VehicleID != "" {
		return p.VehicleID == vehicle
	}
	for _, g := range groups {
		if g == p.GroupID {
			return true
		}
	}
	return false
}

func margin(set, every float64) float64 {
	if set > 0 {
		return set
	}
	return every * DefaultMarginFraction
}

// Baseline is where a plan's current interval started: the last service under it, or,
// for a vehicle never serviced under it, the plan's creation time and the vehicle's
// counters when the service first saw it under the plan.
type Baseline struct {
	OdometerKm  float64   `json:"odometer_km"`
	HasOdometer bool      `json:"has_odometer"`
	EngineHours float64   `json:"engine_hours"`
	HasHours    bool      `json:"has_hours"`
	Time        time.Time `json:"time"`
}

// Usage is a vehicle's counters now.
type Usage struct {
	OdometerKm  float64
	HasOdometer bool
	EngineHours float64
	HasHours    bool
	Time        time.Time
}

// Status is a plan's state for one vehicle.
type Status struct {
	PlanID, PlanName, VehicleID string
	State                       PlanState

	HasKm, HasHours, HasDays    bool
	RemainingKm, RemainingHours float64
	RemainingDays               float64
	DueKm, DueHours             float64
	DueTime                     time.Time
	LastService                 time.Time
	Urgency                     float64 // smallest remaining fraction of an interval
}

// Evaluate computes p's state for a vehicle with usage u, counting from base. A
// dimension whose counter the vehicle does not report is left out (an hours plan on a
// tracker without engine hours is never due by hours).
func Evaluate(p Plan, vehicle string, base Baseline, u Usage) Status {
	s := Status{PlanID: p.ID, PlanName: p.Name, VehicleID: vehicle, State: StateOK, Urgency: math.Inf(1)}
	worst := func(remaining, soon, every float64) {
		st := StateOK
		switch {
		case remaining <= 0:
			st = StateOverdue
		case remaining <= soon:
			st = StateDueSoon
		}
		s.State = max(s.State, st)
		s.Urgency = math.Min(s.Urgency, remaining/every)
	}
	if p.EveryKm > 0 && u.HasOdometer && base.HasOdometer {
		s.HasKm = true
		s.DueKm = base.OdometerKm + p.EveryKm
		s.RemainingKm = s.DueKm - u.OdometerKm
		worst(s.RemainingKm, margin(p.SoonKm, p.EveryKm), p.EveryKm)
	}
	if p.EveryHours > 0 && u.HasHours && base.HasHours {
		s.HasHours = true
		s.DueHours = base.EngineHours + p.EveryHours
		s.RemainingHours = s.DueHours - u.EngineHours
		worst(s.RemainingHours, margin(p.SoonHours, p.EveryHours), p.EveryHours)
	}
	if p.EveryDays > 0 && !base.Time.IsZero() {
		s.HasDays = true
		s.DueTime = base.Time.Add(time.Duration(p.EveryDays * 24 * float64(time.Hour)))
		s.RemainingDays = s.DueTime.Sub(u.Time).Hours() / 24
		worst(s.RemainingDays, margin(p.SoonDays, p.EveryDays), p.EveryDays)
	}
	if math.IsInf(s.Urgency, 1) {
		s.State = StateUnknown // no counter the plan measures is known yet
		s.Urgency = math.MaxFloat64
	}
	return s
}

// Within reports whether s is due within the horizon on any dimension it measures.
func (s Status) Within(km, hours, days float64) bool {
	return s.HasKm && km > 0 && s.RemainingKm <= km ||
		s.HasHours && hours > 0 && s.RemainingHours <= hours ||
		s.HasDays && days > 0 && s.RemainingDays <= days
}

// PlanTrack is what the service remembers of one plan for one vehicle: the baseline
// of the current interval and the highest state already announced, so each threshold
// raises its event once.
type PlanTrack struct {
	Base      Baseline  `json:"base"`
	ServiceID string    `json:"service_id,omitempty"` // the service the baseline came from
	Cycle     int       `json:"cycle"`                // intervals completed (services recorded)
	Notified  PlanState `json:"notified"`
}

// baselineFor returns the baseline of plan p for a vehicle with usage u, moving tr to a
// new interval when a service not seen before is the latest under the plan.
func baselineFor(p Plan, tr *PlanTrack, last *ServiceEntry, u Usage) Baseline {
	if last != nil && last.ID != tr.ServiceID {
		tr.ServiceID = last.ID
		tr.Base = Baseline{
			OdometerKm: last.OdometerKm, HasOdometer: last.HasOdometer,
			EngineHours: last.EngineHours, HasHours: last.HasHours, Time: last.Time,
		}
		tr.Cycle++
		tr.Notified = StateOK
	}
	// Each counter's baseline is taken the first time the vehicle reports it: an
	// hours plan on a vehicle whose hours appear later must not count from zero.
	if tr.Base.Time.IsZero() {
		tr.Base.Time = p.Created
	}
	if !tr.Base.HasOdometer && u.HasOdometer {
		tr.Base.OdometerKm, tr.Base.HasOdometer = u.OdometerKm, true
	}
	if !tr.Base.HasHours && u.HasHours {
		tr.Base.EngineHours, tr.Base.HasHours = u.EngineHours, true
	}
	return tr.Base
}

// ServiceItem is a line of a service.
type ServiceItem struct {
	Name  string  `json:"name"`
	Cost  float64 `json:"cost,omitempty"`
	Notes string  `json:"notes,omitempty"`
}

// ServiceEntry is an entry of a vehicle's service book.
type ServiceEntry struct {
	ID          string        `json:"id"`
	VehicleID   string        `json:"vehicle_id"`
	PlanID      string        `json:"plan_id,omitempty"`
	Time        time.Time     `json:"time"`
	OdometerKm  float64       `json:"odometer_km"`
	HasOdometer bool          `json:"has_odometer"`
	EngineHours float64       `json:"engine_hours"`
	HasHours    bool          `json:"has_hours"`
	Items       []ServiceItem `json:"items,omitempty"`
	Notes       string        `json:"notes,omitempty"`
	Cost        float64       `json:"cost"`
	Currency    string        `json:"currency,omitempty"`
}

// Group is a named set of vehicles.
type Group struct {
	ID       string   `json:"id"`
	Vehicles []string `json:"vehicles"`
}
