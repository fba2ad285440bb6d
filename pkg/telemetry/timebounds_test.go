package telemetry

import (
	"errors"
	"testing"
	"time"
)

func TestTimeBoundsCheck(t *testing.T) {
	stored := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		b      TimeBounds
		device time.Time
		want   error
		reason string
	}{
		{"at the stored time", TimeBounds{}, stored, nil, ""},
		{"clock slightly ahead", TimeBounds{}, stored.Add(4 * time.Minute), nil, ""},
		{"at the ahead limit", TimeBounds{}, stored.Add(DefaultMaxAhead), nil, ""},
		{"past the ahead limit", TimeBounds{}, stored.Add(DefaultMaxAhead + time.Second), ErrFutureTime, "future_time"},
		{"dated 2100", TimeBounds{}, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), ErrFutureTime, "future_time"},
		{"backlog of a week", TimeBounds{}, stored.Add(-7 * 24 * time.Hour), nil, ""},
		{"backlog of a year", TimeBounds{}, stored.AddDate(-1, 0, 0), nil, ""},
		{"at the behind limit", TimeBounds{}, stored.Add(-DefaultMaxBehind), nil, ""},
		{"GNSS week rollover", TimeBounds{}, stored.Add(-1024 * 7 * 24 * time.Hour), ErrTooOld, "too_old"},
		{"clock reset to 1970", TimeBounds{}, time.Unix(0, 0), ErrTooOld, "too_old"},
		{"year 1", TimeBounds{}, time.Time{}.Add(time.Second), ErrTooOld, "too_old"},
		{"own ahead bound", TimeBounds{MaxAhead: time.Hour}, stored.Add(30 * time.Minute), nil, ""},
		{"own behind bound", TimeBounds{MaxBehind: time.Hour}, stored.Add(-2 * time.Hour), ErrTooOld, "too_old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.b.Check(tt.device, stored)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Check(%s) = %v, want %v", tt.device, err, tt.want)
			}
			if got := TimeReason(err); got != tt.reason {
				t.Errorf("TimeReason = %q, want %q", got, tt.reason)
			}
		})
	}
}

func TestTimeBoundsValidate(t *testing.T) {
	if err := (TimeBounds{}).Validate(); err != nil {
		t.Errorf("zero bounds: %v, want nil", err)
	}
	if err := (TimeBounds{MaxBehind: -time.Second}).Validate(); err == nil {
		t.Error("negative bound accepted")
	}
}
