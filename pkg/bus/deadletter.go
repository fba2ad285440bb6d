package bus

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// DeadLetter describes input a consumer moved to the dead-letter stream, for the alert
// its process raises (OnDeadLetter; pkg/eventpub.RaiseDeadLetters makes it an event).
type DeadLetter struct {
	ID        string    // durable.stream-sequence: the same on every retry
	Source    string    // the service whose input it was (ServiceError may name another)
	Vehicle   string    // the vehicle it is about, or "unknown"
	Stored    time.Time // when the stream stored the original
	Durable   string
	Stream    string
	StreamSeq uint64
	Subject   string // the original subject
	Error     string // why the handler refused it (truncated)
}

// OnDeadLetter installs what the bus calls after it moved input to the dead-letter
// stream and before it acknowledges the input: raising the alert (an error retries both).
// Install it once, after Open and before any consumer starts.
func (b *Bus) OnDeadLetter(f func(ctx context.Context, d DeadLetter) error) { b.deadLetter = f }

func (b *Bus) raiseDeadLetter(ctx context.Context, d DeadLetter) error {
	if b.deadLetter == nil {
		b.log.Warn("input dead-lettered without an alert: this process installed none (eventpub.RaiseDeadLetters)", "durable", d.Durable, "stream_seq", d.StreamSeq)
		return nil
	}
	return b.deadLetter(ctx, d)
}

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
	dl := DeadLetter{
		ID: id, Source: sourceOf(c.cfg.Service, cause), Vehicle: deadVehicle(h.m.Subject()), Stored: h.md.Timestamp,
		Durable: c.cfg.Durable, Stream: c.cfg.Stream, StreamSeq: seq, Subject: h.m.Subject(), Error: reason,
	}
	var backoff time.Duration
	for {
		_, err := c.b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		if err == nil {
			err = c.b.raiseDeadLetter(ctx, dl)
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
