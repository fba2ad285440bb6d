package maintenance

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// This file is the NATS edge: the partition consumers and event publishing.

// Run consumes the telemetry, alarm and diagnostics records of the configured
// partitions until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if s.b == nil {
		return errors.New("maintenance: Run without a bus")
	}
	parts := s.cfg.Partitions
	if len(parts) == 0 {
		n, err := s.b.Partitions(ctx)
		if err != nil {
			return fmt.Errorf("maintenance: %w", err)
		}
		if parts, err = bus.ParsePartitions("all", n); err != nil {
			return fmt.Errorf("maintenance: %w", err)
		}
	}
	s.log.Info("maintenance consuming", "partitions", len(parts), "rebuild", s.cfg.Rebuild)
	if s.cfg.CalendarCheck > 0 {
		done := make(chan struct{})
		defer func() { <-done }()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			defer close(done)
			s.calendarLoop(ctx, parts)
		}()
		return s.consume(ctx, parts)
	}
	return s.consume(ctx, parts)
}

func (s *Service) consume(ctx context.Context, parts []int) error {
	base := bus.ConsumerConfig{MaxBatch: s.cfg.MaxBatch, Rebuild: s.cfg.Rebuild}
	kinds := []string{bus.KindTelemetry, bus.KindAlarm, bus.KindDiag}
	if err := s.b.ConsumePartitions(ctx, Source, parts, kinds, base, s.handle); err != nil && ctx.Err() == nil {
		return fmt.Errorf("maintenance: %w", err)
	}
	return nil
}

// handle processes one batch of stored messages. Bad input is counted and skipped; an
// error (store or bus unreachable) makes the bus redeliver the batch, which is safe:
// records already applied are skipped by device time, fuel events and samples are keyed
// by id and time, and events carry deterministic ids (Nats-Msg-Id).
//
// Order of effects: fuel events and samples, then events (waiting for their acks), and
// the vehicle states last. A failure before the states are saved replays the batch from
// the old states and raises the same events with the same ids; saving the states first
// could lose an event whose publication then failed.
func (s *Service) handle(ctx context.Context, batch []bus.Msg) error {
	// One consumer per partition: the lock only keeps the calendar check (which writes
	// the states of this partition's vehicles) out while the batch is applied.
	for _, m := range batch {
		if addr, err := bus.ParseSubject(m.Subject); err == nil && addr.Partition >= 0 {
			mu := s.partitionLock(addr.Partition)
			mu.Lock()
			defer mu.Unlock()
			break
		}
	}
	byVehicle := map[string][]input{}
	perKind := map[string]int{}
	for _, m := range batch {
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil {
			s.rej.Add("unknown_subject", "", err)
			continue
		}
		switch addr.Kind {
		case bus.KindTelemetry, bus.KindAlarm, bus.KindDiag:
		default:
			s.rej.Add("unexpected_kind", addr.Vehicle, fmt.Errorf("kind %q", addr.Kind))
			continue
		}
		if telemetry.IsLoadTest(addr.Vehicle) {
			// Load-test vehicles are not the live fleet: no odometer, fuel or fault state,
			// no events (docs/simulator.md, load tests).
			continue
		}
		recs, bad, err := wire.DecodeMsg(&m, addr.Vehicle)
		if err != nil {
			s.rej.Add(wire.Reason(err), addr.Vehicle, err)
			continue
		}
		for i := range bad {
			s.rej.Add(wire.Reason(&bad[i]), addr.Vehicle, &bad[i])
		}
		n := 0
		for _, r := range recs {
			if err := s.cfg.RecordTime.Check(r.DeviceTime, m.Time); err != nil {
				s.rej.Add(wire.Reason(err), addr.Vehicle, err, "kind", addr.Kind)
				continue
			}
			n++
			r.ReceivedTime, r.StreamSeq = m.Time, m.StreamSeq
			byVehicle[addr.Vehicle] = append(byVehicle[addr.Vehicle], input{rec: r, side: addr.Kind != bus.KindTelemetry, diag: addr.Kind == bus.KindDiag, part: addr.Partition, hasPart: addr.Partition >= 0})
		}
		perKind[addr.Kind] += n
	}
	events, commit, err := s.apply(ctx, byVehicle)
	if err != nil {
		return err
	}
	if err := s.publish(ctx, events); err != nil {
		return err
	}
	if err := commit(ctx); err != nil {
		return err
	}
	for k, n := range perKind {
		s.stats.records.WithLabelValues(k).Add(float64(n))
	}
	return nil
}

