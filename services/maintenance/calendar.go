package maintenance

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// A vehicle parked for weeks sends few or no records, yet its calendar intervals run
// out, and a fuel event detected just before it went quiet waits for a record to be
// reported. The periodic check evaluates the plans of the vehicles of this instance's
// partitions against the clock and reports their pending fuel events once they are an
// hour old, raising the same events, with the same ids, that a record would have.

func (s *Service) calendarLoop(ctx context.Context, parts []int) {
	t := time.NewTicker(s.cfg.CalendarCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			parts := parts
			if s.b.Leasing() {
				// Only the vehicles of the partitions held now: their owner alone writes them.
				if parts = s.b.Owned(Source); len(parts) == 0 {
					continue
				}
			}
			if _, err := s.checkCalendars(ctx, parts); err != nil && ctx.Err() == nil {
				s.log.Warn("calendar check failed; retried at the next tick", "err", err)
			}
		}
	}
}

// checkCalendars evaluates the plans of every vehicle whose records come from parts (all
// partitions when parts is nil) at the current time, publishes the events it raises and
// saves the states. It returns the events.
func (s *Service) checkCalendars(ctx context.Context, parts []int) ([]Event, error) {
	plans, groupsOf, err := s.planView(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := s.st.ListVehicleIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list vehicles: %w", err)
	}
	var all []Event
	for chunk := range slices.Chunk(ids, 500) {
		states, err := s.st.GetVehicles(ctx, chunk)
		if err != nil {
			return all, fmt.Errorf("load vehicles: %w", err)
		}
		for _, id := range chunk {
			st := states[id]
			if st == nil || !st.HasPartition || parts != nil && !slices.Contains(parts, st.Partition) {
				continue
			}
			vp := plansFor(plans, groupsOf, id)
			if st.Fuel.Pending == nil && !slices.ContainsFunc(vp, func(p Plan) bool { return p.EveryDays > 0 }) {
				continue
			}
			evs, err := s.checkVehicle(ctx, id, st.Partition, vp)
			if err != nil {
				return all, err
			}
			all = append(all, evs...)
		}
	}
	return all, nil
}

// checkVehicle re-reads one vehicle's state under its partition's lock (the consumer may
// have moved it on since the listing), evaluates its plans now, and saves it when that
// raised an event.
func (s *Service) checkVehicle(ctx context.Context, id string, part int, plans []Plan) ([]Event, error) {
	mu := s.partitionLock(part)
	mu.Lock()
	defer mu.Unlock()
	states, err := s.st.GetVehicles(ctx, []string{id})
	if err != nil {
		return nil, fmt.Errorf("load vehicle %s: %w", id, err)
	}
	st := states[id]
	if st == nil {
		return nil, nil
	}
	latest, err := s.st.LatestServices(ctx, []string{id})
	if err != nil {
		return nil, fmt.Errorf("load services of %s: %w", id, err)
	}
	now := s.now().UTC()
	if now.Before(st.LastTime) {
		now = st.LastTime
	}
	evs := s.proc.planStates(st, now, vehicleContext{plans: plans, latest: latest[id]}, nil)
	fes, fevs := fuelEventsOut(st, fuel.NewDetector(s.cfg.Fuel, fuel.Profile{}, &st.Fuel).FlushQuiet(now))
	evs = append(evs, fevs...)
	if len(evs) == 0 {
		return nil, nil
	}
	if len(fes) > 0 {
		if err := s.st.AddFuelEvents(ctx, fes); err != nil {
			return nil, fmt.Errorf("store fuel events: %w", err)
		}
	}
	if err := s.publish(ctx, evs); err != nil {
		return nil, err
	}
	if err := s.st.PutVehicles(ctx, []*VehicleState{st}); err != nil {
		return nil, fmt.Errorf("store vehicle %s: %w", id, err)
	}
	return evs, nil
}
