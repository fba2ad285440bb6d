package fence

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

func TestCompileRejectsInvalidGeoJSON(t *testing.T) {
	big := make([]string, 0, MaxVertices+2)
	for i := 0; i <= MaxVertices; i++ {
		a := 2 * math.Pi * float64(i) / float64(MaxVertices+1)
		big = append(big, fmt.Sprintf("[%f,%f]", 10+math.Cos(a)*0.01, 50+math.Sin(a)*0.01))
	}
	big = append(big, big[0])
	tests := []struct {
		name    string
		spec    Spec
		want    error
		message string // a fragment the message must contain
	}{
		{"malformed JSON", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[0,0],[1,0]`}, ErrMalformedJSON, "malformed GeoJSON"},
		{"not an object", Spec{GeoJSON: `[1,2,3]`}, ErrMalformedJSON, "malformed GeoJSON"},
		{"missing type", Spec{GeoJSON: `{"coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}`}, ErrMalformedJSON, `no "type"`},
		{"coordinates not numbers", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[["a","b"]]]}`}, ErrMalformedJSON, "array of rings"},
		{"unclosed ring", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[10,50],[10.1,50],[10.1,50.1],[10,50.1]]]}`}, ErrRingNotClosed, "ring 0 (exterior) starts at [10, 50] and ends at [10, 50.1]"},
		{"unclosed hole", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[10,50],[10.1,50],[10.1,50.1],[10,50.1],[10,50]],[[10.01,50.01],[10.02,50.01],[10.02,50.02],[10.01,50.02]]]}`}, ErrRingNotClosed, "ring 1 (hole)"},
		{"too-short ring", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[10,50],[10.1,50],[10,50]]]}`}, ErrRingTooShort, "has 3 positions"},
		{"degenerate ring", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[10,50],[10.1,50],[10,50],[10.1,50],[10,50]]]}`}, ErrRingTooShort, "fewer than 3 distinct"},
		{"longitude out of range", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[10,50],[190,50],[10.1,50.1],[10,50]]]}`}, ErrCoordinate, "position 1 [190, 50]"},
		{"latitude out of range", Spec{GeoJSON: `{"type":"Point","coordinates":[10,95]}`, RadiusM: 100}, ErrCoordinate, "circle centre [10, 95]"},
		{"oversized GeoJSON", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[` + strings.Repeat("[10.000001,50.000001],", 200_000) + `[10,50]]]}`}, ErrTooLarge, "limit 61440"},
		{"positions far beyond the vertex limit", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[` + strings.Repeat("[1,2],", 5000) + `[1,2]]]}`}, ErrTooManyVertices, "more than 2008 positions"},
		{"too many vertices", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[` + strings.Join(big, ",") + `]]}`}, ErrTooManyVertices, fmt.Sprintf("limit %d", MaxVertices)},
		{"empty polygon", Spec{GeoJSON: `{"type":"Polygon","coordinates":[]}`}, ErrEmptyGeometry, "no rings"},
		{"empty ring", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[]]}`}, ErrEmptyGeometry, "no positions"},
		{"empty multipolygon", Spec{GeoJSON: `{"type":"MultiPolygon","coordinates":[]}`}, ErrEmptyGeometry, "no polygons"},
		{"no coordinates", Spec{GeoJSON: `{"type":"Polygon"}`}, ErrEmptyGeometry, "no coordinates"},
		{"empty string", Spec{GeoJSON: ``}, ErrEmptyGeometry, "no GeoJSON"},
		{"feature without geometry", Spec{GeoJSON: `{"type":"Feature","geometry":null,"properties":{}}`}, ErrEmptyGeometry, "no geometry"},
		{"unsupported type", Spec{GeoJSON: `{"type":"MultiPoint","coordinates":[[1,2]]}`}, ErrUnsupported, `"MultiPoint"`},
		{"circle without radius", Spec{GeoJSON: `{"type":"Point","coordinates":[10,50]}`}, ErrRadius, "needs radius_m"},
		{"corridor without buffer", Spec{GeoJSON: `{"type":"LineString","coordinates":[[10,50],[10.1,50]]}`}, ErrBuffer, "needs buffer_m"},
		{"corridor of one position", Spec{GeoJSON: `{"type":"LineString","coordinates":[[10,50]]}`, BufferM: 10}, ErrEmptyGeometry, "needs at least 2"},
		{"ring around a pole", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[0,80],[120,80],[-120,80],[0,80]]]}`}, ErrRingAroundPole, "winds once"},
		{"bad schedule", Spec{GeoJSON: square(50, 10, 500), Schedule: &Schedule{Start: "8am"}}, ErrSchedule, `"8am" is not HH:MM`},
		{"bad time zone", Spec{GeoJSON: square(50, 10, 500), Schedule: &Schedule{TimeZone: "Mars/Olympus"}}, ErrSchedule, "Mars/Olympus"},
		{"dwell without minutes", Spec{GeoJSON: square(50, 10, 500), Alert: AlertDwell}, ErrAlert, "dwell_minutes"},
		{"unknown alert", Spec{GeoJSON: square(50, 10, 500), Alert: "sometimes"}, ErrAlert, "sometimes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.ID, tc.spec.Name = "z1", "zone"
			_, err := Compile(tc.spec)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidZone) {
				t.Fatalf("got error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("got message %q, want it to mention %q", err, tc.message)
			}
		})
	}
	if _, err := Compile(Spec{ID: "bad id!", Name: "x", GeoJSON: square(50, 10, 500)}); !errors.Is(err, ErrID) {
		t.Errorf("got %v for a bad id, want ErrID", err)
	}
}

// A 4 MB GeoJSON is refused by a scan of its bytes, before anything parses it (parsing
// would allocate for every one of its 200 000 positions).
func TestOversizedGeoJSONRefusedBeforeParsing(t *testing.T) {
	huge := Spec{ID: "z", Name: "z", GeoJSON: `{"type":"Polygon","coordinates":[[` + strings.Repeat("[10.000001,50.000001],", 200_000) + `[10,50]]]}`}
	many := Spec{ID: "z", Name: "z", GeoJSON: `{"type":"Polygon","coordinates":[[` + strings.Repeat("[1,2],", 9000) + `[1,2]]]}`}
	for name, tc := range map[string]struct {
		spec Spec
		want error
	}{"4 MB": {huge, ErrTooLarge}, "9000 positions": {many, ErrTooManyVertices}} {
		allocs := testing.AllocsPerRun(3, func() {
			if _, err := Compile(tc.spec); !errors.Is(err, tc.want) {
				t.Fatalf("%s: got %v, want %v", name, err, tc.want)
			}
		})
		if allocs > 50 {
			t.Errorf("%s: %.0f allocations to refuse it, want a handful (refused before parsing)", name, allocs)
		}
	}
}

func TestCompileShapes(t *testing.T) {
	tests := []struct {
		name       string
		spec       Spec
		shape      string
		in, out    geo.Point
		exportHave string
	}{
		{"polygon", Spec{GeoJSON: square(50, 10, 500)}, ShapePolygon, geo.Point{Lat: 50, Lon: 10}, geo.Point{Lat: 50.01, Lon: 10}, `"Polygon"`},
		{"feature polygon", Spec{GeoJSON: `{"type":"Feature","geometry":` + square(50, 10, 500) + `,"properties":{}}`}, ShapePolygon, geo.Point{Lat: 50, Lon: 10}, geo.Point{Lat: 50.01, Lon: 10}, `"Polygon"`},
		{"multipolygon", Spec{GeoJSON: `{"type":"MultiPolygon","coordinates":[[[[10,50],[10.01,50],[10.01,50.01],[10,50.01],[10,50]]],[[[11,50],[11.01,50],[11.01,50.01],[11,50.01],[11,50]]]]}`}, ShapeMultiPolygon, geo.Point{Lat: 50.005, Lon: 11.005}, geo.Point{Lat: 50.005, Lon: 10.5}, `"MultiPolygon"`},
		{"circle", Spec{GeoJSON: `{"type":"Point","coordinates":[10,50]}`, RadiusM: 300}, ShapeCircle, geo.Destination(geo.Point{Lat: 50, Lon: 10}, 45, 290), geo.Destination(geo.Point{Lat: 50, Lon: 10}, 45, 310), `"Point"`},
		{"circle from feature", Spec{GeoJSON: `{"type":"Feature","geometry":{"type":"Point","coordinates":[10,50]},"properties":{"radius_m":300}}`}, ShapeCircle, geo.Destination(geo.Point{Lat: 50, Lon: 10}, 0, 290), geo.Destination(geo.Point{Lat: 50, Lon: 10}, 0, 310), `"Point"`},
		{"corridor", Spec{GeoJSON: `{"type":"LineString","coordinates":[[10,50],[10.1,50]]}`, BufferM: 50}, ShapeCorridor, geo.Point{Lat: 50 + 40/metresPerDeg, Lon: 10.05}, geo.Point{Lat: 50 + 60/metresPerDeg, Lon: 10.05}, `"LineString"`},
		{"antimeridian polygon", Spec{GeoJSON: `{"type":"Polygon","coordinates":[[[179.9,-17],[-179.9,-17],[-179.9,-16.9],[179.9,-16.9],[179.9,-17]]]}`}, ShapePolygon, geo.Point{Lat: -16.95, Lon: -179.95}, geo.Point{Lat: -16.95, Lon: 179.8}, `179.9`},
		{"antimeridian circle", Spec{GeoJSON: `{"type":"Point","coordinates":[180,0]}`, RadiusM: 1000}, ShapeCircle, geo.Point{Lat: 0, Lon: -179.995}, geo.Point{Lat: 0, Lon: -179.98}, `"Point"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.ID, tc.spec.Name = "z", "zone"
			z, err := Compile(tc.spec)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if z.Shape != tc.shape {
				t.Errorf("got shape %s, want %s", z.Shape, tc.shape)
			}
			ix := NewIndex([]*Zone{z})
			if got := len(ix.At(tc.in.Lat, tc.in.Lon)); got != 1 {
				t.Errorf("point %v: got %d zones, want 1", tc.in, got)
			}
			if got := len(ix.At(tc.out.Lat, tc.out.Lon)); got != 0 {
				t.Errorf("point %v: got %d zones, want 0", tc.out, got)
			}
			fc, err := ExportFeatureCollection([]*Zone{z})
			if err != nil || !strings.Contains(string(fc), tc.exportHave) || !strings.Contains(string(fc), `"FeatureCollection"`) {
				t.Errorf("export %s (err %v): want it to hold %s", fc, err, tc.exportHave)
			}
		})
	}
}

