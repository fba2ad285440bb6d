package geofence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// This file is the NATS edge: the telemetry consumers, the zone bucket and its watcher,
// and event publishing.

type zoneBucket = jetstream.KeyValue

// Run loads the zones, keeps following the zone bucket, and consumes the telemetry and
// alarm records of the configured partitions until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The watcher stops when ctx ends: cancel before waiting for it. Waiting first (the
	// order two separate defers run in) hung Run for good whenever it returned an error
	// of its own, such as a consumer that could not be created at start under CPU
	// starvation: the consumers had stopped, the process lived on and nobody restarted it.
	defer func() {
		cancel()
		wg.Wait()
	}()
	watchErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchErr <- s.watchZones(ctx, kv)
	}()
	// Membership must not be evaluated against a half-loaded zone set: a vehicle inside a
	// zone not yet loaded would be seen as having left it.
	select {
	case <-s.ready:
	case err := <-watchErr:
		return err
	case <-ctx.Done():
		return nil
	}
	parts := s.cfg.Partitions
	if len(parts) == 0 {
		n, err := s.b.Partitions(ctx)
		if err != nil {
			return fmt.Errorf("geofence: %w", err)
		}
		if parts, err = bus.ParsePartitions("all", n); err != nil {
			return fmt.Errorf("geofence: %w", err)
		}
	}
	s.log.Info("geofence consuming", "partitions", len(parts), "zones", s.Zones().Len(), "rebuild", s.cfg.Rebuild)
	base := bus.ConsumerConfig{MaxBatch: s.cfg.MaxBatch, Rebuild: s.cfg.Rebuild}
	err = s.b.ConsumePartitions(ctx, Source, parts, []string{bus.KindTelemetry, bus.KindAlarm}, base, s.handle)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("geofence: %w", err)
	}
	return nil
}

// bucket returns the zone bucket, creating it on first use.
func (s *Service) bucket(ctx context.Context) (zoneBucket, error) {
	s.kvMu.Lock()
	defer s.kvMu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.b.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       s.cfg.ZoneBucket,
		Description:  "Geofence zone definitions (JSON), one key per zone id",
		History:      5,
		MaxValueSize: fence.MaxDefinitionBytes + 4096,
		Replicas:     max(s.cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("zone bucket %s: %w", s.cfg.ZoneBucket, err)
	}
	s.kv = kv
	return kv, nil
}

// watchZones applies every change of the zone bucket to the local index. Changes that
// arrive together are applied with one index rebuild.
func (s *Service) watchZones(ctx context.Context, kv zoneBucket) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch zone bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	zones := map[string]*fence.Zone{}
	loaded := false
	apply := func(e jetstream.KeyValueEntry) {
		switch e.Operation() {
		case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
			delete(zones, e.Key())
			return
		}
		var spec fence.Spec
		if err := json.Unmarshal(e.Value(), &spec); err != nil {
			s.log.Error("unreadable zone in bucket; ignored", "zone", e.Key(), "err", err)
			return
		}
		spec.Revision = e.Revision()
		z, err := fence.Compile(spec)
		if err != nil {
			s.log.Error("invalid zone in bucket; ignored", "zone", e.Key(), "err", err)
			return
		}
		zones[e.Key()] = z
	}
	rebuild := func() {
		list := make([]*fence.Zone, 0, len(zones))
		for _, z := range zones {
			list = append(list, z)
		}
		s.setZones(fence.NewIndex(list))
	}
	markLoaded := func() {
		if !loaded {
			loaded = true
			s.zonesOnce.Do(func() { close(s.ready) })
			s.log.Info("zones loaded", "zones", len(zones))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("zone bucket watch ended")
			}
			initialDone := e == nil // nil marks the end of the initial values
			if e != nil {
				apply(e)
			}
			// Take whatever else is already here before rebuilding.
		drain:
			for {
				select {
				case e, ok := <-w.Updates():
					if !ok {
						break drain
					}
					if e == nil {
						initialDone = true
						continue
					}
					apply(e)
				default:
					break drain
				}
			}
			if initialDone || loaded {
				rebuild()
			}
			if initialDone {
				markLoaded()
			}
		}
	}
}

