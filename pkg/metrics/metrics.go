// Package metrics holds the one way Fleetwire registers Prometheus collectors: Register
// never panics and reports every failure, including a collector already registered, as an
// error for the caller to return. Two instances sharing a registry would otherwise
// silently count into one (or panic, with MustRegister); labelling each instance's
// registerer (prometheus.WrapRegistererWith) is the fix, not tolerating the clash.
package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers every collector with reg; a nil reg registers nothing (tests,
// tools). It stops at the first failure and names the clashing metric.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("metric %s registered twice: %w", describe(c), err)
			}
			return fmt.Errorf("register metric %s: %w", describe(c), err)
		}
	}
	return nil
}

// describe names a collector by its first descriptor.
func describe(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	name := "(unnamed)"
	if d, ok := <-ch; ok {
		name = d.String()
	}
	for range ch { // let Describe finish
	}
	return name
}

// RegisterShared registers *c with reg; when an equal collector is already registered it
// replaces *c with that one instead of failing. It is for process-wide metrics that
// several owners may create (two buses in one process count into one set); a service's
// own metrics use Register, where a clash is a wiring mistake.
func RegisterShared[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	if reg == nil {
		return nil
	}
	if err := reg.Register(*c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				*c = existing
				return nil
			}
		}
		return fmt.Errorf("register metric %s: %w", describe(*c), err)
	}
	return nil
}
