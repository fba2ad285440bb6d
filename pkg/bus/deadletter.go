package bus

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Headers of a dead letter.
const (
	HeaderDeadSubject   = "Fleetwire-Subject"    // the original subject
	HeaderDeadStream    = "Fleetwire-Stream"     // the original stream
	HeaderDeadStreamSeq = "Fleetwire-Stream-Seq" // the original stream sequence
	HeaderDeadError     = "Fleetwire-Error"      // why the handler refused it (truncated)
)

// EventKindDeadLetter is the kind of the event raised when input is dead-lettered.
const EventKindDeadLetter = "dead_letter"

// deadLetter moves h to the dead-letter stream, raises an alert event, and then (only
// then) acknowledges it. Both publishes carry ids derived from the durable and the
// stream sequence, so a crash anywhere in between repeats them harmlessly. It returns
// false when ctx ended first.
func (c *consumer) deadLetter(ctx context.Context, h held, cause error) bool {
	seq := h.md.Sequence.Stream
	id := c.cfg.Durable + "." + strconv.FormatUint(seq, 10)
	reason := cause.Error()
	if len(reason) > 512 {
		reason = reason[:512]
	}
	msg := &nats.Msg{Subject: DeadLetterSubject(c.cfg.Durable), Data: h.m.Data(), Header: nats.Header{}}
	for k, v := range h.m.Headers() {
		msg.Header[k] = v
	}
	msg.Header.Set(HeaderDeadSubject, h.m.Subject())
	msg.Header.Set(HeaderDeadStream, c.cfg.Stream)
	msg.Header.Set(HeaderDeadStreamSeq, strconv.FormatUint(seq, 10))
	msg.Header.Set(HeaderDeadError, reason)
	vehicle := deadVehicle(h.m.Subject())
	ev := &fleetv1.Event{
		EventId: "bus.dead_letter." + id, Source: sourceOf(c.cfg.Service, cause), Kind: EventKindDeadLetter, VehicleId: vehicle,
		Time: timestamppb.New(h.md.Timestamp), PublishTime: timestamppb.Now(),
		Attributes: map[string]string{
			"durable": c.cfg.Durable, "stream": c.cfg.Stream, "stream_seq": strconv.FormatUint(seq, 10),
			"subject": h.m.Subject(), "error": reason,
		},
	}
	var backoff time.Duration
	for {
		_, err := c.b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		if err == nil {
			err = c.b.PublishEvents(ctx, []*fleetv1.Event{ev}, 0)
		}
		if err == nil {
			break
		}
		backoff = nextBackoff(backoff)
		c.log.Warn("dead-letter failed; retrying", "err", err, "stream_seq", seq, "backoff", backoff)
		_ = h.m.InProgress()
		sleep(ctx, backoff)
		if ctx.Err() != nil {
			return false
		}
	}
	c.log.Error("input moved to the dead-letter stream", "stream_seq", seq, "subject", h.m.Subject(),
		"dead_letter_subject", msg.Subject, "err", reason)
	if c.m != nil {
		c.m.DeadLetters.WithLabelValues(c.cfg.Durable).Inc()
	}
	return c.ack(ctx, []held{h}, []Msg{toMsgMeta(h.m, h.md)})
}

// deadVehicle finds the vehicle a dead letter is about: the device subject's vehicle, or
// the last token of an event subject, or "unknown".
func deadVehicle(subject string) string {
	if a, err := ParseSubject(subject); err == nil {
		return a.Vehicle
	}
	if rest, ok := strings.CutPrefix(subject, evtPrefix); ok {
		if parts := strings.Split(rest, "."); len(parts) >= 3 && parts[2] != "" && parts[2] != "*" {
			return parts[2]
		}
	}
	return "unknown"
}
