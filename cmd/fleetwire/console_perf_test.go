package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"
)

// TestConsolePerformance is the console's long form (make console-perf): a large simulated
// fleet (FLEETWIRE_CONSOLE_PERF_VEHICLES, default 20,000) reporting every second, shown in a
// real headless Chromium. It prints, for the whole fleet in view (clustered) and for a
// street-level view (arrows), the frame-to-frame time over 10 s and the delay from a
// device sending a fix to the first frame drawn after it arrived. The figures go to
// docs/benchmarks.md; nothing here asserts them.
func TestConsolePerformance(t *testing.T) {
	if os.Getenv("FLEETWIRE_CONSOLE_PERF") != "1" {
		t.Skip("long form: FLEETWIRE_CONSOLE_PERF=1 (make console-perf)")
	}
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("FLEETWIRE_CONSOLE_PERF_VEHICLES")); err == nil && v > 0 {
		n = v
	}
	alloc := browser(t, 1600, 1000)
	p := startConsole(t, n)
	page := tab(t, alloc)
	signIn(t, page, p.ConsoleURL, p.AdminToken, "admin")
	waitJS(t, page, 10*time.Minute, "fleet loaded", fmt.Sprintf(`window.fleetwire.vehicles.size >= %d`, n*95/100))
	for _, view := range []struct {
		name string
		zoom int
	}{{"whole fleet, clustered", 10}, {"street level, arrows", 14}} {
		run(t, page, 30*time.Second, "view", js(fmt.Sprintf(`window.fleetwire.map.setView([52.52, 13.405], %d, {animate: false})`, view.zoom)))
		time.Sleep(5 * time.Second) // the new watch's snapshot
		run(t, page, 30*time.Second, "measure", js(`(() => {
			const app = window.fleetwire;
			app.latencies = [];
			app.frameGaps = [];
			let last = performance.now();
			app.measuring = true;
			const tick = (now) => { app.frameGaps.push(now - last); last = now; if (app.measuring) requestAnimationFrame(tick); };
			requestAnimationFrame(tick);
			app.drawsBefore = app.layer.frames.length;
		})()`))
		time.Sleep(10 * time.Second)
		run(t, page, 30*time.Second, "stop", js(`window.fleetwire.measuring = false`))
		gaps := eval[[]float64](t, page, `window.fleetwire.frameGaps`)
		draws := eval[[]float64](t, page, `window.fleetwire.layer.frames.slice(window.fleetwire.drawsBefore)`)
		lat := eval[[]float64](t, page, `window.fleetwire.latencies`)
		inView := eval[int](t, page, `window.fleetwire.layer.positions.size + (window.fleetwire.layer.clusters || []).reduce((s, c) => s + c.n, 0)`)
		t.Logf("%d vehicles, view %q (%d in view): frame time p50 %.1f ms p95 %.1f ms max %.1f ms over %d frames; canvas draw p95 %.1f ms (%d draws); fix-to-marker p50 %.0f ms p99 %.0f ms over %d updates",
			n, view.name, inView, pct(gaps, 50), pct(gaps, 95), pct(gaps, 100), len(gaps), pct(draws, 95), len(draws), pct(lat, 50), pct(lat, 99), len(lat))
	}
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}
