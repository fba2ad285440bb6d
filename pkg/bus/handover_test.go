package bus

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// truthStore stands for a service's shared store (Redis) with the rules the services'
// stores follow: a record at or below the vehicle's last applied one is skipped
// (idempotent), and a write whose context has ended is refused (go-redis does not send a
// command past its context's deadline, which is the lease's validity). It keeps every
// record applied in effect, per vehicle, to compare with what was published.
type truthStore struct {
	mu      sync.Mutex
	applied map[string][]int // vehicle → records applied in effect, in order
	by      map[string]int   // instance → records it applied
	late    int              // writes refused because the handler's context had ended
}

func newTruthStore() *truthStore {
	return &truthStore{applied: map[string][]int{}, by: map[string]int{}}
}

func (s *truthStore) apply(ctx context.Context, instance string, batch []Msg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		s.late++
		return fmt.Errorf("store write refused: %w", err)
	}
	for _, m := range batch {
		v, n, _ := strings.Cut(string(m.Data), ":")
		i, _ := strconv.Atoi(n)
		if a := s.applied[v]; len(a) > 0 && i <= a[len(a)-1] {
			continue // applied already: a redelivery
		}
		s.applied[v] = append(s.applied[v], i)
		s.by[instance]++
	}
	return nil
}

func (s *truthStore) upTo(vehicles []string, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vehicles {
		if a := s.applied[v]; len(a) == 0 || a[len(a)-1] < n-1 {
			return false
		}
	}
	return true
}

// check says which vehicles' applied records are not exactly 0..n-1 in order: a record
// skipped, or a record applied after a later one of the same vehicle.
func (s *truthStore) check(t *testing.T, vehicles []string, n int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vehicles {
		a := s.applied[v]
		var missing []int
		for i, j := 0, 0; i < n; i++ {
			if j < len(a) && a[j] == i {
				j++
				continue
			}
			missing = append(missing, i)
		}
		if len(missing) > 0 || len(a) != n {
			t.Errorf("%s: %d of %d records applied; missing %v", v, len(a), n, missing)
		}
	}
}

func publishRecords(t *testing.T, b *Bus, vehicles []string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		for _, v := range vehicles {
			m := &nats.Msg{Subject: UpSubject(v, KindTelemetry), Data: fmt.Appendf(nil, "%s:%d", v, i), Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, string(m.Data))
			if _, err := b.js.PublishMsg(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A durable can be reset by someone else while a consumer is reading it: an instance
// whose partition lease lapsed and that has not noticed yet, or an operator. The server
// then restarts the delivery sequence at 1, so deliveries numbered at or below the last
// one the consumer saw are new ones, not stale copies. The consumer must not skip them,
// however far back or ahead the reset put the durable.
func TestConsumerSkipsNothingWhenTheDurableIsResetUnderIt(t *testing.T) {
	b := testBus(t)
	vehicles := vehiclesIn(3, 4)
	st := newTruthStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := ConsumerConfig{Stream: TelemetryStream, Durable: "reset-under", Filters: []string{PartitionFilter(3, KindTelemetry)},
		MaxBatch: 16, AckWait: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.Consume(ctx, cfg, func(ctx context.Context, batch []Msg) error { return st.apply(ctx, "c", batch) }); err != nil {
			t.Error(err)
		}
	}()
	defer func() { cancel(); <-done }()

	publishRecords(t, b, vehicles, 0, 50)
	waitUntil(t, "the first records", func() bool { return st.upTo(vehicles, 50) })
	info, err := b.js.Consumer(ctx, TelemetryStream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	floor := info.CachedInfo().AckFloor.Stream

	// Reset to the ack floor, as a previous holder's consumer does when it starts a
	// session: nothing before it is unprocessed, yet deliveries restart at 1.
	if _, err := b.js.ResetConsumerToSequence(ctx, TelemetryStream, cfg.Durable, floor+1); err != nil {
		t.Fatal(err)
	}
	publishRecords(t, b, vehicles, 50, 150)
	waitUntil(t, "the records after a reset to the ack floor", func() bool { return st.upTo(vehicles, 150) })

	// Reset behind the ack floor: records applied already come again.
	if _, err := b.js.ResetConsumerToSequence(ctx, TelemetryStream, cfg.Durable, floor-20); err != nil {
		t.Fatal(err)
	}
	publishRecords(t, b, vehicles, 150, 250)
	waitUntil(t, "the records after a reset behind the ack floor", func() bool { return st.upTo(vehicles, 250) })
	st.check(t, vehicles, 250)
}

// stallable makes an instance freeze on demand, as a process starved of CPU does: its
// lease rounds stop (no renewal), and its handler stops after the store write of the
// batch it is in, before returning it for acknowledgement.
type stallable struct {
	mu      sync.Mutex
	rounds  chan struct{} // closed: rounds run
	handler chan struct{} // closed: handlers return
	inside  chan struct{} // receives when a handler has stalled
}

func newStallable() *stallable {
	s := &stallable{rounds: make(chan struct{}), handler: make(chan struct{}), inside: make(chan struct{}, 1)}
	close(s.rounds)
	close(s.handler)
	return s
}

func (s *stallable) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rounds, s.handler = make(chan struct{}), make(chan struct{})
}

func (s *stallable) freezeRounds() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rounds, s.handler = make(chan struct{}), closedChan()
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (s *stallable) thaw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.rounds)
	select {
	case <-s.handler:
	default:
		close(s.handler)
	}
}

func (s *stallable) gate(which func(*stallable) chan struct{}) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return which(s)
}

