package driving

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

// track builds 1 Hz fixes from (speed, heading) pairs.
func track(sh ...[2]float64) []Point {
	out := make([]Point, len(sh))
	for i, x := range sh {
		out[i] = Point{Time: t0.Add(time.Duration(i) * time.Second), SpeedKmh: x[0], HeadingDeg: x[1]}
	}
	return out
}

func TestCount(t *testing.T) {
	th := DefaultThresholds()
	for _, tc := range []struct {
		name   string
		points []Point
		want   Counts
	}{
		{"steady cruise", track([2]float64{50, 90}, [2]float64{51, 90}, [2]float64{50, 91}), Counts{}},
		// 0 → 15 km/h in 1 s is 4.2 m/s², over 3: one episode for two harsh seconds.
		{"harsh start, one episode", track([2]float64{0, 0}, [2]float64{15, 0}, [2]float64{30, 0}, [2]float64{35, 0}), Counts{HarshAccel: 1}},
		// 60 → 40 km/h in 1 s is 5.6 m/s² of braking.
		{"hard stop", track([2]float64{60, 0}, [2]float64{40, 0}, [2]float64{20, 0}, [2]float64{0, 0}), Counts{HarshBrake: 1}},
		{"two separate stops", track([2]float64{60, 0}, [2]float64{40, 0}, [2]float64{39, 0}, [2]float64{20, 0}), Counts{HarshBrake: 2}},
		// 50 km/h turning 30°/s: 13.9 m/s × 0.52 rad/s = 7.3 m/s² sideways.
		{"sharp corner", track([2]float64{50, 0}, [2]float64{50, 30}, [2]float64{50, 60}), Counts{HarshCorner: 1}},
		{"corner across north", track([2]float64{50, 350}, [2]float64{50, 20}), Counts{HarshCorner: 1}},
		{"gentle corner", track([2]float64{50, 0}, [2]float64{50, 10}, [2]float64{50, 20}), Counts{}},
		{"slow manoeuvre is not cornering", track([2]float64{10, 0}, [2]float64{10, 90}), Counts{}},
		{"fixes too far apart", []Point{{Time: t0, SpeedKmh: 0}, {Time: t0.Add(30 * time.Second), SpeedKmh: 100}}, Counts{}},
		{"out of order fix ignored", []Point{{Time: t0, SpeedKmh: 50}, {Time: t0, SpeedKmh: 0}, {Time: t0.Add(time.Second), SpeedKmh: 50}}, Counts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Count(tc.points, th); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultThresholds().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, bad := range []Thresholds{
		{AccelMps2: 0, BrakeMps2: 4, CornerMps2: 4, MaxGap: time.Second},
		{AccelMps2: 3, BrakeMps2: -1, CornerMps2: 4, MaxGap: time.Second},
		{AccelMps2: 3, BrakeMps2: 4, CornerMps2: 4, MaxGap: 0},
		{AccelMps2: 3, BrakeMps2: 4, CornerMps2: 4, MaxGap: time.Second, CornerMinKmh: -1},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
