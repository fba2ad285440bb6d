package loadtest

import (
	"strings"
	"testing"
)

func TestChartSVG(t *testing.T) {
	tests := []struct {
		name string
		c    chart
		want []string
	}{
		{"empty", chart{title: "t", series: []series{{name: "a", color: "#000"}}}, []string{"no data"}},
		{"single point", chart{title: "t", logY: true, limit: 50, limitLabel: "limit",
			series: []series{{name: "p99", color: "#f00", x: []float64{1000}, y: []float64{400}}}}, []string{"<circle", "limit", ">900<", ">1100<"}},
		{"line", chart{title: "Throughput <&>", series: []series{{name: "sent", color: "#00f", x: []float64{0, 1, 2}, y: []float64{10, 20000, 15000}}}},
			[]string{"<polyline", "20k", "Throughput &lt;&amp;&gt;"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svg := string(tt.c.svg())
			if !strings.HasPrefix(svg, "<svg") || !strings.HasSuffix(svg, "</svg>") {
				t.Fatalf("not an svg element: %.80s", svg)
			}
			for _, w := range tt.want {
				if !strings.Contains(svg, w) {
					t.Errorf("svg lacks %q", w)
				}
			}
			if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
				t.Errorf("svg holds NaN/Inf coordinates")
			}
		})
	}
}

func TestNiceStep(t *testing.T) {
	tests := []struct {
		span float64
		n    int
		want float64
	}{
		{100, 5, 20}, {37, 8, 5}, {0.3, 3, 0.1}, {200, 8, 50}, {0, 5, 1},
	}
	for _, tt := range tests {
		if got := niceStep(tt.span, tt.n); got != tt.want {
			t.Errorf("niceStep(%v, %d): got %v, want %v", tt.span, tt.n, got, tt.want)
		}
	}
}
