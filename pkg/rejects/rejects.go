// Package rejects accounts for input a service refuses or repairs: every rejection is
// counted by reason in metrics and logged once per reason and vehicle (not once per record,
// so a broken tracker sending garbage at 1 Hz cannot flood the log).
package rejects

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"
	dto "github.com/prometheus/client_model/go"
)

// maxLogged bounds the (reason, vehicle) pairs remembered for log deduplication.
const maxLogged = 100_000

// Counter counts rejections by reason.
type Counter struct {
	log    *slog.Logger
	counts *prometheus.CounterVec

	mu     sync.Mutex
	logged map[[2]string]struct{}
}

// New creates a counter exported as fleetwire_<service>_rejected_total{reason}.
func New(service string, log *slog.Logger, reg prometheus.Registerer) *Counter {
	c := &Counter{
		log: log,
		counts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_" + service + "_rejected_total",
			Help: "Input records or messages refused or repaired, by reason.",
		}, []string{"reason"}),
		logged: make(map[[2]string]struct{}),
	}
	// A clash is reported, not fatal: the counter still counts and logs, and the
	// service's own registrations (which do fail New) name the cause.
	if err := metrics.Register(reg, c.counts); err != nil {
		log.Error("rejection metrics not registered", "err", err)
	}
	return c
}

// Add counts one rejection and logs it the first time reason is seen for vehicle.
func (c *Counter) Add(reason, vehicle string, err error, attrs ...any) {
	c.counts.WithLabelValues(reason).Inc()
	key := [2]string{reason, vehicle}
	c.mu.Lock()
	_, seen := c.logged[key]
	if !seen {
		if len(c.logged) >= maxLogged {
			clear(c.logged)
		}
		c.logged[key] = struct{}{}
	}
	c.mu.Unlock()
	if !seen {
		c.log.Warn("input rejected", append([]any{"reason", reason, "vehicle", vehicle, "err", err, "note", "further rejections for this reason and vehicle are only counted"}, attrs...)...)
	}
}

// Count returns how many rejections were counted for reason (for tests and status pages).
func (c *Counter) Count(reason string) float64 {
	m, err := c.counts.GetMetricWithLabelValues(reason)
	if err != nil {
		return 0
	}
	var d dto.Metric
	if err := m.Write(&d); err != nil || d.Counter == nil {
		return 0
	}
	return d.Counter.GetValue()
}
