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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Msg is one stored message handed to a service.
type Msg struct {
	Subject   string
	Data      []byte
	Header    nats.Header
	StreamSeq uint64    // position in the stream: stable across redeliveries
	Time      time.Time // when the stream stored it (server clock): stable across redeliveries
	Delivered uint64    // 1 on first delivery
}

// JSON reports whether the payload is the JSON form of the tracker protocol (header
// Content-Type: application/json) rather than protobuf binary.
func (m *Msg) JSON() bool {
	return m.Header != nil && m.Header.Get(wire.HeaderContentType) == wire.ContentTypeJSON
}

// Handler processes a batch of messages in stream order. Returning nil acknowledges the
// whole batch. Returning an error acknowledges none of it: the batch is redelivered after
// a back-off, so a handler must be idempotent and must return an error only for transient
// failures (store unreachable). Bad input is the handler's to count and skip; it must not
// fail the batch, or it would be redelivered for ever.
type Handler func(ctx context.Context, batch []Msg) error

// ConsumerConfig describes one durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filters []string

	MaxBatch int           // most messages handed to the handler at once (default 512)
	AckWait  time.Duration // redelivery timeout for unacknowledged messages (default 30s)
	// Rebuild deletes the durable consumer at start and reads the stream from its first
	// message. A service whose state lives only in memory sets it, so a restarted process
	// rebuilds its state from the retained stream instead of resuming past records it no
	// longer has.
	Rebuild bool

	Metrics *ConsumerMetrics // optional
}

func (c *ConsumerConfig) defaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 512
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
}

// ConsumerMetrics counts what the consumers did. Register it once per process.
type ConsumerMetrics struct {
	Messages *prometheus.CounterVec // by durable
	Batches  *prometheus.CounterVec // by durable
	Failures *prometheus.CounterVec // handler errors (batches redelivered), by durable
}

// NewConsumerMetrics creates and registers the consumer metrics with reg (may be nil).
func NewConsumerMetrics(reg prometheus.Registerer) *ConsumerMetrics {
	m := &ConsumerMetrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_messages_total", Help: "Messages handed to handlers."}, []string{"durable"}),
		Batches:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_batches_total", Help: "Batches handed to handlers."}, []string{"durable"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_handler_failures_total", Help: "Batches a handler failed; they are redelivered."}, []string{"durable"}),
	}
	if reg != nil {
		reg.MustRegister(m.Messages, m.Batches, m.Failures)
	}
	return m
}

const fetchWait = 2 * time.Second

