package loadtest_test

import (
	"os"

	"github.com/fleetwire/fleetwire/simulators/loadtest"
)

// The summary of a ceiling search: the second step missed the latency limit, so the
// highest sustained rate is the first one.
func ExampleResult_WriteSummary() {
	r := &loadtest.Result{
		Dispatcher: true,
		Steps: []loadtest.StepResult{
			{Rate: 20000, SustainedRate: 20000, SustainedSeen: 19998, Pass: true,
				Latency: loadtest.Percentiles{P50Ms: 2.1, P90Ms: 3.4, P99Ms: 8.9, P999Ms: 14.2, MaxMs: 31}},
			{Rate: 30000, SustainedRate: 29990, SustainedSeen: 29500, Missing: 12,
				Latency: loadtest.Percentiles{P50Ms: 9.5, P90Ms: 40, P99Ms: 75.3, P999Ms: 120, MaxMs: 240}},
		},
		Ceiling: &loadtest.Ceiling{P99LimitMs: 50, HighestSustained: 20000, Reason: "30000 records/s: p99 75.3 ms > 50.0 ms"},
	}
	_ = r.WriteSummary(os.Stdout)
	// Output:
	//  rate  sent/s  seen/s  p50 ms  p90 ms  p99 ms  p99.9 ms  max ms  missing  errors  events  result
	//   20000   20000   19998    2.10    3.40    8.90     14.20   31.00        0       0       0      ok
	//   30000   29990   29500    9.50   40.00   75.30    120.00  240.00       12       0       0    FAIL
	// ceiling: highest sustained rate 20000 records/s (p99 ≤ 50 ms, loss ≤ 0); stopped: 30000 records/s: p99 75.3 ms > 50.0 ms
}
