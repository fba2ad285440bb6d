package maintenance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// The service's operations, in domain types. grpc.go maps them to fleet.v1.

// Input errors; the gRPC edge maps them to INVALID_ARGUMENT.
var (
	ErrInvalid = errors.New("invalid argument")
	// ErrGroupsFromRegistry refuses SetGroup where groups come from the vehicle registry
	// (UseGroups); the edge maps it to FAILED_PRECONDITION.
	ErrGroupsFromRegistry = errors.New("vehicle groups come from the vehicle registry: set them with TrackingService.UpdateVehicle (fleetctl vehicle update ID --group G)")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// CreatePlan validates and stores p (replacing a plan with the same id). An empty id is
// generated; the creation time defaults to now.
func (s *Service) CreatePlan(ctx context.Context, p Plan) (Plan, error) {
	now := s.now().UTC()
	if p.ID == "" {
		p.ID = "plan-" + strconv.FormatInt(now.UnixNano(), 36)
	}
	if err := p.Validate(); err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if p.Created.IsZero() {
		p.Created = now
	}
	if err := s.st.PutPlan(ctx, p); err != nil {
		return Plan{}, fmt.Errorf("store plan: %w", err)
	}
	s.invalidatePlans()
	return p, nil
}

// ListPlans returns the plans that apply to vehicle (directly or through a group) or
// belong to group; both empty means all plans.
func (s *Service) ListPlans(ctx context.Context, vehicle, group string) ([]Plan, error) {
	s.invalidatePlans()
	plans, groupsOf, err := s.planView(ctx)
	if err != nil {
		return nil, err
	}
	var out []Plan
	for _, p := range plans {
		switch {
		case vehicle != "" && !p.AppliesTo(vehicle, groupsOf(vehicle)):
		case group != "" && p.GroupID != group:
		default:
			out = append(out, p)
		}
	}
	return out, nil
}

// DeletePlan removes a plan.
func (s *Service) DeletePlan(ctx context.Context, id string) error {
	if err := s.st.DeletePlan(ctx, id); err != nil {
		return fmt.Errorf("delete plan %s: %w", id, err)
	}
	s.invalidatePlans()
	return nil
}

// MaxGroupSize bounds a group.
const MaxGroupSize = 100_000

// SetGroup defines a group's members, where the service keeps its own groups (no
// UseGroups); with the registry it is ErrGroupsFromRegistry.
func (s *Service) SetGroup(ctx context.Context, g Group) error {
	if s.groups != nil {
		return ErrGroupsFromRegistry
	}
	if telemetry.ValidVehicleID(g.ID) != nil {
		return invalid("group id %q", g.ID)
	}
	if len(g.Vehicles) > MaxGroupSize {
		return invalid("group of %d vehicles, at most %d", len(g.Vehicles), MaxGroupSize)
	}
	seen := map[string]bool{}
	var members []string
	for _, v := range g.Vehicles {
		if err := telemetry.ValidVehicleID(v); err != nil {
			return invalid("vehicle %q: %v", v, err)
		}
		if !seen[v] {
			seen[v] = true
			members = append(members, v)
		}
	}
	sort.Strings(members)
	g.Vehicles = members
	if err := s.st.PutGroup(ctx, g); err != nil {
		return fmt.Errorf("store group: %w", err)
	}
	s.invalidatePlans()
	return nil
}

// RecordService writes e into the service book. Defaults: id generated, time now,
// odometer and engine hours the vehicle's last known values, cost the sum of the items.
// When e names a plan, the returned status is the plan's state after the service.
func (s *Service) RecordService(ctx context.Context, e ServiceEntry) (ServiceEntry, *Status, error) {
	if err := telemetry.ValidVehicleID(e.VehicleID); err != nil {
		return ServiceEntry{}, nil, invalid("vehicle %q: %v", e.VehicleID, err)
	}
	now := s.now().UTC()
	if e.ID == "" {
		e.ID = "svc-" + strconv.FormatInt(now.UnixNano(), 36)
	} else if !validID(e.ID) {
		return ServiceEntry{}, nil, invalid("service id %q", e.ID)
	}
	if e.Time.IsZero() {
		e.Time = now
	}
	var plan *Plan
	if e.PlanID != "" {
		p, err := s.st.GetPlan(ctx, e.PlanID)
		if err != nil {
			return ServiceEntry{}, nil, fmt.Errorf("plan %s: %w", e.PlanID, err)
		}
		var groups []string
		if p.GroupID != "" {
			members, err := s.groupMembers(ctx, p.GroupID)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return ServiceEntry{}, nil, err
			}
			if slices.Contains(members, e.VehicleID) {
				groups = []string{p.GroupID}
			}
		}
		if !p.AppliesTo(e.VehicleID, groups) {
			return ServiceEntry{}, nil, invalid("plan %s does not apply to vehicle %s", p.ID, e.VehicleID)
		}
		plan = &p
	}
	for _, v := range []float64{e.OdometerKm, e.EngineHours, e.Cost} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return ServiceEntry{}, nil, invalid("odometer, engine hours and cost must be finite and >= 0")
		}
	}
	states, err := s.st.GetVehicles(ctx, []string{e.VehicleID})
	if err != nil {
		return ServiceEntry{}, nil, fmt.Errorf("load vehicle: %w", err)
	}
	st := states[e.VehicleID]
	if !e.HasOdometer && st != nil && st.HasOdometer {
		e.OdometerKm, e.HasOdometer = st.OdometerM/1000, true
	}
	if !e.HasHours && st != nil && st.HasHours {
		e.EngineHours, e.HasHours = st.EngineHours, true
	}
	if e.Cost == 0 {
		for _, it := range e.Items {
			if math.IsNaN(it.Cost) || math.IsInf(it.Cost, 0) || it.Cost < 0 {
				return ServiceEntry{}, nil, invalid("item cost must be finite and >= 0")
			}
			e.Cost += it.Cost
		}
	}
	if err := s.st.AddService(ctx, e); err != nil {
		return ServiceEntry{}, nil, fmt.Errorf("store service: %w", err)
	}
	if plan == nil {
		return e, nil, nil
	}
	if st == nil {
		st = newVehicleState(e.VehicleID)
	}
	var tr PlanTrack
	base := baselineFor(*plan, &tr, &e, st.usage(now))
	status := Evaluate(*plan, e.VehicleID, base, st.usage(now))
	status.LastService = e.Time
	return e, &status, nil
}

