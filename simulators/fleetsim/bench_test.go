package fleetsim

import (
	"testing"
	"time"
)

type discard struct{ bytes, records int }

func (d *discard) emit(_ *vehicle, _ string, data []byte, recs []sample) {
	d.bytes += len(data)
	d.records += len(recs)
}

// BenchmarkGenerate measures the generator and the encoder: one iteration is one
// simulated second of 20 000 vehicles reporting every second (20 000 records).
func BenchmarkGenerate(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Vehicles = 20_000
	cfg.FixedInterval = time.Second
	cfg.Start = testStart
	s, err := NewSim(cfg)
	if err != nil {
		b.Fatal(err)
	}
	d := &discard{}
	s.advance(s.Start().Add(time.Minute), d) // settle: routes planned, trips under way
	d.records, d.bytes = 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.advance(s.Start().Add(time.Minute+time.Duration(i+1)*time.Second), d)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(d.records), "ns/record")
	b.ReportMetric(float64(d.bytes)/float64(d.records), "bytes/record")
}
