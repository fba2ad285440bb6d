package tracking

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// When instances split the partitions, each commits only its own vehicles. To give every
// watcher the whole fleet, the owner of a vehicle publishes each committed state on
// bus.LiveSubject and the other instances feed it to their watchers. A single instance
// that owns every partition skips all of this.

func (s *Service) sharesFleet() bool {
	return s.nParts > 0 && (s.dynamic || s.ownedCount < s.nParts)
}

// encodeLive packs a vehicle's registry entry and live state for the live subject.
func encodeLive(dst []byte, v *Vehicle) []byte {
	e := encoder{b: dst}
	e.u8(1) // version
	e.str(v.Info.Name)
	e.str(v.Info.Plate)
	e.uv(uint64(len(v.Info.Groups)))
	for _, g := range v.Info.Groups {
		e.str(g)
	}
	e.uv(uint64(len(v.Info.Metadata)))
	for k, val := range v.Info.Metadata {
		e.str(k)
		e.str(val)
	}
	if v.Info.Registered {
		e.u8(1)
	} else {
		e.u8(0)
	}
	if v.State == nil {
		e.u8(0)
		return e.b
	}
	e.u8(1)
	return encodeState(e.b, v.State)
}

func decodeLive(id string, b []byte) (Vehicle, error) {
	d := decoder{b: b}
	v := Vehicle{Info: Info{ID: id}}
	if ver := d.u8(); ver != 1 {
		return v, fmt.Errorf("live update version %d", ver)
	}
	v.Info.Name = d.str()
	v.Info.Plate = d.str()
	n := d.uv()
	if n > 1024 {
		return v, fmt.Errorf("live update: %d groups", n)
	}
	for i := uint64(0); i < n; i++ {
		v.Info.Groups = append(v.Info.Groups, d.str())
	}
	n = d.uv()
	if n > 1024 {
		return v, fmt.Errorf("live update: %d metadata entries", n)
	}
	if n > 0 {
		v.Info.Metadata = make(map[string]string, n)
	}
	for i := uint64(0); i < n; i++ {
		k := d.str()
		v.Info.Metadata[k] = d.str()
	}
	v.Info.Registered = d.u8() == 1
	hasState := d.u8() == 1
	if d.err != nil {
		return v, d.err
	}
	if hasState {
		st, err := decodeState(d.b)
		if err != nil {
			return v, err
		}
		v.State = st
	}
	return v, nil
}

// publishLive sends committed vehicles to the other instances.
func (s *Service) publishLive(vs []Vehicle) {
	if !s.sharesFleet() {
		return
	}
	var buf []byte
	for i := range vs {
		buf = encodeLive(buf[:0], &vs[i])
		// Core NATS copies the payload into its write buffer, so buf can be reused.
		if err := s.bus.PublishCore(bus.LiveSubject(vs[i].Info.ID), buf); err != nil {
			s.log.Debug("live update not published", "vehicle", vs[i].Info.ID, "err", err)
		}
	}
}

// followOthers subscribes this instance's watchers to the other instances' live updates.
// The returned function unsubscribes.
func (s *Service) followOthers() (func(), error) {
	if !s.sharesFleet() {
		return func() {}, nil
	}
	sub, err := s.bus.Subscribe(bus.LiveWildcard(), func(m *nats.Msg) {
		id, ok := bus.LiveVehicle(m.Subject)
		if !ok || s.owns(bus.PartitionOf(id, s.nParts)) {
			return // our own vehicles reach our watchers directly
		}
		v, err := decodeLive(id, m.Data)
		if err != nil {
			s.rej.Add("bad_live_update", id, err)
			return
		}
		s.hub.publish(v)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to live updates: %w", err)
	}
	// The hub never blocks this callback (it coalesces per vehicle), so the pending
	// limits are only a guard against a stalled process.
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	// Make sure the server has the subscription before we start producing updates.
	if err := s.bus.Flush(5 * time.Second); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to live updates: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
