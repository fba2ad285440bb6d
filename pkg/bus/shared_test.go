package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is one service's handler in a shared delivery: it records the stream
// sequences it applied and can fail a number of times.
type recorder struct {
	mu       sync.Mutex
	applied  map[uint64]int // stream seq → times applied
	kinds    map[string]int
	failures int // transient failures still to return
	poisonAt uint64
}

func (r *recorder) handle(_ context.Context, batch []Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.failures--
		return errors.New("store unreachable")
	}
	for _, m := range batch {
		if m.StreamSeq == r.poisonAt {
			return fmt.Errorf("%w: cannot decode", ErrPoison)
		}
	}
	for _, m := range batch {
		r.applied[m.StreamSeq]++
		a, _ := ParseSubject(m.Subject)
		r.kinds[a.Kind]++
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied)
}

func TestSharedDeliveryHandsEveryRecordToEveryService(t *testing.T) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const vehicles = 60
	var diag int
	for i := range vehicles {
		v := fmt.Sprintf("veh-%03d", i)
		if _, err := b.js.Publish(ctx, UpSubject(v, KindTelemetry), []byte(v)); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			diag++
			if _, err := b.js.Publish(ctx, UpSubject(v, KindDiag), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	total := vehicles + diag
	// Stream sequences are 1..total; the geofence-like service refuses one telemetry
	// message as poison, the tracking-like one fails transiently twice first.
	all := &recorder{applied: map[uint64]int{}, kinds: map[string]int{}, failures: 2}
	tele := &recorder{applied: map[uint64]int{}, kinds: map[string]int{}, poisonAt: 1}
	n, _ := b.Partitions(ctx)
	parts, _ := ParsePartitions("", n)
	sh := b.ShareTelemetry([]string{"all", "tele"})
	cctx, ccancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- sh.Run(cctx) }()
	go func() {
		defer wg.Done()
		errs <- b.ConsumePartitions(cctx, "all", parts, []string{"*"}, ConsumerConfig{}, all.handle)
	}()
	go func() {
		defer wg.Done()
		errs <- b.ConsumePartitions(cctx, "tele", parts, []string{KindTelemetry}, ConsumerConfig{}, tele.handle)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for (all.count() < total || tele.count() < vehicles-1) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Every message acknowledged: nothing pending on the shared durables.
	for time.Now().Before(deadline) {
		lag := b.Lag()
		pending := 0
		for _, p := range parts {
			c, err := b.js.Consumer(ctx, TelemetryStream, fmt.Sprintf("%s-p%02d", SharedDurable, p))
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pending += info.NumAckPending + int(info.NumPending)
		}
		if pending == 0 && len(lag) == len(parts) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ccancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("consume: %v", err)
		}
	}
	all.mu.Lock()
	defer all.mu.Unlock()
	tele.mu.Lock()
	defer tele.mu.Unlock()
	if len(all.applied) != total || all.kinds[KindDiag] != diag {
		t.Errorf("the all-kinds service applied %d messages (%d diag), want %d (%d)", len(all.applied), all.kinds[KindDiag], total, diag)
	}
	for seq, k := range all.applied {
		if k != 1 {
			t.Errorf("seq %d applied %d times by a service that never failed on it", seq, k)
		}
	}
	if len(tele.applied) != vehicles-1 || tele.kinds[KindDiag] != 0 || tele.applied[1] != 0 {
		t.Errorf("the telemetry service applied %d messages (%d diag, seq 1 %d times), want %d telemetry without the poison one",
			len(tele.applied), tele.kinds[KindDiag], tele.applied[1], vehicles-1)
	}
	// The poison message went to the dead letters as the failing service's.
	dl, err := b.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dl.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Errorf("dead letters: %v, %v; want 1", info, err)
	}
}

func TestSharedDeliveryStartsWhereTheServicesWere(t *testing.T) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One partition's worth of history: services that ran on their own had acknowledged
	// up to different points; the shared durable starts after the lowest.
	v := "veh-001"
	p := PartitionOf(v, DefaultPartitions)
	for range 10 {
		if _, err := b.js.Publish(ctx, UpSubject(v, KindTelemetry), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		service string
		acked   int
	}{{"a", 7}, {"b", 4}} {
		cfg := ConsumerConfig{Stream: TelemetryStream, Durable: fmt.Sprintf("%s-p%02d", c.service, p), Filters: []string{PartitionFilter(p, "*")}, MaxBatch: 1}
		cctx, ccancel := context.WithCancel(ctx)
		seen := 0
		_ = b.Consume(cctx, cfg, func(_ context.Context, batch []Msg) error {
			for range batch {
				seen++
			}
			if seen >= c.acked {
				ccancel()
			}
			if seen > c.acked {
				return errors.New("stop here") // not acknowledged
			}
			return nil
		})
		ccancel()
	}
	sh := b.ShareTelemetry([]string{"a", "b"})
	regs := []*sharedReg{{service: "a"}, {service: "b"}}
	start, err := sh.startSeq(ctx, p, regs)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := b.js.Consumer(ctx, TelemetryStream, fmt.Sprintf("b-p%02d", p))
	info, _ := c.Info(ctx)
	if want := info.AckFloor.Stream + 1; start != want || start < 2 {
		t.Errorf("shared durable starts at %d, want %d (after the lower ack floor)", start, want)
	}
	// A service that never had a durable of its own makes it start at the beginning.
	if start, _ := sh.startSeq(ctx, p, append(regs, &sharedReg{service: "new"})); start != 1 {
		t.Errorf("with a service new to the stream: start %d, want 1", start)
	}
}

// In a shared delivery the services compute a value of a record-carrying message once
// between them (Msg.Once: wire.DecodeMsg decodes there); other kinds, and a message outside
// a shared delivery, compute it on each call.
func TestSharedDeliveryComputesOnce(t *testing.T) {
	batch := []Msg{
		{Subject: "fleet.in.3.veh-1." + KindTelemetry, Data: []byte("records"), StreamSeq: 1},
		{Subject: "fleet.in.3.veh-1." + KindReply, Data: []byte("not records"), StreamSeq: 2},
	}
	var calls [3]atomic.Int32
	handler := func(_ context.Context, b []Msg) error {
		for i := range b {
			seq := b[i].StreamSeq
			if got := b[i].Once(func() any { calls[seq].Add(1); return string(b[i].Data) }); got != string(b[i].Data) {
				return fmt.Errorf("message %d: Once returned %v", seq, got)
			}
		}
		return nil
	}
	f := &fanout{regs: []*sharedReg{{service: "a", h: handler}, {service: "b", h: handler}}, done: make([]uint64, 2)}
	if err := f.handle(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if got := calls[1].Load(); got != 1 {
		t.Errorf("telemetry computed %d times for two services, want 1", got)
	}
	if got := calls[2].Load(); got != 2 {
		t.Errorf("reply computed %d times for two services, want 2 (not shared)", got)
	}
	lone := Msg{Subject: batch[0].Subject}
	n := 0
	for range 2 {
		lone.Once(func() any { n++; return nil })
	}
	if n != 2 {
		t.Errorf("outside a shared delivery computed %d times in 2 calls, want 2", n)
	}
}
