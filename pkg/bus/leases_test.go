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

// store stands for a service's shared store (Redis): per vehicle the last record applied,
// applied idempotently, plus the checks a lease must guarantee: no vehicle handled by two
// instances at once, no record skipped.
type leaseStore struct {
	mu        sync.Mutex
	last      map[string]int
	busy      map[string]string // vehicle → instance handling it right now
	overlaps  int
	gaps      []string
	perWorker map[string]int
}

func newLeaseStore() *leaseStore {
	return &leaseStore{last: map[string]int{}, busy: map[string]string{}, perWorker: map[string]int{}}
}

func (s *leaseStore) handler(instance string) Handler {
	return func(_ context.Context, batch []Msg) error {
		var vs []string
		s.mu.Lock()
		for _, m := range batch {
			v, _, _ := strings.Cut(string(m.Data), ":")
			if who, ok := s.busy[v]; ok && who != instance {
				s.overlaps++
			}
			s.busy[v] = instance
			vs = append(vs, v)
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond) // a store round trip, so overlaps have room to show
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range batch {
			v, n, _ := strings.Cut(string(m.Data), ":")
			i, _ := strconv.Atoi(n)
			last, seen := s.last[v]
			switch {
			case seen && i <= last:
				// applied already (a redelivery after a hand-over): idempotent
			case (!seen && i != 0) || (seen && i != last+1):
				s.gaps = append(s.gaps, fmt.Sprintf("%s: %d after %d", v, i, last))
				s.last[v] = i
			default:
				s.last[v] = i
				s.perWorker[instance]++
			}
		}
		for _, v := range vs {
			delete(s.busy, v)
		}
		return nil
	}
}

func (s *leaseStore) applied(vehicles []string, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vehicles {
		if l, ok := s.last[v]; !ok || l < n-1 {
			return false
		}
	}
	return true
}

type leaseWorker struct {
	b      *Bus
	cancel context.CancelFunc
	done   chan struct{}
}

func startLeaseWorker(t *testing.T, srv *Bus, name string, st *leaseStore) *leaseWorker {
	t.Helper()
	b, err := Open(context.Background(), Config{URL: srv.ClientURL(), Name: name}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	b.LeasePartitions(LeaseConfig{Instance: name, TTL: 2 * time.Second, Memory: true})
	ctx, cancel := context.WithCancel(context.Background())
	w := &leaseWorker{b: b, cancel: cancel, done: make(chan struct{})}
	parts, _ := ParsePartitions("", DefaultPartitions)
	go func() {
		defer close(w.done)
		if err := b.ConsumePartitions(ctx, "leasetest", parts, []string{KindTelemetry}, ConsumerConfig{AckWait: 5 * time.Second}, st.handler(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func waitUntil(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// Partitions move between instances by lease: a second instance gets half, a crashed
// instance's partitions are taken by the survivor, and across it all every record is
// applied, in order, by one instance at a time.
func TestLeasedPartitionsFailOverAndRebalance(t *testing.T) {
	srv := testBus(t)
	st := newLeaseStore()
	vehicles := make([]string, 64)
	for i := range vehicles {
		vehicles[i] = fmt.Sprintf("veh-%03d", i)
	}
	next := 0
	publish := func(to int) {
		for ; next < to; next++ {
			for _, v := range vehicles {
				m := &nats.Msg{Subject: UpSubject(v, KindTelemetry), Data: fmt.Appendf(nil, "%s:%d", v, next), Header: nats.Header{}}
				m.Header.Set(jetstream.MsgIDHeader, string(m.Data))
				if _, err := srv.js.PublishMsg(context.Background(), m); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	all, _ := ParsePartitions("", DefaultPartitions)
	owned := func(ws ...*leaseWorker) []int {
		var out []int
		for _, w := range ws {
			out = append(out, w.b.Owned("leasetest")...)
		}
		slices.Sort(out)
		return out
	}

	a := startLeaseWorker(t, srv, "a", st)
	waitUntil(t, "a to hold every partition", func() bool { return slices.Equal(owned(a), all) })
	publish(20)
	waitUntil(t, "the first records", func() bool { return st.applied(vehicles, 20) })

	b := startLeaseWorker(t, srv, "b", st)
	took := waitUntil(t, "the partitions to spread over a and b", func() bool {
		return len(a.b.Owned("leasetest")) == DefaultPartitions/2 && len(b.b.Owned("leasetest")) == DefaultPartitions/2 && slices.Equal(owned(a, b), all)
	})
	t.Logf("rebalanced to 2 instances in %s", took.Round(time.Millisecond))
	publish(40)
	waitUntil(t, "records with two instances", func() bool { return st.applied(vehicles, 40) })
	publish(50) // still in flight when a goes

	// a crashes: its connection is gone, so it neither renews nor gives its leases back.
	lost := a.b.Owned("leasetest")
	a.b.nc.Close()
	took = waitUntil(t, "b to take a's partitions", func() bool { return slices.Equal(owned(b), all) })
	publish(60)
	t.Logf("failover of %d partitions after a crash: %s (lease TTL 2s)", len(lost), took.Round(time.Millisecond))
	waitUntil(t, "records after the failover", func() bool { return st.applied(vehicles, 60) })

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.overlaps != 0 {
		t.Errorf("%d batches handled a vehicle another instance was handling", st.overlaps)
	}
	if len(st.gaps) != 0 {
		t.Errorf("records skipped: %v", st.gaps)
	}
	if st.perWorker["b"] == 0 {
		t.Errorf("b applied nothing: %v", st.perWorker)
	}
}
