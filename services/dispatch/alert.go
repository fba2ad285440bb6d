// Package dispatch is the dispatcher's side of the platform: theft detection on the live
// telemetry, one alert feed merging every service's events, and commands to vehicles
// (immobilise, resume, locate, reporting interval) with a speed gate and an offline queue.
//
// It runs inside the tracking process but consumes the bus on its own durable consumers
// (dispatch-pNN on the telemetry stream, dispatch-events on the event stream), so it
// shares no state with the tracking package.
package dispatch

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by stores and the service, matched with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("concurrent update")
	ErrBadTransition = errors.New("state change not allowed")
	ErrInvalid       = errors.New("invalid request")
)

// Severity ranks alerts. The values match fleet.v1.AlertSeverity.
type Severity uint8

const (
	SeverityUnspecified Severity = iota
	SeverityInfo
	SeverityWarning
	SeverityCritical
)

func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "info"
	case SeverityWarning:
		return "warning"
	case SeverityCritical:
		return "critical"
	}
	return "unspecified"
}

// AlertState is an alert's workflow state. The values match fleet.v1.AlertState.
type AlertState uint8

const (
	AlertStateUnspecified AlertState = iota
	AlertOpen
	AlertAcknowledged
	AlertResolved
)

func (s AlertState) String() string {
	switch s {
	case AlertOpen:
		return "open"
	case AlertAcknowledged:
		return "acknowledged"
	case AlertResolved:
		return "resolved"
	}
	return "unspecified"
}

// Alert kinds raised by theft detection. Device alarms use the alarm's name
// (telemetry.AlarmKind.String()), so a device TOW alarm and the server-side tow rule
// produce the same kind and the same incident.
const (
	KindTow                  = "tow"
	KindGNSSJamming          = "gnss_jamming"
	KindMovementOutsideHours = "movement_outside_hours"
	KindZoneExit             = "zone_exit"
	KindFuelTheft            = "fuel_theft"
	// KindRefuel: a refuel the maintenance service reported (informational).
	KindRefuel  = "refuel"
	KindOffline = "offline"
	// KindDeadLetter: a service moved input it could not process to the dead-letter
	// stream (its event kind "dead_letter", any source). Nothing is dropped silently.
	KindDeadLetter = "dead_letter"
)

// Sources of an occurrence.
const (
	SourceDevice   = "device"   // the tracker's own alarm
	SourceDispatch = "dispatch" // server-side detection in this package
)

// Alert is one incident on one vehicle.
type Alert struct {
	ID          uint64
	Vehicle     string
	Kind        string
	Severity    Severity
	State       AlertState
	IncidentKey string   // occurrences with the same key merge into one alert
	CauseID     string   // what raised this occurrence; seen twice, it is ignored (redelivery)
	Sources     []string // who reported it
	Message     string

	FirstTime, LastTime time.Time // occurrence (device or event) times
	CreateTime          time.Time // server clock
	Occurrences         int

	HasPosition bool
	Lat, Lon    float64
	SpeedKmh    float64
	Attributes  map[string]string

	// Confidence and Evidence: how sure the rules are, and what they saw (theft kinds).
	Confidence Confidence
	Evidence   []Evidence
	// Tracked: the incident key names one incident whose lifecycle the rules track (it
	// carries the incident's start), so every occurrence with that key belongs to it,
	// whatever the operator did meanwhile and however long it lasts.
	Tracked bool `json:",omitempty"`

	AckBy, AckNote          string
	AckTime                 time.Time
	ResolvedBy, ResolveNote string
	ResolveTime             time.Time

	// Deliveries are the alert's webhook deliveries, one per sink its rule names, set
	// when the alert is created.
	Deliveries []Delivery `json:",omitempty"`
}

// DeliveryState is where one webhook delivery stands. The values match
// fleet.v1.AlertDeliveryState.
type DeliveryState uint8

const (
	DeliveryUnspecified DeliveryState = iota
	DeliveryPending
	DeliveryDelivered
	DeliveryFailed
)

func (s DeliveryState) String() string {
	switch s {
	case DeliveryPending:
		return "pending"
	case DeliveryDelivered:
		return "delivered"
	case DeliveryFailed:
		return "failed"
	}
	return "unspecified"
}

// Delivery is the state of one webhook delivery of an alert.
type Delivery struct {
	Sink          string
	State         DeliveryState
	Attempts      int
	LastAttempt   time.Time
	LastStatus    int    // HTTP status of the latest attempt, 0 when none came back
	LastError     string // why the latest attempt failed
	DeliveredTime time.Time
	NextAttempt   time.Time // when a pending delivery is tried again
}

// setDelivery replaces the delivery to d.Sink and reports whether there was one.
func (a *Alert) setDelivery(d Delivery) bool {
	for i := range a.Deliveries {
		if a.Deliveries[i].Sink == d.Sink {
			a.Deliveries[i] = d
			return true
		}
	}
	return false
}

