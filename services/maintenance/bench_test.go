package maintenance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// benchHandle measures records per second through the bus handler (decode, all rules,
// store writes; no NATS): 1 000 vehicles, 10 records per message, 256 messages per batch,
// every vehicle with one plan and a fuel level.
func benchHandle(b *testing.B, st Store) {
	ctx := context.Background()
	s, err := New(DefaultConfig(), nil, st, testLogger(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SetGroup(ctx, Group{ID: "all", Vehicles: func() []string {
		var v []string
		for i := range 1000 {
			v = append(v, fmt.Sprintf("V%04d", i))
		}
		return v
	}()}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.CreatePlan(ctx, Plan{ID: "oil", GroupID: "all", EveryKm: 15000, EveryDays: 365, Created: t0}); err != nil {
		b.Fatal(err)
	}
	const vehicles, perMsg, perBatch = 1000, 10, 256
	round := 0
	msgsFor := func() []bus.Msg {
		var out []bus.Msg
		for v := range vehicles {
			id := fmt.Sprintf("V%04d", v)
			recs := make([]telemetry.Record, perMsg)
			for i := range recs {
				at := t0.Add(time.Duration(round*perMsg+i) * 30 * time.Second)
				recs[i] = rec(id, at, odo(1000+float64(round*perMsg+i)*0.4), hours(100+float64(round*perMsg+i)/120), ign(true), speed(50), fuelL(80-float64(round*perMsg+i)*0.01))
			}
			data, err := wire.EncodeBatch(id, recs[perMsg-1].DeviceTime, recs)
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, bus.Msg{Subject: fmt.Sprintf("fleet.in.%d.%s.tele", v%16, id), Data: data, Time: recs[perMsg-1].DeviceTime})
		}
		round++
		return out
	}
	n := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		msgs := msgsFor()
		b.StartTimer()
		for i := 0; i < len(msgs); i += perBatch {
			if err := s.handle(ctx, msgs[i:min(i+perBatch, len(msgs))]); err != nil {
				b.Fatal(err)
			}
		}
		n += len(msgs) * perMsg
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkHandleMemory(b *testing.B) { benchHandle(b, NewMemoryStore()) }

func BenchmarkHandleRedis(b *testing.B) {
	c := redistest.Client(b)
	benchHandle(b, NewRedisStore(c, redistest.Prefix(b, c)))
}

// BenchmarkPipeline measures the whole path on an embedded NATS server: trackers'
// messages (10 records each, 1 000 vehicles) published to JetStream, consumed by the 16
// partition consumers, processed with a memory store, acknowledged. The producer runs
// on the same cores.
func BenchmarkPipeline(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testLogger()
	bs := natstest.Open(b, natstest.Options{Log: log})
	s, err := New(DefaultConfig(), bs, NewMemoryStore(), log, nil)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	const vehicles, perMsg = 1000, 10
	round := 0
	bjs := natstest.JetStream(b, bs)
	total := 0.0
	b.ResetTimer()
	for b.Loop() {
		for v := range vehicles {
			id := fmt.Sprintf("V%04d", v)
			recs := make([]telemetry.Record, perMsg)
			for i := range recs {
				k := round*perMsg + i
				recs[i] = rec(id, t0.Add(time.Duration(k)*30*time.Second), odo(1000+float64(k)*0.4), ign(true), speed(50), fuelL(80-float64(k)*0.01))
			}
			data, err := wire.EncodeBatch(id, recs[perMsg-1].DeviceTime, recs)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bjs.PublishAsync(bus.UpSubject(id, bus.KindTelemetry), data); err != nil {
				b.Fatal(err)
			}
		}
		<-bjs.PublishAsyncComplete()
		round++
		total += vehicles * perMsg
		for counterValue(s.stats.records.WithLabelValues(bus.KindTelemetry)) < total {
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportMetric(total/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(total/perMsg/b.Elapsed().Seconds(), "msgs/s")
	cancel()
	<-done
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