// apply processes decoded records per vehicle and stores their fuel events and samples.
// It returns the events to publish and commit, which saves the vehicle states; the
// caller publishes the events before committing.
func (s *Service) apply(ctx context.Context, byVehicle map[string][]input) ([]Event, func(context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	if len(byVehicle) == 0 {
		return nil, noop, nil
	}
	ids := sortedKeys(byVehicle)
	states, err := s.st.GetVehicles(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("load vehicle states: %w", err)
	}
	profiles, err := s.st.GetFuelProfiles(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("load fuel profiles: %w", err)
	}
	plans, groupsOf, err := s.planView(ctx)
	if err != nil {
		return nil, nil, err
	}
	planned := map[string][]Plan{}
	var withPlans []string
	for _, id := range ids {
		if ps := plansFor(plans, groupsOf, id); len(ps) > 0 {
			planned[id] = ps
			withPlans = append(withPlans, id)
		}
	}
	latest, err := s.st.LatestServices(ctx, withPlans)
	if err != nil {
		return nil, nil, fmt.Errorf("load services: %w", err)
	}
	var (
		events     []Event
		fuelEvents []FuelEvent
		samples    = map[string][]FuelSample{}
		changed    []*VehicleState
	)
	reject := func(reason, vehicle string, err error) { s.rej.Add(reason, vehicle, err) }
	for _, id := range ids {
		st := states[id]
		if st == nil {
			st = newVehicleState(id)
		}
		vc := vehicleContext{plans: planned[id], latest: latest[id]}
		vc.profile, vc.hasProfile = profiles[id]
		res := s.proc.process(st, byVehicle[id], vc, reject)
		events = append(events, res.events...)
		fuelEvents = append(fuelEvents, res.fuelEvents...)
		if len(res.samples) > 0 {
			samples[id] = res.samples
		}
		if res.changed {
			changed = append(changed, st)
		}
	}
	if len(fuelEvents) > 0 {
		if err := s.st.AddFuelEvents(ctx, fuelEvents); err != nil {
			return nil, nil, fmt.Errorf("store fuel events: %w", err)
		}
	}
	if len(samples) > 0 {
		if err := s.st.AddFuelSamples(ctx, samples); err != nil {
			return nil, nil, fmt.Errorf("store fuel samples: %w", err)
		}
	}
	commit := func(ctx context.Context) error {
		if len(changed) == 0 {
			return nil
		}
		if err := s.st.PutVehicles(ctx, changed); err != nil {
			return fmt.Errorf("store vehicle states: %w", err)
		}
		return nil
	}
	return events, commit, nil
}

// toProtoEvent converts a domain event to the bus envelope.
func toProtoEvent(e Event, now time.Time) *fleetv1.Event {
	pe := &fleetv1.Event{
		EventId: e.ID, Source: Source, Kind: e.Kind, VehicleId: e.VehicleID,
		Time: timestamppb.New(e.Time), SpeedKmh: e.SpeedKmh, Attributes: e.Attrs,
		PublishTime: timestamppb.New(now),
	}
	if e.HasPosition {
		pe.Position = &fleetv1.LatLng{Latitude: e.Lat, Longitude: e.Lon}
	}
	return pe
}

// publish sends events to JetStream and waits until every one is stored.
func (s *Service) publish(ctx context.Context, evs []Event) error {
	if len(evs) == 0 || s.b == nil {
		return nil
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	now := s.now()
	pes := make([]*fleetv1.Event, len(evs))
	for i, e := range evs {
		pes[i] = toProtoEvent(e, now)
	}
	if err := eventpub.Publish(ctx, s.b, pes, s.cfg.PublishTimeout); err != nil {
		return err
	}
	for _, e := range evs {
		s.stats.events.WithLabelValues(e.Kind).Inc()
	}
	return nil
}