// pendingDelivery reports whether a delivery of a is still to be made.
func (a *Alert) pendingDelivery() bool {
	for i := range a.Deliveries {
		if a.Deliveries[i].State == DeliveryPending {
			return true
		}
	}
	return false
}

// Confidence is how sure the theft rules are of an alert. The values match
// fleet.v1.AlertConfidence.
type Confidence uint8

const (
	ConfidenceUnspecified Confidence = iota
	ConfidenceLow
	ConfidenceMedium
	ConfidenceHigh
)

func (c Confidence) String() string {
	switch c {
	case ConfidenceLow:
		return "low"
	case ConfidenceMedium:
		return "medium"
	case ConfidenceHigh:
		return "high"
	}
	return "unspecified"
}

// Evidence is one observation behind a theft alert.
type Evidence struct {
	Kind   string // EvFixes, EvAccelerometer, ...
	Detail string
	Time   time.Time // device time it was observed (from)
}

// maxEvidence bounds the evidence an alert keeps.
const maxEvidence = 16

// mergeable reports whether occurrence o belongs to the incident of alert a. A tracked
// occurrence belongs to the alert with its key, always. Otherwise: same key, a not
// resolved, and o no later than cooldown after a's latest occurrence; an occurrence older
// than a's latest (a backlog) always merges.
func (a *Alert) mergeable(o *Alert, cooldown time.Duration) bool {
	if a.IncidentKey != o.IncidentKey {
		return false
	}
	if o.Tracked {
		return true
	}
	return a.State != AlertResolved && !o.FirstTime.After(a.LastTime.Add(cooldown))
}

// merge folds occurrence o into a.
func (a *Alert) merge(o *Alert) {
	a.Occurrences++
	if o.FirstTime.After(a.LastTime) {
		a.LastTime = o.FirstTime
	}
	if o.FirstTime.Before(a.FirstTime) {
		a.FirstTime = o.FirstTime
	}
	if o.Severity > a.Severity {
		a.Severity = o.Severity
	}
	for _, s := range o.Sources {
		if !contains(a.Sources, s) {
			a.Sources = append(a.Sources, s)
		}
	}
	newer := !o.FirstTime.Before(a.LastTime)
	for k, v := range o.Attributes {
		// A tracked incident's newer occurrence brings the current figures (distance,
		// closing); otherwise the first occurrence's details stay.
		if _, ok := a.Attributes[k]; !ok || (o.Tracked && newer) {
			if a.Attributes == nil {
				a.Attributes = map[string]string{}
			}
			a.Attributes[k] = v
		}
	}
	if o.Confidence > a.Confidence {
		a.Confidence = o.Confidence
	}
	for _, e := range o.Evidence {
		if len(a.Evidence) >= maxEvidence {
			break
		}
		a.Evidence = append(a.Evidence, e)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// transition applies an operator's acknowledge or resolve to a.
func (a *Alert) transition(to AlertState, who, note string, at time.Time) error {
	switch to {
	case AlertAcknowledged:
		if a.State != AlertOpen {
			return fmt.Errorf("%w: acknowledge a %s alert", ErrBadTransition, a.State)
		}
		a.State, a.AckBy, a.AckNote, a.AckTime = AlertAcknowledged, who, note, at
	case AlertResolved:
		if a.State == AlertResolved {
			return fmt.Errorf("%w: alert already resolved", ErrBadTransition)
		}
		a.State, a.ResolvedBy, a.ResolveNote, a.ResolveTime = AlertResolved, who, note, at
	default:
		return fmt.Errorf("%w: to %s", ErrBadTransition, to)
	}
	return nil
}

// AlertFilter selects alerts. Zero values match everything.
type AlertFilter struct {
	Vehicle     string
	Kind        string
	MinSeverity Severity
	State       AlertState
	From, To    time.Time // on FirstTime: From <= t < To
	AfterID     uint64    // ascending: ids > AfterID; descending: ignored
	BeforeID    uint64    // descending: ids < BeforeID (0 = from the newest)
	Ascending   bool
	Limit       int // default 100
	// Visible, when set, hides alerts of the vehicles it refuses (a caller limited to
	// vehicle groups), so pages and totals count only what the caller may see.
	Visible func(vehicle string) bool
}

// Match reports whether a passes the filter's field conditions (not the id window).
func (f *AlertFilter) Match(a *Alert) bool {
	switch {
	case f.Vehicle != "" && a.Vehicle != f.Vehicle,
		f.Kind != "" && a.Kind != f.Kind,
		a.Severity < f.MinSeverity,
		f.State != AlertStateUnspecified && a.State != f.State,
		!f.From.IsZero() && a.FirstTime.Before(f.From),
		!f.To.IsZero() && !a.FirstTime.Before(f.To),
		f.Visible != nil && !f.Visible(a.Vehicle):
		return false
	}
	return true
}

func (f *AlertFilter) limit() int {
	if f.Limit <= 0 {
		return 100
	}
	return f.Limit
}
