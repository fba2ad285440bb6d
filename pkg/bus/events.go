package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// DefaultPublishTimeout bounds the wait for the event stream's acknowledgements.
const DefaultPublishTimeout = 10 * time.Second

// PublishEvents stores events in the event stream, each on EventSubject(source, kind,
// vehicle, EventId), and returns once every one is stored or known to have been stored
// before. A service calls it before it saves the state that raised the events and before
// it acknowledges their input, so an event is never lost; a retry, a redelivery or a
// rebuild raises the same ids, and the same ids are never stored twice:
//
//   - within the duplicate window, Nats-Msg-Id makes the server drop the repeat;
//   - at any age, the publish expects its subject (which carries a digest of the id) to be
//     empty, so the server refuses an event it still retains.
//
// It publishes asynchronously, so a batch of events costs one round trip, not one per
// event. A zero timeout means DefaultPublishTimeout.
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
		subj := EventSubject(e.GetSource(), e.GetKind(), e.GetVehicleId(), e.GetEventId())
		f, err := b.js.PublishAsync(subj, data, jetstream.WithMsgID(e.GetEventId()), jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return fmt.Errorf("publish %s event %s: %w", e.GetKind(), e.GetEventId(), apierr.Unavailable("nats", err))
		}
		futures = append(futures, f)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i, f := range futures {
		e := events[i]
		select {
		case ack := <-f.Ok():
			if b.events != nil {
				if ack.Duplicate {
					b.events.Duplicates.WithLabelValues(e.GetSource(), e.GetKind()).Inc()
				} else {
					b.events.Published.WithLabelValues(e.GetSource(), e.GetKind()).Inc()
				}
			}
		case err := <-f.Err():
			if alreadyStored(err) {
				// Stored before, outside the duplicate window: already emitted.
				if b.events != nil {
					b.events.Duplicates.WithLabelValues(e.GetSource(), e.GetKind()).Inc()
				}
				continue
			}
			return fmt.Errorf("%s event %s not stored: %w", e.GetKind(), e.GetEventId(), apierr.Unavailable("nats", err))
		case <-t.C:
			return fmt.Errorf("publish events: no acknowledgement after %s: %w", timeout, apierr.ErrUnavailable)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// alreadyStored reports whether a publish expecting an empty subject was refused because
// the subject holds a message.
func alreadyStored(err error) bool {
	var jsErr jetstream.JetStreamError
	if !errors.As(err, &jsErr) || jsErr.APIError() == nil {
		return false
	}
	switch jsErr.APIError().ErrorCode {
	case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
		return true
	}
	return false
}
