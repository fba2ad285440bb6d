package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(command{name: "status", args: "[--consumers]",
		summary: "per-service lag (pending, ack-floor lag), catching up or ready, store generation", run: runStatus})
}

// runStatus shows, per service of the process at --addr, how far behind its streams it
// is and whether its store is intact; --consumers lists every durable consumer. A
// deployment of separate services answers per process: ask each address.
func runStatus(ctx context.Context, e *env, args []string) error {
	fs := e.subFlagSet("", "[--consumers]", "per-service lag, readiness and store generation")
	perConsumer := fs.Bool("consumers", false, "one line per durable consumer")
	if _, err := e.noPos(fs, args); err != nil {
		return err
	}
	resp, err := fleetv1.NewStatusServiceClient(e.conn).GetStatus(ctx, &fleetv1.GetStatusRequest{})
	if err != nil {
		return err
	}
	if e.json() {
		return e.emit(resp)
	}
	return writeStatus(e.out(), resp, *perConsumer)
}

// serviceLag sums a service's consumers.
type serviceLag struct {
	consumers           int
	pending, ackPending uint64
	ackFloorLag         uint64
	starting, behind    int
}

func writeStatus(out io.Writer, resp *fleetv1.GetStatusResponse, perConsumer bool) error {
	ready := "ready"
	if !resp.GetReady() {
		ready = "NOT READY"
	}
	fmt.Fprintf(out, "%s: %s (catch-up bound %d messages)\n\n", ready, resp.GetReadyDetail(), resp.GetCatchUpBound())
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if perConsumer {
		fmt.Fprintln(tw, "CONSUMER\tSTREAM\tPENDING\tACK PENDING\tACK FLOOR\tACK-FLOOR LAG\tSTATE")
		for _, c := range resp.GetConsumers() {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", c.GetDurable(), c.GetStream(), c.GetPending(), c.GetAckPending(),
				c.GetAckFloor(), c.GetAckFloorLag(), consumerState(c))
		}
		fmt.Fprintln(tw)
	}
	by := map[string]*serviceLag{}
	for _, c := range resp.GetConsumers() {
		l := by[c.GetService()]
		if l == nil {
			l = &serviceLag{}
			by[c.GetService()] = l
		}
		l.consumers++
		l.pending += c.GetPending()
		l.ackPending += c.GetAckPending()
		l.ackFloorLag += c.GetAckFloorLag()
		switch {
		case c.GetAppliedLag() < 0:
			l.starting++
		case !c.GetCaughtUp():
			l.behind++
		}
	}
	stores := map[string]*fleetv1.StoreStatus{}
	for _, s := range resp.GetStores() {
		stores[s.GetService()] = s
	}
	fmt.Fprintln(tw, "SERVICE\tCONSUMERS\tPENDING\tACK PENDING\tACK-FLOOR LAG\tSTATE\tSTORE")
	// The all-in-one's services share their partition consumers ("shared"): a row of
	// their own after the services.
	names := append([]string(nil), resp.GetServices()...)
	for _, c := range resp.GetConsumers() {
		if !slices.Contains(names, c.GetService()) {
			names = append(names, c.GetService())
		}
	}
	for _, name := range names {
		l := by[name]
		if l == nil {
			l = &serviceLag{}
		}
		state := "ready"
		switch {
		case l.starting > 0:
			state = "starting (" + strconv.Itoa(l.starting) + ")"
		case l.behind > 0:
			state = "catching up (" + strconv.Itoa(l.behind) + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", name, l.consumers, l.pending, l.ackPending, l.ackFloorLag, state, storeState(stores[name]))
	}
	return tw.Flush()
}

func consumerState(c *fleetv1.ConsumerStatus) string {
	switch {
	case c.GetAppliedLag() < 0:
		return "starting"
	case c.GetCaughtUp():
		return "ready"
	}
	return "catching up"
}

func storeState(s *fleetv1.StoreStatus) string {
	if s == nil {
		return "-"
	}
	st := s.GetBackend()
	switch {
	case !s.GetEpochOk():
		st += " LOST (rebuilding)"
	case s.GetBackend() == "redis":
		st += " epoch ok"
	}
	if s.GetRebuilt() {
		st += ", rebuilt at start"
	}
	return st
}
