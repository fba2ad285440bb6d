package dispatch

import (
	"fmt"
	"strconv"
	"time"
)

// CommandKind is what a dispatcher asks a vehicle to do. The values match fleet.v1.CommandKind.
type CommandKind uint8

const (
	CommandUnspecified CommandKind = iota
	CommandImmobilize
	CommandResume
	CommandLocateNow
	CommandSetReportInterval
)

func (k CommandKind) String() string {
	switch k {
	case CommandImmobilize:
		return "immobilize"
	case CommandResume:
		return "resume"
	case CommandLocateNow:
		return "locate_now"
	case CommandSetReportInterval:
		return "set_report_interval"
	}
	return "unspecified"
}

// CommandState is a command's life. The values match fleet.v1.CommandState.
type CommandState uint8

const (
	CommandStateUnspecified CommandState = iota
	CommandQueued
	CommandSent
	CommandAccepted
	CommandExecuted
	CommandRejected
	CommandExpired
	CommandFailed
	CommandCancelled // withdrawn by an operator while queued; never delivered
)

func (s CommandState) String() string {
	switch s {
	case CommandQueued:
		return "queued"
	case CommandSent:
		return "sent"
	case CommandAccepted:
		return "accepted"
	case CommandExecuted:
		return "executed"
	case CommandRejected:
		return "rejected"
	case CommandExpired:
		return "expired"
	case CommandFailed:
		return "failed"
	case CommandCancelled:
		return "cancelled"
	}
	return "unspecified"
}

// Open reports whether the command can still change state by itself (queued, sent,
// accepted). A failed command can still turn executed when a late reply arrives.
func (s CommandState) Open() bool {
	return s == CommandQueued || s == CommandSent || s == CommandAccepted
}

// Transition is one step of a command's history.
type Transition struct {
	State  CommandState
	Time   time.Time
	Detail string
}

// Command is a command with its audit trail.
type Command struct {
	ID         string
	Vehicle    string
	Kind       CommandKind
	Params     map[string]string
	State      CommandState
	Reason     string
	IssuedBy   string
	IssueTime  time.Time
	ExpireTime time.Time
	SentTime   time.Time
	UpdateTime time.Time
	History    []Transition
	// Version increases by one on every stored change; UpdateCommand refuses a command
	// whose version is not the stored one (optimistic concurrency between the consumer,
	// the timeout sweeper and the RPCs).
	Version int64
}

// set moves c to state s (recording the step) and reports whether anything changed.
// Re-entering the same state with the same reason is not a change, so replays are no-ops.
// Only a change of state is added to the history; a new reason for the same state (the
// speed a held IMMOBILIZE waits on) just replaces the shown reason.
func (c *Command) set(s CommandState, reason string, at time.Time) bool {
	if c.State == s {
		if c.Reason == reason {
			return false
		}
		c.Reason = reason
		return true
	}
	c.State, c.Reason, c.UpdateTime = s, reason, at
	if s == CommandSent {
		c.SentTime = at
	}
	c.History = append(c.History, Transition{State: s, Time: at, Detail: reason})
	return true
}

// CommandFilter selects commands. Zero values match everything.
type CommandFilter struct {
	Vehicle  string
	State    CommandState
	OpenOnly bool // queued, sent or accepted
	Limit    int  // default 100
}

// Match reports whether c passes the filter.
func (f *CommandFilter) Match(c *Command) bool {
	switch {
	case f.Vehicle != "" && c.Vehicle != f.Vehicle,
		f.State != CommandStateUnspecified && c.State != f.State,
		f.OpenOnly && !c.State.Open():
		return false
	}
	return true
}

func (f *CommandFilter) limit() int {
	if f.Limit <= 0 {
		return 100
	}
	return f.Limit
}

