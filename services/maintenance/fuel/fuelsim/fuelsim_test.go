package fuelsim

import (
	"reflect"
	"testing"
	"time"
)

func TestGenerate(t *testing.T) {
	patterns := map[string]int{}
	kinds := map[Kind]int{}
	for _, seed := range DevSeeds(12) {
		tr := Generate(seed, 4)
		if len(tr.Records) == 0 || len(tr.Truth) == 0 {
			t.Fatalf("seed %d: got %d records and %d events, want some of each", seed, len(tr.Records), len(tr.Truth))
		}
		for i := 1; i < len(tr.Records); i++ {
			a, b := tr.Records[i-1], tr.Records[i]
			if !b.Time.After(a.Time) {
				t.Fatalf("seed %d: record %d at %s not after %s", seed, i, b.Time, a.Time)
			}
			// The longest silence is a 40 min dropout plus one parked interval.
			if gap := b.Time.Sub(a.Time); gap > 46*time.Minute {
				t.Errorf("seed %d: got a %s gap between records, want at most 46 min", seed, gap)
			}
			if b.LevelL < 0 || b.LevelL > tr.CapacityL*1.02 {
				t.Errorf("seed %d: level %.1f outside the sensor's range", seed, b.LevelL)
			}
		}
		for _, e := range tr.Truth {
			kinds[e.Kind]++
			if !e.End.After(e.Start) || e.Litres < 9.9 {
				t.Errorf("seed %d: event %+v: want an end after its start and at least 10 L", seed, e)
			}
			for _, p := range e.Patterns {
				patterns[p]++
			}
		}
	}
	for _, p := range []string{PatternShortStop, PatternAfterParking, PatternSlowDrain, PatternIdling, PatternCreeping, PatternSlopeLag, PatternDouble} {
		if patterns[p] == 0 {
			t.Errorf("pattern %q: got no event of it in 48 vehicle-days", p)
		}
	}
	if kinds[Refuel] == 0 || kinds[Drain] == 0 {
		t.Errorf("kinds: got %v, want refuels and drains", kinds)
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := Generate(HeldOutSeedBase, 2), Generate(HeldOutSeedBase, 2)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two runs of one seed differ")
	}
	if c := Generate(HeldOutSeedBase+1, 2); reflect.DeepEqual(a.Records, c.Records) {
		t.Fatal("two seeds gave the same records")
	}
}