// ListServiceLog returns a vehicle's service book, newest first, optionally one plan's.
func (s *Service) ListServiceLog(ctx context.Context, vehicle, plan string) ([]ServiceEntry, error) {
	all, err := s.st.ListServices(ctx, vehicle)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	if plan == "" {
		return all, nil
	}
	out := all[:0]
	for _, e := range all {
		if e.PlanID == plan {
			out = append(out, e)
		}
	}
	return out, nil
}

// DueQuery selects plan states for ListDue.
type DueQuery struct {
	HorizonKm, HorizonHours, HorizonDays float64
	Vehicle, Group                       string
	States                               []PlanState // empty: due soon, overdue, or within the horizon
	Limit                                int
}

// statusesFor computes the state of every plan applying to the vehicle at now.
func (s *Service) statusesFor(ctx context.Context, st *VehicleState, plans []Plan, now time.Time) ([]Status, error) {
	if len(plans) == 0 {
		return nil, nil
	}
	all, err := s.st.LatestServices(ctx, []string{st.VehicleID})
	if err != nil {
		return nil, fmt.Errorf("load services of %s: %w", st.VehicleID, err)
	}
	latest := all[st.VehicleID]
	if now.Before(st.LastTime) {
		now = st.LastTime
	}
	out := make([]Status, 0, len(plans))
	for _, p := range plans {
		var tr PlanTrack
		if t := st.Plans[p.ID]; t != nil {
			tr = *t
		}
		var last *ServiceEntry
		if e, ok := latest[p.ID]; ok {
			last = &e
		}
		u := st.usage(now)
		status := Evaluate(p, st.VehicleID, baselineFor(p, &tr, last, u), u)
		if last != nil {
			status.LastService = last.Time
		}
		out = append(out, status)
	}
	sortStatuses(out)
	return out, nil
}

func sortStatuses(out []Status) {
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Urgency != b.Urgency {
			return a.Urgency < b.Urgency
		}
		if a.VehicleID != b.VehicleID {
			return a.VehicleID < b.VehicleID
		}
		return a.PlanID < b.PlanID
	})
}

