package loadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// Result is what a load test measured. It is written as JSON for scripts and CI.
type Result struct {
	Started      time.Time    `json:"started"`
	Target       string       `json:"target"`
	Protocol     string       `json:"protocol"`          // how the trackers reported (nats, teltonika, mqtt, coap)
	Gateway      string       `json:"gateway,omitempty"` // the device gateway's address, for protocols other than nats
	GRPC         string       `json:"grpc,omitempty"`
	Dispatcher   bool         `json:"dispatcher"` // whether the dispatcher side was watched
	Vehicles     int          `json:"vehicles"`
	Zones        int          `json:"zones,omitempty"` // zones created for the run (--zones)
	BatchRecords int          `json:"batch_records"`
	Steps        []StepResult `json:"steps"`
	Ceiling      *Ceiling     `json:"ceiling,omitempty"`
}

// Ceiling is the outcome of the ceiling search.
type Ceiling struct {
	P99LimitMs       float64 `json:"p99_limit_ms"`
	LossLimit        float64 `json:"loss_limit"`
	HighestSustained float64 `json:"highest_sustained_rate"` // records/s of the last passing step; 0 if none passed
	Reason           string  `json:"stopped_because"`
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	Samples uint64  `json:"samples"`
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	P999Ms  float64 `json:"p999_ms"`
	MaxMs   float64 `json:"max_ms"`
	MeanMs  float64 `json:"mean_ms"`
}

func percentiles(h *hist) Percentiles {
	return Percentiles{
		Samples: h.n, P50Ms: ms(h.quantile(0.5)), P90Ms: ms(h.quantile(0.9)), P99Ms: ms(h.quantile(0.99)),
		P999Ms: ms(h.quantile(0.999)), MaxMs: ms(time.Duration(h.max) * time.Microsecond), MeanMs: ms(h.mean()),
	}
}

// StepResult is one rate held for a duration.
type StepResult struct {
	Rate       float64 `json:"rate_requested"` // records/s
	DurationS  float64 `json:"duration_s"`
	Dispatcher bool    `json:"-"`

	Published     uint64  `json:"published_records"`
	PublishRate   float64 `json:"publish_rate"`   // records/s achieved by the simulator over the whole step
	SustainedRate float64 `json:"sustained_rate"` // median records/s over the full seconds (start-up and end excluded)
	SustainedSeen float64 `json:"sustained_delivered_rate"`
	Packets       uint64  `json:"packets"`
	Acked         uint64  `json:"acked_packets"`
	PublishErrors uint64  `json:"publish_errors"`
	Dropped       uint64  `json:"dropped_packets"`

	Delivered     uint64  `json:"delivered_records"` // records the dispatcher saw (directly or superseded by a newer one)
	DeliveredRate float64 `json:"delivered_rate"`
	Updates       uint64  `json:"dispatcher_updates"`
	Missing       uint64  `json:"missing_records"` // published, never reached the dispatcher by the end of the drain
	MissingVeh    int     `json:"missing_vehicles"`
	LossRatio     float64 `json:"loss_ratio"`
	WatchErrors   uint64  `json:"watch_errors"`
	EventErrors   uint64  `json:"event_errors"`

	Latency      Percentiles       `json:"latency"` // device publish → dispatcher receipt (WatchVehicles)
	EventLatency Percentiles       `json:"event_latency"`
	Events       map[string]uint64 `json:"events"`
	// Zone events received on WatchZoneEvents (with --zones), by kind, and their latency
	// from the causing record's publish.
	ZoneEvents  map[string]uint64 `json:"zone_events,omitempty"`
	ZoneLatency Percentiles       `json:"zone_latency"`
	Series      []Second          `json:"series"`

	Pass    bool   `json:"pass"`
	Verdict string `json:"verdict,omitempty"`
}

