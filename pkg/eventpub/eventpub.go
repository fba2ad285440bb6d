// Package eventpub encodes the services' events (fleetv1.Event) for the event stream and
// stores them through pkg/bus, each at most once. The bus carries bytes; what an event
// is, and the alert raised when a consumer dead-letters its input, are decided here.
package eventpub

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// KindDeadLetter is the kind of the event raised when input is dead-lettered.
const KindDeadLetter = bus.EventKindDeadLetter

// Publish stores events in the event stream, each on bus.EventSubject(source, kind,
// vehicle, EventId), and returns once every one is stored or known to have been stored
// before (bus.PublishOnce). A service calls it before it saves the state that raised the
// events and before it acknowledges their input, so an event is never lost; a retry, a
// redelivery or a rebuild raises the same ids, and the same ids are never stored twice.
// A zero timeout means bus.DefaultPublishTimeout.
func Publish(ctx context.Context, b *bus.Bus, evs []*fleetv1.Event, timeout time.Duration) error {
	if len(evs) == 0 {
		return nil
	}
	msgs := make([]bus.Once, 0, len(evs))
	for _, e := range evs {
		data, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", e.GetEventId(), err)
		}
		msgs = append(msgs, bus.Once{
			Subject: bus.EventSubject(e.GetSource(), e.GetKind(), e.GetVehicleId(), e.GetEventId()),
			ID:      e.GetEventId(), Data: data, Source: e.GetSource(), Kind: e.GetKind(),
		})
	}
	return b.PublishOnce(ctx, msgs, timeout)
}

// RaiseDeadLetters makes b raise a dead_letter event for each input its consumers
// dead-letter (dispatch turns it into an alert). Every process that runs consumers
// installs it once, right after bus.Open.
func RaiseDeadLetters(b *bus.Bus) {
	b.OnDeadLetter(func(ctx context.Context, d bus.DeadLetter) error {
		seq := strconv.FormatUint(d.StreamSeq, 10)
		ev := &fleetv1.Event{
			EventId: "bus.dead_letter." + d.ID, Source: d.Source, Kind: KindDeadLetter, VehicleId: d.Vehicle,
			Time: timestamppb.New(d.Stored), PublishTime: timestamppb.Now(),
			Attributes: map[string]string{
				"durable": d.Durable, "stream": d.Stream, "stream_seq": seq,
				"subject": d.Subject, "error": d.Error,
			},
		}
		return Publish(ctx, b, []*fleetv1.Event{ev}, 0)
	})
}
