package loadtest

import (
	"math"
	"testing"
	"time"
)

func TestBucketsRoundTrip(t *testing.T) {
	for _, us := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 12345, 1 << 30} {
		b := bucketOf(us)
		if lo, hi := bucketLow(b), bucketLow(b+1); us < lo || us >= hi {
			t.Errorf("value %d in bucket %d = [%d,%d)", us, b, lo, hi)
		}
	}
}

func TestQuantilesOnKnownInputs(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"single", []time.Duration{5 * time.Millisecond}, 0.99, 5 * time.Millisecond},
		{"median of 1..100 ms", ramp(100, time.Millisecond), 0.5, 50 * time.Millisecond},
		{"p99 of 1..100 ms", ramp(100, time.Millisecond), 0.99, 99 * time.Millisecond},
		{"p90 of 1..1000 µs", ramp(1000, time.Microsecond), 0.9, 900 * time.Microsecond},
		{"max", ramp(100, time.Millisecond), 1, 100 * time.Millisecond},
		{"min", ramp(100, time.Millisecond), 0, time.Millisecond},
		{"outlier above p99", append(ramp(99, time.Millisecond), time.Second), 0.99, 99 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h hist
			for _, v := range tt.values {
				h.add(v)
			}
			got := h.quantile(tt.q)
			if rel := math.Abs(float64(got-tt.want)) / float64(tt.want); rel > 0.02 {
				t.Errorf("q%.2f: got %v, want %v (±2%%)", tt.q, got, tt.want)
			}
		})
	}
}

func TestMergeEqualsCombined(t *testing.T) {
	var a, b, all hist
	for i, v := range ramp(500, 37*time.Microsecond) {
		all.add(v)
		if i%3 == 0 {
			a.add(v)
		} else {
			b.add(v)
		}
	}
	a.merge(&b)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 1} {
		if got, want := a.quantile(q), all.quantile(q); got != want {
			t.Errorf("q%.2f after merge: got %v, want %v", q, got, want)
		}
	}
	if a.n != all.n || a.mean() != all.mean() {
		t.Errorf("merged n %d mean %v, want %d %v", a.n, a.mean(), all.n, all.mean())
	}
}

func ramp(n int, step time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * step
	}
	return out
}