func TestScheduleActiveAcrossDST(t *testing.T) {
	weekdays := &Schedule{Days: []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}, Start: "08:00", End: "17:00", TimeZone: "Europe/Berlin"}
	night := &Schedule{Start: "22:00", End: "06:00", TimeZone: "America/New_York", Days: []time.Weekday{time.Saturday}}
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name  string
		sched *Schedule
		at    time.Time
		want  bool
	}{
		// Berlin moves from CET (UTC+1) to CEST (UTC+2) on 2026-03-29.
		{"monday before DST 06:30Z is 07:30 CET", weekdays, utc("2026-03-23T06:30:00Z"), false},
		{"monday after DST 06:30Z is 08:30 CEST", weekdays, utc("2026-03-30T06:30:00Z"), true},
		{"monday before DST 15:30Z is 16:30 CET", weekdays, utc("2026-03-23T15:30:00Z"), true},
		{"monday after DST 15:30Z is 17:30 CEST", weekdays, utc("2026-03-30T15:30:00Z"), false},
		{"sunday is not a weekday", weekdays, utc("2026-03-29T10:00:00Z"), false},
		// New York moves from EDT to EST on 2026-11-01 (a Sunday, early morning).
		{"saturday 23:00 EDT", night, utc("2026-11-01T03:00:00Z"), true},
		{"sunday 05:30 EST, the night opened on saturday", night, utc("2026-11-01T10:30:00Z"), true},
		{"sunday 06:30 EST, closed", night, utc("2026-11-01T11:30:00Z"), false},
		{"friday 23:00, wrong day", night, utc("2026-10-31T03:00:00Z"), false},
		{"nil schedule is always active", nil, utc("2026-10-31T03:00:00Z"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sched != nil {
				sc, err := compileSchedule(*tc.sched)
				if err != nil {
					t.Fatal(err)
				}
				tc.sched = &sc
			}
			if got := tc.sched.Active(tc.at); got != tc.want {
				t.Errorf("Active(%s) got %v, want %v", tc.at, got, tc.want)
			}
		})
	}
}

