package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is one stored message handed to a service.
type Msg struct {
	Subject   string
	Data      []byte
	Header    nats.Header
	StreamSeq uint64    // position in the stream: stable across redeliveries
	Time      time.Time // when the stream stored it (server clock): stable across redeliveries
	Delivered uint64    // 1 on first delivery
	// Replayed: a rebuild is re-reading a message that an earlier run of the service had
	// already processed (at or below the durable's ack floor before the rebuild). Use it to
	// rebuild state without raising events again; the event stream refuses repeats anyway.
	Replayed bool

	memo *memo // set by a shared delivery's fan-out (Once)
}

// Handler processes a batch of messages in stream order. Returning nil acknowledges the
// whole batch. Returning an error acknowledges none of it: the batch is redelivered after
// a back-off, so a handler must be idempotent and must return an error only for transient
// failures (store unreachable). Bad input is the handler's to count and skip; it must not
// fail the batch, or it would be redelivered for ever.
type Handler func(ctx context.Context, batch []Msg) error

// ErrPoison marks a handler failure that retrying cannot cure: the input itself is the
// problem (a state the service cannot decode, a value it cannot encode). Wrap it with %w.
// The consumer then narrows the batch down to the message that fails, moves that message
// to the dead-letter stream with an alert, and carries on with the partition. Any other
// error is taken as transient (a store or the event stream unreachable) and retried for
// as long as it lasts: an outage stalls the partition, it never drops or reorders it.
var ErrPoison = errors.New("poison input")

// ConsumerConfig describes one durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filters []string
	// Service names the consuming service in dead-letter alerts (default: the durable's
	// name up to its last '-').
	Service string

	MaxBatch int           // most messages handed to the handler at once (default 512)
	AckWait  time.Duration // redelivery timeout for unacknowledged messages (default 30s)
	// Rebuild rewinds the durable consumer to the stream's first message at start. A
	// service whose state lives only in memory sets it, so a restarted process rebuilds
	// its state from the retained stream instead of resuming past records it no longer has.
	Rebuild bool
	// StartSeq, above 1, is the stream sequence a durable that does not exist yet starts
	// at (an existing durable resumes where it is). Shared delivery starts its durables
	// where the services' own durables had got to.
	StartSeq uint64
	// Partition tells the service which partitions it holds when they are taken by lease
	// (ConsumePartitions after LeasePartitions).
	Partition PartitionHooks

	Metrics *ConsumerMetrics // optional; default: the bus's (Bus.RegisterMetrics)
}

func (c *ConsumerConfig) defaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 512
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Service == "" {
		c.Service = c.Durable
		if i := strings.LastIndexByte(c.Durable, '-'); i > 0 {
			c.Service = c.Durable[:i]
		}
	}
}

// Consume runs a durable consumer until ctx ends.
//
// Delivery is a stream, not a series of fetches: one subscription lives as long as the
// consumer, and the client keeps pull requests open on it. A fetch that gives up on its
// own clock abandons whatever the server sends after that (the server times a request
// from when it reads it, which under CPU pressure is later), and an abandoned message
// comes back only after AckWait, behind newer records of the same vehicles
// (TestConsumeKeepsOrderWhenRequestsArriveLate).
//
// Order is checked, not assumed. Every delivery carries the consumer's delivery sequence;
// a gap means a delivery was lost on the way (a reconnect, a slow consumer's dropped
// messages). The consumer then stops taking messages, hands back what it holds, and resets
// the durable to the first stream sequence it has not processed, so nothing passes a lost
// message. A redelivery of a message already processed (its acknowledgement was lost) is
// acknowledged again without reaching the handler. A delivery number seen before, for a
// message not seen before, means the durable was reset under the session (by another
// process): it is handled like a gap, since the reset may have moved the start anywhere
// (TestConsumerSkipsNothingWhenTheDurableIsResetUnderIt).
//
// Each message is acknowledged after the handler has processed the batch that held it,
// and the last acknowledgement of a batch waits for the server's confirmation, which
// covers the earlier ones (one connection, processed in order). A lost acknowledgement
// costs a redelivery, never a loss: handlers are idempotent.
//
// A failed batch is retried in place with back-off (its AckWait extended meanwhile), so a
// store outage stalls the consumer instead of reordering or dropping its input. A batch
// that fails with ErrPoison (or panics) is split; the message that fails alone goes to
// the dead-letter stream, with an alert event, and the partition moves on.
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	return b.consume(ctx, cfg, h, nil)
}

