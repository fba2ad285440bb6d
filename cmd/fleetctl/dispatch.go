package main

// The dispatcher's commands: the alert feed (alerts, ack, resolve) and commands to
// vehicles (command, commands).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// parseMixed parses flags that may come before or after positional arguments
// ("ack 12 --note x" as well as "ack --note x 12") and returns the positionals.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func whoFlag(fs *flag.FlagSet) *string {
	return fs.String("who", os.Getenv("USER"), "operator name, for a server without authentication; an authenticating server records the principal instead (default $USER)")
}

func enumName(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

// enumValue finds an enum value by its short lower-case name ("acknowledged",
// "set_report_interval", "set-report-interval") or its full name.
func enumValue(values map[string]int32, prefix, name string) (int32, bool) {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if v, ok := values[prefix+n]; ok && v != 0 {
		return v, true
	}
	v, ok := values[n]
	return v, ok && v != 0
}

func shortTime(t interface{ AsTime() time.Time }, valid bool) string {
	if !valid {
		return "-"
	}
	return t.AsTime().Local().Format("01-02 15:04:05")
}

const alertHeader = "ID\tTIME\tVEHICLE\tKIND\tSEVERITY\tSTATE\tN\tMESSAGE\tBY"

func alertRow(a *fleetv1.Alert) string {
	by := a.GetResolvedBy()
	if by == "" {
		by = a.GetAcknowledgedBy()
	}
	if by == "" {
		by = "-"
	}
	return strings.Join([]string{
		strconv.FormatUint(a.GetAlertId(), 10), shortTime(a.GetFirstTime(), a.GetFirstTime() != nil),
		a.GetVehicleId(), a.GetKind(), enumName(a.GetSeverity().String(), "ALERT_SEVERITY_"),
		enumName(a.GetState().String(), "ALERT_STATE_"), strconv.FormatUint(uint64(a.GetOccurrences()), 10),
		a.GetMessage(), by,
	}, "\t")
}

// runAlerts lists the alert feed, or follows it (--follow), resuming after the last alert
// shown whenever the stream breaks, so nothing is missed or shown twice.
func runAlerts(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet("alerts", flag.ContinueOnError)
	follow := fs.Bool("follow", false, "stream alerts as they are raised (until interrupted)")
	vehicle := fs.String("vehicle", "", "only this vehicle")
	state := fs.String("state", "", "only alerts in this state: open, acknowledged, resolved")
	kind := fs.String("kind", "", "only this kind, e.g. tow, fuel_theft, offline")
	severity := fs.String("severity", "", "only at least this severity: info, warning, critical")
	limit := fs.Int("limit", 50, "most alerts listed (without --follow)")
	after := fs.Int64("after", -1, "with --follow: first replay the alerts after this id (0 = all)")
	if _, err := parseMixed(fs, args); err != nil {
		return err
	}
	req := &fleetv1.ListAlertsRequest{VehicleId: *vehicle, Kind: *kind, PageSize: int32(min(max(*limit, 1), 1000))}
	if *state != "" {
		v, ok := enumValue(fleetv1.AlertState_value, "ALERT_STATE_", *state)
		if !ok {
			return fmt.Errorf("unknown state %q (open, acknowledged, resolved)", *state)
		}
		req.State = fleetv1.AlertState(v)
	}
	if *severity != "" {
		v, ok := enumValue(fleetv1.AlertSeverity_value, "ALERT_SEVERITY_", *severity)
		if !ok {
			return fmt.Errorf("unknown severity %q (info, warning, critical)", *severity)
		}
		req.MinSeverity = fleetv1.AlertSeverity(v)
	}
	client := fleetv1.NewAlertServiceClient(conn)
	if !*follow {
		resp, err := client.ListAlerts(ctx, req)
		if err != nil {
			return err
		}
		if jsonOut {
			return printJSON(out, resp)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, alertHeader)
		for _, a := range resp.GetAlerts() {
			fmt.Fprintln(tw, alertRow(a))
		}
		return tw.Flush()
	}

	wreq := &fleetv1.WatchAlertsRequest{VehicleId: *vehicle, MinSeverity: req.GetMinSeverity()}
	if *after >= 0 {
		v := uint64(*after)
		wreq.AfterAlertId = &v
	}
	if !jsonOut {
		fmt.Fprintln(out, strings.ReplaceAll(alertHeader, "\t", "  "))
	}
	backoff := 250 * time.Millisecond
	for {
		stream, err := client.WatchAlerts(ctx, wreq)
		for err == nil {
			var m *fleetv1.WatchAlertsResponse
			if m, err = stream.Recv(); err != nil {
				break
			}
			a := m.GetAlert()
			id := a.GetAlertId()
			wreq.AfterAlertId = &id // resume point for a reconnect
			backoff = 250 * time.Millisecond
			if (*kind != "" && a.GetKind() != *kind) || (req.State != 0 && a.GetState() != req.State) {
				continue
			}
			var werr error
			if jsonOut {
				werr = printJSON(out, a)
			} else {
				_, werr = fmt.Fprintln(out, strings.ReplaceAll(alertRow(a), "\t", "  "))
			}
			if werr != nil {
				return werr // the output is gone (a closed pipe): nothing to resume for
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.ResourceExhausted:
		default:
			if !errors.Is(err, io.EOF) {
				return err
			}
		}
		// The server went away: reconnect and resume after the last alert shown.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func alertStateChange(ctx context.Context, conn *grpc.ClientConn, name string, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	note := fs.String("note", "", "note recorded with the change")
	who := whoFlag(fs)
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: %s ID [--note N] [--who W]", name)
	}
	id, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil {
		return fmt.Errorf("alert id %q is not a number", pos[0])
	}
	if *who == "" {
		return errors.New("--who is required ($USER is not set)")
	}
	client := fleetv1.NewAlertServiceClient(conn)
	var a *fleetv1.Alert
	if name == "ack" {
		resp, err := client.AcknowledgeAlert(ctx, &fleetv1.AcknowledgeAlertRequest{AlertId: id, Who: *who, Note: *note})
		if err != nil {
			return err
		}
		a = resp.GetAlert()
	} else {
		resp, err := client.ResolveAlert(ctx, &fleetv1.ResolveAlertRequest{AlertId: id, Who: *who, Note: *note})
		if err != nil {
			return err
		}
		a = resp.GetAlert()
	}
	if jsonOut {
		return printJSON(out, a)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, alertHeader)
	fmt.Fprintln(tw, alertRow(a))
	return tw.Flush()
}

// runAck acknowledges an alert: ack ID [--note N] [--who W].
func runAck(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	return alertStateChange(ctx, conn, "ack", args, out, jsonOut)
}

// runResolve resolves an alert: resolve ID [--note N] [--who W].
func runResolve(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	return alertStateChange(ctx, conn, "resolve", args, out, jsonOut)
}

const commandHeader = "ID\tVEHICLE\tKIND\tSTATE\tREASON\tISSUED BY\tISSUED\tUPDATED"

func commandRow(c *fleetv1.Command) string {
	reason := c.GetStateReason()
	if reason == "" {
		reason = "-"
	}
	return strings.Join([]string{
		c.GetCommandId(), c.GetVehicleId(), enumName(c.GetKind().String(), "COMMAND_KIND_"),
		enumName(c.GetState().String(), "COMMAND_STATE_"), reason, c.GetIssuedBy(),
		shortTime(c.GetIssueTime(), c.GetIssueTime() != nil), shortTime(c.GetUpdateTime(), c.GetUpdateTime() != nil),
	}, "\t")
}

// runSendCommand issues a command: command VEHICLE KIND [k=v ...] [--ttl D] [--who W].
func runSendCommand(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet("command", flag.ContinueOnError)
	ttl := fs.Duration("ttl", 0, "how long the command may wait for the vehicle (default: the server's, 24h)")
	who := whoFlag(fs)
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return errors.New("usage: command VEHICLE KIND [key=value ...] (KIND: immobilize, resume, locate_now, set_report_interval)")
	}
	kind, ok := enumValue(fleetv1.CommandKind_value, "COMMAND_KIND_", pos[1])
	if !ok {
		return fmt.Errorf("unknown command kind %q (immobilize, resume, locate_now, set_report_interval)", pos[1])
	}
	if *who == "" {
		return errors.New("--who is required ($USER is not set)")
	}
	req := &fleetv1.SendCommandRequest{VehicleId: pos[0], Kind: fleetv1.CommandKind(kind), Who: *who}
	for _, kv := range pos[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("parameter %q is not key=value", kv)
		}
		if req.Params == nil {
			req.Params = map[string]string{}
		}
		req.Params[k] = v
	}
	if *ttl > 0 {
		req.Ttl = durationpb.New(*ttl)
	}
	resp, err := fleetv1.NewCommandServiceClient(conn).SendCommand(ctx, req)
	if err != nil {
		return err
	}
	if jsonOut {
		return printJSON(out, resp.GetCommand())
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, commandHeader)
	fmt.Fprintln(tw, commandRow(resp.GetCommand()))
	return tw.Flush()
}

// runCommands lists commands, newest first: commands [VEHICLE] [--state S] [--limit N].
func runCommands(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet("commands", flag.ContinueOnError)
	state := fs.String("state", "", "only commands in this state (queued, sent, accepted, executed, rejected, expired, failed)")
	limit := fs.Int("limit", 50, "most commands listed")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return errors.New("usage: commands [VEHICLE] [--state S] [--limit N]")
	}
	req := &fleetv1.ListCommandsRequest{PageSize: int32(min(max(*limit, 1), 1000))}
	if len(pos) == 1 {
		req.VehicleId = pos[0]
	}
	if *state != "" {
		v, ok := enumValue(fleetv1.CommandState_value, "COMMAND_STATE_", *state)
		if !ok {
			return fmt.Errorf("unknown state %q", *state)
		}
		req.State = fleetv1.CommandState(v)
	}
	resp, err := fleetv1.NewCommandServiceClient(conn).ListCommands(ctx, req)
	if err != nil {
		return err
	}
	if jsonOut {
		return printJSON(out, resp)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, commandHeader)
	for _, c := range resp.GetCommands() {
		fmt.Fprintln(tw, commandRow(c))
	}
	return tw.Flush()
}