// awaitZone waits until the local index holds zone id at revision rev or later (or, when
// deleted, no longer holds it), so a client reads its own writes.
func (s *Service) awaitZone(ctx context.Context, id string, rev uint64, deleted bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		ch := s.zonesChanged()
		z, ok := s.Zones().Zone(id)
		if deleted && !ok || !deleted && ok && z.Revision >= rev {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// item is one usable record of a batch.
type item struct {
	rec   telemetry.Record
	quiet bool // an earlier run processed it (a rebuild): update membership, publish nothing
}

// handle evaluates a batch. It works on copies of the stored states, publishes the
// events and waits for their acknowledgements, then saves the states: a failure anywhere
// returns an error before anything is committed, and the redelivered batch raises the
// same events with the same ids, which JetStream deduplicates.
//
// A batch that has started is finished even when the service is stopping (bounded by
// 20 s): failing it would hand its messages back to the server while this instance's
// pull requests are still open, and the next instance could see them only after the
// acknowledgement timeout — after newer records of the same vehicles.
func (s *Service) handle(ctx context.Context, batch []bus.Msg) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	ix := s.Zones()
	byVehicle := map[string][]item{}
	for i := range batch {
		m := &batch[i]
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil {
			s.rej.Add("subject", "", err, "subject", m.Subject)
			continue
		}
		if telemetry.IsLoadTest(addr.Vehicle) {
			// Load-test vehicles are not the live fleet: no zone state, no events
			// (docs/simulator.md, load tests).
			continue
		}
		recs, recErrs, err := wire.DecodeMsg(m, addr.Vehicle)
		if err != nil {
			s.rej.Add(wire.Reason(err), addr.Vehicle, err)
			continue
		}
		for _, re := range recErrs {
			s.rej.Add(wire.Reason(&re), addr.Vehicle, &re)
		}
		// A device may buffer records out of order: apply each message in device-time
		// order. Only within the message: sorting across the messages of a batch would make
		// the outcome depend on where batches start, which differs between a first run
		// and a redelivery or rebuild (an older record arriving late is out of order in
		// every run, not only in those where it shares a batch with newer ones).
		slices.SortStableFunc(recs, func(a, b telemetry.Record) int { return a.DeviceTime.Compare(b.DeviceTime) })
		for _, r := range recs {
			if err := s.cfg.RecordTime.Check(r.DeviceTime, m.Time); err != nil {
				s.rej.Add(wire.Reason(err), addr.Vehicle, err)
				continue
			}
			if err := r.CheckPosition(); err != nil {
				s.rej.Add(positionReason(err), addr.Vehicle, err)
				continue
			}
			r.ReceivedTime, r.StreamSeq = m.Time, m.StreamSeq
			byVehicle[addr.Vehicle] = append(byVehicle[addr.Vehicle], item{rec: r, quiet: m.Replayed})
		}
	}
	if len(byVehicle) == 0 {
		return nil
	}
	vehicles := make([]string, 0, len(byVehicle))
	for v := range byVehicle {
		vehicles = append(vehicles, v)
	}
	slices.Sort(vehicles)
	stored, err := s.st.Load(ctx, vehicles)
	var corrupt *CorruptStateError
	if errors.As(err, &corrupt) {
		// Retrying cannot help: the consumer narrows the batch down to the vehicle's
		// records and moves them to the dead-letter stream, with an alert, until an
		// operator repairs or deletes the state (docs/geofence.md).
		s.rej.Add("corrupt_state", corrupt.Vehicle, err)
		return fmt.Errorf("geofence: %w: %w", bus.ErrPoison, err)
	}
	if err != nil {
		return fmt.Errorf("geofence: %w", err)
	}
	var (
		events  []fence.Event
		updates = make([]Update, 0, len(vehicles))
		rules   = s.cfg.Rules
		n       int
	)
	for _, v := range vehicles {
		items := byVehicle[v] // stream order, each message in device-time order
		before := stored[v]
		st := before.Clone()
		st.Vehicle = v
		changed := false
		for _, it := range items {
			mark := len(events)
			events, err = rules.Step(ix, &st, fence.Fix{Time: it.rec.DeviceTime, Lat: it.rec.Lat, Lon: it.rec.Lon, SpeedKmh: it.rec.SpeedKmh}, events)
			if errors.Is(err, fence.ErrOutOfOrder) {
				s.rej.Add("out_of_order", v, err, "device_time", it.rec.DeviceTime)
				continue
			}
			n++
			changed = true
			if it.quiet {
				events = events[:mark]
			}
		}
		if changed {
			entered, left := diff(before.Zones, st.Zones)
			updates = append(updates, Update{State: st, Entered: entered, Left: left})
		}
	}
	if err := s.publish(ctx, events); err != nil {
		return err
	}
	if err := s.st.Save(ctx, updates); err != nil {
		return fmt.Errorf("geofence: %w", err)
	}
	s.records.Add(float64(n))
	return nil
}

func positionReason(err error) string {
	switch {
	case errors.Is(err, telemetry.ErrNaNCoordinate):
		return "nan_coordinate"
	case errors.Is(err, telemetry.ErrOutOfRange):
		return "out_of_range"
	case errors.Is(err, telemetry.ErrNullIsland):
		return "null_island"
	case errors.Is(err, telemetry.ErrInvalidFix):
		return "no_fix"
	}
	return "position"
}

// publish sends the events to the event stream and waits for every acknowledgement.
func (s *Service) publish(ctx context.Context, events []fence.Event) error {
	if len(events) == 0 {
		return nil
	}
	now := timestamppb.Now()
	pes := make([]*fleetv1.Event, len(events))
	for i := range events {
		pes[i] = ToProtoEvent(&events[i], now)
	}
	if err := eventpub.Publish(ctx, s.b, pes, 0); err != nil {
		return err
	}
	for i := range events {
		s.events.WithLabelValues(string(events[i].Kind)).Inc()
	}
	return nil
}

// ToProtoEvent converts a zone event to the fleet.v1 envelope.
func ToProtoEvent(e *fence.Event, published *timestamppb.Timestamp) *fleetv1.Event {
	attrs := map[string]string{"zone_id": e.ZoneID, "zone_name": e.ZoneName}
	if e.MustStayInside {
		attrs["must_stay_inside"] = "true"
	}
	// The zone's alert policy travels with the event: the alert feed raises an alert only
	// where the zone asks for one (docs/geofence.md, alert policy).
	attrs["alert"] = strconv.FormatBool(e.RaiseAlert)
	if e.Kind == fence.Crossed {
		attrs["exit_time"] = e.ExitTime.UTC().Format(time.RFC3339Nano)
	}
	if e.Kind == fence.Overspeed {
		attrs["speed_limit_kmh"] = strconv.FormatFloat(e.SpeedLimitKmh, 'f', -1, 64)
	}
	return &fleetv1.Event{
		EventId:     e.ID,
		Source:      Source,
		Kind:        string(e.Kind),
		VehicleId:   e.Vehicle,
		Time:        timestamppb.New(e.Time),
		Position:    &fleetv1.LatLng{Latitude: e.Lat, Longitude: e.Lon},
		SpeedKmh:    e.SpeedKmh,
		Attributes:  attrs,
		PublishTime: published,
	}
}
