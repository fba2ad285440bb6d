package fence

import (
	"errors"
	"testing"
)

// FuzzCompile feeds arbitrary documents to the GeoJSON compiler: it must never panic,
// must refuse with an ErrInvalidZone, and a zone it accepts must answer lookups.
func FuzzCompile(f *testing.F) {
	seeds := []string{
		square(50, 10, 500),
		`{"type":"Polygon","coordinates":[[[179.9,-17],[-179.9,-17],[-179.9,-16.9],[179.9,-16.9],[179.9,-17]]]}`,
		`{"type":"MultiPolygon","coordinates":[[[[10,50],[10.01,50],[10.01,50.01],[10,50.01],[10,50]]]]}`,
		`{"type":"Polygon","coordinates":[[[10,50],[10.1,50],[10.1,50.1],[10,50.1],[10,50]],[[10.01,50.01],[10.02,50.01],[10.02,50.02],[10.01,50.01]]]}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[10,50]},"properties":{"radius_m":300}}`,
		`{"type":"LineString","coordinates":[[10,50],[10.1,50]]}`,
		`{"type":"Polygon","coordinates":[[[0,80],[120,80],[-120,80],[0,80]]]}`,
		`{"type":"Polygon","coordinates":[[]]}`,
		`{`, `null`, `[]`, `{"type":"Feature"}`,
	}
	for _, s := range seeds {
		f.Add(s, 100.0, 20.0)
	}
	f.Fuzz(func(t *testing.T, doc string, radius, buffer float64) {
		z, err := Compile(Spec{ID: "f", Name: "fuzz", GeoJSON: doc, RadiusM: radius, BufferM: buffer})
		if err != nil {
			if !errors.Is(err, ErrInvalidZone) {
				t.Fatalf("got error %v outside ErrInvalidZone", err)
			}
			return
		}
		ix := NewIndex([]*Zone{z})
		for _, p := range [][2]float64{{50, 10}, {-17, 180}, {-17, -179.95}, {0, 0}, {89.9, 0}} {
			ix.At(p[0], p[1])
			z.BoundaryDistanceM(p[0], p[1])
		}
		r := DefaultRules()
		st := &State{Vehicle: "v"}
		r.Step(ix, st, Fix{Time: t0, Lat: 50, Lon: 10}, nil)
		r.Step(ix, st, Fix{Time: t0.Add(1e9), Lat: 50.01, Lon: 10.02}, nil)
		if _, err := ExportFeatureCollection([]*Zone{z}); err != nil {
			t.Fatalf("export of an accepted zone: %v", err)
		}
	})
}