func (s *stallable) waitRound() { <-s.gate(func(s *stallable) chan struct{} { return s.rounds }) }

func (s *stallable) waitHandler() {
	g := s.gate(func(s *stallable) chan struct{} { return s.handler })
	select {
	case <-g:
		return
	default:
	}
	select {
	case s.inside <- struct{}{}:
	default:
	}
	<-g
}

// A lease holder that freezes in the middle of a batch loses its lease; another instance
// takes the partition over from the ack floor. When the first one wakes up, it finishes
// the batch it was in and finds its subscription still delivering. Whatever it does then,
// every record is applied once in effect and in order, by whoever holds the lease.
// The freeze is repeated, so that the woken instance sees the new holder's deliveries
// from different points.
func TestStalledLeaseHolderLosesNothingOnHandOver(t *testing.T) {
	srv := testBus(t)
	const part = 5
	vehicles := vehiclesIn(part, 6)
	st := newTruthStore()
	start := func(name string, s *stallable) *Bus {
		b, err := Open(context.Background(), Config{URL: srv.ClientURL(), Name: name}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		cfg := LeaseConfig{Instance: name, TTL: time.Second, Memory: true}
		cfg.beforeRound = s.waitRound
		b.LeasePartitions(cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		h := func(ctx context.Context, batch []Msg) error {
			if err := st.apply(ctx, name, batch); err != nil {
				return err
			}
			s.waitHandler()
			return nil
		}
		go func() {
			defer close(done)
			if err := b.ConsumePartitions(ctx, "handover", []int{part}, []string{KindTelemetry},
				ConsumerConfig{MaxBatch: 8, AckWait: 3 * time.Second}, h); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-done })
		return b
	}
	holds := func(b *Bus) bool { return slices.Equal(b.Owned("handover"), []int{part}) }

	sa, sb := newStallable(), newStallable()
	a := start("a", sa)
	waitUntil(t, "a to take the partition", func() bool { return holds(a) })
	bb := start("b", sb)
	next := 0
	publish := func(n int) {
		publishRecords(t, srv, vehicles, next, next+n)
		next += n
	}
	publish(20)
	waitUntil(t, "the first records", func() bool { return st.upTo(vehicles, next) })

	holder, holderS, other, otherS := a, sa, bb, sb
	for round := range 4 {
		if round%2 == 0 {
			// The holder freezes inside a batch, after its store write: the new holder
			// starts from the ack floor, below that batch.
			holderS.freeze()
			publish(10)
			select {
			case <-holderS.inside:
			case <-time.After(60 * time.Second):
				t.Fatalf("round %d: the holder never reached a batch", round)
			}
		} else {
			// The holder freezes between batches: its lease lapses with nothing out, and
			// its subscription keeps asking for messages.
			holderS.freezeRounds()
		}
		waitUntil(t, "the other instance to take the partition over", func() bool { return holds(other) })
		// Records arrive a few at a time while both subscriptions are open: the frozen
		// holder's and the new holder's.
		for range 15 {
			publish(2)
			time.Sleep(10 * time.Millisecond)
		}
		holderS.thaw()
		for range 15 {
			publish(2)
			time.Sleep(10 * time.Millisecond)
		}
		waitUntil(t, "the records after the old holder woke", func() bool { return st.upTo(vehicles, next) })
		waitUntil(t, "the old holder to let go", func() bool { return !holds(holder) })
		holder, holderS, other, otherS = other, otherS, holder, holderS
	}
	// A skipped record is never applied later: the store skips what is at or below a
	// vehicle's last record, so the check needs no wait for redeliveries.
	publish(10)
	waitUntil(t, "the last records", func() bool { return st.upTo(vehicles, next) })
	st.check(t, vehicles, next)
	st.mu.Lock()
	t.Logf("applied by instance: %v; writes refused after the lease: %d", st.by, st.late)
	st.mu.Unlock()
}