// Consume runs a durable consumer until ctx ends.
//
// Every message is acknowledged individually, after the handler has processed the batch
// that held it. Cumulative acknowledgement (AckAll) would halve the server's ack work,
// but it acknowledges every earlier message too: a delivery lost in a reconnect, or a
// message still pending from a crashed process, would be acknowledged unprocessed. With
// explicit acks the server redelivers anything unacknowledged after AckWait, and the
// handlers are idempotent and order-tolerant, so nothing is lost and nothing counts twice.
// Devices that send several records per message keep the ack rate well below the ceiling.
//
// A failed batch is retried in place with back-off (its AckWait extended meanwhile), so a
// store outage stalls the consumer instead of reordering or dropping its input.
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	cfg.defaults()
	cons, err := b.durable(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	log := b.log.With("durable", cfg.Durable)
	var (
		pending = make([]jetstream.Msg, 0, cfg.MaxBatch)
		batch   = make([]Msg, 0, cfg.MaxBatch)
	)
	// flush hands pending to the handler until it succeeds or ctx ends.
	flush := func() bool {
		if len(pending) == 0 {
			return true
		}
		batch = batch[:0]
		for _, m := range pending {
			batch = append(batch, toMsg(m))
		}
		var backoff time.Duration
		for {
			err := h(ctx, batch)
			if cfg.Metrics != nil {
				cfg.Metrics.Batches.WithLabelValues(cfg.Durable).Inc()
			}
			if err == nil {
				break
			}
			if cfg.Metrics != nil {
				cfg.Metrics.Failures.WithLabelValues(cfg.Durable).Inc()
			}
			backoff = nextBackoff(backoff)
			log.Warn("handler failed; retrying batch", "err", err, "messages", len(batch), "backoff", backoff)
			for _, m := range pending {
				_ = m.InProgress()
			}
			select {
			case <-ctx.Done():
				return false
			case <-time.After(backoff):
			}
		}
		if cfg.Metrics != nil {
			cfg.Metrics.Messages.WithLabelValues(cfg.Durable).Add(float64(len(batch)))
		}
		for _, m := range pending {
			_ = m.Ack()
		}
		pending = pending[:0]
		return true
	}
	var backoff time.Duration
	for ctx.Err() == nil {
		// The pull request is tied to ctx: when the consumer stops, its inbox is
		// unsubscribed at once, so the server stops delivering to a request nobody reads
		// (a message sent there would otherwise wait AckWait before redelivery).
		fctx, fcancel := context.WithTimeout(ctx, fetchWait)
		mb, err := cons.Fetch(cfg.MaxBatch, jetstream.FetchContext(fctx))
		if err != nil {
			fcancel()
			if ctx.Err() != nil {
				break
			}
			backoff = nextBackoff(backoff)
			log.Warn("fetch failed", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		msgs := mb.Messages()
	drain:
		for {
			var (
				m  jetstream.Msg
				ok bool
			)
			if len(pending) == 0 {
				select {
				case m, ok = <-msgs:
				case <-ctx.Done():
					break drain
				}
			} else {
				select {
				case m, ok = <-msgs:
				default:
					// Nothing more is ready: hand over what we have rather than wait, so a
					// quiet fleet gets low latency and a busy one gets big batches.
					if !flush() {
						break drain
					}
					continue
				}
			}
			if !ok {
				break
			}
			pending = append(pending, m)
			if len(pending) == cfg.MaxBatch && !flush() {
				break drain
			}
		}
		if ctx.Err() != nil {
			fcancel()
			// Hand back what we hold so a restarted consumer need not wait for AckWait.
			for _, m := range pending {
				_ = m.Nak()
			}
			pending = pending[:0]
			for {
				select {
				case m, ok := <-msgs:
					if !ok {
						return nil
					}
					_ = m.Nak()
				default:
					return nil
				}
			}
		}
		flush()
		fcancel()
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			log.Debug("fetch ended", "err", err)
		}
	}
	return nil
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

func (b *Bus) durable(ctx context.Context, cfg ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.Rebuild {
		err := b.JS.DeleteConsumer(ctx, cfg.Stream, cfg.Durable)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("reset consumer %s: %w", cfg.Durable, err)
		}
	}
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
	if existing, err := b.JS.Consumer(ctx, cfg.Stream, cfg.Durable); err == nil {
		// The start position of an existing durable cannot change (it may have been
		// rewound, below); it only matters at creation anyway.
		prev := existing.CachedInfo().Config
		cc.DeliverPolicy, cc.OptStartSeq = prev.DeliverPolicy, prev.OptStartSeq
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	// A durable that still has messages out, or pull requests waiting, belongs to a run
	// that is gone (crashed, or stopped a moment ago): those messages would only come back
	// after AckWait, and a waiting request could swallow the next message the same way.
	// Recreate the durable at its ack floor so everything unacknowledged is delivered
	// again now, in order. Handlers are idempotent, so re-reading is safe.
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s info: %w", cfg.Durable, err)
	}
	if info.NumAckPending == 0 && info.NumWaiting == 0 {
		return cons, nil
	}
	b.log.Info("rewinding consumer to its ack floor", "durable", cfg.Durable,
		"ack_floor", info.AckFloor.Stream, "ack_pending", info.NumAckPending, "waiting", info.NumWaiting)
	if err := b.JS.DeleteConsumer(ctx, cfg.Stream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("rewind consumer %s: %w", cfg.Durable, err)
	}
	cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	cc.OptStartSeq = info.AckFloor.Stream + 1
	cons, err = b.JS.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("rewind consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return cons, nil
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
func (b *Bus) ConsumePartitions(ctx context.Context, service string, parts []int, kinds []string, base ConsumerConfig, h Handler) error {
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
	for _, p := range parts {
		cfg := base
		cfg.Stream = TelemetryStream
		cfg.Durable = fmt.Sprintf("%s-p%02d", service, p)
		cfg.Filters = []string{PartitionFilter(p, kind)}
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