// consume is Consume for a durable that only the holder of a lease may act on: owns
// reports whether the lease is still certainly ours (nil: always). While it is not, the
// consumer processes nothing and leaves the durable alone: no reset, no re-creation, no
// negative acknowledgement. Another instance may hold the lease by then and be reading
// the durable; a reset from here would restart the server's delivery sequence under it
// and move its start to a point of our choosing, a NAK would hand it a record it already
// holds a second time.
func (b *Bus) consume(ctx context.Context, cfg ConsumerConfig, h Handler, owns func() bool) error {
	cfg.defaults()
	h = b.guarded(cfg.Service, h)
	c := &consumer{b: b, cfg: cfg, h: h, log: b.log.With("durable", cfg.Durable), m: cfg.Metrics, lag: b.track(cfg.Durable), owns: owns}
	if c.m == nil {
		c.m = b.metrics
	}
	if !c.waitOwner(ctx) {
		return nil
	}
	cons, replayed, err := b.durable(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	c.cons, c.replayed = cons, replayed
	var backoff time.Duration
	for ctx.Err() == nil {
		if !c.waitOwner(ctx) {
			return nil
		}
		if c.cons == nil {
			// The durable may be gone (a server that lost a memory stream, an operator):
			// create it again where the stream and its configuration say.
			again := cfg
			again.Rebuild = false // rebuilt once at start; from here on, resume
			if c.cons, _, err = b.durable(ctx, again); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				backoff = nextBackoff(backoff)
				c.log.Warn("consumer unavailable", "err", err, "backoff", backoff)
				sleep(ctx, backoff)
				continue
			}
		}
		err := c.session(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errLeaseLost):
			// Not ours any more, or not certainly: wait (top of the loop) until the lease
			// is renewed, then start a session afresh from the durable's ack floor, or
			// until the partition is stopped.
			backoff = 0
			c.log.Info("partition lease not certainly ours; consumer paused", "err", err)
		case errors.Is(err, errGap):
			backoff = 0
			if c.m != nil {
				c.m.Gaps.WithLabelValues(cfg.Durable).Inc()
			}
			if !c.waitOwner(ctx) {
				return nil
			}
			c.log.Warn("delivery gap; resetting consumer to the first unprocessed message", "resume_seq", c.done+1, "err", err)
			if c.cons, err = b.resetTo(ctx, cfg, c.done+1); err != nil {
				c.log.Warn("reset consumer", "err", err)
				c.cons = nil
			}
		default:
			backoff = nextBackoff(backoff)
			c.log.Warn("consuming interrupted", "err", err, "backoff", backoff)
			c.cons = nil
			sleep(ctx, backoff)
		}
	}
	return nil
}

var errGap = errors.New("delivery sequence gap")

// ownerPoll is how often a paused leased consumer looks whether its lease came back.
const ownerPoll = 50 * time.Millisecond

// mayAct reports whether this consumer may act on its durable now (always, unless it
// reads a leased partition whose lease is no longer certainly ours).
func (c *consumer) mayAct() bool { return c.owns == nil || c.owns() }

