package geo

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestDistanceM(t *testing.T) {
	tests := []struct {
		name string
		a, b Point
		want float64 // metres
		tol  float64
	}{
		{"one degree of latitude", Point{0, 0}, Point{1, 0}, 111195, 5},
		{"Berlin to Paris", Point{52.5200, 13.4050}, Point{48.8566, 2.3522}, 877_460, 1_000},
		{"across the antimeridian", Point{0, 179.9}, Point{0, -179.9}, 22239, 5},
		{"over the pole", Point{89.9, 0}, Point{89.9, 180}, 22239, 5},
		{"same point", Point{10, 10}, Point{10, 10}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DistanceM(tt.a, tt.b); math.Abs(got-tt.want) > tt.tol {
				t.Fatalf("got %.1f m, want %.1f ± %.0f", got, tt.want, tt.tol)
			}
		})
	}
}

func TestDestinationInvertsDistance(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		p := Point{Lat: rng.Float64()*170 - 85, Lon: rng.Float64()*360 - 180}
		d := rng.Float64() * 50_000
		q := Destination(p, rng.Float64()*360, d)
		if got := DistanceM(p, q); math.Abs(got-d) > 0.01 {
			t.Fatalf("Destination(%v, %.0f m) is %.3f m away", p, d, got)
		}
	}
}

// Every point within the radius must fall inside BoundsAround, including near the poles
// and across the antimeridian.
func TestBoundsAroundContainsCircle(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	centres := []Point{{0, 179.99}, {0, -179.99}, {89.95, 10}, {-89.95, -170}, {45, 0}, {60, 179.5}}
	for i := 0; i < 200; i++ {
		centres = append(centres, Point{Lat: rng.Float64()*180 - 90, Lon: rng.Float64()*360 - 180})
	}
	for _, c := range centres {
		r := 1 + rng.Float64()*200_000
		box := BoundsAround(c, r)
		for j := 0; j < 200; j++ {
			q := Destination(c, rng.Float64()*360, rng.Float64()*r*0.999)
			if !box.Contains(q) {
				t.Fatalf("point %v at %.0f m from %v outside box %+v (radius %.0f)", q, DistanceM(c, q), c, box, r)
			}
		}
	}
}

func TestRectContainsAcrossAntimeridian(t *testing.T) {
	r := Rect{MinLat: -10, MinLon: 170, MaxLat: 10, MaxLon: -170}
	for _, tt := range []struct {
		p    Point
		want bool
	}{{Point{0, 175}, true}, {Point{0, -175}, true}, {Point{0, 0}, false}, {Point{20, 175}, false}} {
		if got := r.Contains(tt.p); got != tt.want {
			t.Errorf("Contains(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
}
