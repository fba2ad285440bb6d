package maintenance

import (
	"errors"
	"fmt"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Signals an alert rule can watch.
const (
	SignalCoolantTemp     = "coolant_temp_c"
	SignalExternalVoltage = "external_voltage_v"
	SignalBatteryVoltage  = "battery_voltage_v"
	SignalRPM             = "rpm"
)

// AlertRule raises a diag_threshold event when a diagnostic value stays beyond a
// threshold for a minimum duration. The event is raised once per episode: the value
// must come back inside the threshold before the rule can fire again.
type AlertRule struct {
	Name      string        // event attribute "rule", e.g. "coolant_high"
	Signal    string        // one of the Signal constants
	Above     bool          // true: fires above Threshold; false: below
	Threshold float64       //
	For       time.Duration // minimum duration (device time)
	// IgnitionOff restricts the rule to records with the ignition off (a low battery
	// while cranking is normal; while parked it drains the vehicle).
	IgnitionOff bool
}

// DefaultAlertRules: coolant above 105 °C for 60 s; vehicle supply below 11.8 V with
// the ignition off for 10 minutes (a 12 V battery that will not start the engine soon).
func DefaultAlertRules() []AlertRule {
	return []AlertRule{
		{Name: "coolant_high", Signal: SignalCoolantTemp, Above: true, Threshold: 105, For: 60 * time.Second},
		{Name: "low_voltage_parked", Signal: SignalExternalVoltage, Threshold: 11.8, For: 10 * time.Minute, IgnitionOff: true},
	}
}

// ErrBadRule is returned by New for an alert rule it cannot use.
var ErrBadRule = errors.New("invalid alert rule")

func (r AlertRule) validate() error {
	switch r.Signal {
	case SignalCoolantTemp, SignalExternalVoltage, SignalBatteryVoltage, SignalRPM:
	default:
		return fmt.Errorf("%w %q: unknown signal %q", ErrBadRule, r.Name, r.Signal)
	}
	if r.Name == "" || r.For < 0 {
		return fmt.Errorf("%w %q: needs a name and a duration >= 0", ErrBadRule, r.Name)
	}
	return nil
}

func signalValue(rec *telemetry.Record, signal string) (float64, bool) {
	switch signal {
	case SignalCoolantTemp:
		return rec.CoolantTempC, rec.Has(telemetry.HasCoolantTemp)
	case SignalExternalVoltage:
		return rec.ExternalVoltage, rec.Has(telemetry.HasExternalVoltage)
	case SignalBatteryVoltage:
		return rec.BatteryVoltage, rec.Has(telemetry.HasBatteryVoltage)
	case SignalRPM:
		return rec.RPM, rec.Has(telemetry.HasRPM)
	}
	return 0, false
}

// AlertState is one rule's episode for one vehicle.
type AlertState struct {
	Since time.Time `json:"since"` // device time the condition became true
	Fired bool      `json:"fired"` // the event for this episode was raised
	Value float64   `json:"value"` // latest value in the episode
}

// applyAlert updates a rule's state with one record; it returns true when the rule
// fires now. A record without the signal leaves the episode as it is; a record with the
// ignition on (for IgnitionOff rules) or the value back inside ends it.
func applyAlert(r AlertRule, st *AlertState, rec *telemetry.Record, ignitionOn bool) bool {
	v, ok := signalValue(rec, r.Signal)
	if !ok {
		return false
	}
	cond := v > r.Threshold
	if !r.Above {
		cond = v < r.Threshold
	}
	if r.IgnitionOff && ignitionOn {
		cond = false
	}
	if !cond {
		*st = AlertState{}
		return false
	}
	if st.Since.IsZero() {
		st.Since = rec.DeviceTime
	}
	st.Value = v
	if !st.Fired && rec.DeviceTime.Sub(st.Since) >= r.For {
		st.Fired = true
		return true
	}
	return false
}
