package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func counter(name string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: "test"})
}

func TestRegister(t *testing.T) {
	t.Run("nil registry registers nothing", func(t *testing.T) {
		if err := Register(nil, counter("a_total")); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	})
	t.Run("distinct collectors", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if err := Register(reg, counter("a_total"), counter("b_total")); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	})
	t.Run("clash is an error naming the metric, not a panic", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if err := Register(reg, counter("a_total")); err != nil {
			t.Fatal(err)
		}
		err := Register(reg, counter("a_total"))
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) || !strings.Contains(err.Error(), "a_total") {
			t.Fatalf("got %v, want an AlreadyRegisteredError naming a_total", err)
		}
	})
	t.Run("labelled registerers do not clash", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for _, inst := range []string{"0", "1"} {
			r := prometheus.WrapRegistererWith(prometheus.Labels{"instance": inst}, reg)
			if err := Register(r, counter("a_total")); err != nil {
				t.Fatalf("instance %s: %v", inst, err)
			}
		}
	})
	t.Run("same name with other labels is an error", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a_total", Help: "test"}, []string{"kind"})
		err := Register(reg, counter("a_total"), vec)
		if err == nil || !strings.Contains(err.Error(), "a_total") {
			t.Fatalf("got %v, want an error naming a_total", err)
		}
	})
}
