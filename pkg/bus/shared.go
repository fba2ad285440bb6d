package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Shared delivery: when several services run in one process (the all-in-one), each
// partition is read once, by one durable consumer, decoded and handed to every
// service in the process, and acknowledged once all of them have applied it. Four
// services reading their own durables cost four deliveries, four acknowledgements and
// four stored consumer states per record in JetStream, the largest share of the
// all-in-one's CPU (docs/benchmarks.md).
//
// The guarantees are those of one durable consumer (gap-checked delivery, confirmed
// acknowledgements, dead letters) with one addition: the batch is acknowledged only
// after every service's handler returned nil for it. A service that failed retries the
// batch alone; the others, which applied it, are not called again for it (each
// service's progress is remembered per partition while the process runs). After a
// restart the durable resumes at its ack floor, which no service had passed unapplied;
// services whose stored state is further along see those records again and, being
// idempotent, change nothing and raise no second event (event identity).

// SharedDurable is the durable name prefix of the shared partition consumers:
// "shared-p00" … .
const SharedDurable = "shared"

// Shared runs the shared partition consumers of the services named when it was made.
// Each of those services calls Bus.ConsumePartitions as it would alone; the call
// registers its handler here and returns when its ctx ends or the shared consumers
// fail. Shared.Run starts consuming once every named service has registered, so no
// partition is read before all its readers are there.
type Shared struct {
	b     *Bus
	names []string

	mu    sync.Mutex
	regs  map[string]*sharedReg
	all   chan struct{} // closed when every named service has registered
	done  chan struct{} // closed when Run returns
	err   error
	parts []int
}

type sharedReg struct {
	service string
	kinds   []string // nil: every kind
	base    ConsumerConfig
	h       Handler
}

// ShareTelemetry makes the bus deliver the telemetry partitions once to the named
// services, which must all run in this process and call ConsumePartitions with the
// same partitions. Call it before the services start; run the returned Shared's Run
// alongside them. Services not named consume on their own, as before.
func (b *Bus) ShareTelemetry(services []string) *Shared {
	s := &Shared{b: b, names: slices.Clone(services), regs: map[string]*sharedReg{},
		all: make(chan struct{}), done: make(chan struct{})}
	b.shared = s
	return s
}

// Consumers is how many durable consumers Run starts for parts (readiness counts them).
func (s *Shared) Consumers(parts int) int { return parts }

func (s *Shared) wants(service string) bool { return slices.Contains(s.names, service) }

// register adds a service's handler and waits until ctx ends or the shared consumers
// stop, returning their error.
func (s *Shared) register(ctx context.Context, service string, parts []int, kinds []string, base ConsumerConfig, h Handler) error {
	s.mu.Lock()
	if _, dup := s.regs[service]; dup {
		s.mu.Unlock()
		return fmt.Errorf("shared delivery: %s registered twice", service)
	}
	if s.parts == nil {
		s.parts = slices.Clone(parts)
	} else if !slices.Equal(s.parts, parts) {
		s.mu.Unlock()
		return fmt.Errorf("shared delivery: %s consumes partitions %v, the others %v", service, parts, s.parts)
	}
	if slices.Contains(kinds, "*") {
		kinds = nil
	}
	// The service's store guard (GuardBatches) checks around its own handler here, as
	// Consume does for a service consuming alone.
	s.regs[service] = &sharedReg{service: service, kinds: kinds, base: base, h: s.b.guarded(service, h)}
	if len(s.regs) == len(s.names) {
		close(s.all)
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err
	}
}

// Run waits for every named service to register, then consumes each partition through
// one durable until ctx ends.
func (s *Shared) Run(ctx context.Context) error {
	err := s.run(ctx)
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	close(s.done)
	return err
}

