package bus

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// vehiclesIn returns n vehicle ids the server puts in partition p.
func vehiclesIn(p, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		v := fmt.Sprintf("veh-%05d", i)
		if PartitionOf(v, DefaultPartitions) == p {
			out = append(out, v)
		}
	}
	return out
}

// orderLog records what a handler was given and checks the consumer's promise: within one
// run, every stream sequence is handed over once, in increasing order.
type orderLog struct {
	mu      sync.Mutex
	last    uint64
	seen    map[uint64]int
	backlog []string // violations, "got X after Y"
}

func newOrderLog() *orderLog { return &orderLog{seen: map[uint64]int{}} }

func (o *orderLog) add(batch []Msg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, m := range batch {
		if m.StreamSeq <= o.last && len(o.backlog) < 20 {
			o.backlog = append(o.backlog, fmt.Sprintf("got seq %d (delivery %d) after seq %d", m.StreamSeq, m.Delivered, o.last))
		}
		if m.StreamSeq > o.last {
			o.last = m.StreamSeq
		}
		o.seen[m.StreamSeq]++
	}
}

func (o *orderLog) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen)
}

// delayProxy forwards TCP connections to upstream, holding every byte from the client for
// delay before passing it on: the server sees each pull request late, as it does when the
// process or the server is short of CPU, while the client's own clock runs on.
func delayProxy(t *testing.T, upstream string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(c, u); c.Close() }()
			type chunk struct {
				at   time.Time
				data []byte
			}
			q := make(chan chunk, 4096)
			go func() {
				defer u.Close()
				for ch := range q {
					time.Sleep(time.Until(ch.at))
					if _, err := u.Write(ch.data); err != nil {
						return
					}
				}
			}()
			go func() {
				defer close(q)
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						q <- chunk{at: time.Now().Add(delay), data: append([]byte(nil), buf[:n]...)}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return "nats://" + l.Addr().String()
}

// TestConsumeKeepsOrderWhenRequestsArriveLate reproduces the report that, under CPU
// pressure, a block of records stayed unapplied for an acknowledgement timeout and then
// arrived after newer ones. The server measures a pull request's expiry from when it reads
// the request; a client that gives up on its own clock abandons the messages the server
// sends in between, and those come back only after AckWait. Here the requests reach the
// server 300 ms late (a proxy), as they do when either side waits for a CPU.
func TestConsumeKeepsOrderWhenRequestsArriveLate(t *testing.T) {
	srv := testBus(t)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli, err := Open(ctx, Config{URL: delayProxy(t, u.Host, 300*time.Millisecond)}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	const p, total = 3, 600
	vehicles := vehiclesIn(p, 20)
	pubDone := make(chan error, 1)
	go func() {
		for i := range total {
			v := vehicles[i%len(vehicles)]
			if _, err := srv.js.Publish(ctx, UpSubject(v, KindTelemetry), []byte(v)); err != nil {
				pubDone <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		pubDone <- nil
	}()

	log := newOrderLog()
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	cfg := ConsumerConfig{Stream: TelemetryStream, Durable: "late", Filters: []string{PartitionFilter(p, "*")}, AckWait: 3 * time.Second}
	consDone := make(chan error, 1)
	go func() {
		consDone <- cli.Consume(cctx, cfg, func(_ context.Context, batch []Msg) error {
			log.add(batch)
			return nil
		})
	}()
	if err := <-pubDone; err != nil {
		t.Fatalf("publish: %v", err)
	}
	for log.count() < total && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	ccancel()
	if err := <-consDone; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if got := log.count(); got != total {
		t.Errorf("handled %d distinct messages, want %d", got, total)
	}
	for _, v := range log.backlog {
		t.Errorf("out of order: %s", v)
	}
}

// collect runs Consume until it has handed over n messages and returns their data.
func collect(t *testing.T, b *Bus, cfg ConsumerConfig, n int, h Handler) []Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		mu  sync.Mutex
		got []Msg
	)
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, cfg, func(ctx context.Context, batch []Msg) error {
			if h != nil {
				if err := h(ctx, batch); err != nil {
					return err
				}
			}
			mu.Lock()
			defer mu.Unlock()
			got = append(got, batch...)
			if len(got) >= n {
				ccancel()
			}
			return nil
		})
	}()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("got %d messages before the deadline, want %d", len(got), n)
	}
	return got
}