// ValidateParams checks a command's parameters.
func ValidateParams(k CommandKind, params map[string]string) error {
	switch k {
	case CommandImmobilize, CommandResume, CommandLocateNow:
		if len(params) > 0 {
			return fmt.Errorf("%w: %s takes no parameters", ErrInvalid, k)
		}
	case CommandSetReportInterval:
		if len(params) == 0 {
			return fmt.Errorf("%w: %s needs moving_s and/or parked_s", ErrInvalid, k)
		}
		for key, v := range params {
			if key != "moving_s" && key != "parked_s" {
				return fmt.Errorf("%w: unknown parameter %q (want moving_s, parked_s)", ErrInvalid, key)
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 86400 {
				return fmt.Errorf("%w: %s=%q must be seconds in 1..86400", ErrInvalid, key, v)
			}
		}
	default:
		return fmt.Errorf("%w: unknown command kind %d", ErrInvalid, k)
	}
	return nil
}

// Gate decides whether a queued command may go out now.
type Gate struct {
	// ImmobilizeMaxKmh: IMMOBILIZE is held until the vehicle is at most this fast.
	ImmobilizeMaxKmh float64
	// ImmobilizeSlowFixes and ImmobilizeSlowFor: the evidence that it is: that many
	// consecutive valid fixes, all good and at most ImmobilizeMaxKmh, spanning at least
	// ImmobilizeSlowFor, and no record without a fix since. One forged or glitched fix
	// cannot release the engine cut; the device checks its own speed as well
	// (DeviceCommand.max_speed_kmh).
	ImmobilizeSlowFixes int
	ImmobilizeSlowFor   time.Duration
	// OfflineAfter: a vehicle with no record received for longer is offline; its
	// commands wait for the next record.
	OfflineAfter time.Duration
}

// Decision is what to do with a queued command.
type Decision uint8

const (
	Wait Decision = iota
	Send
	Expire
)

// Decide returns whether to send, keep waiting (with the reason shown to the dispatcher)
// or expire command c for vehicle state v (known=false: never heard from) at now.
func (g Gate) Decide(c *Command, v *VehicleState, known bool, now time.Time) (Decision, string) {
	if !now.Before(c.ExpireTime) {
		return Expire, "expired at " + c.ExpireTime.UTC().Format(time.RFC3339) + " before it could be delivered"
	}
	if !known || v.LastReceived.IsZero() {
		return Wait, "vehicle offline (never seen); delivered when it reconnects"
	}
	if now.Sub(v.LastReceived) > g.OfflineAfter {
		return Wait, "vehicle offline since " + v.LastReceived.UTC().Format(time.RFC3339) + "; delivered when it reconnects"
	}
	if c.Kind == CommandImmobilize {
		if ok, reason := g.slowEnough(v); !ok {
			return Wait, reason
		}
	}
	return Send, ""
}

// slowEnough judges the IMMOBILIZE speed evidence in v.
func (g Gate) slowEnough(v *VehicleState) (bool, string) {
	if !v.HasFix || v.GNSSLost || len(v.RecentFixes) == 0 {
		// Without a current fix the speed is unknown; a cut engine at speed can kill.
		return false, fmt.Sprintf("waiting for a valid GNSS fix to confirm speed <= %g km/h", g.ImmobilizeMaxKmh)
	}
	newest := v.RecentFixes[len(v.RecentFixes)-1]
	if newest.SpeedKmh > g.ImmobilizeMaxKmh {
		return false, fmt.Sprintf("waiting for speed <= %g km/h (now %.0f km/h)", g.ImmobilizeMaxKmh, newest.SpeedKmh)
	}
	n := max(g.ImmobilizeSlowFixes, 1)
	run := 0
	var oldest time.Time
	for i := len(v.RecentFixes) - 1; i >= 0 && run < n; i-- {
		f := v.RecentFixes[i]
		if !f.Good || f.SpeedKmh > g.ImmobilizeMaxKmh {
			break
		}
		run, oldest = run+1, f.Time
	}
	if span := newest.Time.Sub(oldest); run < n || span < g.ImmobilizeSlowFor {
		return false, fmt.Sprintf("waiting for speed <= %g km/h on %d consecutive good fixes over %s (%d so far, over %s)",
			g.ImmobilizeMaxKmh, n, g.ImmobilizeSlowFor, run, span.Round(time.Second))
	}
	return true, ""
}

// Timeouts for delivered commands.
type Timeouts struct {
	Reply   time.Duration // sent and no reply at all within Reply → failed
	Execute time.Duration // accepted and not executed within Execute → failed
}

// Overdue returns the failure reason when c has waited too long for its device, or "".
func (t Timeouts) Overdue(c *Command, now time.Time) string {
	switch c.State {
	case CommandSent:
		if now.Sub(c.SentTime) > t.Reply {
			return fmt.Sprintf("no reply within %s", t.Reply)
		}
	case CommandAccepted:
		if now.Sub(c.UpdateTime) > t.Execute {
			return fmt.Sprintf("accepted but not executed within %s", t.Execute)
		}
	}
	return ""
}

// replyDetail is what the history keeps of a reply: the device's detail and, for
// IMMOBILIZE, the speed the device says it checked (or that it did not say).
func replyDetail(c *Command, r *Reply, maxKmh float64) string {
	if c.Kind != CommandImmobilize {
		return r.Detail
	}
	var sp string
	switch {
	case !r.HasSpeed:
		sp = "device did not confirm its speed"
	case r.SpeedKmh > maxKmh && r.Status != CommandRejected:
		sp = fmt.Sprintf("device speed %.0f km/h ABOVE the %g km/h limit", r.SpeedKmh, maxKmh)
	default:
		sp = fmt.Sprintf("device speed %.0f km/h", r.SpeedKmh)
	}
	if r.Detail == "" {
		return sp
	}
	return r.Detail + "; " + sp
}

// ApplyReply applies a device reply (accepted, rejected, executed) to c and reports
// whether it changed. A reply to a command that was never sent, or a step backwards
// (accepted after executed), is ignored; a late executed after a timeout is believed,
// because it is what the vehicle did.
func ApplyReply(c *Command, to CommandState, detail string, at time.Time) bool {
	switch to {
	case CommandAccepted:
		if c.State != CommandSent {
			return false
		}
	case CommandExecuted, CommandRejected:
		if c.State != CommandSent && c.State != CommandAccepted && c.State != CommandFailed {
			return false
		}
	default:
		return false
	}
	return c.set(to, detail, at)
}
