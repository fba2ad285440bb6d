package main

// The dispatcher's commands (AlertService, CommandService): the alert feed (alerts, ack,
// resolve, one alert or many) and commands to vehicles (command, commands).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(
		command{name: "alerts", args: "[--follow] [--vehicle V] [--state S] [--kind K] [--severity S] [--limit N] [--page-token T]", summary: "the alert feed, newest first, with the total; --follow streams new alerts", run: runAlerts, stream: following},
		command{name: "ack", args: "ID... | --all [--vehicle V] [--kind K] [--severity S] [--note N]", summary: "acknowledge alerts: the ids given, or every open alert matching the filters", run: runAck},
		command{name: "resolve", args: "ID... | --all [--vehicle V] [--kind K] [--severity S] [--state S] [--note N]", summary: "resolve alerts: the ids given, or every unresolved alert matching the filters", run: runResolve},
		command{name: "command", args: "VEHICLE KIND [key=value ...] [--ttl D]", summary: "send " + strings.ToUpper(enumNames(fleetv1.CommandKind_value, "COMMAND_KIND_")) + " to a vehicle", run: runSendCommand},
		command{name: "commands", args: "[VEHICLE] [--state S] [--limit N] | show ID | cancel ID [--note N]", summary: "commands sent and their state; show: one with its history; cancel: withdraw a queued one", run: runCommands},
	)
}

// who is the operator name sent with a change. A server with authentication records the
// authenticated principal whatever is sent (pkg/auth stamps it); only a server started
// with --insecure uses this, so it is never required.
func whoFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("USER")
	if def == "" {
		if u, err := user.Current(); err == nil {
			def = u.Username
		}
	}
	if def == "" {
		def = "fleetctl"
	}
	return fs.String("who", def, "operator name for a server started with --insecure; a server with authentication records the authenticated principal instead")
}

var alertHeader = []string{"ID", "TIME", "VEHICLE", "KIND", "SEVERITY", "STATE", "N", "MESSAGE", "BY"}

// alertWidths fit the usual values of each column of alertHeader (for --follow).
var alertWidths = []int{5, 23, 12, 20, 8, 12, 3, 40}

func alertCells(e *env, a *fleetv1.Alert) []string {
	by := a.GetResolvedBy()
	if by == "" {
		by = a.GetAcknowledgedBy()
	}
	return []string{
		strconv.FormatUint(a.GetAlertId(), 10), e.when(a.GetFirstTime()),
		a.GetVehicleId(), a.GetKind(), enumName(a.GetSeverity().String(), "ALERT_SEVERITY_"),
		enumName(a.GetState().String(), "ALERT_STATE_"), strconv.FormatUint(uint64(a.GetOccurrences()), 10),
		a.GetMessage(), orDash(by),
	}
}

// alertFilters are the flags that select alerts, shared by alerts, ack and resolve.
type alertFilters struct {
	vehicle, state, kind, severity *string
	from, to                       *timeFlag
}

func (e *env) alertFilterFlags(fs *flag.FlagSet, defState string) *alertFilters {
	f := &alertFilters{
		vehicle:  fs.String("vehicle", "", "only this vehicle"),
		state:    fs.String("state", defState, "only alerts in this state ("+enumNames(fleetv1.AlertState_value, "ALERT_STATE_")+")"),
		kind:     fs.String("kind", "", "only this kind, e.g. tow, fuel_theft, offline, zone_exit"),
		severity: fs.String("severity", "", "only at least this severity ("+enumNames(fleetv1.AlertSeverity_value, "ALERT_SEVERITY_")+")"),
	}
	f.from = e.timeVar(fs, "from", time.Time{}, "only alerts first seen at or after this time")
	f.to = e.timeVar(fs, "to", time.Time{}, "only alerts first seen before this time")
	return f
}

