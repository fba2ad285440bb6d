package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func printJSON(out io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: false, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(b))
	return err
}

func statusName(s fleetv1.VehicleStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "VEHICLE_STATUS_"))
}

func vehicleRow(v *fleetv1.Vehicle) string {
	st := v.GetState()
	pos, speed, seen := "-", "-", "-"
	if f := st.GetLastFix(); f != nil {
		pos = fmt.Sprintf("%.5f,%.5f", f.GetPosition().GetLatitude(), f.GetPosition().GetLongitude())
		speed = strconv.FormatFloat(f.GetSpeedKmh(), 'f', 0, 64)
	}
	if t := st.GetLastSeenTime(); t != nil {
		seen = time.Since(t.AsTime()).Round(time.Second).String() + " ago"
	}
	ign := "-"
	if st.Ignition != nil {
		ign = map[bool]string{true: "on", false: "off"}[st.GetIgnition()]
	}
	name := v.GetName()
	if !v.GetRegistered() {
		name = "(unregistered)"
	}
	fuel := "-"
	if st.FuelLevelL != nil {
		fuel = fmt.Sprintf("%.1f L", st.GetFuelLevelL())
	}
	return strings.Join([]string{v.GetVehicleId(), name, statusName(st.GetStatus()), pos, speed, ign,
		fmt.Sprintf("%.1f", st.GetOdometerM()/1000), fuel, seen}, "\t")
}

const vehicleHeader = "VEHICLE\tNAME\tSTATUS\tPOSITION\tKM/H\tIGN\tODO KM\tFUEL\tLAST SEEN"

func runVehicles(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet("vehicles", flag.ContinueOnError)
	group := fs.String("group", "", "only vehicles in this group")
	status := fs.String("status", "", "only vehicles with this status (moving, idle, stopped, offline, never_seen)")
	limit := fs.Int("limit", 0, "show at most this many (0 = all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &fleetv1.ListVehiclesRequest{Group: *group, PageSize: 1000}
	if *status != "" {
		v, ok := fleetv1.VehicleStatus_value["VEHICLE_STATUS_"+strings.ToUpper(*status)]
		if !ok {
			return fmt.Errorf("unknown status %q", *status)
		}
		req.Statuses = []fleetv1.VehicleStatus{fleetv1.VehicleStatus(v)}
	}
	client := fleetv1.NewTrackingServiceClient(conn)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if !jsonOut {
		fmt.Fprintln(tw, vehicleHeader)
	}
	shown, total := 0, int32(0)
	for {
		resp, err := client.ListVehicles(ctx, req)
		if err != nil {
			return err
		}
		total = resp.GetTotalSize()
		for _, v := range resp.GetVehicles() {
			if *limit > 0 && shown >= *limit {
				break
			}
			shown++
			if jsonOut {
				if err := printJSON(out, v); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintln(tw, vehicleRow(v))
		}
		if resp.GetNextPageToken() == "" || (*limit > 0 && shown >= *limit) {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if !jsonOut {
		tw.Flush()
		fmt.Fprintf(out, "%d of %d vehicles\n", shown, total)
	}
	return nil
}

func runVehicle(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: fleetctl vehicle ID")
	}
	resp, err := fleetv1.NewTrackingServiceClient(conn).GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: args[0]})
	if err != nil {
		return err
	}
	if jsonOut {
		return printJSON(out, resp.GetVehicle())
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp.GetVehicle())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(b))
	return err
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runWatch(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var vehicles, groups multiFlag
	fs.Var(&vehicles, "vehicle", "only this vehicle (repeatable)")
	fs.Var(&groups, "group", "only this group (repeatable)")
	bbox := fs.String("bbox", "", "only vehicles inside minLat,minLon,maxLat,maxLon")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &fleetv1.WatchVehiclesRequest{VehicleIds: vehicles, Groups: groups}
	if *bbox != "" {
		var b [4]float64
		parts := strings.Split(*bbox, ",")
		if len(parts) != 4 {
			return fmt.Errorf("--bbox wants minLat,minLon,maxLat,maxLon")
		}
		for i, p := range parts {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil {
				return fmt.Errorf("--bbox: %w", err)
			}
			b[i] = f
		}
		req.Bounds = &fleetv1.BoundingBox{MinLatitude: b[0], MinLongitude: b[1], MaxLatitude: b[2], MaxLongitude: b[3]}
	}
	stream, err := fleetv1.NewTrackingServiceClient(conn).WatchVehicles(ctx, req)
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if jsonOut {
			if err := printJSON(out, msg); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(out, strings.ReplaceAll(vehicleRow(msg.GetVehicle()), "\t", "  "))
	}
}
