package maintenance

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// FuelReport is one vehicle's fuel over a period, or a group's total (VehicleID empty).
type FuelReport struct {
	VehicleID                       string
	HasData                         bool
	StartL, EndL                    float64
	RefuelledL, DrainedL, ConsumedL float64
	DistanceKm, Per100Km            float64
	IdleL, IdleHours                float64
	Refuels, Drains                 []FuelEvent
}

// buildFuelReport computes a report from the vehicle's history samples (the last one
// at or before from, or the first after it, opens the period; the last one at or before
// to closes it) and the events that started in [from, to).
//
// consumed = start + refuelled - drained - end, never below zero. Idle litres are the
// engine's standing running time times the idle burn rate: an estimate, because a level
// sensor cannot resolve what an idling engine burns in minutes.
func buildFuelReport(vehicle string, samples []FuelSample, evs []FuelEvent, from, to time.Time, idleLph float64) FuelReport {
	r := FuelReport{VehicleID: vehicle}
	var start, end *FuelSample
	for i := range samples {
		sm := &samples[i]
		if sm.Time.After(to) {
			break
		}
		if start == nil || !sm.Time.After(from) {
			start = sm
		}
		end = sm
	}
	for _, e := range evs {
		switch e.Kind {
		case fuel.KindRefuel:
			r.Refuels = append(r.Refuels, e)
			r.RefuelledL += e.Litres
		case fuel.KindDrain:
			r.Drains = append(r.Drains, e)
			r.DrainedL += e.Litres
		}
	}
	if start == nil || end == nil {
		return r
	}
	r.HasData = start.HasLevel && end.HasLevel
	r.StartL, r.EndL = start.LevelL, end.LevelL
	r.DistanceKm = (end.DistanceM - start.DistanceM) / 1000
	r.IdleHours = (end.IdleSec - start.IdleSec) / 3600
	r.IdleL = r.IdleHours * idleLph
	if r.HasData {
		r.ConsumedL = math.Max(0, r.StartL+r.RefuelledL-r.DrainedL-r.EndL)
	}
	if r.DistanceKm >= 1 {
		r.Per100Km = r.ConsumedL / r.DistanceKm * 100
	}
	return r
}

// FuelReports returns one report per vehicle (the vehicle, or every member of group)
// and their sum.
func (s *Service) FuelReports(ctx context.Context, vehicle, group string, from, to time.Time) ([]FuelReport, FuelReport, error) {
	if (vehicle == "") == (group == "") {
		return nil, FuelReport{}, invalid("name exactly one of a vehicle and a group")
	}
	if to.IsZero() {
		to = s.now().UTC()
	}
	if !from.Before(to) {
		return nil, FuelReport{}, invalid("period start %s not before its end %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	ids := []string{vehicle}
	if group != "" {
		var err error
		if ids, err = s.groupMembers(ctx, group); err != nil {
			return nil, FuelReport{}, err
		}
	} else if err := telemetry.ValidVehicleID(vehicle); err != nil {
		return nil, FuelReport{}, invalid("vehicle %q: %v", vehicle, err)
	}
	var (
		out   []FuelReport
		total FuelReport
	)
	for _, id := range ids {
		samples, err := s.st.ListFuelSamples(ctx, id, from, to)
		if err != nil {
			return nil, FuelReport{}, fmt.Errorf("fuel samples of %s: %w", id, err)
		}
		// Samples are written every SampleEvery; the vehicle's live state closes a
		// period that reaches its newest record.
		states, err := s.st.GetVehicles(ctx, []string{id})
		if err != nil {
			return nil, FuelReport{}, fmt.Errorf("vehicle %s: %w", id, err)
		}
		if st := states[id]; st != nil && !st.LastTime.After(to) && (len(samples) == 0 || st.LastTime.After(samples[len(samples)-1].Time)) {
			samples = append(samples, FuelSample{
				Time: st.LastTime, LevelL: st.Fuel.Smoothed, HasLevel: st.Fuel.HasLevel,
				DistanceM: st.Fuel.DistanceM, EngineSec: st.Fuel.EngineSec, IdleSec: st.Fuel.IdleSec,
			})
		}
		evs, err := s.st.ListFuelEvents(ctx, id, from, to)
		if err != nil {
			return nil, FuelReport{}, fmt.Errorf("fuel events of %s: %w", id, err)
		}
		r := buildFuelReport(id, samples, evs, from, to, s.cfg.Fuel.IdleBurnLph)
		out = append(out, r)
		total.HasData = total.HasData || r.HasData
		total.StartL += r.StartL
		total.EndL += r.EndL
		total.RefuelledL += r.RefuelledL
		total.DrainedL += r.DrainedL
		total.ConsumedL += r.ConsumedL
		total.DistanceKm += r.DistanceKm
		total.IdleL += r.IdleL
		total.IdleHours += r.IdleHours
		total.Refuels = append(total.Refuels, r.Refuels...)
		total.Drains = append(total.Drains, r.Drains...)
	}
	if total.DistanceKm >= 1 {
		total.Per100Km = total.ConsumedL / total.DistanceKm * 100
	}
	sortFuelEvents(total.Refuels)
	sortFuelEvents(total.Drains)
	return out, total, nil
}