// waitOwner waits until the consumer may act on its durable; false when ctx ended first.
func (c *consumer) waitOwner(ctx context.Context) bool {
	for !c.mayAct() {
		sleep(ctx, ownerPoll)
		if ctx.Err() != nil {
			return false
		}
	}
	return ctx.Err() == nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type consumer struct {
	b    *Bus
	cfg  ConsumerConfig
	h    Handler
	log  *slog.Logger
	m    *ConsumerMetrics
	cons jetstream.Consumer
	// done is the stream sequence up to which this consumer's input has been processed
	// and acknowledged (the ack floor as this process knows it).
	done uint64
	// replayed: with Rebuild, the ack floor before the rewind (Msg.Replayed).
	replayed uint64
	lag      *atomic.Int64 // messages not yet delivered (Bus.Lag); -1 until known
	// owns reports whether the partition's lease is still certainly ours (nil: not
	// leased). See consume.
	owns func() bool
	// lastStream is the highest stream sequence taken in the current session.
	lastStream uint64
}

// held is a delivered message with its metadata.
type held struct {
	m  jetstream.Msg
	md *jetstream.MsgMetadata
}

// session consumes over one subscription until ctx ends, a gap is seen (errGap) or the
// subscription fails.
func (c *consumer) session(ctx context.Context) error {
	info, err := c.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	if info.NumAckPending > 0 {
		// Messages out with nobody (a previous session's subscription) would come back
		// only after AckWait, behind newer ones: take them back now.
		if !c.mayAct() {
			return errLeaseLost
		}
		seq := max(info.AckFloor.Stream+1, info.Config.OptStartSeq)
		if c.cons, err = c.b.resetTo(ctx, c.cfg, seq); err != nil {
			return err
		}
		if info, err = c.cons.Info(ctx); err != nil {
			return fmt.Errorf("consumer info: %w", err)
		}
	}
	c.done = info.AckFloor.Stream
	c.lastStream = c.done
	if info.NumPending == 0 && info.NumAckPending == 0 {
		c.lag.Store(0) // nothing to catch up on; otherwise known once a batch is applied
	}
	lastDelivery := info.Delivered.Consumer

	// The channel holds everything the server may have out (MaxAckPending) plus the
	// client's buffer, so the subscription's callback never blocks: a blocked callback
	// would also hold up the heartbeats the client watches.
	in := make(chan jetstream.Msg, 6*c.cfg.MaxBatch)
	stop := make(chan struct{})
	fatal := make(chan error, 1)
	cc, err := c.cons.Consume(func(m jetstream.Msg) {
		select {
		case in <- m:
		case <-stop:
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(2*c.cfg.MaxBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
				errors.Is(err, jetstream.ErrConnectionClosed), errors.Is(err, jetstream.ErrBadRequest):
				select {
				case fatal <- err:
				default:
				}
			default:
				c.log.Debug("consume", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer func() {
		// Hand back at once, in order, whatever was delivered and not processed, so the
		// next owner of the partition need not wait for AckWait. Not when the lease is
		// gone: the new owner may hold these records already, and a NAK would deliver
		// them to it a second time; what we leave out is pending with nobody, which the
		// owner sees as a gap in its delivery sequence and takes back by a reset.
		cc.Stop()
		close(stop)
		nak := c.mayAct()
		for {
			select {
			case m := <-in:
				if nak {
					_ = m.Nak()
				}
			default:
				return
			}
		}
	}()

	batch := make([]held, 0, c.cfg.MaxBatch)
	for {
		batch = batch[:0]
		var gap bool
		select {
		case m := <-in:
			batch, gap = c.take(batch, m, &lastDelivery)
		case err := <-fatal:
			return err
		case <-ctx.Done():
			return nil
		}
	fill:
		for len(batch) < c.cfg.MaxBatch && !gap {
			select {
			case m := <-in:
				batch, gap = c.take(batch, m, &lastDelivery)
			default:
				// Nothing more is ready: hand over what we have rather than wait, so a
				// quiet fleet gets low latency and a busy one gets big batches.
				break fill
			}
		}
		// What came before a gap is in order and is processed; nothing after it is.
		if len(batch) > 0 {
			if !c.mayAct() {
				return errLeaseLost
			}
			if err := c.process(ctx, batch); err != nil {
				return err // stopping, or the lease is gone: the deferred hand-back decides
			}
		}
		if gap {
			return errGap
		}
	}
}

// take checks m against the delivery sequence and appends it to batch when it is new.
// It reports a gap (and hands m back) when a delivery before m never arrived.
func (c *consumer) take(batch []held, m jetstream.Msg, lastDelivery *uint64) ([]held, bool) {
	md, err := m.Metadata()
	if err != nil {
		c.log.Warn("message without metadata; handed back", "err", err)
		_ = m.Nak()
		return batch, false
	}
	switch d, s := md.Sequence.Consumer, md.Sequence.Stream; {
	case d > *lastDelivery+1:
		if c.mayAct() {
			_ = m.Nak()
		}
		return batch, true
	case d <= *lastDelivery && s > c.lastStream:
		// A delivery number seen already, for a message not seen yet: the durable was
		// reset under this session (the server restarts delivery numbers at 1), by an
		// instance whose lease lapsed or by an operator. It may have moved the start
		// anywhere, so nothing delivered from here on is known to follow what was
		// processed: resynchronise from our own position, like after a gap. (Treating
		// these as stale copies and dropping them skipped records: the next delivery
		// numbered above the old ones was taken as the continuation, and the dropped
		// records, redelivered after AckWait, counted as processed.)
		if c.mayAct() {
			_ = m.Nak()
		}
		return batch, true
	case d <= *lastDelivery:
		// A stale copy of a message already taken in this session.
		if s <= c.done {
			_ = m.Ack()
		}
		return batch, false
	case s <= c.lastStream:
		// The next delivery, of a message this session already holds: a redelivery
		// (a NAK or AckWait ran out while it waited). Processed: acknowledge it again;
		// still waiting in this session: its first copy is processed and acknowledged
		// in order (an acknowledgement counts for the message, whatever the delivery).
		*lastDelivery = d
		if s <= c.done {
			_ = m.Ack()
		}
		return batch, false
	}
	*lastDelivery = md.Sequence.Consumer
	c.lastStream = md.Sequence.Stream
	if md.NumDelivered > 1 && c.m != nil {
		c.m.Redelivered.WithLabelValues(c.cfg.Durable).Inc()
	}
	if c.m != nil {
		c.m.Pending.WithLabelValues(c.cfg.Durable).Set(float64(md.NumPending))
	}
	if MQTTDirectCopy(m.Headers()) {
		// The same record arrives again from the MQTT store (mqttSource).
		_ = m.Ack()
		return batch, false
	}
	return append(batch, held{m: m, md: md}), false
}

// process hands batch to the handler until it succeeds, dead-letters what is poison, and
// acknowledges. It returns ctx's error when ctx ended first, and errLeaseLost when the
// partition's lease is no longer certainly ours: the batch is then left to the owner.
func (c *consumer) process(ctx context.Context, batch []held) error {
	msgs := make([]Msg, len(batch))
	for i, h := range batch {
		msgs[i] = toMsgMeta(h.m, h.md)
		msgs[i].Replayed = msgs[i].StreamSeq <= c.replayed
	}
	stopped := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return context.Canceled
	}
	err := c.retry(ctx, batch, msgs)
	switch {
	case err == nil:
		if !c.ack(ctx, batch, msgs) {
			return stopped()
		}
		return nil
	case errors.Is(err, errLeaseLost):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	// Poison: find it by handling the messages one at a time, in order.
	for i := range batch {
		one := batch[i : i+1]
		err := c.retry(ctx, one, msgs[i:i+1])
		if errors.Is(err, errLeaseLost) {
			return err
		}
		if err != nil && ctx.Err() == nil {
			if !c.deadLetter(ctx, batch[i], err) {
				return stopped()
			}
			continue
		}
		if ctx.Err() != nil || !c.ack(ctx, one, msgs[i:i+1]) {
			return stopped()
		}
	}
	return nil
}

// retry calls the handler until it succeeds, fails with poison, or ctx ends.
func (c *consumer) retry(ctx context.Context, batch []held, msgs []Msg) error {
	var backoff time.Duration
	for {
		err := c.call(ctx, msgs)
		if c.m != nil {
			c.m.Batches.WithLabelValues(c.cfg.Durable).Inc()
		}
		if err == nil {
			return nil
		}
		if c.m != nil {
			c.m.Failures.WithLabelValues(c.cfg.Durable).Inc()
		}
		if errors.Is(err, ErrPoison) {
			c.log.Error("handler refused its input", "err", err, "messages", len(msgs), "first_seq", msgs[0].StreamSeq)
			return err
		}
		if errors.Is(err, errLeaseLost) {
			// Retrying cannot help before the lease is renewed, and the batch may be the
			// next owner's already: give it up without touching it (see consume).
			return err
		}
		backoff = nextBackoff(backoff)
		c.log.Warn("handler failed; retrying batch", "err", err, "messages", len(msgs), "backoff", backoff)
		for _, h := range batch {
			_ = h.m.InProgress()
		}
		sleep(ctx, backoff)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// call runs the handler, turning a panic into a poison error: input that crashes a
// handler would crash every process that reads the partition.
func (c *consumer) call(ctx context.Context, msgs []Msg) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: handler panic: %v", ErrPoison, r)
		}
	}()
	return c.h(ctx, msgs)
}

// ack acknowledges a processed batch; the last acknowledgement waits for the server.
func (c *consumer) ack(ctx context.Context, batch []held, msgs []Msg) bool {
	now := time.Now()
	for i, h := range batch {
		if i == len(batch)-1 {
			// Sent even when stopping: the batch is processed, and an acknowledgement
			// lost here would replay it.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := h.m.DoubleAck(actx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				// Not fatal: the message comes back after AckWait and is recognised as done.
				c.log.Debug("acknowledgement not confirmed", "err", err, "stream_seq", h.md.Sequence.Stream)
				if c.m != nil {
					c.m.Unconfirmed.WithLabelValues(c.cfg.Durable).Inc()
				}
			}
			cancel()
		} else {
			_ = h.m.Ack()
		}
		c.done = h.md.Sequence.Stream
		if c.m != nil && !msgs[i].Time.IsZero() {
			c.m.Delay.WithLabelValues(c.cfg.Durable).Observe(now.Sub(msgs[i].Time).Seconds())
		}
	}
	last := batch[len(batch)-1].md
	c.lag.Store(int64(last.NumPending))
	if c.m != nil {
		c.m.Messages.WithLabelValues(c.cfg.Durable).Add(float64(len(batch)))
		c.m.AckFloorLag.WithLabelValues(c.cfg.Durable).Set(float64(last.NumPending))
	}
	return ctx.Err() == nil
}

func nextBackoff(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return 100 * time.Millisecond
	case d >= 5*time.Second:
		return 5 * time.Second
	}
	return d * 2
}

func (b *Bus) consumerConfig(cfg ConsumerConfig) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: 4 * cfg.MaxBatch,
		MaxWaiting:    16,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(cfg.Filters) == 1 {
		cc.FilterSubject = cfg.Filters[0]
	} else {
		cc.FilterSubjects = cfg.Filters
	}
	return cc
}

// durable creates or updates the durable consumer and puts its start where this process
// must begin: the stream's first message for a rebuild, else the first message not
// acknowledged.
func (b *Bus) durable(ctx context.Context, cfg ConsumerConfig) (cons jetstream.Consumer, replayed uint64, err error) {
	cc := b.consumerConfig(cfg)
	if existing, err := b.js.Consumer(ctx, cfg.Stream, cfg.Durable); err == nil {
		// The start position of an existing durable cannot change; it only matters at
		// creation anyway.
		prev := existing.CachedInfo().Config
		cc.DeliverPolicy, cc.OptStartSeq = prev.DeliverPolicy, prev.OptStartSeq
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, 0, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	} else if cfg.StartSeq > 1 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, cfg.StartSeq
	}
	cons, err = b.js.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return nil, 0, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("consumer %s info: %w", cfg.Durable, err)
	}
	switch {
	case cfg.Rebuild:
		b.log.Info("rebuilding from the start of the stream", "durable", cfg.Durable, "processed_before", info.AckFloor.Stream)
		cons, err = b.resetTo(ctx, cfg, 1)
		return cons, info.AckFloor.Stream, err
	case info.NumAckPending > 0:
		// Messages still out belong to a run that is gone (crashed, or stopped a moment
		// ago): they would only come back after AckWait, behind newer ones. Never below
		// the durable's own start: a durable created at sequence N that crashed before its
		// first acknowledgement has an ack floor of N-1, not 0.
		seq := max(info.AckFloor.Stream+1, info.Config.OptStartSeq)
		b.log.Info("rewinding consumer to its ack floor", "durable", cfg.Durable,
			"resume_seq", seq, "ack_pending", info.NumAckPending)
		cons, err = b.resetTo(ctx, cfg, seq)
		return cons, 0, err
	}
	return cons, 0, nil
}

