package fuel

import (
	"math"
	"testing"
)

// refuelResponse is what a sensor with time constant tau reports every 30 s while a
// pump adds rate litres a minute from 20 L to 70 L, simulated in 1-second steps.
func refuelResponse(tau float64, rate float64) ([]float64, []int64) {
	level, sensor := 20.0, 20.0
	var raw []float64
	var ts []int64
	for s := 0; s <= 600; s++ {
		if s >= 60 && level < 70 {
			level = math.Min(70, level+rate/60)
		}
		if tau > 0 {
			sensor += (level - sensor) * (1 - math.Exp(-1/tau))
		} else {
			sensor = level
		}
		if s%30 == 0 {
			raw = append(raw, math.Round(sensor*4)/4) // 0.25 L steps
			ts = append(ts, int64(s)*1000)
		}
	}
	return raw, ts
}

func TestLearnLag(t *testing.T) {
	for _, tc := range []struct {
		tau      float64
		min, max float64
	}{
		{0, 1, 15},
		{60, 40, 80},
		{120, 80, 160},
	} {
		var st State
		d := NewDetector(DefaultConfig(), Profile{CapacityL: 80}, &st)
		if got := d.lagSec(); got != 0 {
			t.Fatalf("tau %v: before any refuel got lag %v, want 0 (unknown)", tc.tau, got)
		}
		for _, rate := range []float64{25, 35, 45} {
			raw, ts := refuelResponse(tc.tau, rate)
			d.learnLag(raw, ts)
		}
		if got := d.lagSec(); got < tc.min || got > tc.max {
			t.Errorf("tau %v s: learned %.1f s from %v, want %v..%v", tc.tau, got, st.LagSamples, tc.min, tc.max)
		}
	}
	// A profile's lag is never overridden, and slow reporting teaches nothing.
	var st State
	d := NewDetector(DefaultConfig(), Profile{CapacityL: 80, LagSec: 30}, &st)
	raw, ts := refuelResponse(90, 30)
	d.learnLag(raw, ts)
	if got := d.lagSec(); got != 30 || len(st.LagSamples) != 0 {
		t.Errorf("with a profile: got lag %v and samples %v, want 30 and none", got, st.LagSamples)
	}
	st = State{}
	d = NewDetector(DefaultConfig(), Profile{CapacityL: 80}, &st)
	for i := range ts {
		ts[i] *= 4 // every 2 minutes
	}
	d.learnLag(raw, ts)
	if len(st.LagSamples) != 0 {
		t.Errorf("readings 2 min apart: got samples %v, want none", st.LagSamples)
	}
}
