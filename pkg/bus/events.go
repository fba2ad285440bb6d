package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// DefaultPublishTimeout bounds the wait for the event stream's acknowledgements.
const DefaultPublishTimeout = 10 * time.Second

// PublishEvents stores events in the event stream, each on
// EventSubject(source, kind, vehicle) with its EventId as Nats-Msg-Id, and returns once
// every one is acknowledged. A service calls it before acknowledging the input that
// raised the events, so an event is never lost; the deterministic ids make a
// republication after a redelivery a duplicate that JetStream drops. It publishes
// asynchronously, so a batch of events costs one round trip, not one per event.
// A zero timeout means DefaultPublishTimeout.
func (b *Bus) PublishEvents(ctx context.Context, events []*fleetv1.Event, timeout time.Duration) error {
	if len(events) == 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultPublishTimeout
	}
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	for _, e := range events {
		data, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", e.GetEventId(), err)
		}
		f, err := b.JS.PublishAsync(EventSubject(e.GetSource(), e.GetKind(), e.GetVehicleId()), data, jetstream.WithMsgID(e.GetEventId()))
		if err != nil {
			return fmt.Errorf("publish %s event %s: %w", e.GetKind(), e.GetEventId(), err)
		}
		futures = append(futures, f)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("%s event %s not stored: %w", events[i].GetKind(), events[i].GetEventId(), err)
		case <-t.C:
			return fmt.Errorf("publish events: no acknowledgement after %s", timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