func (s *Shared) run(ctx context.Context) error {
	select {
	case <-s.all:
	case <-ctx.Done():
		return nil
	}
	// Registration is over: the map and its entries are only read from here on.
	regs := make([]*sharedReg, 0, len(s.names))
	for _, n := range s.names {
		regs = append(regs, s.regs[n])
	}
	base := ConsumerConfig{Service: SharedDurable}
	for _, r := range regs {
		// Rebuild when any service keeps its state in memory: it must re-read the stream.
		base.Rebuild = base.Rebuild || r.base.Rebuild
		base.AckWait = max(base.AckWait, r.base.AckWait)
		if r.base.MaxBatch > 0 && (base.MaxBatch == 0 || r.base.MaxBatch < base.MaxBatch) {
			base.MaxBatch = r.base.MaxBatch
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for _, p := range s.parts {
		cfg := base
		cfg.Stream = TelemetryStream
		cfg.Durable = fmt.Sprintf("%s-p%02d", SharedDurable, p)
		cfg.Filters = []string{PartitionFilter(p, "*")}
		start, err := s.startSeq(ctx, p, regs)
		if err != nil {
			return err
		}
		cfg.StartSeq = start
		f := &fanout{regs: regs, done: make([]uint64, len(regs))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.b.Consume(ctx, cfg, f.handle); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// startSeq is where a shared durable that does not exist yet starts: at the first
// message that some service has not acknowledged on its own durable (services that ran
// as separate processes before), or at the stream's start when any has none.
func (s *Shared) startSeq(ctx context.Context, part int, regs []*sharedReg) (uint64, error) {
	if _, err := s.b.js.Consumer(ctx, TelemetryStream, fmt.Sprintf("%s-p%02d", SharedDurable, part)); err == nil {
		return 0, nil // exists: it resumes where it is
	}
	start := uint64(0)
	for _, r := range regs {
		c, err := s.b.js.Consumer(ctx, TelemetryStream, fmt.Sprintf("%s-p%02d", r.service, part))
		if err != nil {
			return 1, nil // never consumed on its own: read everything
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("consumer %s-p%02d: %w", r.service, part, err)
		}
		if next := info.AckFloor.Stream + 1; start == 0 || next < start {
			start = next
		}
	}
	return start, nil
}

// fanout hands one partition's batches to every service.
type fanout struct {
	regs []*sharedReg
	// done[i] is the last stream sequence service i applied in this process: when a
	// batch is retried because another service failed, a service that applied it is
	// not called again for it.
	done []uint64
}

// handle runs every service's handler on its kinds of the batch, concurrently (the
// services share nothing), and succeeds only when all did. A transient failure of any
// service fails the batch (retried); poison is reported only when no service failed
// transiently, so a message is never dead-lettered while a service still owes it an
// ordinary retry.
func (f *fanout) handle(ctx context.Context, batch []Msg) error {
	last := batch[len(batch)-1].StreamSeq
	shareOnce(batch)
	errs := make([]error, len(f.regs))
	var wg sync.WaitGroup
	for i, r := range f.regs {
		if f.done[i] >= last {
			continue
		}
		mine := make([]Msg, 0, len(batch))
		for _, m := range batch {
			if m.StreamSeq <= f.done[i] {
				continue
			}
			if r.kinds != nil {
				if a, err := ParseSubject(m.Subject); err == nil && !slices.Contains(r.kinds, a.Kind) {
					continue // unparseable subjects go on, to be counted as rejected
				}
			}
			mine = append(mine, m)
		}
		if len(mine) == 0 {
			f.done[i] = last
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = callHandler(ctx, r.h, mine)
		}()
	}
	wg.Wait()
	var transient, poison []error
	for i, err := range errs {
		switch {
		case err == nil:
			f.done[i] = max(f.done[i], last)
		case errors.Is(err, ErrPoison):
			poison = append(poison, &ServiceError{Service: f.regs[i].service, Err: err})
		default:
			transient = append(transient, fmt.Errorf("%s: %w", f.regs[i].service, err))
		}
	}
	if len(transient) > 0 {
		return errors.Join(transient...)
	}
	return errors.Join(poison...)
}

// callHandler runs h, turning a panic into poison as the consumer does, so one
// service's panic does not take the others' results with it.
func callHandler(ctx context.Context, h Handler, msgs []Msg) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: handler panic: %v", ErrPoison, r)
		}
	}()
	return h(ctx, msgs)
}

// ServiceError names the service whose handler failed in a shared delivery, so a dead
// letter is raised as that service's (dispatch alerts on the services' event sources).
type ServiceError struct {
	Service string
	Err     error
}

func (e *ServiceError) Error() string { return e.Service + ": " + e.Err.Error() }
func (e *ServiceError) Unwrap() error { return e.Err }

// sourceOf is the event source of a dead letter: the failing service's when known.
func sourceOf(service string, cause error) string {
	var se *ServiceError
	if errors.As(cause, &se) {
		return se.Service
	}
	return service
}

// memo holds a value computed from a message once for every service of a shared
// delivery (Msg.Once): wire.DecodeMsg keeps the decoded records there.
type memo struct {
	once sync.Once
	v    any
}

// shareOnce gives each record-carrying message of a batch (telemetry, alarms,
// diagnostics: the kinds more than one service reads) a memo the services share. A
// retried batch keeps what was computed the first time.
func shareOnce(batch []Msg) {
	for i := range batch {
		m := &batch[i]
		if m.memo != nil {
			continue
		}
		a, err := ParseSubject(m.Subject)
		if err != nil || a.Kind != KindTelemetry && a.Kind != KindAlarm && a.Kind != KindDiag {
			continue
		}
		m.memo = &memo{}
	}
}

// Once returns f's result, computed once for every service of a shared delivery (the
// fan-out's copies of the message share it), and on each call otherwise. The result is
// shared between services: treat it as read-only.
func (m *Msg) Once(f func() any) any {
	if m.memo == nil {
		return f()
	}
	m.memo.once.Do(func() { m.memo.v = f() })
	return m.memo.v
}
