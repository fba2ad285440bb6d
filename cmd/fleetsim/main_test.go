package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

func TestCenterFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    geo.Point
		wantErr bool
	}{
		{"52.52,13.405", geo.Point{Lat: 52.52, Lon: 13.405}, false},
		{" -33.87 , 151.21 ", geo.Point{Lat: -33.87, Lon: 151.21}, false},
		{"52.52", geo.Point{}, true},
		{"north,east", geo.Point{}, true},
	}
	for _, tt := range tests {
		var p geo.Point
		err := centerFlag{&p}.Set(tt.in)
		if (err != nil) != tt.wantErr || p != tt.want {
			t.Errorf("Set(%q): got %v, %v; want %v, error %v", tt.in, p, err, tt.want, tt.wantErr)
		}
	}
}

func TestRunWritesGroundTruth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "truth.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	err := run(ctx, []string{"run", "--nats-url", "embedded", "--ensure-streams", "--vehicles", "7", "--scenarios",
		"--ground-truth", path, "--log-level", "error"}, &out, &errs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errs.String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var gt fleetsim.GroundTruth
	if err := json.Unmarshal(data, &gt); err != nil {
		t.Fatal(err)
	}
	if gt.Vehicles != 7 || len(gt.Incidents) != len(fleetsim.IncidentKinds) {
		t.Errorf("ground truth for %d vehicles with %d incidents, want 7 and %d", gt.Vehicles, len(gt.Incidents), len(fleetsim.IncidentKinds))
	}
}

func TestBadInvocations(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"fly"}, "unknown command"},
		{[]string{"run", "--vehicles", "-3", "--nats-url", "embedded"}, "invalid simulator config"},
		{[]string{"load", "--rate", "-1", "--target", "embedded"}, "invalid load test config"},
		{[]string{"run", "--center", "nowhere"}, "LAT,LON"},
	}
	for _, tt := range tests {
		var out, errs bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errs)
		if err == nil || !strings.Contains(err.Error()+errs.String(), tt.want) {
			t.Errorf("%v: got %v (%s), want an error mentioning %q", tt.args, err, errs.String(), tt.want)
		}
	}
}