func (f *alertFilters) request() (*fleetv1.ListAlertsRequest, error) {
	req := &fleetv1.ListAlertsRequest{VehicleId: *f.vehicle, Kind: *f.kind, StartTime: f.from.ts(), EndTime: f.to.ts()}
	if *f.state != "" && *f.state != "any" {
		v, ok := enumValue(fleetv1.AlertState_value, "ALERT_STATE_", *f.state)
		if !ok {
			return nil, usageErr("unknown state %q (%s)", *f.state, enumNames(fleetv1.AlertState_value, "ALERT_STATE_"))
		}
		req.State = fleetv1.AlertState(v)
	}
	if *f.severity != "" {
		v, ok := enumValue(fleetv1.AlertSeverity_value, "ALERT_SEVERITY_", *f.severity)
		if !ok {
			return nil, usageErr("unknown severity %q (%s)", *f.severity, enumNames(fleetv1.AlertSeverity_value, "ALERT_SEVERITY_"))
		}
		req.MinSeverity = fleetv1.AlertSeverity(v)
	}
	return req, nil
}

// countAlerts pages through every alert matching req (without its page token) for the
// total the list shows.
func countAlerts(ctx context.Context, c fleetv1.AlertServiceClient, req *fleetv1.ListAlertsRequest) (int, error) {
	q := proto.Clone(req).(*fleetv1.ListAlertsRequest)
	q.PageToken, q.PageSize = "", 1000
	n := 0
	for {
		resp, err := c.ListAlerts(ctx, q)
		if err != nil {
			return 0, err
		}
		n += len(resp.GetAlerts())
		if resp.GetNextPageToken() == "" {
			return n, nil
		}
		q.PageToken = resp.GetNextPageToken()
	}
}

