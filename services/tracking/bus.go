package tracking

import (
	"context"
	"strconv"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// This file is the bus edge: it turns JetStream messages into records, applies them, writes
// the store once per batch and publishes status events.

// rejectUnknownSubject counts messages on subjects outside the device scheme; decode
// failures are counted under wire.Reason's names, filter rules under Reason.
const rejectUnknownSubject = "unknown_subject"

type decoded struct {
	msg     *bus.Msg
	vehicle string
	part    int
	recs    []telemetry.Record
}

// handle processes one batch of one partition. It returns an error only when the store
// or the event stream failed; bad input is counted and skipped so it is acknowledged.
func (s *Service) handle(ctx context.Context, batch []bus.Msg) error {
	var items []decoded
	for i := range batch {
		m := &batch[i]
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil || addr.Partition < 0 {
			s.rej.Add(rejectUnknownSubject, "", err, "subject", m.Subject)
			continue
		}
		if addr.Kind == bus.KindReply {
			continue // command replies are the dispatch service's
		}
		recs, bad, err := wire.DecodeMsg(m, addr.Vehicle)
		if err != nil {
			s.rej.Add(wire.Reason(err), addr.Vehicle, err, "stream_seq", m.StreamSeq)
			continue
		}
		for _, be := range bad {
			s.rej.Add(wire.Reason(&be), addr.Vehicle, &be, "stream_seq", m.StreamSeq)
		}
		items = append(items, decoded{msg: m, vehicle: addr.Vehicle, part: addr.Partition, recs: recs})
	}
	if len(items) == 0 {
		return nil
	}
	part := items[0].part
	if part >= 0 && part < len(s.partMu) {
		s.partMu[part].Lock()
		defer s.partMu[part].Unlock()
	}
	work, err := s.load(ctx, items)
	if err != nil {
		return err
	}

	now := s.now()
	var (
		points  []TrackPoint
		removed []TrackPoint
		events  []statusEvent
		touched []*entry
	)
	for _, it := range items {
		e := work[it.vehicle]
		if !e.touched {
			e.touched = true
			touched = append(touched, &e.entry)
		}
		st := e.state
		tr := s.tracker.ForModel(e.info.Metadata[MetaDeviceModel])
		// The stream shows the vehicle silent for longer than OfflineAfter before this
		// message: it was offline, whether or not a sweep ran in that time (a catch-up, a
		// rebuild). The event is the sweep's own (same id), so it is stored once either way.
		if len(it.recs) > 0 && tr.Sweep(st, it.msg.Time) && !it.msg.Replayed {
			events = append(events, statusEvent{state: cloneStatus(st)})
		}
		for i := range it.recs {
			r := &it.recs[i]
			r.ReceivedTime = it.msg.Time
			r.StreamSeq = it.msg.StreamSeq
			res := tr.Apply(st, r, now)
			if res.Reasons != 0 {
				s.count(res.Reasons, it.vehicle, r)
			}
			if res.Dropped {
				continue
			}
			s.records.Inc()
			for _, f := range res.Released {
				points = append(points, TrackPoint{VehicleID: it.vehicle, Fix: f})
			}
			for _, f := range res.Retracted {
				removed = append(removed, TrackPoint{VehicleID: it.vehicle, Fix: f})
			}
			if res.HasPoint {
				points = append(points, TrackPoint{VehicleID: it.vehicle, Fix: res.Point})
			}
			// A record an earlier run of a rebuilding service already processed rebuilds
			// the state without raising its events again.
			if res.StatusChanged && !it.msg.Replayed {
				events = append(events, statusEvent{state: cloneStatus(st), rec: r})
			}
		}
		st.MarkApplied(it.msg.StreamSeq, it.msg.Time)
	}
	states := make([]*State, len(touched))
	for i, e := range touched {
		states[i] = e.state
	}
	// Events first, then state. A crash after the events and before the state redelivers
	// the batch, which raises the same event ids (stored once, see eventpub.Publish);
	// the other order would lose them, since the redelivered records would count as
	// applied already.
	if err := s.publishEvents(ctx, events); err != nil {
		return err
	}
	if err := s.store.Write(ctx, Batch{States: states, Points: points, Removed: removed, Retention: s.cfg.HistoryRetention, Now: now}); err != nil {
		return err // nothing committed: the redelivered batch starts from the same states
	}
	s.commit(touched)
	if part >= 0 && part < len(s.applied) {
		s.applied[part].Store(items[len(items)-1].msg.Time.UnixNano())
	}
	return nil
}

type workEntry struct {
	entry
	touched bool
}

// load returns working copies of the states of the batch's vehicles: from the cache, else
// from the store, else new.
func (s *Service) load(ctx context.Context, items []decoded) (map[string]*workEntry, error) {
	work := make(map[string]*workEntry, len(items))
	var missing []string
	s.mu.RLock()
	for _, it := range items {
		if _, ok := work[it.vehicle]; ok {
			continue
		}
		if e, ok := s.cache[it.vehicle]; ok {
			work[it.vehicle] = &workEntry{entry: entry{part: it.part, state: e.state.Clone(), info: e.info}}
		} else {
			work[it.vehicle] = nil
			missing = append(missing, it.vehicle)
		}
	}
	s.mu.RUnlock()
	if len(missing) > 0 {
		vs, err := s.store.Vehicles(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			w := &workEntry{entry: entry{info: v.Info, state: v.State}}
			if w.state == nil {
				w.state = NewState(v.Info.ID)
			}
			work[v.Info.ID] = w
		}
		for _, id := range missing {
			if work[id] == nil {
				work[id] = &workEntry{entry: entry{info: Info{ID: id}, state: NewState(id)}}
			}
		}
	}
	for _, it := range items {
		work[it.vehicle].part = it.part
	}
	return work, nil
}

// statusEvent is a status change to publish: the state right after it, and the record that
// caused it (nil for the offline sweep).
type statusEvent struct {
	state *State
	rec   *telemetry.Record
}

func cloneStatus(st *State) *State {
	c := *st
	c.Recent, c.Applied = nil, nil
	return &c
}

// event builds the fleet.v1.Event. Its id depends only on what caused it, so a redelivered
// batch raises byte-identical ids that JetStream's duplicate window drops.
func (ev statusEvent) event() *fleetv1.Event {
	st := ev.state
	id := StatusEventID(st, ev.rec)
	e := &fleetv1.Event{
		EventId:   id,
		Source:    "tracking",
		Kind:      "status_changed",
		VehicleId: st.VehicleID,
		Time:      timestamppb.New(st.StatusTime),
		Attributes: map[string]string{
			"status":   st.Status.String(),
			"previous": st.PrevStatus.String(),
		},
	}
	if st.HasFix {
		e.Position = &fleetv1.LatLng{Latitude: st.Fix.Lat, Longitude: st.Fix.Lon}
		e.SpeedKmh = st.Fix.SpeedKmh
	}
	return e
}

// StatusEventID is the id of the status event raised when st's status changed; rec is the
// record that changed it (nil for the offline sweep). It depends only on the state after
// the change, so whoever applies the stream with the same Tracker derives the same ids.
func StatusEventID(st *State, rec *telemetry.Record) string {
	id := "tracking.status_changed." + st.VehicleID + "." + strconv.FormatInt(st.StatusTime.UnixNano(), 10)
	if rec != nil {
		id += "." + strconv.FormatUint(rec.Sequence, 10)
	}
	return id + "." + st.Status.String()
}

// publishEvents stores the status events and waits for every acknowledgement, so a batch
// is acknowledged only once its events are stored.
func (s *Service) publishEvents(ctx context.Context, evs []statusEvent) error {
	if len(evs) == 0 {
		return nil
	}
	now := timestamppb.New(s.now())
	pes := make([]*fleetv1.Event, len(evs))
	for i, ev := range evs {
		pes[i] = ev.event()
		pes[i].PublishTime = now
	}
	if err := eventpub.Publish(ctx, s.bus, pes, 0); err != nil {
		return err
	}
	for _, ev := range evs {
		s.statuses.WithLabelValues(ev.state.Status.String()).Inc()
	}
	return nil
}