// resetTo makes the durable deliver from stream sequence seq next, forgetting what it
// has out. The server's consumer reset (nats-server 2.14+) does it in place, atomically.
// Older servers have no reset: the durable is deleted and created again at seq; a crash
// between the two would leave no durable, and the next start would read the partition
// from its first message (harmless for idempotent handlers, but slow).
func (b *Bus) resetTo(ctx context.Context, cfg ConsumerConfig, seq uint64) (jetstream.Consumer, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := b.js.ResetConsumerToSequence(rctx, cfg.Stream, cfg.Durable, seq)
	cancel()
	if err == nil {
		cons, err := b.js.Consumer(ctx, cfg.Stream, cfg.Durable)
		if err != nil {
			return nil, fmt.Errorf("consumer %s after reset: %w", cfg.Durable, err)
		}
		return cons, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	b.log.Info("consumer reset unavailable; recreating the durable", "durable", cfg.Durable, "resume_seq", seq, "err", err)
	if err := b.js.DeleteConsumer(ctx, cfg.Stream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("rewind consumer %s: %w", cfg.Durable, err)
	}
	cc := b.consumerConfig(cfg)
	if seq > 1 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = seq
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("rewind consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return cons, nil
}

func toMsgMeta(m jetstream.Msg, md *jetstream.MsgMetadata) Msg {
	return Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers(),
		StreamSeq: md.Sequence.Stream, Time: md.Timestamp, Delivered: md.NumDelivered}
}

func toMsg(m jetstream.Msg) Msg {
	out := Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()}
	if md, err := m.Metadata(); err == nil {
		out.StreamSeq = md.Sequence.Stream
		out.Time = md.Timestamp
		out.Delivered = md.NumDelivered
	}
	return out
}