// ListDue returns plan states across the fleet, most urgent first (smallest remaining
// fraction of an interval). Vehicles that never sent a record are not listed: the
// service knows none of their counters.
func (s *Service) ListDue(ctx context.Context, q DueQuery) ([]Status, error) {
	plans, groupsOf, err := s.planView(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	switch {
	case q.Vehicle != "":
		ids = []string{q.Vehicle}
	case q.Group != "":
		if ids, err = s.groupMembers(ctx, q.Group); err != nil {
			return nil, err
		}
	default:
		if ids, err = s.st.ListVehicleIDs(ctx); err != nil {
			return nil, fmt.Errorf("list vehicles: %w", err)
		}
	}
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	now := s.now().UTC()
	var out []Status
	for chunk := range slices.Chunk(ids, 500) {
		states, err := s.st.GetVehicles(ctx, chunk)
		if err != nil {
			return nil, fmt.Errorf("load vehicles: %w", err)
		}
		for _, id := range chunk {
			st := states[id]
			if st == nil {
				continue
			}
			ss, err := s.statusesFor(ctx, st, plansFor(plans, groupsOf, id), now)
			if err != nil {
				return nil, err
			}
			for _, x := range ss {
				if len(q.States) > 0 && slices.Contains(q.States, x.State) ||
					len(q.States) == 0 && (x.State >= StateDueSoon || x.Within(q.HorizonKm, q.HorizonHours, q.HorizonDays)) {
					out = append(out, x)
				}
			}
		}
	}
	sortStatuses(out)
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// Health is a vehicle's condition.
type Health struct {
	State  *VehicleState
	Plans  []Status
	Faults []FaultCode // active, most severe first
	Alerts []string    // rules whose episode has fired and not ended
}

// VehicleHealth returns a vehicle's condition; ErrNotFound before its first record.
func (s *Service) VehicleHealth(ctx context.Context, vehicle string) (Health, error) {
	states, err := s.st.GetVehicles(ctx, []string{vehicle})
	if err != nil {
		return Health{}, fmt.Errorf("load vehicle: %w", err)
	}
	st := states[vehicle]
	if st == nil {
		return Health{}, fmt.Errorf("vehicle %s: %w", vehicle, ErrNotFound)
	}
	plans, groupsOf, err := s.planView(ctx)
	if err != nil {
		return Health{}, err
	}
	h := Health{State: st}
	if h.Plans, err = s.statusesFor(ctx, st, plansFor(plans, groupsOf, vehicle), s.now().UTC()); err != nil {
		return Health{}, err
	}
	h.Faults = faultList(st, true)
	for _, name := range sortedKeys(st.Alerts) {
		if st.Alerts[name].Fired {
			h.Alerts = append(h.Alerts, name)
		}
	}
	return h, nil
}

// faultList returns a vehicle's fault codes: active first, most severe first, then by code.
func faultList(st *VehicleState, activeOnly bool) []FaultCode {
	var out []FaultCode
	for _, fc := range st.Faults {
		if activeOnly && !fc.Active {
			continue
		}
		out = append(out, *fc)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Active != b.Active {
			return a.Active
		}
		if a.Severity != b.Severity {
			return a.Severity > b.Severity
		}
		return a.Code < b.Code
	})
	return out
}

// FaultCodes returns a vehicle's fault codes; ErrNotFound before its first record.
func (s *Service) FaultCodes(ctx context.Context, vehicle string, activeOnly bool) ([]FaultCode, error) {
	states, err := s.st.GetVehicles(ctx, []string{vehicle})
	if err != nil {
		return nil, fmt.Errorf("load vehicle: %w", err)
	}
	st := states[vehicle]
	if st == nil {
		return nil, fmt.Errorf("vehicle %s: %w", vehicle, ErrNotFound)
	}
	return faultList(st, activeOnly), nil
}

// SetFuelProfile validates and stores a vehicle's tank profile. It applies from the next
// batch of the vehicle's records.
func (s *Service) SetFuelProfile(ctx context.Context, vehicle string, p fuel.Profile) (fuel.Profile, error) {
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		return fuel.Profile{}, invalid("vehicle %q: %v", vehicle, err)
	}
	p, err := p.Normalize()
	if err != nil {
		return fuel.Profile{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := s.st.PutFuelProfile(ctx, vehicle, p); err != nil {
		return fuel.Profile{}, fmt.Errorf("store fuel profile: %w", err)
	}
	return p, nil
}
