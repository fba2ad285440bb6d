package telemetry

import (
	"errors"
	"fmt"
	"time"
)

// Record time errors: the device's clock puts the record where no service can place it.
var (
	ErrFutureTime = errors.New("device time too far ahead of the time the record was stored")
	ErrTooOld     = errors.New("device time too far behind the time the record was stored")
)

// Default record time bounds (docs/protocol.md, record time). Tracker clocks come from
// GNSS and are right to the second when they are right at all, so a record stamped more
// than a few minutes ahead has a broken clock, and would otherwise become every service's
// newest record and hide the real ones until its time passed. Behind, a backlog a tracker
// kept while out of coverage is real data however late it arrives, and each service
// already places a record older than its state (docs/tracking.md, late records); the
// bound only catches clocks that are plainly broken: a GNSS week-number rollover moves the
// clock 1024 weeks (19.6 years) back, a reset to 1970, 1980 or 2000.
const (
	DefaultMaxAhead  = 5 * time.Minute
	DefaultMaxBehind = 10 * 365 * 24 * time.Hour
)

// TimeBounds is the rule every service that consumes tracker records applies to a
// record's device time. The reference is the time the stream stored the record, never
// the consumer's clock: a record that waited in the stream while its consumer was
// starved, stopped or rebuilding is judged as it was when it arrived, so the outcome is
// the same in every run. A zero field takes its default.
type TimeBounds struct {
	// MaxAhead: a device time later than the stored time by more than this is refused.
	MaxAhead time.Duration
	// MaxBehind: a device time earlier than the stored time by more than this is refused.
	MaxBehind time.Duration
}

// WithDefaults returns b with each zero field set to its default.
func (b TimeBounds) WithDefaults() TimeBounds {
	if b.MaxAhead == 0 {
		b.MaxAhead = DefaultMaxAhead
	}
	if b.MaxBehind == 0 {
		b.MaxBehind = DefaultMaxBehind
	}
	return b
}

// Validate refuses negative bounds.
func (b TimeBounds) Validate() error {
	if b.MaxAhead < 0 || b.MaxBehind < 0 {
		return fmt.Errorf("record time bounds must not be negative (ahead %s, behind %s)", b.MaxAhead, b.MaxBehind)
	}
	return nil
}

// Check applies the bounds to a record's device time against stored, the time the
// stream stored the record (bus.Msg.Time). It returns an error wrapping ErrFutureTime
// or ErrTooOld, or nil when the record can be placed in time.
func (b TimeBounds) Check(device, stored time.Time) error {
	b = b.WithDefaults()
	switch {
	case device.After(stored.Add(b.MaxAhead)):
		return fmt.Errorf("%w: device time %s is %s after it was stored (limit %s)", ErrFutureTime,
			device.UTC().Format(time.RFC3339), device.Sub(stored).Round(time.Second), b.MaxAhead)
	case device.Before(stored.Add(-b.MaxBehind)):
		return fmt.Errorf("%w: device time %s is %s before it was stored (limit %s)", ErrTooOld,
			device.UTC().Format(time.RFC3339), stored.Sub(device).Round(time.Second), b.MaxBehind)
	}
	return nil
}

// TimeReason names a Check error for metrics labels: "future_time" or "too_old".
func TimeReason(err error) string {
	switch {
	case errors.Is(err, ErrFutureTime):
		return "future_time"
	case errors.Is(err, ErrTooOld):
		return "too_old"
	}
	return ""
}