// ConsumePartitions runs one durable consumer per telemetry partition in parts, named
// "<service>-p<N>", each selecting the given record kinds. It returns when ctx ends or
// a consumer cannot be created. Instances of a service that are given disjoint partition
// sets share the work; every vehicle lives in exactly one partition.
//
// When the bus shares the telemetry partitions among co-located services
// (ShareTelemetry) and service is one of them, the call hands h to the shared consumers
// instead and returns when ctx ends or they fail.
func (b *Bus) ConsumePartitions(ctx context.Context, service string, parts []int, kinds []string, base ConsumerConfig, h Handler) error {
	if b.shared != nil && b.shared.wants(service) {
		return b.shared.register(ctx, service, parts, kinds, base, h)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	// Each consumer has ONE filter subject, fleet.in.<p>.*.<kind or *>. With several
	// filter subjects the server intersects its per-block subject tree (one entry per
	// vehicle and kind) with the filters on every lookup, which at tens of thousands of
	// vehicles cost more CPU than everything else together. A service that wants several
	// (but not all) kinds therefore takes the whole partition and drops the kinds it does
	// not want here; the unwanted kinds (diagnostics, command replies) are a small share.
	kind := "*"
	if len(kinds) == 1 {
		kind = kinds[0]
	}
	handler := h
	if kind == "*" && !slices.Contains(kinds, "*") {
		handler = func(ctx context.Context, batch []Msg) error {
			keep := batch[:0:0]
			for _, m := range batch {
				if a, err := ParseSubject(m.Subject); err != nil || slices.Contains(kinds, a.Kind) {
					keep = append(keep, m) // unparseable subjects go on, to be counted as rejected
				}
			}
			if len(keep) == 0 {
				return nil
			}
			return h(ctx, keep)
		}
	}
	partition := func(p int) ConsumerConfig {
		cfg := base
		cfg.Stream = TelemetryStream
		cfg.Durable = fmt.Sprintf("%s-p%02d", service, p)
		cfg.Filters = []string{PartitionFilter(p, kind)}
		return cfg
	}
	if b.leaseCfg != nil {
		return b.consumeLeased(ctx, service, parts, base.Partition, func(ctx context.Context, p int, ls *lease) error {
			cfg := partition(p)
			cfg.Rebuild = false // a partition changes hands: state lives in a shared store
			// Only the holder may act on the durable: a consumer whose lease lapsed
			// pauses and leaves it to the next holder (consume).
			return b.consume(ctx, cfg, fenced(ls, handler), func() bool { return ls.valid(time.Now()) })
		})
	}
	for _, p := range parts {
		cfg := partition(p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Consume(ctx, cfg, handler); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// ParsePartitions reads a partition set: "" or "all" for every one of n; a list such as
// "0-7,12"; or "i/k", instance i (from 0) of k identical instances, which takes the
// partitions p with p mod k == i.
func ParsePartitions(spec string, n int) ([]int, error) {
	if spec == "" || spec == "all" {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	if is, ks, ok := strings.Cut(spec, "/"); ok {
		i, err1 := strconv.Atoi(is)
		k, err2 := strconv.Atoi(ks)
		if err1 != nil || err2 != nil || k <= 0 || i < 0 || i >= k || k > n {
			return nil, fmt.Errorf("partition spec %q: want i/k with 0 <= i < k <= %d", spec, n)
		}
		var out []int
		for p := i; p < n; p += k {
			out = append(out, p)
		}
		return out, nil
	}
	seen := map[int]bool{}
	var out []int
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("partition %q: %w", part, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("partition %q: %w", part, err)
			}
		}
		if a < 0 || b >= n || a > b {
			return nil, fmt.Errorf("partition %q outside 0..%d", part, n-1)
		}
		for p := a; p <= b; p++ {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// Logger returns the bus's logger, for adapters built on top of it.
func (b *Bus) Logger() *slog.Logger { return b.log }

// track registers a consumer's lag under its durable name.
func (b *Bus) track(durable string) *atomic.Int64 {
	b.lagMu.Lock()
	defer b.lagMu.Unlock()
	if b.lags == nil {
		b.lags = map[string]*atomic.Int64{}
	}
	l, ok := b.lags[durable]
	if !ok {
		l = new(atomic.Int64)
		l.Store(-1)
		b.lags[durable] = l
	}
	return l
}

// Lag returns, per durable consumer this bus has started, how many stream messages were
// still to come after the last batch it applied (-1 until it has applied one, unless it
// started with nothing to read).
func (b *Bus) Lag() map[string]int64 {
	b.lagMu.Lock()
	defer b.lagMu.Unlock()
	out := make(map[string]int64, len(b.lags))
	for d, l := range b.lags {
		out[d] = l.Load()
	}
	return out
}

// CaughtUp reports whether at least want consumers have started and each is within
// bound messages of the end of its stream (a rebuild or catch-up is done), with a short
// description of the furthest behind.
func (b *Bus) CaughtUp(want int, bound int64) (bool, string) {
	lags := b.Lag()
	worst, worstLag := "", int64(0)
	for d, l := range lags {
		if l < 0 {
			return false, d + " starting"
		}
		if l > worstLag {
			worst, worstLag = d, l
		}
	}
	if len(lags) < want {
		return false, fmt.Sprintf("%d of %d consumers started", len(lags), want)
	}
	if worstLag > bound {
		return false, fmt.Sprintf("%s is %d messages behind", worst, worstLag)
	}
	return true, fmt.Sprintf("%d consumers, at most %d messages behind", len(lags), worstLag)
}
