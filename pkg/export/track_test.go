package export

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseFormat(t *testing.T) {
	for _, f := range Formats {
		if got, err := ParseFormat(string(f)); err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %q, %v", f, got, err)
		}
	}
	if _, err := ParseFormat("kml"); !errors.Is(err, ErrFormat) {
		t.Errorf("ParseFormat(kml): %v, want ErrFormat", err)
	}
	if _, err := NewTrackWriter(&strings.Builder{}, "kml", "v1"); !errors.Is(err, ErrFormat) {
		t.Errorf("NewTrackWriter(kml): %v, want ErrFormat", err)
	}
}

// Each format writes header, fixes and trailer as documented in docs/tracking.md.
func TestTrackWriter(t *testing.T) {
	fixes := []Fix{
		{Time: time.Date(2026, 11, 1, 8, 0, 0, 500e6, time.FixedZone("CET", 3600)), Lat: 52.5, Lon: 13.4, AltitudeM: 34, SpeedKmh: 51.25, HeadingDeg: 90},
		{Time: time.Date(2026, 11, 1, 7, 0, 1, 0, time.UTC), Lat: -33.9, Lon: 151.2, AltitudeM: 3.04, SpeedKmh: 0, HeadingDeg: 359.9},
	}
	tests := []struct {
		format Format
		want   string
	}{
		{CSV, "vehicle_id,time,lat,lon,alt_m,speed_kmh,heading_deg\n" +
			"a&b,2026-11-01T07:00:00.5Z,52.5000000,13.4000000,34.0,51.2,90.0\n" +
			"a&b,2026-11-01T07:00:01Z,-33.9000000,151.2000000,3.0,0.0,359.9\n"},
		{GeoJSON, `{"type":"FeatureCollection","features":[` + "\n" +
			`{"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,52.5,34]},"properties":{"vehicle_id":"a\u0026b","time":"2026-11-01T07:00:00.5Z","speed_kmh":51.25,"heading_deg":90}},` + "\n" +
			`{"type":"Feature","geometry":{"type":"Point","coordinates":[151.2,-33.9,3.04]},"properties":{"vehicle_id":"a\u0026b","time":"2026-11-01T07:00:01Z","speed_kmh":0,"heading_deg":359.9}}` + "\n]}\n"},
		{GPX, "<metadata><name>a&amp;b</name></metadata>\n<trk><name>a&amp;b</name><trkseg>\n" +
			`<trkpt lat="52.5000000" lon="13.4000000"><ele>34.0</ele><time>2026-11-01T07:00:00.5Z</time><extensions><fw:speed_kmh>51.2</fw:speed_kmh><fw:heading_deg>90.0</fw:heading_deg></extensions></trkpt>` + "\n" +
			`<trkpt lat="-33.9000000" lon="151.2000000"><ele>3.0</ele><time>2026-11-01T07:00:01Z</time><extensions><fw:speed_kmh>0.0</fw:speed_kmh><fw:heading_deg>359.9</fw:heading_deg></extensions></trkpt>` + "\n" +
			"</trkseg></trk>\n</gpx>\n"},
	}
	for _, tt := range tests {
		t.Run(string(tt.format), func(t *testing.T) {
			var b strings.Builder
			w, err := NewTrackWriter(&b, tt.format, "a&b")
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fixes {
				if err := w.Write(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); !strings.HasSuffix(got, tt.want) {
				t.Fatalf("got\n%s\nwant it to end with\n%s", got, tt.want)
			}
		})
	}
}
