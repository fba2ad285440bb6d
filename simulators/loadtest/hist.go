package loadtest

import (
	"math"
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in the manner of HDR histograms: values are
// microseconds, bucketed by power of two with subBuckets linear steps inside each, so
// any quantile is within 1/subBuckets (about 1.6 %) of the true value, in constant memory
// and constant time per sample.
type hist struct {
	counts [64 * subBuckets]uint64
	n      uint64
	sum    float64
	min    uint64
	max    uint64
}

const (
	subBits    = 6
	subBuckets = 1 << subBits
)

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - subBits // ≥ 1
	return exp*subBuckets + int(us>>uint(exp-1)) - subBuckets
}

// lowest value of bucket b (the inverse of bucketOf).
func bucketLow(b int) uint64 {
	if b < subBuckets {
		return uint64(b)
	}
	exp := b / subBuckets
	sub := uint64(b%subBuckets + subBuckets)
	return sub << uint(exp-1)
}

// add records one latency; negative ones (clock skew) count as zero.
func (h *hist) add(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	b := bucketOf(us)
	if b >= len(h.counts) {
		b = len(h.counts) - 1
	}
	h.counts[b]++
	if h.n == 0 || us < h.min {
		h.min = us
	}
	if us > h.max {
		h.max = us
	}
	h.n++
	h.sum += float64(us)
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at q (0..1): the midpoint of the bucket holding the
// ceil(q·n)-th sample, clamped to the observed min and max.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketLow(b), bucketLow(b+1)
			v := (lo + hi) / 2
			v = max(h.min, min(v, h.max))
			return time.Duration(v) * time.Microsecond
		}
	}
	return time.Duration(h.max) * time.Microsecond
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum/float64(h.n)) * time.Microsecond
}
