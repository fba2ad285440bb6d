package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
	"github.com/fleetwire/fleetwire/simulators/loadtest"
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
		{[]string{"load", "--zones", "3", "--target", "embedded"}, "zones need the dispatcher side"},
		{[]string{"load", "--protocol", "teltonika", "--target", "embedded"}, "needs --teltonika-devices"},
		{[]string{"load", "--protocol", "pigeon", "--target", "embedded"}, `protocol "pigeon"`},
	}
	for _, tt := range tests {
		var out, errs bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errs)
		if err == nil || !strings.Contains(err.Error()+errs.String(), tt.want) {
			t.Errorf("%v: got %v (%s), want an error mentioning %q", tt.args, err, errs.String(), tt.want)
		}
	}
}

func TestHelpNamesBothCommands(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"run", "-h"}, {"load", "-h"}} {
		var out, errs bytes.Buffer
		err := run(context.Background(), args, &out, &errs)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: got %v, want flag.ErrHelp", args, err)
		}
		help := errs.String()
		if !strings.Contains(help, "fleetsim load") || !strings.Contains(help, "fleetsim [run]") {
			t.Errorf("%v: help does not list both commands:\n%s", args, help)
		}
	}
	var errs bytes.Buffer
	_ = run(context.Background(), []string{"load", "-h"}, io.Discard, &errs)
	if !strings.Contains(errs.String(), "-zones") {
		t.Errorf("load help lacks --zones:\n%s", errs.String())
	}
}

// A load test whose verdict is FAIL makes fleetsim exit non-zero: here nothing can be
// stored (the server has no streams), so every publish fails. The report is still written.
func TestLoadFailIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	err := run(ctx, []string{"load", "--target", "embedded", "--vehicles", "5", "--rate", "10",
		"--duration", "1s", "--drain", "1s", "--progress", "never", "--log-level", "error"}, &out, &errs)
	if !errors.Is(err, loadtest.ErrFail) {
		t.Fatalf("got %v, want a FAIL verdict error\n%s%s", err, out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "FAIL") {
		t.Errorf("the summary was not written before failing:\n%s", out.String())
	}
}
