// Package export writes exported documents: a vehicle's track as GPX 1.1, GeoJSON or CSV.
// A writer emits the document as it goes (header, one record per call, trailer), so the
// caller decides how much sits in memory: tracking's ExportTrack hands each page of
// history to the writer and sends what it wrote before reading the next page. The
// formats are defined here once; the server and fleetctl share them.
package export

import (
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Format is an export format.
type Format string

// The track formats.
const (
	GPX     Format = "gpx"     // GPX 1.1, one trk with one trkseg
	GeoJSON Format = "geojson" // a FeatureCollection of Point features
	CSV     Format = "csv"     // one row per fix, with a header
)

// Formats lists the track formats in the order help texts name them.
var Formats = []Format{GPX, GeoJSON, CSV}

// ErrFormat is returned for a format this package does not write.
var ErrFormat = errors.New("unknown export format")

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("%w %q: want gpx, geojson or csv", ErrFormat, s)
}

// CSVHeader is the track CSV's header row.
var CSVHeader = []string{"vehicle_id", "time", "lat", "lon", "alt_m", "speed_kmh", "heading_deg"}

// Fix is one exported fix.
type Fix struct {
	Time       time.Time // device time
	Lat, Lon   float64
	AltitudeM  float64
	SpeedKmh   float64
	HeadingDeg float64
}

// The GPX 1.1 namespace, and the namespace of the speed and heading that GPX 1.1 has no
// element for (its extensions element takes elements of other namespaces only).
const (
	GPXNamespace = "http://www.topografix.com/GPX/1/1"
	ExtNamespace = "https://fleetwire.dev/xmlns/gpx-extensions/1"
)

// TrackWriter writes one vehicle's track in one format.
type TrackWriter struct {
	w       io.Writer
	format  Format
	vehicle string
	csv     *csv.Writer
	first   bool
	closed  bool
}

// NewTrackWriter writes the document's header to w and returns the writer of its fixes.
func NewTrackWriter(w io.Writer, format Format, vehicle string) (*TrackWriter, error) {
	t := &TrackWriter{w: w, format: format, vehicle: vehicle, first: true}
	var err error
	switch format {
	case GPX:
		var name strings.Builder
		_ = xml.EscapeText(&name, []byte(vehicle))
		_, err = fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"+
			"<gpx version=\"1.1\" creator=\"fleetwire\" xmlns=\"%s\" xmlns:fw=\"%s\" "+
			"xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"%s http://www.topografix.com/GPX/1/1/gpx.xsd\">\n"+
			"<metadata><name>%s</name></metadata>\n<trk><name>%s</name><trkseg>\n",
			GPXNamespace, ExtNamespace, GPXNamespace, name.String(), name.String())
	case GeoJSON:
		_, err = io.WriteString(w, `{"type":"FeatureCollection","features":[`+"\n")
	case CSV:
		t.csv = csv.NewWriter(w)
		err = t.csvRow(CSVHeader)
	default:
		return nil, fmt.Errorf("%w %q: want gpx, geojson or csv", ErrFormat, format)
	}
	if err != nil {
		return nil, fmt.Errorf("export header: %w", err)
	}
	return t, nil
}

// Write writes one fix. Fixes are written in the order given.
func (t *TrackWriter) Write(f Fix) error {
	utc := f.Time.UTC().Format(time.RFC3339Nano)
	var err error
	switch t.format {
	case GPX:
		// wptType's order: ele, time, then extensions.
		_, err = fmt.Fprintf(t.w, "<trkpt lat=\"%s\" lon=\"%s\"><ele>%s</ele><time>%s</time><extensions><fw:speed_kmh>%s</fw:speed_kmh><fw:heading_deg>%s</fw:heading_deg></extensions></trkpt>\n",
			num(f.Lat, 7), num(f.Lon, 7), num(f.AltitudeM, 1), utc, num(f.SpeedKmh, 1), num(f.HeadingDeg, 1))
	case GeoJSON:
		var b []byte
		b, err = json.Marshal(feature{
			Type:     "Feature",
			Geometry: point{Type: "Point", Coordinates: [3]float64{f.Lon, f.Lat, f.AltitudeM}},
			Properties: props{VehicleID: t.vehicle, Time: utc,
				SpeedKmh: f.SpeedKmh, HeadingDeg: f.HeadingDeg},
		})
		if err == nil {
			if !t.first {
				b = append([]byte(",\n"), b...)
			}
			_, err = t.w.Write(b)
		}
	case CSV:
		err = t.csvRow([]string{t.vehicle, utc, num(f.Lat, 7), num(f.Lon, 7),
			num(f.AltitudeM, 1), num(f.SpeedKmh, 1), num(f.HeadingDeg, 1)})
	}
	t.first = false
	if err != nil {
		return fmt.Errorf("export fix: %w", err)
	}
	return nil
}

// Close writes the document's trailer. It does not close the underlying writer.
func (t *TrackWriter) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	var err error
	switch t.format {
	case GPX:
		_, err = io.WriteString(t.w, "</trkseg></trk>\n</gpx>\n")
	case GeoJSON:
		_, err = io.WriteString(t.w, "\n]}\n")
	}
	if err != nil {
		return fmt.Errorf("export trailer: %w", err)
	}
	return nil
}

// csvRow writes one row through to w at once: the caller decides when bytes leave
// memory, so the csv package's own buffer must not hold them back.
func (t *TrackWriter) csvRow(row []string) error {
	if err := t.csv.Write(row); err != nil {
		return err
	}
	t.csv.Flush()
	return t.csv.Error()
}

type feature struct {
	Type       string `json:"type"`
	Geometry   point  `json:"geometry"`
	Properties props  `json:"properties"`
}

type point struct {
	Type        string     `json:"type"`
	Coordinates [3]float64 `json:"coordinates"` // lon, lat, altitude (RFC 7946 order)
}

type props struct {
	VehicleID  string  `json:"vehicle_id"`
	Time       string  `json:"time"`
	SpeedKmh   float64 `json:"speed_kmh"`
	HeadingDeg float64 `json:"heading_deg"`
}

func num(f float64, decimals int) string { return strconv.FormatFloat(f, 'f', decimals, 64) }