// Second is one second of a step.
type Second struct {
	T         int     `json:"t"`
	Published uint64  `json:"published"`
	Delivered uint64  `json:"delivered"`
	Updates   uint64  `json:"updates"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
}

func summarize(l *ledger, fs fleetsim.Stats, rate float64, d time.Duration, dispatcher bool) *StepResult {
	missing, mveh := l.pending()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &StepResult{
		Rate: rate, DurationS: d.Seconds(), Dispatcher: dispatcher,
		Packets: fs.Published, Acked: fs.Acked, PublishErrors: fs.PublishErrors, Dropped: fs.Dropped,
		Delivered: l.delivered, Updates: l.updates,
		Latency: percentiles(&l.lat), EventLatency: percentiles(&l.evLat), Events: map[string]uint64{},
		Pass: true,
	}
	for _, v := range l.vehicles {
		st.Published += v.total
	}
	for k, n := range l.events {
		st.Events[k] = n
	}
	if len(l.zones) > 0 {
		st.ZoneEvents = map[string]uint64{}
		for k, n := range l.zones {
			st.ZoneEvents[k] = n
		}
		st.ZoneLatency = percentiles(&l.zoneLat)
	}
	st.PublishRate = float64(st.Published) / d.Seconds()
	st.DeliveredRate = float64(st.Delivered) / d.Seconds()
	if dispatcher {
		st.Missing, st.MissingVeh = missing, mveh
		if st.Published > 0 {
			st.LossRatio = float64(missing) / float64(st.Published)
		}
	}
	// Rates over the publishing window only; the drain that follows publishes nothing.
	window := l.series[:min(len(l.series), int(math.Ceil(d.Seconds())))]
	st.SustainedRate = sustained(window, func(s *second) uint64 { return s.published })
	st.SustainedSeen = sustained(window, func(s *second) uint64 { return s.delivered })
	for i := range l.series {
		s := &l.series[i]
		st.Series = append(st.Series, Second{
			T: i, Published: s.published, Delivered: s.delivered, Updates: s.updates,
			P50Ms: ms(s.lat.quantile(0.5)), P99Ms: ms(s.lat.quantile(0.99)), MaxMs: ms(time.Duration(s.lat.max) * time.Microsecond),
		})
	}
	return st
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// WriteSummary writes a table of the steps and, for a ceiling search, its outcome.
func (r *Result) WriteSummary(w io.Writer) error {
	if r.Protocol != "" && r.Protocol != fleetsim.ProtocolNATS {
		fmt.Fprintf(w, "trackers: %s devices through %s, each with its own credential\n", r.Protocol, r.Gateway)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\tsent/s\tseen/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\tmissing\terrors\tevents\tresult\t")
	for _, s := range r.Steps {
		var events uint64
		for _, n := range s.Events {
			events += n
		}
		result := "ok"
		if !s.Pass {
			result = "FAIL"
		}
		if !r.Dispatcher {
			fmt.Fprintf(tw, "%.0f\t%.0f\t-\t-\t-\t-\t-\t-\t-\t%d\t%d\t%s\t\n", s.Rate, s.SustainedRate, s.PublishErrors, events, result)
			continue
		}
		fmt.Fprintf(tw, "%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%s\t\n",
			s.Rate, s.SustainedRate, s.SustainedSeen, s.Latency.P50Ms, s.Latency.P90Ms, s.Latency.P99Ms,
			s.Latency.P999Ms, s.Latency.MaxMs, s.Missing, s.PublishErrors+s.WatchErrors+s.EventErrors, events, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Steps) == 1 && len(r.Steps[0].Events) > 0 {
		kinds := make([]string, 0, len(r.Steps[0].Events))
		for k := range r.Steps[0].Events {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var b strings.Builder
		for _, k := range kinds {
			fmt.Fprintf(&b, " %s=%d", k, r.Steps[0].Events[k])
		}
		fmt.Fprintf(w, "events:%s (latency p50 %.2f ms, p99 %.2f ms)\n", b.String(), r.Steps[0].EventLatency.P50Ms, r.Steps[0].EventLatency.P99Ms)
	}
	if r.Zones > 0 {
		for _, s := range r.Steps {
			var n uint64
			for _, k := range s.ZoneEvents {
				n += k
			}
			fmt.Fprintf(w, "zone events (WatchZoneEvents, %d zones) at %.0f records/s: %d (p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms)\n",
				r.Zones, s.Rate, n, s.ZoneLatency.P50Ms, s.ZoneLatency.P90Ms, s.ZoneLatency.P99Ms, s.ZoneLatency.MaxMs)
		}
	}
	if c := r.Ceiling; c != nil {
		fmt.Fprintf(w, "ceiling: highest sustained rate %.0f records/s (p99 ≤ %.0f ms, loss ≤ %g); stopped: %s\n",
			c.HighestSustained, c.P99LimitMs, c.LossLimit, c.Reason)
	}
	return nil
}

// ErrFail is returned (wrapped) by Result.Err when the verdict is FAIL.
var ErrFail = errors.New("load test verdict: FAIL")

// Err returns nil when the run's verdict is a pass, else an error wrapping ErrFail that
// says why. A single-rate run passes when its step passed. A ceiling search always ends
// on a failing step (that is how it finds the ceiling), so it passes when at least one
// step sustained its rate, and fails when even the first did not.
func (r *Result) Err() error {
	if len(r.Steps) == 0 {
		return fmt.Errorf("%w: no step completed", ErrFail)
	}
	if r.Ceiling != nil {
		if r.Ceiling.HighestSustained <= 0 {
			return fmt.Errorf("%w: no rate sustained (%s)", ErrFail, r.Ceiling.Reason)
		}
		return nil
	}
	for _, s := range r.Steps {
		if !s.Pass {
			return fmt.Errorf("%w: %.0f records/s: %s", ErrFail, s.Rate, s.Verdict)
		}
	}
	return nil
}

// sustained is the median per-second publish count, leaving out the first and last
// second (the fleet starts and stops within them).
func sustained(ss []second, f func(*second) uint64) float64 {
	if len(ss) < 3 {
		var n uint64
		for i := range ss {
			n += f(&ss[i])
		}
		return float64(n) / float64(max(1, len(ss)))
	}
	v := make([]float64, 0, len(ss)-2)
	for i := 1; i < len(ss)-1; i++ {
		v = append(v, float64(f(&ss[i])))
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