func publishN(t *testing.T, b *Bus, vehicle string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := b.js.Publish(context.Background(), UpSubject(vehicle, KindTelemetry), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// crashWithDeliveries leaves cfg's durable with n messages delivered and never
// acknowledged, as a process killed mid-batch does.
func crashWithDeliveries(t *testing.T, b *Bus, cfg ConsumerConfig, n int) {
	t.Helper()
	ctx := context.Background()
	cons, err := b.js.Consumer(ctx, cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := cons.FetchNoWait(n)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range mb.Messages() {
		got++
	}
	if got != n {
		t.Fatalf("crash fetch got %d messages, want %d", got, n)
	}
}

// TestResumeAfterCrashNeverRewindsToTheStart: a durable that crashed with messages out
// resumes at its first unacknowledged message, including one that had itself just been
// moved to a start sequence and crashed before its first acknowledgement.
func TestResumeAfterCrashNeverRewindsToTheStart(t *testing.T) {
	b := testBus(t)
	cfg := ConsumerConfig{Stream: TelemetryStream, Durable: "resume", Filters: []string{VehicleFilter("v1")}, AckWait: time.Hour}
	publishN(t, b, "v1", 0, 10)
	first := collect(t, b, cfg, 10, nil)
	if len(first) != 10 || string(first[0].Data) != "0" {
		t.Fatalf("first run got %d messages starting %q, want 10 starting \"0\"", len(first), first[0].Data)
	}
	floor := first[len(first)-1].StreamSeq
	publishN(t, b, "v1", 10, 20)

	// Crash with five messages out, twice: the second crash happens right after the
	// rewind, before anything was acknowledged.
	for round := range 2 {
		crashWithDeliveries(t, b, cfg, 5)
		cctx, ccancel := context.WithCancel(context.Background())
		cons, _, err := b.durable(cctx, cfg)
		ccancel()
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 0 || info.AckFloor.Stream != floor {
			t.Fatalf("round %d: after restart ack floor %d with %d pending, want %d with 0", round, info.AckFloor.Stream, info.NumAckPending, floor)
		}
	}
	rest := collect(t, b, cfg, 1, nil)
	if got, want := rest[0].StreamSeq, floor+1; got != want {
		t.Fatalf("resumed at stream sequence %d, want %d", got, want)
	}
}

// TestPoisonGoesToDeadLetterAndThePartitionMovesOn: a message its handler refuses for
// good (ErrPoison, or a panic) is stored in the dead-letter stream with its origin, an
// alert event is raised, and every other message is processed in order.
func TestPoisonGoesToDeadLetterAndThePartitionMovesOn(t *testing.T) {
	b := testBus(t)
	cfg := ConsumerConfig{Stream: TelemetryStream, Durable: "svc-p00", Filters: []string{VehicleFilter("v1")}}
	publishN(t, b, "v1", 0, 20)
	got := collect(t, b, cfg, 18, func(_ context.Context, batch []Msg) error {
		for _, m := range batch {
			switch string(m.Data) {
			case "7":
				return fmt.Errorf("state of v1: %w", ErrPoison)
			case "12":
				panic("unexpected input")
			}
		}
		return nil
	})
	var order []string
	for _, m := range got {
		order = append(order, string(m.Data))
	}
	if got, want := fmt.Sprint(order), "[0 1 2 3 4 5 6 8 9 10 11 13 14 15 16 17 18 19]"; got != want {
		t.Errorf("processed %s, want %s", got, want)
	}
	ctx := context.Background()
	s, err := b.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("dead-letter stream holds %d messages, want 2", info.State.Msgs)
	}
	for seq, want := range map[uint64]string{1: "7", 2: "12"} {
		dead, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		if string(dead.Data) != want {
			t.Errorf("dead letter %d holds %q, want %q", seq, dead.Data, want)
		}
		if dead.Header.Get(HeaderDeadError) == "" || dead.Header.Get(HeaderDeadSubject) == "" || dead.Header.Get(HeaderDeadStreamSeq) == "" {
			t.Errorf("dead letter %d headers %v lack origin or error", seq, dead.Header)
		}
	}
	es, err := b.js.Stream(ctx, EventStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.GetLastMsgForSubject(ctx, EventFilter("svc", EventKindDeadLetter, "v1")); err != nil {
		t.Errorf("no dead_letter event for v1: %v", err)
	}
}
