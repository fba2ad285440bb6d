package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/apierr"
)

// DefaultPublishTimeout bounds the wait for the event stream's acknowledgements.
const DefaultPublishTimeout = 10 * time.Second

// Once is a message to store at most once: an event (pkg/events encodes them).
type Once struct {
	Subject string
	ID      string // the message's identity (Nats-Msg-Id)
	Data    []byte
	// Source and Kind label the event metrics.
	Source, Kind string
}

// PublishOnce stores msgs and returns once every one is stored or known to have been
// stored before. The same ids are never stored twice:
//
//   - within the duplicate window, Nats-Msg-Id makes the server drop the repeat;
//   - at any age, the publish expects its subject (which carries a digest of the id) to be
//     empty, so the server refuses a message it still retains.
//
// It publishes asynchronously, so a batch costs one round trip, not one per message. A
// zero timeout means DefaultPublishTimeout.
func (b *Bus) PublishOnce(ctx context.Context, msgs []Once, timeout time.Duration) error {
	if len(msgs) == 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultPublishTimeout
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := b.js.PublishAsync(m.Subject, m.Data, jetstream.WithMsgID(m.ID), jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return fmt.Errorf("publish %s event %s: %w", m.Kind, m.ID, apierr.Unavailable("nats", err))
		}
		futures = append(futures, f)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i, f := range futures {
		m := msgs[i]
		select {
		case ack := <-f.Ok():
			if b.events != nil {
				if ack.Duplicate {
					b.events.Duplicates.WithLabelValues(m.Source, m.Kind).Inc()
				} else {
					b.events.Published.WithLabelValues(m.Source, m.Kind).Inc()
				}
			}
		case err := <-f.Err():
			if alreadyStored(err) {
				// Stored before, outside the duplicate window: already emitted.
				if b.events != nil {
					b.events.Duplicates.WithLabelValues(m.Source, m.Kind).Inc()
				}
				continue
			}
			return fmt.Errorf("%s event %s not stored: %w", m.Kind, m.ID, apierr.Unavailable("nats", err))
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
