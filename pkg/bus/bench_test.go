package bus

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkDurablePipeline measures the ceiling of the durable path every service reads
// through: JetStream async publish of 128-byte messages into the partitioned telemetry
// stream (file storage, as in production) and one service consuming all partitions with
// explicit acks. Reported as messages/s end to end.
func BenchmarkDurablePipeline(b *testing.B) {
	ctx := context.Background()
	bs, err := Open(ctx, Config{URL: Embedded, ListenPort: -1}, quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	if err := bs.EnsureStreams(ctx, StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 128)
	subjects := make([]string, 1000)
	for i := range subjects {
		subjects[i] = UpSubject(fmt.Sprintf("veh-%05d", i), KindTelemetry)
	}
	parts, _ := ParsePartitions("", DefaultPartitions)
	cctx, cancel := context.WithCancel(ctx)
	got := make(chan int, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bs.ConsumePartitions(cctx, "bench", parts, []string{KindTelemetry}, ConsumerConfig{}, func(_ context.Context, batch []Msg) error {
			got <- len(batch)
			return nil
		})
	}()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := bs.js.PublishAsync(subjects[i%len(subjects)], payload); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-bs.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish acks not received")
	}
	for n := 0; n < b.N; {
		select {
		case k := <-got:
			n += k
		case <-time.After(time.Minute):
			b.Fatalf("consumed %d of %d", n, b.N)
		}
	}
	el := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}
