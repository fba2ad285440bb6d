package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
)

func TestIsRPC(t *testing.T) {
	for path, want := range map[string]bool{
		"/fleet.v1.TrackingService/ListVehicles": true,
		"/grpc.health.v1.Health/Check":           true,
		"/":                                      false,
		"/index.html":                            false,
		"/js/app.js":                             false,
		"/vendor/leaflet/leaflet.css":            false,
		"/fleet.v1.TrackingService/":             false,
		"/fleet.v1.TrackingService/a/b":          false,
	} {
		if got := isRPC(path); got != want {
			t.Errorf("isRPC(%q) = %v, want %v", path, got, want)
		}
	}
}

// The tile setting decides what the page may load images from, and what it is told.
func TestTiles(t *testing.T) {
	for _, tc := range []struct {
		tiles    string
		wantErr  bool
		imgSrc   string // expected in the policy's img-src
		settings string // tiles the page is told
	}{
		{"", false, "https://tile.openstreetmap.org", DefaultTiles},
		{"none", false, "img-src 'self' data:;", ""},
		{"https://{s}.tiles.example.org/{z}/{x}/{y}.png", false, "https://*.tiles.example.org", "https://{s}.tiles.example.org/{z}/{x}/{y}.png"},
		{"ftp://tiles/{z}/{x}/{y}", true, "", ""},
		{"not a url", true, "", ""},
	} {
		t.Run(tc.tiles, func(t *testing.T) {
			h, err := Handler(grpc.NewServer(), Config{Tiles: tc.tiles})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/settings.json", nil))
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, tc.imgSrc) || !strings.Contains(csp, "connect-src 'self'") {
				t.Errorf("policy %q lacks %q", csp, tc.imgSrc)
			}
			var s struct{ Tiles string }
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil || s.Tiles != tc.settings {
				t.Errorf("settings %q (%v), want tiles %q", rec.Body, err, tc.settings)
			}
		})
	}
}

// Every asset the page references is embedded.
func TestAssetsEmbedded(t *testing.T) {
	h, err := Handler(grpc.NewServer(), Config{Tiles: "none"})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/app.css", "/js/app.js", "/js/api.js", "/js/vehicles.js", "/js/panel.js", "/js/alerts.js", "/js/zones.js", "/js/maintenance.js", "/js/fmt.js", "/vendor/leaflet/leaflet.min.js", "/vendor/leaflet/leaflet.css"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("%s: %d, %d bytes", path, rec.Code, rec.Body.Len())
		}
	}
}
