package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/export"
)

// gpxPoint is what the GPX, GeoJSON and CSV exports of one fix must agree on.
type gpxPoint struct {
	lat, lon, speed float64
	time            string
}

// checkGPX checks doc against the GPX 1.1 schema's rules for what the export writes: the
// root gpx element in the GPX 1.1 namespace with version 1.1 and a creator; metadata,
// then trk; a trkpt's lat in [-90, 90] and lon in [-180, 180); its children in wptType's
// order (ele, time, ..., extensions), ele a decimal, time an xsd:dateTime; extension
// elements in a namespace other than GPX's. With xmllint installed and FLEETWIRE_GPX_XSD
// naming a copy of gpx.xsd, the document is also validated by xmllint against it.
func checkGPX(t *testing.T, doc []byte) []gpxPoint {
	t.Helper()
	wptOrder := []string{"ele", "time", "magvar", "geoidheight", "name", "cmt", "desc", "src", "link", "sym", "type", "fix", "sat", "hdop", "vdop", "pdop", "ageofdgpsdata", "dgpsid", "extensions"}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var (
		stack    []xml.Name
		pts      []gpxPoint
		lastRank = -1
		text     string
		rootSeen bool
		topOrder []string
	)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("GPX is not well-formed XML: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			parent := ""
			if len(stack) > 0 {
				parent = stack[len(stack)-1].Local
			}
			inExt := slices.ContainsFunc(stack, func(n xml.Name) bool { return n.Local == "extensions" })
			if !inExt && tk.Name.Space != export.GPXNamespace {
				t.Fatalf("element %s in namespace %q, want %q", tk.Name.Local, tk.Name.Space, export.GPXNamespace)
			}
			if inExt && tk.Name.Space == export.GPXNamespace {
				t.Fatalf("extension element %s in the GPX namespace (the schema wants ##other)", tk.Name.Local)
			}
			attr := map[string]string{}
			for _, a := range tk.Attr {
				attr[a.Name.Local] = a.Value
			}
			switch {
			case len(stack) == 0:
				if tk.Name.Local != "gpx" || attr["version"] != "1.1" || attr["creator"] == "" {
					t.Fatalf("root: %s version %q creator %q; want gpx 1.1 with a creator", tk.Name.Local, attr["version"], attr["creator"])
				}
				rootSeen = true
			case parent == "gpx":
				topOrder = append(topOrder, tk.Name.Local)
			case tk.Name.Local == "trkpt":
				lat, err1 := strconv.ParseFloat(attr["lat"], 64)
				lon, err2 := strconv.ParseFloat(attr["lon"], 64)
				if err1 != nil || err2 != nil || lat < -90 || lat > 90 || lon < -180 || lon >= 180 {
					t.Fatalf("trkpt lat %q lon %q outside latitudeType/longitudeType", attr["lat"], attr["lon"])
				}
				pts = append(pts, gpxPoint{lat: lat, lon: lon})
				lastRank = -1
			case parent == "trkpt":
				rank := slices.Index(wptOrder, tk.Name.Local)
				if rank < 0 || rank <= lastRank {
					t.Fatalf("trkpt child %s out of wptType's sequence", tk.Name.Local)
				}
				lastRank = rank
			}
			stack = append(stack, tk.Name)
			text = ""
		case xml.CharData:
			text += string(tk)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
			if len(pts) == 0 || len(stack) == 0 {
				continue
			}
			p := &pts[len(pts)-1]
			switch tk.Name.Local {
			case "ele":
				if _, err := strconv.ParseFloat(text, 64); err != nil {
					t.Fatalf("ele %q is not a decimal", text)
				}
			case "time":
				if _, err := time.Parse(time.RFC3339Nano, text); err != nil {
					t.Fatalf("time %q is not an xsd:dateTime", text)
				}
				p.time = text
			case "speed_kmh":
				p.speed, _ = strconv.ParseFloat(text, 64)
			}
		}
	}
	if !rootSeen || !slices.Equal(topOrder, []string{"metadata", "trk"}) {
		t.Fatalf("gpx children %v, want metadata then trk", topOrder)
	}
	if xsd := os.Getenv("FLEETWIRE_GPX_XSD"); xsd != "" {
		if _, err := exec.LookPath("xmllint"); err != nil {
			t.Fatalf("FLEETWIRE_GPX_XSD is set but xmllint is not installed (apt-get install libxml2-utils)")
		}
		f := filepath.Join(t.TempDir(), "track.gpx")
		if err := os.WriteFile(f, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("xmllint", "--noout", "--schema", xsd, f).CombinedOutput(); err != nil {
			t.Fatalf("xmllint against %s: %v\n%s", xsd, err, out)
		}
	} else {
		t.Log("GPX checked by the schema's rules above; set FLEETWIRE_GPX_XSD to a copy of gpx.xsd (and install xmllint) to validate against the schema file too")
	}
	return pts
}

