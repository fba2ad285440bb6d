package bus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func testBus(t *testing.T) *Bus {
	t.Helper()
	ctx := context.Background()
	b, err := Open(ctx, Config{URL: Embedded, ListenPort: -1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	// The dead-letter alert as pkg/eventpub raises it, less the event's encoding (a test
	// of package bus cannot import a package that imports bus).
	b.OnDeadLetter(func(ctx context.Context, d DeadLetter) error {
		id := "bus.dead_letter." + d.ID
		return b.PublishOnce(ctx, []Once{{Subject: EventSubject(d.Source, EventKindDeadLetter, d.Vehicle, id), ID: id,
			Data: []byte(d.Error), Source: d.Source, Kind: EventKindDeadLetter}}, 0)
	})
	if err := b.EnsureStreams(ctx, StreamConfig{MemoryStorage: true}); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPartitionedConsumeSeesEveryVehicleOnce(t *testing.T) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := b.Partitions(ctx)
	if err != nil || n != DefaultPartitions {
		t.Fatalf("Partitions = %d, %v; want %d", n, err, DefaultPartitions)
	}
	const vehicles = 200
	for i := 0; i < vehicles; i++ {
		v := "veh-" + string(rune('a'+i%26)) + "-" + itoa(i)
		if _, err := b.js.Publish(ctx, UpSubject(v, KindTelemetry), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu       sync.Mutex
		seen     = map[string]int{}
		partOf   = map[string]int{}
		usedPart = map[int]bool{}
	)
	parts, _ := ParsePartitions("", n)
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.ConsumePartitions(cctx, "test", parts, []string{"*"}, ConsumerConfig{}, func(_ context.Context, batch []Msg) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range batch {
				a, err := ParseSubject(m.Subject)
				if err != nil {
					t.Errorf("stored subject %q: %v", m.Subject, err)
					continue
				}
				if string(m.Data) != a.Vehicle {
					t.Errorf("subject vehicle %q carries %q", a.Vehicle, m.Data)
				}
				seen[a.Vehicle]++
				if p, ok := partOf[a.Vehicle]; ok && p != a.Partition {
					t.Errorf("vehicle %s in partitions %d and %d", a.Vehicle, p, a.Partition)
				}
				partOf[a.Vehicle] = a.Partition
				if got := PartitionOf(a.Vehicle, n); got != a.Partition {
					t.Errorf("PartitionOf(%s) = %d, server says %d", a.Vehicle, got, a.Partition)
				}
				usedPart[a.Partition] = true
			}
			if len(seen) == vehicles {
				ccancel()
			}
			return nil
		})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(seen) != vehicles {
		t.Fatalf("saw %d vehicles, want %d", len(seen), vehicles)
	}
	for v, c := range seen {
		if c != 1 {
			t.Errorf("vehicle %s delivered %d times", v, c)
		}
	}
	if len(usedPart) < n/2 {
		t.Errorf("only %d of %d partitions used: hashing is not spreading vehicles", len(usedPart), n)
	}
}

func TestFailedBatchIsRedelivered(t *testing.T) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 5; i++ {
		if _, err := b.js.Publish(ctx, UpSubject("v1", KindTelemetry), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	fails := 1
	cctx, ccancel := context.WithCancel(ctx)
	cfg := ConsumerConfig{Stream: TelemetryStream, Durable: "redeliver", Filters: []string{VehicleFilter("v1")}, AckWait: time.Second}
	err := b.Consume(cctx, cfg, func(_ context.Context, batch []Msg) error {
		if fails > 0 {
			fails--
			return io.ErrUnexpectedEOF
		}
		for _, m := range batch {
			got = append(got, m.Data[0])
		}
		if len(got) >= 5 {
			ccancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "\x00\x01\x02\x03\x04" {
		t.Fatalf("got %v after a failed batch, want 0..4 in order exactly once", got)
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		subject string
		want    Address
		wantErr bool
	}{
		{"fleet.up.V1.tele", Address{Partition: -1, Vehicle: "V1", Kind: "tele"}, false},
		{"fleet.in.7.V1.alarm", Address{Partition: 7, Vehicle: "V1", Kind: "alarm"}, false},
		{"fleet.in.7.V1.bogus", Address{}, true},
		{"fleet.in.x.V1.tele", Address{}, true},
		{"fleet.up.V1", Address{}, true},
		{"fleet.up.V1.tele.extra", Address{}, true},
		{"other.V1.tele", Address{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, err := ParseSubject(tt.subject)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParsePartitions(t *testing.T) {
	got, err := ParsePartitions("0-2,5,2", 8)
	if err != nil || len(got) != 4 || got[3] != 5 {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ParsePartitions("6-9", 8); err == nil {
		t.Fatal("out-of-range partition accepted")
	}
	// Instances i/k together cover every partition exactly once.
	seen := map[int]int{}
	for i := 0; i < 3; i++ {
		ps, err := ParsePartitions(fmt.Sprintf("%d/3", i), 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			seen[p]++
		}
	}
	for p := 0; p < 16; p++ {
		if seen[p] != 1 {
			t.Fatalf("partition %d taken by %d of 3 instances", p, seen[p])
		}
	}
	if _, err := ParsePartitions("3/3", 16); err == nil {
		t.Fatal("instance 3 of 3 accepted")
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A consumer that stops must not leave a pull request behind that swallows the next
// message: a restarted consumer gets it without waiting for AckWait (set to an hour here).
func TestStoppedConsumerLeavesNothingInFlight(t *testing.T) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := ConsumerConfig{Stream: TelemetryStream, Durable: "restart", Filters: []string{VehicleFilter("v1")}, AckWait: time.Hour}
	got := make(chan byte, 10)
	handler := func(_ context.Context, batch []Msg) error {
		for _, m := range batch {
			got <- m.Data[0]
		}
		return nil
	}
	run := func() (stop func()) {
		cctx, ccancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = b.Consume(cctx, cfg, handler) }()
		return func() { ccancel(); <-done }
	}
	stop := run()
	if _, err := b.js.Publish(ctx, UpSubject("v1", KindTelemetry), []byte{1}); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != 1 {
		t.Fatalf("got %d, want 1", v)
	}
	stop()
	if _, err := b.js.Publish(ctx, UpSubject("v1", KindTelemetry), []byte{2}); err != nil {
		t.Fatal(err)
	}
	for round, want := range []byte{2, 3, 4} {
		stop = run()
		select {
		case v := <-got:
			if v != want {
				t.Fatalf("restart %d: got %d, want %d", round, v, want)
			}
		case <-ctx.Done():
			t.Fatalf("restart %d: message published while stopped was not delivered (stuck in a stale pull request?)", round)
		}
		stop()
		if _, err := b.js.Publish(ctx, UpSubject("v1", KindTelemetry), []byte{want + 1}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConsumePartitionsSelectsKinds(t *testing.T) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, k := range []string{KindTelemetry, KindDiag, KindReply, KindAlarm} {
		if _, err := b.js.Publish(ctx, UpSubject("v1", k), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	parts, _ := ParsePartitions("", DefaultPartitions)
	var got []string
	cctx, ccancel := context.WithCancel(ctx)
	err := b.ConsumePartitions(cctx, "kinds", parts, []string{KindTelemetry, KindAlarm}, ConsumerConfig{}, func(_ context.Context, batch []Msg) error {
		for _, m := range batch {
			got = append(got, string(m.Data))
		}
		if len(got) >= 2 {
			ccancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != KindTelemetry || got[1] != KindAlarm {
		t.Fatalf("got %v, want [tele alarm] (diag and reply filtered out)", got)
	}
}