// runAlerts lists the alert feed, or follows it (--follow), resuming after the last alert
// shown whenever the stream breaks, so nothing is missed or shown twice.
func runAlerts(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	follow := fs.Bool("follow", false, "stream alerts as they are raised (until interrupted)")
	filters := e.alertFilterFlags(fs, "")
	limit := fs.Int("limit", 50, "alerts per page (at most 1000)")
	token := fs.String("page-token", "", "the page after the one that printed this token")
	oldest := fs.Bool("oldest-first", false, "oldest first")
	after := fs.Int64("after", -1, "with --follow: first replay the alerts after this id (0 = all retained)")
	if _, err := e.noPos(fs, args); err != nil {
		return err
	}
	req, err := filters.request()
	if err != nil {
		return err
	}
	req.PageSize, req.PageToken, req.OldestFirst = int32(min(max(*limit, 1), 1000)), *token, *oldest
	client := fleetv1.NewAlertServiceClient(e.conn)
	if *follow {
		return followAlerts(ctx, e, client, req, *after)
	}
	resp, err := client.ListAlerts(ctx, req)
	if err != nil {
		return err
	}
	if e.json() {
		for _, a := range resp.GetAlerts() {
			if err := e.emit(a); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table(alertHeader...)
	for _, a := range resp.GetAlerts() {
		t.row(alertCells(e, a)...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format != "table" {
		return nil
	}
	total, err := countAlerts(ctx, client, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out(), "%d shown of %d matching alerts\n", len(resp.GetAlerts()), total)
	if next := resp.GetNextPageToken(); next != "" {
		fmt.Fprintf(e.out(), "next page: fleetctl alerts --page-token %s (with the same filters)\n", next)
	}
	return nil
}

// followAlerts streams the feed. When the server goes away it says so on stderr, once,
// and keeps reconnecting; back, it says so and resumes after the last alert shown.
func followAlerts(ctx context.Context, e *env, client fleetv1.AlertServiceClient, req *fleetv1.ListAlertsRequest, after int64) error {
	wreq := &fleetv1.WatchAlertsRequest{VehicleId: req.GetVehicleId(), MinSeverity: req.GetMinSeverity()}
	if after >= 0 {
		v := uint64(after)
		wreq.AfterAlertId = &v
	}
	var st *streamTable
	backoff := 250 * time.Millisecond
	down := false // the outage was reported
	for {
		stream, err := client.WatchAlerts(ctx, wreq)
		if err == nil {
			// Headers arrive once the server has fixed the starting point: connected.
			if _, err = stream.Header(); err == nil {
				if down {
					fmt.Fprintf(e.stderr, "fleetctl alerts: reconnected to %s; resuming after alert %d\n", e.conns.addr, wreq.GetAfterAlertId())
					down = false
				}
				if st == nil && !e.json() {
					fmt.Fprintf(e.stderr, "following alerts from %s (Ctrl-C stops)\n", e.conns.addr)
					st = e.streamTable(alertHeader, alertWidths)
				}
			}
		}
		for err == nil {
			var m *fleetv1.WatchAlertsResponse
			if m, err = stream.Recv(); err != nil {
				break
			}
			a := m.GetAlert()
			id := a.GetAlertId()
			wreq.AfterAlertId = &id // resume point for a reconnect
			backoff = 250 * time.Millisecond
			if (req.GetKind() != "" && a.GetKind() != req.GetKind()) || (req.GetState() != 0 && a.GetState() != req.GetState()) {
				continue
			}
			var werr error
			if e.json() {
				werr = e.emit(a)
			} else {
				werr = st.row(alertCells(e, a)...)
			}
			if werr != nil {
				return werr // the output is gone (a closed pipe): nothing to resume for
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.ResourceExhausted, codes.DeadlineExceeded:
		default:
			if !errors.Is(err, io.EOF) {
				return err
			}
		}
		if !down {
			fmt.Fprintf(e.stderr, "fleetctl alerts: the server at %s is unreachable (%s); reconnecting until it answers (Ctrl-C stops)\n", e.conns.addr, status.Convert(err).Message())
			if h := hint(e.conns, status.Convert(err)); h != "" && st == nil {
				fmt.Fprintln(e.stderr, h)
			}
			down = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func runAck(ctx context.Context, e *env, args []string) error {
	return alertStateChange(ctx, e, args, fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED)
}

func runResolve(ctx context.Context, e *env, args []string) error {
	return alertStateChange(ctx, e, args, fleetv1.AlertState_ALERT_STATE_RESOLVED)
}

// alertStateChange acknowledges or resolves the alerts named, or with --all every alert
// matching the filters that can take the change, through the bulk RPCs: the server picks
// and changes up to 1000 alerts per call (auditing each), and this repeats while more
// remain. Failures are reported per alert and do not stop the rest.
func alertStateChange(ctx context.Context, e *env, args []string, to fleetv1.AlertState) error {
	fs := e.flagSet()
	note := fs.String("note", "", "note recorded with the change")
	who := whoFlag(fs)
	all := fs.Bool("all", false, "every alert matching the filters (at least --all must be given, so that nothing is changed by accident)")
	defState := "open"
	if to == fleetv1.AlertState_ALERT_STATE_RESOLVED {
		defState = "" // open and acknowledged
	}
	filters := e.alertFilterFlags(fs, defState)
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	var ids []uint64
	for _, p := range pos {
		id, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return usageErr("alert id %q is not a number", p)
		}
		ids = append(ids, id)
	}
	switch {
	case *all && len(ids) > 0:
		return usageErr("either alert ids or --all with filters, not both")
	case !*all && len(ids) == 0:
		return usageErr("which alerts? give their ids, or --all with filters")
	}
	sel, err := filters.request()
	if err != nil {
		return err
	}
	if to == fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED && sel.GetState() != 0 && sel.GetState() != fleetv1.AlertState_ALERT_STATE_OPEN {
		return usageErr("only open alerts can be acknowledged")
	}
	client := fleetv1.NewAlertServiceClient(e.conn)
	if len(ids) == 1 {
		return alertChangeOne(ctx, e, client, ids[0], to, *who, *note)
	}
	// call makes one bulk call: the ids given (up to 1000), or the next batch by filter.
	call := func(batch []uint64) ([]uint64, []*fleetv1.AlertChangeFailure, int64, error) {
		if to == fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED {
			req := &fleetv1.AcknowledgeAlertsRequest{AlertIds: batch, Who: *who, Note: *note}
			if len(batch) == 0 {
				req.All, req.VehicleId, req.Kind, req.MinSeverity, req.StartTime, req.EndTime = true, sel.GetVehicleId(), sel.GetKind(), sel.GetMinSeverity(), sel.GetStartTime(), sel.GetEndTime()
			}
			resp, err := client.AcknowledgeAlerts(ctx, req)
			return resp.GetChangedAlertIds(), resp.GetFailures(), resp.GetRemainingSize(), err
		}
		req := &fleetv1.ResolveAlertsRequest{AlertIds: batch, Who: *who, Note: *note}
		if len(batch) == 0 {
			req.All, req.VehicleId, req.Kind, req.MinSeverity, req.State, req.StartTime, req.EndTime = true, sel.GetVehicleId(), sel.GetKind(), sel.GetMinSeverity(), sel.GetState(), sel.GetStartTime(), sel.GetEndTime()
		}
		resp, err := client.ResolveAlerts(ctx, req)
		return resp.GetChangedAlertIds(), resp.GetFailures(), resp.GetRemainingSize(), err
	}
	var changed []uint64
	var failed []*fleetv1.AlertChangeFailure
	if *all {
		for {
			c, f, remaining, err := call(nil)
			if err != nil {
				return err
			}
			changed, failed = append(changed, c...), append(failed, f...)
			// No progress means the remaining ones fail every time: stop rather than spin.
			if remaining == 0 || len(c) == 0 {
				break
			}
		}
	} else {
		for start := 0; start < len(ids); start += 1000 {
			c, f, _, err := call(ids[start:min(start+1000, len(ids))])
			if err != nil {
				return err
			}
			changed, failed = append(changed, c...), append(failed, f...)
		}
	}
	verb := enumName(to.String(), "ALERT_STATE_")
	if e.json() {
		for _, id := range changed {
			if err := e.emit(&fleetv1.AlertChangeFailure{AlertId: id, Code: "OK", Message: verb}); err != nil {
				return err
			}
		}
		for _, f := range failed {
			if err := e.emit(f); err != nil {
				return err
			}
		}
	} else {
		t := e.table("ID", "RESULT")
		for _, id := range changed {
			t.row(strconv.FormatUint(id, 10), verb)
		}
		for _, f := range failed {
			t.row(strconv.FormatUint(f.GetAlertId(), 10), "not "+verb+": "+f.GetMessage())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stderr, "%d alerts %s, %d failed\n", len(changed), verb, len(failed))
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d alerts not %s", len(failed), len(changed)+len(failed), verb)
	}
	return nil
}

// alertChangeOne acknowledges or resolves one alert and shows it as changed.
func alertChangeOne(ctx context.Context, e *env, client fleetv1.AlertServiceClient, id uint64, to fleetv1.AlertState, who, note string) error {
	var a *fleetv1.Alert
	if to == fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED {
		resp, err := client.AcknowledgeAlert(ctx, &fleetv1.AcknowledgeAlertRequest{AlertId: id, Who: who, Note: note})
		if err != nil {
			return err
		}
		a = resp.GetAlert()
	} else {
		resp, err := client.ResolveAlert(ctx, &fleetv1.ResolveAlertRequest{AlertId: id, Who: who, Note: note})
		if err != nil {
			return err
		}
		a = resp.GetAlert()
	}
	if e.json() {
		return e.emit(a)
	}
	t := e.table(alertHeader...)
	t.row(alertCells(e, a)...)
	return t.flush()
}

var commandHeader = []string{"ID", "VEHICLE", "KIND", "STATE", "REASON", "ISSUED BY", "ISSUED", "UPDATED"}

func commandCells(e *env, c *fleetv1.Command) []string {
	return []string{
		c.GetCommandId(), c.GetVehicleId(), enumName(c.GetKind().String(), "COMMAND_KIND_"),
		enumName(c.GetState().String(), "COMMAND_STATE_"), orDash(c.GetStateReason()), orDash(c.GetIssuedBy()),
		e.when(c.GetIssueTime()), e.when(c.GetUpdateTime()),
	}
}

func renderCommands(e *env, cs []*fleetv1.Command) error {
	if e.json() {
		for _, c := range cs {
			if err := e.emit(c); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table(commandHeader...)
	for _, c := range cs {
		t.row(commandCells(e, c)...)
	}
	return t.flush()
}

// runSendCommand issues a command: command VEHICLE KIND [k=v ...] [--ttl D].
func runSendCommand(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	ttl := fs.Duration("ttl", 0, "how long the command may wait for the vehicle (default: the server's, 24h)")
	who := whoFlag(fs)
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	kinds := enumNames(fleetv1.CommandKind_value, "COMMAND_KIND_")
	if len(pos) < 2 {
		return usageErr("a vehicle and a kind (%s)", kinds)
	}
	kind, ok := enumValue(fleetv1.CommandKind_value, "COMMAND_KIND_", pos[1])
	if !ok {
		return usageErr("unknown command kind %q (%s)", pos[1], kinds)
	}
	req := &fleetv1.SendCommandRequest{VehicleId: pos[0], Kind: fleetv1.CommandKind(kind), Who: *who}
	for _, kv := range pos[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErr("parameter %q is not key=value", kv)
		}
		if req.Params == nil {
			req.Params = map[string]string{}
		}
		req.Params[k] = v
	}
	if *ttl > 0 {
		req.Ttl = durationpb.New(*ttl)
	}
	resp, err := fleetv1.NewCommandServiceClient(e.conn).SendCommand(ctx, req)
	if err != nil {
		return err
	}
	return renderCommands(e, []*fleetv1.Command{resp.GetCommand()})
}

// runCommands lists commands, newest first, or shows one with its history.
func runCommands(ctx context.Context, e *env, args []string) error {
	client := fleetv1.NewCommandServiceClient(e.conn)
	return e.dispatch(ctx, args, []sub{
		{name: "list", args: "[VEHICLE] [--state S] [--limit N]", summary: "commands, newest first (also: fleetctl commands [VEHICLE])",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				state := fs.String("state", "", "only commands in this state ("+enumNames(fleetv1.CommandState_value, "COMMAND_STATE_")+")")
				limit := fs.Int("limit", 50, "most commands listed (at most 1000)")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) > 1 {
					return usageErr("at most one vehicle")
				}
				req := &fleetv1.ListCommandsRequest{PageSize: int32(min(max(*limit, 1), 1000))}
				if len(pos) == 1 {
					req.VehicleId = pos[0]
				}
				if *state != "" {
					v, ok := enumValue(fleetv1.CommandState_value, "COMMAND_STATE_", *state)
					if !ok {
						return usageErr("unknown state %q", *state)
					}
					req.State = fleetv1.CommandState(v)
				}
				resp, err := client.ListCommands(ctx, req)
				if err != nil {
					return err
				}
				return renderCommands(e, resp.GetCommands())
			}},
		{name: "cancel", args: "ID [--note N]", summary: "withdraw a queued command so that it is never delivered (IMMOBILIZE and RESUME need a supervisor)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				note := fs.String("note", "", "why, recorded with the cancellation")
				who := whoFlag(fs)
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one command id")
				}
				resp, err := client.CancelCommand(ctx, &fleetv1.CancelCommandRequest{CommandId: pos[0], Who: *who, Note: *note})
				if err != nil {
					return err
				}
				return renderCommand(e, resp.GetCommand())
			}},
		{name: "show", args: "ID", summary: "one command with every state it went through",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one command id")
				}
				resp, err := client.GetCommand(ctx, &fleetv1.GetCommandRequest{CommandId: pos[0]})
				if err != nil {
					return err
				}
				return renderCommand(e, resp.GetCommand())
			}},
	}, "list")
}

func renderCommand(e *env, c *fleetv1.Command) error {
	if e.json() {
		return e.emit(c)
	}
	pairs := [][2]string{
		{"command", c.GetCommandId()}, {"vehicle", c.GetVehicleId()},
		{"kind", enumName(c.GetKind().String(), "COMMAND_KIND_")}, {"params", sortedMap(c.GetParams())},
		{"state", enumName(c.GetState().String(), "COMMAND_STATE_")}, {"reason", orDash(c.GetStateReason())},
		{"issued by", orDash(c.GetIssuedBy())}, {"issued", e.when(c.GetIssueTime())},
		{"expires", e.when(c.GetExpireTime())}, {"sent", e.when(c.GetSentTime())},
	}
	for _, h := range c.GetHistory() {
		pairs = append(pairs, [2]string{"history", e.when(h.GetTime()) + "  " + enumName(h.GetState().String(), "COMMAND_STATE_") + "  " + h.GetDetail()})
	}
	return e.fields(pairs)
}
