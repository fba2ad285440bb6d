package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// The HTML report is one self-contained file: charts are inline SVG drawn here, with no
// scripts or external assets, so it opens offline and can be attached to a CI run.

type series struct {
	name, color string
	x, y        []float64
}

type chart struct {
	title, xLabel, yLabel string
	logY                  bool
	limit                 float64 // horizontal reference line (0: none)
	limitLabel            string
	series                []series
}

const (
	chartW, chartH = 860.0, 300.0
	padL, padR     = 64.0, 150.0
	padT, padB     = 30.0, 44.0
)

// niceStep returns a round step (1, 2, 5 × 10^k) giving about n ticks over span.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e5)/10)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%gk", math.Round(v/100)/10)
	case math.Abs(v) < 1:
		return fmt.Sprintf("%.2g", v)
	}
	return fmt.Sprintf("%g", math.Round(v*10)/10)
}

func (c chart) svg() template.HTML {
	var xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range c.series {
		for i := range s.x {
			y := s.y[i]
			if c.logY && y <= 0 {
				continue
			}
			xmin, xmax = math.Min(xmin, s.x[i]), math.Max(xmax, s.x[i])
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	if c.limit > 0 {
		ymax = math.Max(ymax, c.limit)
		ymin = math.Min(ymin, c.limit)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`, padL, template.HTMLEscapeString(c.title))
	if math.IsInf(xmin, 0) {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">no data</text></svg>`, chartW/2-20, chartH/2)
		return template.HTML(b.String())
	}
	if xmax == xmin {
		pad := math.Max(1, math.Abs(xmin)*0.1)
		xmin, xmax = xmin-pad, xmax+pad
	}
	var ty func(float64) float64
	var ticks []float64
	pw, ph := chartW-padL-padR, chartH-padT-padB
	if c.logY {
		lo, hi := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
		if hi == lo {
			hi = lo + 1
		}
		ty = func(v float64) float64 {
			if v <= 0 {
				v = math.Pow(10, lo)
			}
			return padT + ph - (math.Log10(v)-lo)/(hi-lo)*ph
		}
		for e := lo; e <= hi; e++ {
			ticks = append(ticks, math.Pow(10, e))
		}
	} else {
		ymin = math.Min(0, ymin)
		step := niceStep(ymax-ymin, 5)
		top := math.Ceil(ymax/step) * step
		if top == ymin {
			top = ymin + step
		}
		ty = func(v float64) float64 { return padT + ph - (v-ymin)/(top-ymin)*ph }
		for v := ymin; v <= top+step/2; v += step {
			ticks = append(ticks, v)
		}
	}
	tx := func(v float64) float64 { return padL + (v-xmin)/(xmax-xmin)*pw }
	for _, v := range ticks {
		y := ty(v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, padL+pw, y, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, padL-6, y+4, fmtNum(v))
	}
	xstep := niceStep(xmax-xmin, 8)
	for v := math.Ceil(xmin/xstep) * xstep; v <= xmax; v += xstep {
		x := tx(v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#eee"/>`, x, x, padT, padT+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, padT+ph+16, fmtNum(v))
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`, padL, padT, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, padL+pw/2, chartH-6, template.HTMLEscapeString(c.xLabel))
	fmt.Fprintf(&b, `<text transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, padT+ph/2, template.HTMLEscapeString(c.yLabel))
	if c.limit > 0 {
		y := ty(c.limit)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="6 4"/>`, padL, padL+pw, y, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#c00">%s</text>`, padL+pw+6, y+4, template.HTMLEscapeString(c.limitLabel))
	}
	for i, s := range c.series {
		var pts []string
		for j := range s.x {
			if c.logY && s.y[j] <= 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", tx(s.x[j]), ty(s.y[j])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`, s.color, strings.Join(pts, " "))
		if len(pts) == 1 || len(s.x) <= 20 {
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`, xy[0], xy[1], s.color)
			}
		}
		ly := padT + 14 + float64(i)*18
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`, padL+pw+8, padL+pw+28, ly-4, ly-4, s.color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`, padL+pw+32, ly, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// charts builds the report's charts from the steps laid end to end on one time axis.
func (r *Result) charts() []template.HTML {
	var pub, del, p50, p99, pmax series
	pub = series{name: "sent records/s", color: "#1f77b4"}
	del = series{name: "seen records/s", color: "#2ca02c"}
	p50 = series{name: "p50", color: "#2ca02c"}
	p99 = series{name: "p99", color: "#ff7f0e"}
	pmax = series{name: "max", color: "#d62728"}
	offset := 0.0
	for _, st := range r.Steps {
		for _, s := range st.Series {
			x := offset + float64(s.T)
			pub.x, pub.y = append(pub.x, x), append(pub.y, float64(s.Published))
			if r.Dispatcher {
				del.x, del.y = append(del.x, x), append(del.y, float64(s.Delivered))
				if s.Updates > 0 {
					p50.x, p50.y = append(p50.x, x), append(p50.y, s.P50Ms)
					p99.x, p99.y = append(p99.x, x), append(p99.y, s.P99Ms)
					pmax.x, pmax.y = append(pmax.x, x), append(pmax.y, s.MaxMs)
				}
			}
		}
		offset += float64(len(st.Series))
	}
	thr := chart{title: "Throughput", xLabel: "seconds since start", yLabel: "records per second", series: []series{pub}}
	if r.Dispatcher {
		thr.series = append(thr.series, del)
	}
	out := []template.HTML{thr.svg()}
	if r.Dispatcher {
		lat := chart{title: "End-to-end latency per second (device publish → dispatcher)", xLabel: "seconds since start",
			yLabel: "milliseconds (log)", logY: true, series: []series{p50, p99, pmax}}
		if r.Ceiling != nil {
			lat.limit, lat.limitLabel = r.Ceiling.P99LimitMs, "p99 limit"
		}
		out = append(out, lat.svg())
	}
	if r.Ceiling != nil && r.Dispatcher {
		c := chart{title: "Ceiling search: p99 latency by rate", xLabel: "records per second", yLabel: "p99 ms (log)", logY: true,
			limit: r.Ceiling.P99LimitMs, limitLabel: "limit"}
		s := series{name: "p99", color: "#ff7f0e"}
		for _, st := range r.Steps {
			s.x, s.y = append(s.x, st.Rate), append(s.y, st.Latency.P99Ms)
		}
		c.series = []series{s}
		out = append(out, c.svg())
	}
	return out
}

var reportTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Fleetwire load test {{.R.Started.Format "2006-01-02 15:04"}}</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}.fail{color:#c00;font-weight:bold}.ok{color:#080}
.meta td{text-align:left}
</style></head><body>
<h1>Fleetwire load test</h1>
<table class="meta">
<tr><td>started</td><td>{{.R.Started.Format "2006-01-02 15:04:05 MST"}}</td></tr>
<tr><td>NATS</td><td>{{.R.Target}}</td></tr>
{{if .R.Gateway}}<tr><td>trackers</td><td>{{.R.Protocol}} devices through {{.R.Gateway}}</td></tr>{{end}}
<tr><td>dispatcher (gRPC)</td><td>{{if .R.Dispatcher}}{{.R.GRPC}}{{else}}not watched: publish side only{{end}}</td></tr>
<tr><td>vehicles</td><td>{{.R.Vehicles}}</td></tr>
<tr><td>records per packet</td><td>{{.R.BatchRecords}}</td></tr>
{{with .R.Ceiling}}<tr><td>ceiling</td><td><b>{{printf "%.0f" .HighestSustained}} records/s</b> sustained with p99 ≤ {{.P99LimitMs}} ms and loss ≤ {{.LossLimit}}; stopped: {{.Reason}}</td></tr>{{end}}
</table>
<table>
<tr><th>rate</th><th>sent/s (median)</th><th>seen/s (median)</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>missing</th><th>publish errors</th><th>watch errors</th><th>events</th><th>event p99 ms</th><th>result</th></tr>
{{range .R.Steps}}<tr><td>{{printf "%.0f" .Rate}}</td><td>{{printf "%.0f" .SustainedRate}}</td><td>{{printf "%.0f" .SustainedSeen}}</td>
<td>{{printf "%.2f" .Latency.P50Ms}}</td><td>{{printf "%.2f" .Latency.P90Ms}}</td><td>{{printf "%.2f" .Latency.P99Ms}}</td><td>{{printf "%.2f" .Latency.P999Ms}}</td><td>{{printf "%.2f" .Latency.MaxMs}}</td>
<td>{{.Missing}}</td><td>{{.PublishErrors}}</td><td>{{.WatchErrors}}</td><td>{{.EventLatency.Samples}}</td><td>{{printf "%.2f" .EventLatency.P99Ms}}</td>
<td class="{{if .Pass}}ok{{else}}fail{{end}}">{{if .Pass}}ok{{else}}FAIL{{end}} {{.Verdict}}</td></tr>
{{end}}</table>
{{range .Charts}}<div>{{.}}</div>{{end}}
<p>Latency is measured from the packet's sent_time (stamped by the simulated tracker just before publishing) to the
moment the WatchVehicles update carrying it arrives; when updates are coalesced the newest record's latency is
counted. Missing records were published but never became visible at the dispatcher by the end of the drain.</p>
</body></html>
`))

// WriteHTML writes the self-contained HTML report.
func (r *Result) WriteHTML(w io.Writer) error {
	if err := reportTmpl.Execute(w, struct {
		R      *Result
		Charts []template.HTML
	}{r, r.charts()}); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
