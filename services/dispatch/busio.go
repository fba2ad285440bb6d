package dispatch

// The bus edge: decoding what arrives from NATS (telemetry batches, command replies,
// service events) and encoding what leaves (device commands, alert events). Nothing
// else in the package sees protobuf or NATS types.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Reply is a device's answer to a command.
type Reply struct {
	CommandID, Vehicle, Detail string
	Status                     CommandState // accepted, rejected or executed
	// SpeedKmh is the device's own speed when it decided (HasSpeed): its acknowledgement
	// that it checked an IMMOBILIZE's speed limit itself.
	SpeedKmh float64
	HasSpeed bool
}

// Decode errors.
var (
	ErrBadReply = errors.New("bad command reply")
	ErrBadEvent = errors.New("bad event")
)

func unmarshal(data []byte, isJSON bool, m proto.Message) error {
	if len(data) > wire.MaxMessageBytes {
		return fmt.Errorf("%d bytes > %d", len(data), wire.MaxMessageBytes)
	}
	if isJSON {
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
	}
	return proto.Unmarshal(data, m)
}

// DecodeReply decodes a CommandReply published on vehicle's reply subject.
func DecodeReply(vehicle string, data []byte, isJSON bool) (Reply, error) {
	var pr fleetv1.CommandReply
	if err := unmarshal(data, isJSON, &pr); err != nil {
		return Reply{}, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	if pr.GetVehicleId() != "" && pr.GetVehicleId() != vehicle {
		return Reply{}, fmt.Errorf("%w: reply says vehicle %q, subject %q", ErrBadReply, pr.GetVehicleId(), vehicle)
	}
	if pr.GetCommandId() == "" || len(pr.GetCommandId()) > 64 {
		return Reply{}, fmt.Errorf("%w: command id missing or too long", ErrBadReply)
	}
	r := Reply{CommandID: pr.GetCommandId(), Vehicle: vehicle, Detail: pr.GetDetail()}
	if pr.SpeedKmh != nil {
		if sp := pr.GetSpeedKmh(); sp >= 0 && sp < 1000 {
			r.SpeedKmh, r.HasSpeed = sp, true
		}
	}
	if len(r.Detail) > 256 {
		r.Detail = r.Detail[:256]
	}
	switch pr.GetStatus() {
	case fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_ACCEPTED:
		r.Status = CommandAccepted
	case fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED:
		r.Status = CommandRejected
	case fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED:
		r.Status = CommandExecuted
	default:
		return Reply{}, fmt.Errorf("%w: status %v", ErrBadReply, pr.GetStatus())
	}
	return r, nil
}

// DecodeEvent decodes a service event. fallbackTime is used when the event has no time
// (the stream's timestamp, stable on redelivery); fallbackID when it has no id.
func DecodeEvent(data []byte, fallbackID string, fallbackTime time.Time) (EventIn, error) {
	var pe fleetv1.Event
	if err := unmarshal(data, false, &pe); err != nil {
		return EventIn{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := telemetry.ValidVehicleID(pe.GetVehicleId()); err != nil {
		return EventIn{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	e := EventIn{
		ID: pe.GetEventId(), Source: pe.GetSource(), Kind: pe.GetKind(), Vehicle: pe.GetVehicleId(),
		SpeedKmh: pe.GetSpeedKmh(), Attributes: pe.GetAttributes(),
	}
	if e.ID == "" {
		e.ID = fallbackID
	}
	if len(e.ID) > 200 {
		return EventIn{}, fmt.Errorf("%w: event id longer than 200", ErrBadEvent)
	}
	e.Time = fallbackTime
	if t := pe.GetTime(); t != nil && t.CheckValid() == nil {
		e.Time = t.AsTime()
	}
	if p := pe.GetPosition(); p != nil {
		pt := telemetry.Record{Lat: p.GetLatitude(), Lon: p.GetLongitude(), FixValid: true}
		if pt.CheckPosition() == nil {
			e.HasPosition, e.Lat, e.Lon = true, pt.Lat, pt.Lon
		}
	}
	return e, nil
}

// handleDevice is the handler of the dispatch-pNN consumers (kinds tele, alarm, reply).
func (s *Service) handleDevice(ctx context.Context, batch []bus.Msg) error {
	work := map[string]*vehicleWork{}
	var order []string
	for i := range batch {
		m := &batch[i]
		addr, err := bus.ParseSubject(m.Subject)
		if err != nil {
			s.rej.Add("bad_subject", "", err)
			continue
		}
		if telemetry.IsLoadTest(addr.Vehicle) {
			// Load-test vehicles are not the live fleet: no detection, no state, no
			// commands (docs/simulator.md, load tests).
			continue
		}
		w := work[addr.Vehicle]
		if w == nil {
			w = &vehicleWork{}
			work[addr.Vehicle] = w
			order = append(order, addr.Vehicle)
		}
		switch addr.Kind {
		case bus.KindReply:
			r, err := DecodeReply(addr.Vehicle, m.Data, wire.IsJSON(m.Header))
			if err != nil {
				s.rej.Add("bad_reply", addr.Vehicle, err)
				continue
			}
			w.replies = append(w.replies, r)
		case bus.KindTelemetry, bus.KindAlarm:
			recs, bad, err := wire.DecodeMsg(m, addr.Vehicle)
			if err != nil {
				s.rej.Add(wire.Reason(err), addr.Vehicle, err)
				continue
			}
			for _, re := range bad {
				s.rej.Add(wire.Reason(&re), addr.Vehicle, &re)
			}
			for j := range recs {
				r := recs[j]
				r.ReceivedTime, r.StreamSeq = m.Time, m.StreamSeq
				if err := s.cfg.RecordTime.Check(r.DeviceTime, m.Time); err != nil {
					s.rej.Add(wire.Reason(err), addr.Vehicle, err, "kind", addr.Kind)
					w.untimed = append(w.untimed, r)
					continue
				}
				w.recs = append(w.recs, r)
			}
			if len(recs) > 0 && m.Time.After(w.newest) {
				w.newest = m.Time
			}
		}
	}
	return s.handleVehicles(ctx, order, work)
}

// handleEvents is the handler of the dispatch-events consumer.
func (s *Service) handleEvents(ctx context.Context, batch []bus.Msg) error {
	for i := range batch {
		m := &batch[i]
		e, err := DecodeEvent(m.Data, "seq-"+strconv.FormatUint(m.StreamSeq, 10), m.Time)
		if err != nil {
			s.rej.Add("bad_event", "", err, "subject", m.Subject)
			continue
		}
		if telemetry.IsLoadTest(e.Vehicle) {
			continue // load-test vehicles are not the live fleet: no alerts
		}
		a, act := AlertFromEvent(&e)
		GradeFuelAlert(&a, s.cfg.fuelThreshold(a.Vehicle))
		switch s.cfg.Rules.Decide(&a, act) {
		case EventRaise:
			if err := s.raise(ctx, []Alert{a}); err != nil {
				return err
			}
		case EventResolve:
			got, found, err := s.st.ResolveIncident(ctx, a.IncidentKey, "system", "vehicle back online", s.now())
			if err != nil {
				return err
			}
			if found {
				s.log.Info("alert resolved automatically", "alert_id", got.ID, "vehicle", got.Vehicle, "kind", got.Kind)
			}
		}
	}
	return nil
}

// publishCommand delivers c on the vehicle's command subject. Devices subscribe there
// with core NATS; an offline device misses it, which the reply timeout turns into failed.
func (s *Service) publishCommand(c *Command) error {
	pc := &fleetv1.DeviceCommand{
		CommandId: c.ID, VehicleId: c.Vehicle, Kind: fleetv1.CommandKind(c.Kind), Params: c.Params,
		IssueTime: timestamppb.New(c.IssueTime), ExpireTime: timestamppb.New(c.ExpireTime),
	}
	if c.Kind == CommandImmobilize {
		limit := s.cfg.ImmobilizeMaxKmh
		pc.MaxSpeedKmh = &limit
	}
	data, err := proto.Marshal(pc)
	if err != nil {
		return fmt.Errorf("encode command: %w", err)
	}
	if err := s.b.PublishCore(bus.CommandSubject(c.Vehicle), data); err != nil {
		return fmt.Errorf("publish command: %w", apierr.Unavailable("nats", err))
	}
	return nil
}

// publishAlerts publishes alerts as events and waits for every acknowledgement.
func (s *Service) publishAlerts(ctx context.Context, alerts []Alert) error {
	events := make([]*fleetv1.Event, 0, len(alerts))
	for i := range alerts {
		a := &alerts[i]
		// The event id comes from what created the alert, not from its store id: a memory
		// store rebuilt after a restart numbers alerts again from 1, and a reused id would
		// make JetStream drop a different alert's event as a duplicate.
		h := fnv.New64a()
		h.Write([]byte(a.IncidentKey + "|" + a.CauseID))
		id := "dispatch-alert-" + strconv.FormatUint(h.Sum64(), 36)
		e := &fleetv1.Event{
			EventId: id, Source: SourceDispatch, Kind: "alert", VehicleId: a.Vehicle,
			Time: timestamppb.New(a.FirstTime), SpeedKmh: a.SpeedKmh, PublishTime: timestamppb.New(s.now()),
			Attributes: map[string]string{
				"alert_id": strconv.FormatUint(a.ID, 10), "alert_kind": a.Kind,
				"severity": a.Severity.String(), "message": a.Message,
			},
		}
		if a.HasPosition {
			e.Position = &fleetv1.LatLng{Latitude: a.Lat, Longitude: a.Lon}
		}
		events = append(events, e)
	}
	return eventpub.Publish(ctx, s.b, events, 0)
}