// square is a GeoJSON polygon of side 2·halfM metres centred on (lat, lon).
func square(lat, lon, halfM float64) string {
	dLat := halfM / metresPerDeg
	dLon := halfM / (metresPerDeg * math.Cos(lat*math.Pi/180))
	return fmt.Sprintf(`{"type":"Polygon","coordinates":[[[%[1]f,%[2]f],[%[3]f,%[2]f],[%[3]f,%[4]f],[%[1]f,%[4]f],[%[1]f,%[2]f]]]}`,
		lon-dLon, lat-dLat, lon+dLon, lat+dLat)
}

// ---- property test: the engine agrees with a brute-force point-in-polygon check ----

// star returns a closed ring around (lat, lon): n vertices at increasing angles with
// radii (in degrees of latitude) between rMin and rMax, so concave in general.
func star(rng *rand.Rand, lat, lon, rMin, rMax float64, n int) [][2]float64 {
	ring := make([][2]float64, 0, n+1)
	for i := 0; i < n; i++ {
		a := 2 * math.Pi * (float64(i) + rng.Float64()*0.8) / float64(n)
		r := rMin + rng.Float64()*(rMax-rMin)
		x := geo.NormalizeLon(lon + r*math.Cos(a)/math.Cos(lat*math.Pi/180))
		ring = append(ring, [2]float64{x, lat + r*math.Sin(a)})
	}
	return append(ring, ring[0])
}

