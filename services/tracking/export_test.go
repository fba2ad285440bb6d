package tracking

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/export"
	"github.com/fleetwire/fleetwire/pkg/grpctest"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// pageStore records every history read of the store it wraps: how many fixes each
// returned, and it runs gate before each, so a test can hold a read back.
type pageStore struct {
	Store
	mu    sync.Mutex
	reads []int // fixes per Track call
	gate  func(ctx context.Context, from time.Time) error
}

func (p *pageStore) Track(ctx context.Context, vehicle string, from, to time.Time) ([]Fix, error) {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		if err := gate(ctx, from); err != nil {
			return nil, err
		}
	}
	fixes, err := p.Store.Track(ctx, vehicle, from, to)
	p.mu.Lock()
	p.reads = append(p.reads, len(fixes))
	p.mu.Unlock()
	return fixes, err
}

// ExportTrack over a real gRPC socket: a track of many pages arrives whole and in order in
// every format, byte for byte the document pkg/export writes in one go; no history read
// returns more than one page; and the first page reaches the client before the last page
// is read (the last read waits for it: a server that read the whole history first would
// never get there).
func TestExportTrackStreamsPages(t *testing.T) {
	const (
		vehicle = "exp-1"
		every   = 10 * time.Second
		n       = 95 // 9.5 pages of 10 fixes: the last page is a part one
		page    = 100 * time.Second
	)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	ctx := context.Background()
	mem := NewMemoryStore()
	var (
		points []TrackPoint
		want   []export.Fix
	)
	for i := range n {
		f := Fix{Time: t0.Add(time.Duration(i) * every), Seq: uint64(i + 1), Lat: 52 + float64(i)*1e-4, Lon: 13 + float64(i)*1e-4,
			AltitudeM: 30 + float64(i%7), SpeedKmh: float64(i % 90), HeadingDeg: float64(i * 7 % 360), Ignition: 1}
		points = append(points, TrackPoint{VehicleID: vehicle, Fix: f})
		want = append(want, export.Fix{Time: f.Time, Lat: f.Lat, Lon: f.Lon, AltitudeM: f.AltitudeM, SpeedKmh: f.SpeedKmh, HeadingDeg: f.HeadingDeg})
	}
	if err := mem.Write(ctx, Batch{Points: points, Now: t0.Add(time.Hour), Retention: 30 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	st := &pageStore{Store: mem}
	cfg := DefaultConfig()
	cfg.ExportPage = page
	s, err := New(cfg, natstest.Bus(t), st, discardLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := fleetv1.NewTrackingServiceClient(grpctest.Serve(t, s.Register))
	from, to := t0, t0.Add(time.Duration(n-1)*every) // both ends inclusive: the last fix is in
	fixesPerPage := int(page / every)
	lastPage := from.Add((to.Sub(from) / page) * page)

	formats := []struct {
		name  string
		api   fleetv1.ExportFormat
		f     export.Format
		count func(t *testing.T, doc []byte) int
	}{
		{"gpx", fleetv1.ExportFormat_EXPORT_FORMAT_GPX, export.GPX, countGPX},
		{"geojson", fleetv1.ExportFormat_EXPORT_FORMAT_GEOJSON, export.GeoJSON, countGeoJSON},
		{"csv", fleetv1.ExportFormat_EXPORT_FORMAT_CSV, export.CSV, countCSV},
	}
	for _, tt := range formats {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			firstFixes := make(chan struct{})
			st.mu.Lock()
			st.reads = nil
			st.gate = func(ctx context.Context, from time.Time) error {
				if from.Before(lastPage) {
					return nil
				}
				select {
				case <-firstFixes:
					return nil
				case <-ctx.Done():
					return fmt.Errorf("the last page was asked for before any fix reached the client: %w", ctx.Err())
				}
			}
			st.mu.Unlock()

			stream, err := client.ExportTrack(ctx, &fleetv1.ExportTrackRequest{VehicleId: vehicle,
				StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), Format: tt.api})
			if err != nil {
				t.Fatal(err)
			}
			var (
				doc    bytes.Buffer
				fixes  int
				chunks int
			)
			for {
				c, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("after %d chunks: %v", chunks, err)
				}
				chunks++
				doc.Write(c.GetData())
				if fixes == 0 && c.GetFixes() > 0 {
					close(firstFixes)
				}
				fixes += int(c.GetFixes())
			}

			var whole bytes.Buffer
			w, err := export.NewTrackWriter(&whole, tt.f, vehicle)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range want {
				if err := w.Write(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(doc.Bytes(), whole.Bytes()) {
				t.Fatalf("streamed document differs from the one written in one go:\n%s\n---\n%s", doc.Bytes(), whole.Bytes())
			}
			if got := tt.count(t, doc.Bytes()); got != n || fixes != n {
				t.Fatalf("document has %d fixes, chunks count %d; want %d", got, fixes, n)
			}
			st.mu.Lock()
			reads := append([]int(nil), st.reads...)
			st.mu.Unlock()
			wantPages := (n + fixesPerPage - 1) / fixesPerPage
			if len(reads) != wantPages {
				t.Fatalf("history read %d times (%v), want once per page (%d)", len(reads), reads, wantPages)
			}
			for i, r := range reads {
				if r > fixesPerPage {
					t.Fatalf("read %d returned %d fixes, more than a page (%d): %v", i, r, fixesPerPage, reads)
				}
			}
			if chunks < wantPages {
				t.Fatalf("%d chunks for %d pages: pages were not sent as they were read", chunks, wantPages)
			}
		})
	}
}

// ExportTrack refuses a bad request with a status, before any document is sent.
func TestExportTrackErrors(t *testing.T) {
	s, err := New(DefaultConfig(), natstest.Bus(t), NewMemoryStore(), discardLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := fleetv1.NewTrackingServiceClient(grpctest.Serve(t, s.Register))
	now := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		req  *fleetv1.ExportTrackRequest
		want codes.Code
	}{
		{"no format", &fleetv1.ExportTrackRequest{VehicleId: "v1", StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(time.Hour))}, codes.InvalidArgument},
		{"bad id", &fleetv1.ExportTrackRequest{VehicleId: "bad id", StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(time.Hour)), Format: fleetv1.ExportFormat_EXPORT_FORMAT_CSV}, codes.InvalidArgument},
		{"end before start", &fleetv1.ExportTrackRequest{VehicleId: "v1", StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(-time.Hour)), Format: fleetv1.ExportFormat_EXPORT_FORMAT_GPX}, codes.InvalidArgument},
		{"no times", &fleetv1.ExportTrackRequest{VehicleId: "v1", Format: fleetv1.ExportFormat_EXPORT_FORMAT_GPX}, codes.InvalidArgument},
		{"unknown vehicle: an empty document", &fleetv1.ExportTrackRequest{VehicleId: "nobody", StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(time.Hour)), Format: fleetv1.ExportFormat_EXPORT_FORMAT_CSV}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stream, err := client.ExportTrack(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var doc []byte
			for {
				c, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					if got := status.Code(err); got != tt.want {
						t.Fatalf("got %v (%v), want %v", got, err, tt.want)
					}
					break
				}
				doc = append(doc, c.GetData()...)
			}
			if tt.want != codes.OK && len(doc) > 0 {
				t.Fatalf("a refused export sent %q", doc)
			}
			if tt.want == codes.OK && string(doc) != "vehicle_id,time,lat,lon,alt_m,speed_kmh,heading_deg\n" {
				t.Fatalf("empty export: %q, want the CSV header alone", doc)
			}
		})
	}
}

func countGPX(t *testing.T, doc []byte) int {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	n := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("GPX is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "trkpt" && se.Name.Space == export.GPXNamespace {
			n++
		}
	}
}

func countGeoJSON(t *testing.T, doc []byte) int {
	t.Helper()
	var fc struct {
		Type     string `json:"type"`
		Features []struct {
			Type string `json:"type"`
		} `json:"features"`
	}
	if err := json.Unmarshal(doc, &fc); err != nil || fc.Type != "FeatureCollection" {
		t.Fatalf("GeoJSON: %v, type %q", err, fc.Type)
	}
	return len(fc.Features)
}

func countCSV(t *testing.T, doc []byte) int {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(doc)).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("CSV: %v, %d rows", err, len(rows))
	}
	return len(rows) - 1
}