func TestExportTrack(t *testing.T) {
	ids := simVehicles(t)
	v := ids[0]
	// A fixed period in the past, so every export sees the same fixes.
	var out string
	deadline := time.Now().Add(60 * time.Second)
	for {
		out = mustCtl(t, nil, "-o", "json", "track", v, "--from", "1h")
		if strings.Count(out, "\n") >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 6 fixes of %s within a minute:\n%s", v, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The end lies a few seconds back: a fix taken before it but still on its way would
	// make the exports below differ.
	to := time.Now().Add(-3 * time.Second).UTC().Format(time.RFC3339Nano)
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	period := []string{"--from", from, "--to", to}
	want := strings.Count(mustCtl(t, nil, append([]string{"-o", "json", "track", v}, period...)...), "\n")
	if want < 3 {
		t.Fatalf("only %d fixes of %s in the last hour; the simulator should have sent more", want, v)
	}

	gpx := checkGPX(t, []byte(mustCtl(t, []string{"<gpx"}, append([]string{"export", "track", v, "--format", "gpx"}, period...)...)))

	var fc struct {
		Type     string
		Features []struct {
			Geometry struct {
				Type        string
				Coordinates []float64
			}
			Properties struct {
				VehicleID string  `json:"vehicle_id"`
				Time      string  `json:"time"`
				SpeedKmh  float64 `json:"speed_kmh"`
			}
		}
	}
	if err := json.Unmarshal([]byte(mustCtl(t, nil, append([]string{"export", "track", v, "--format", "geojson"}, period...)...)), &fc); err != nil || fc.Type != "FeatureCollection" {
		t.Fatalf("GeoJSON: %v, type %q", err, fc.Type)
	}

	// CSV round trip: what was written reads back as the same fixes.
	csvOut := mustCtl(t, nil, append([]string{"export", "track", v, "--format", "csv"}, period...)...)
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not read back: %v", err)
	}
	if !slices.Equal(rows[0], []string{"vehicle_id", "time", "lat", "lon", "alt_m", "speed_kmh", "heading_deg"}) {
		t.Fatalf("CSV header %v", rows[0])
	}
	rows = rows[1:]
	if len(rows) != want || len(gpx) != want || len(fc.Features) != want {
		t.Fatalf("fixes: track %d, CSV %d, GPX %d, GeoJSON %d; want all equal", want, len(rows), len(gpx), len(fc.Features))
	}
	for i, r := range rows {
		lat, _ := strconv.ParseFloat(r[2], 64)
		lon, _ := strconv.ParseFloat(r[3], 64)
		speed, _ := strconv.ParseFloat(r[5], 64)
		g, f := gpx[i], fc.Features[i]
		if r[0] != v || r[1] != g.time || r[1] != f.Properties.Time || lat != g.lat || lon != g.lon || speed != g.speed ||
			f.Geometry.Type != "Point" || math.Abs(f.Geometry.Coordinates[0]-lon) > 1e-7 || math.Abs(f.Geometry.Coordinates[1]-lat) > 1e-7 {
			t.Fatalf("fix %d differs: CSV %v, GPX %+v, GeoJSON %+v", i, r, g, f)
		}
	}
	failCtl(t, 2, "want gpx, geojson or csv", "export", "track", v, "--format", "kml")
	failCtl(t, 2, "one vehicle id", "export", "track")
}

func TestReportDaily(t *testing.T) {
	ids := simVehicles(t)
	today := time.Now().UTC().Format("2006-01-02")
	out := mustCtl(t, nil, "-o", "json", "report", "daily", "--date", today, "--vehicle", ids[0], "--vehicle", ids[1])
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per vehicle, got:\n%s", out)
	}
	var row map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &row); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"date", "vehicle_id", "distance_km", "driving_s", "idle_s", "stopped_s", "stops", "max_speed_kmh",
		"fuel_used_l", "refuels", "drains", "zone_visits", "overspeed", "harsh_accel", "harsh_brake", "harsh_corner", "alerts"} {
		if _, ok := row[k]; !ok {
			t.Errorf("daily row lacks %s: %s", k, lines[0])
		}
	}
	if row["vehicle_id"] != ids[0] || row["date"] != today {
		t.Errorf("row for %v on %v, want %s on %s", row["vehicle_id"], row["date"], ids[0], today)
	}
	mustCtl(t, []string{"DATE", "VEHICLE", "KM", "HARSH BRAKE", ids[0]}, "report", "daily", "--date", today, "--vehicle", ids[0])
	csvOut := mustCtl(t, []string{"date,vehicle,km,driving"}, "report", "daily", "--date", today, "--vehicle", ids[0], "-o", "csv")
	if rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll(); err != nil || len(rows) != 2 || len(rows[1]) != len(dailyHeader) {
		t.Fatalf("daily CSV: %v, %d rows:\n%s", err, len(rows), csvOut)
	}
	mustCtl(t, []string{"START", "HARSH ACCEL", "HARSH BRAKE", "HARSH CORNER", "trips"}, "trips", ids[0], "--from", "1h", "--harsh")
	failCtl(t, 2, "rates must be positive", "trips", ids[0], "--harsh", "--harsh-corner", "-1")
	fuelEvents := mustCtl(t, []string{"vehicle,event,start,end,litres"}, "fuel", ids[0], "--from", "1h", "--events", "-o", "csv")
	if _, err := csv.NewReader(strings.NewReader(fuelEvents)).ReadAll(); err != nil {
		t.Fatalf("fuel events CSV: %v\n%s", err, fuelEvents)
	}
	failCtl(t, 2, "--date", "report", "daily", "--date", "yesterday-ish")
	failCtl(t, 2, "rates must be positive", "report", "daily", "--harsh-brake", "0")
}
