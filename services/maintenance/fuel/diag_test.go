package fuel

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/services/maintenance/fuel/fuelsim"
)

func TestVolumeDiag(t *testing.T) {
	if os.Getenv("FUEL_DIAG") == "" {
		t.Skip("FUEL_DIAG unset")
	}
	seeds := fuelsim.DevSeeds(24)
	var sb strings.Builder
	type agg struct{ n, ok int }
	by := map[string]*agg{}
	add := func(k string, ok bool) {
		a := by[k]
		if a == nil {
			a = &agg{}
			by[k] = a
		}
		a.n++
		if ok {
			a.ok++
		}
	}
	for i, seed := range seeds {
		tr := fuelsim.Generate(seed, 10)
		sc := fromNew(tr, i%2 == 0)
		det := runDetectorProfile(DefaultConfig(), sc.prof, sc.readings)
		used := make([]bool, len(det))
		for _, te := range sc.truth {
			for j, d := range det {
				if used[j] || d.Kind != te.kind || d.Confidence < DefaultMinConfidence && d.Confidence > 0 {
					continue
				}
				if !d.Start.After(te.end.Add(matchTol)) && !d.End.Before(te.start.Add(-matchTol)) {
					used[j] = true
					err := d.Litres - te.litres
					ok := math.Abs(err) <= math.Max(0.05*te.litres, 2)
					pats := strings.Join(te.patterns, ",")
					add(fmt.Sprintf("%s %s", te.kind, tr.Type), ok)
					add(fmt.Sprintf("%s across=%v", te.kind, d.Across), ok)
					add(fmt.Sprintf("%s prof=%v", te.kind, i%2 == 0), ok)
					add(fmt.Sprintf("%s lag>=60=%v", te.kind, tr.Lag.Seconds() >= 60), ok)
					add(fmt.Sprintf("%s parked=%v", te.kind, tr.Parked), ok)
					for _, p := range te.patterns {
						add(fmt.Sprintf("%s pat=%s", te.kind, p), ok)
					}
					tag := "BAD"
					if ok {
						tag = "OK"
					}
					{
						fmt.Fprintf(&sb, tag+" seed=%d %s cap=%.0f lag=%v parked=%v prof=%v %s true=%.1f got=%.1f err=%+.1f across=%v conf=%.2f before=%.1f after=%.1f exp=%.1f dur=%v tstart=%s dstart=%s dend=%s tend=%s [%s]\n",
							seed, tr.Type, tr.CapacityL, tr.Lag, tr.Parked, i%2 == 0, te.kind, te.litres, d.Litres, err, d.Across, d.Confidence, d.Before, d.After, d.ExpectedL, te.end.Sub(te.start).Round(1e9), te.start.Format("02T15:04:05"), d.Start.Format("15:04:05"), d.End.Format("15:04:05"), te.end.Format("15:04:05"), pats)
					}
					te.litres = -te.litres // matched
					break
				}
			}
			if te.litres > 0 {
				fmt.Fprintf(&sb, "FN seed=%d %s cap=%.0f lag=%v parked=%v %s true=%.1f tstart=%s tend=%s [%s]\n",
					seed, tr.Type, tr.CapacityL, tr.Lag, tr.Parked, te.kind, te.litres, te.start.Format("02T15:04:05"), te.end.Format("15:04:05"), strings.Join(te.patterns, ","))
			}
		}
		for j, d := range det {
			if !used[j] && !(d.Confidence < DefaultMinConfidence && d.Confidence > 0) {
				fmt.Fprintf(&sb, "FP seed=%d %s cap=%.0f lag=%v parked=%v %s got=%.1f across=%v conf=%.2f before=%.1f after=%.1f exp=%.1f dstart=%s dend=%s\n",
					seed, tr.Type, tr.CapacityL, tr.Lag, tr.Parked, d.Kind, d.Litres, d.Across, d.Confidence, d.Before, d.After, d.ExpectedL, d.Start.Format("02T15:04:05"), d.End.Format("15:04:05"))
			}
		}
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := by[k]
		fmt.Fprintf(&sb, "%-40s %4d/%4d %.1f%%\n", k, a.ok, a.n, 100*float64(a.ok)/float64(a.n))
	}
	os.WriteFile(os.Getenv("FUEL_DIAG"), []byte(sb.String()), 0o644)
}

// FUEL_DUMP=seed:prof:2006-01-02T15:04:05 dumps readings ±40 min around the time.
func TestVolumeDump(t *testing.T) {
	spec := os.Getenv("FUEL_DUMP")
	if spec == "" {
		t.Skip("FUEL_DUMP unset")
	}
	var seed uint64
	var prof int
	var ts string
	fmt.Sscanf(strings.ReplaceAll(spec, ":", " "), "%d %d %s", &seed, &prof, &ts)
	parts := strings.SplitN(spec, ":", 3)
	at, err := time.Parse("2006-01-02T15:04:05", "2026-05-"+parts[2])
	if err != nil {
		t.Fatal(err)
	}
	tr := fuelsim.Generate(seed, 10)
	sc := fromNew(tr, prof == 1)
	var st State
	d := NewDetector(DefaultConfig(), sc.prof, &st)
	for i, r := range sc.readings {
		evs, _ := d.Add(r)
		if r.Time.Sub(at).Abs() < 40*time.Minute {
			rec := tr.Records[i]
			fmt.Printf("%s v=%6.1f has=%v sp=%5.1f ign=%v true=%6.1f off=%5.1f ph=%d stable=%6.1f pend=%v\n", r.Time.Format("15:04:05"), r.Level, r.HasLevel, r.SpeedKmh, r.Ignition, rec.TrueL, rec.OffsetL, st.Phase, median(st.Stable), st.Pending != nil)
			for _, e := range evs {
				fmt.Printf("   EV %s %.1f before=%.1f after=%.1f exp=%.1f across=%v conf=%.2f %s-%s\n", e.Kind, e.Litres, e.Before, e.After, e.ExpectedL, e.Across, e.Confidence, e.Start.Format("15:04:05"), e.End.Format("15:04:05"))
			}
		}
	}
}

func TestLagDiag(t *testing.T) {
	if os.Getenv("FUEL_DIAG") == "" {
		t.Skip("FUEL_DIAG unset")
	}
	for _, seed := range fuelsim.DevSeeds(24) {
		tr := fuelsim.Generate(seed, 10)
		sc := fromNew(tr, false)
		var st State
		d := NewDetector(DefaultConfig(), sc.prof, &st)
		for _, r := range sc.readings {
			d.Add(r)
		}
		fmt.Printf("seed=%d %s true lag=%v parked=%v learned=%v samples=%v\n", seed, tr.Type, tr.Lag, tr.Parked, d.lagSec(), st.LagSamples)
	}
}