func ringJSON(r [][2]float64) string {
	parts := make([]string, len(r))
	for i, p := range r {
		parts[i] = fmt.Sprintf("[%v,%v]", p[0], p[1])
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// unwrap rewrites a ring with continuous longitudes (no jump of more than 180°).
func unwrap(r [][2]float64) [][2]float64 {
	u := make([][2]float64, len(r))
	u[0] = r[0]
	for k := 1; k < len(r); k++ {
		u[k] = [2]float64{u[k-1][0] + normDelta(r[k][0]-r[k-1][0]), r[k][1]}
	}
	return u
}

// bruteContains is the textbook even-odd ray test, independent of the engine's frames,
// index and band tables: each ring (already unwrapped) is tried with the point at lon
// and lon±360. Inside means inside the exterior and in no hole.
func bruteContains(rings [][][2]float64, lat, lon float64) bool {
	for i, u := range rings {
		in := evenOdd(u, lat, lon-360) || evenOdd(u, lat, lon) || evenOdd(u, lat, lon+360)
		if in != (i == 0) {
			return false
		}
	}
	return true
}

func evenOdd(r [][2]float64, lat, lon float64) bool {
	in := false
	for i := 0; i+1 < len(r); i++ {
		x1, y1, x2, y2 := r[i][0], r[i][1], r[i+1][0], r[i+1][1]
		if (y1 > lat) != (y2 > lat) && lon < x1+(lat-y1)*(x2-x1)/(y2-y1) {
			in = !in
		}
	}
	return in
}

func TestPropertyEngineMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	type poly struct {
		z     *Zone
		rings [][][2]float64 // unwrapped
	}
	var polys []poly
	for i := 0; i < 120; i++ {
		lat := -60 + rng.Float64()*120
		lon := -180 + rng.Float64()*360
		kind := i % 3
		if kind == 2 {
			lon = 179.5 + rng.Float64() // centre within 0.5° of the antimeridian
			lon = geo.NormalizeLon(lon)
		}
		r := 0.05 + rng.Float64()*0.5
		rings := [][][2]float64{star(rng, lat, lon, 0.3*r, r, 5+rng.IntN(150))}
		if kind >= 1 {
			rings = append(rings, star(rng, lat, lon, 0.05*r, 0.25*r, 3+rng.IntN(10)))
		}
		js := make([]string, len(rings))
		for k, rg := range rings {
			js[k] = ringJSON(rg)
		}
		z, err := Compile(Spec{ID: fmt.Sprintf("p%d", i), Name: "p", GeoJSON: `{"type":"Polygon","coordinates":[` + strings.Join(js, ",") + `]}`})
		if err != nil {
			t.Fatalf("polygon %d: %v", i, err)
		}
		for k := range rings {
			rings[k] = unwrap(rings[k])
		}
		polys = append(polys, poly{z, rings})
	}
	zs := make([]*Zone, len(polys))
	for i, p := range polys {
		zs[i] = p.z
	}
	ix := NewIndex(zs)
	checked, insides := 0, 0
	for _, p := range polys {
		ex := p.rings[0]
		c := ex[0]
		for k := 0; k < 80; k++ {
			// Sample around the polygon (most points near it, some anywhere).
			lat := c[1] + (rng.Float64()*2-1)*0.6
			lon := geo.NormalizeLon(c[0] + (rng.Float64()*2-1)*0.9)
			if k%2 == 1 { // within the exterior's bounding box
				minX, minY, maxX, maxY := ex[0][0], ex[0][1], ex[0][0], ex[0][1]
				for _, v := range ex {
					minX, maxX = math.Min(minX, v[0]), math.Max(maxX, v[0])
					minY, maxY = math.Min(minY, v[1]), math.Max(maxY, v[1])
				}
				lat = minY + rng.Float64()*(maxY-minY)
				lon = geo.NormalizeLon(minX + rng.Float64()*(maxX-minX))
			}
			if k%10 == 0 {
				lat, lon = -80+rng.Float64()*160, -180+rng.Float64()*360
			}
			got := map[string]bool{}
			for _, z := range ix.At(lat, lon) {
				got[z.ID] = true
			}
			for _, q := range polys {
				want := bruteContains(q.rings, lat, lon)
				if got[q.z.ID] != want {
					t.Fatalf("zone %s at (%v, %v): engine says %v, brute force %v", q.z.ID, lat, lon, got[q.z.ID], want)
				}
				if want {
					insides++
				}
				checked++
			}
		}
	}
	if insides < 1500 {
		t.Fatalf("only %d of %d checks were inside a polygon: the sample does not exercise the test", insides, checked)
	}
	t.Logf("%d point-polygon checks, %d inside", checked, insides)
}
