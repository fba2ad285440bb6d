package tracking

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/export"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// This file is the gRPC edge: it converts between fleet.v1 messages and the domain, and
// maps domain errors to status codes. Nothing else in the package knows either.

type grpcServer struct {
	fleetv1.UnimplementedTrackingServiceServer
	s *Service
}

var _ fleetv1.TrackingServiceServer = (*grpcServer)(nil)

// Register registers fleet.v1.TrackingService on gs.
func (s *Service) Register(gs *grpc.Server) {
	fleetv1.RegisterTrackingServiceServer(gs, &grpcServer{s: s})
}

// errTable is the edge's whole error mapping (pkg/grpcserver.ErrorTable's rule).
var errTable = grpcserver.ErrorTable{Service: "tracking", Rules: []grpcserver.ErrorRule{
	{Err: ErrNotFound, Code: codes.NotFound},
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrAlreadyExists, Code: codes.AlreadyExists},
}}

// grpcError converts a domain error for the client.
func (s *Service) grpcError(err error) error { return errTable.Status(s.log, err) }

func (g *grpcServer) GetVehicle(ctx context.Context, req *fleetv1.GetVehicleRequest) (*fleetv1.GetVehicleResponse, error) {
	v, err := g.s.Vehicle(ctx, req.GetVehicleId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.GetVehicleResponse{Vehicle: toProtoVehicle(&v)}, nil
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

func (g *grpcServer) ListVehicles(ctx context.Context, req *fleetv1.ListVehiclesRequest) (*fleetv1.ListVehiclesResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "negative page_size")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || telemetry.ValidVehicleID(string(b)) != nil {
			return nil, status.Error(codes.InvalidArgument, "bad page_token")
		}
		after = string(b)
	}
	f := ListFilter{Group: req.GetGroup()}
	for _, st := range req.GetStatuses() {
		f.Statuses = append(f.Statuses, fromProtoStatus(st))
	}
	vs, next, total, err := g.s.List(ctx, f, after, size)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	resp := &fleetv1.ListVehiclesResponse{TotalSize: int32(total)}
	for i := range vs {
		resp.Vehicles = append(resp.Vehicles, toProtoVehicle(&vs[i]))
	}
	if next != "" {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	return resp, nil
}

func (g *grpcServer) WatchVehicles(req *fleetv1.WatchVehiclesRequest, stream grpc.ServerStreamingServer[fleetv1.WatchVehiclesResponse]) error {
	f := WatchFilter{IDs: req.GetVehicleIds(), Groups: req.GetGroups(), LoadTest: req.GetLoadTest()}
	if b := req.GetBounds(); b != nil {
		r := geo.Rect{MinLat: b.GetMinLatitude(), MinLon: b.GetMinLongitude(), MaxLat: b.GetMaxLatitude(), MaxLon: b.GetMaxLongitude()}
		if r.MinLat > r.MaxLat || r.MinLat < -90 || r.MaxLat > 90 || r.MinLon < -180 || r.MaxLon > 180 {
			return status.Error(codes.InvalidArgument, "bad bounds")
		}
		f.Bounds = &r
	}
	ctx := stream.Context()
	// Subscribe before the snapshot so no change between the two is missed.
	w := g.s.hub.subscribe(f)
	defer g.s.hub.unsubscribe(w)
	if err := g.s.snapshot(ctx, f, func(v *Vehicle) error {
		return stream.Send(&fleetv1.WatchVehiclesResponse{Vehicle: toProtoVehicle(v), Snapshot: true})
	}); err != nil {
		return g.s.grpcError(err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.notify:
		}
		updates, lagged := w.take()
		if lagged {
			return grpcserver.Lagged(ctx, "", fmt.Sprintf("the reader fell more than %d vehicles behind; watch again (the new stream's snapshot has every vehicle's current state)", watchBuffer))
		}
		for _, v := range updates {
			if err := stream.Send(&fleetv1.WatchVehiclesResponse{Vehicle: toProtoVehicle(&v)}); err != nil {
				return err
			}
		}
	}
}

// snapshot calls send for every stored vehicle that f matches, ordered by id.
func (s *Service) snapshot(ctx context.Context, f WatchFilter, send func(*Vehicle) error) error {
	if len(f.IDs) > 0 {
		ids := slices.Sorted(slices.Values(f.IDs))
		vs, err := s.store.Vehicles(ctx, slices.Compact(ids))
		if err != nil {
			return err
		}
		for i := range vs {
			if f.Match(&vs[i]) {
				if err := send(&vs[i]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	cur := ""
	for {
		ids, err := s.store.IDs(ctx, cur, listChunk)
		if err != nil || len(ids) == 0 {
			return err
		}
		cur = ids[len(ids)-1]
		vs, err := s.store.Vehicles(ctx, ids)
		if err != nil {
			return err
		}
		for i := range vs {
			if f.Match(&vs[i]) {
				if err := send(&vs[i]); err != nil {
					return err
				}
			}
		}
	}
}

const (
	defaultNearest = 10
	maxNearest     = 1000
)

func (g *grpcServer) SearchNearestVehicles(ctx context.Context, req *fleetv1.SearchNearestVehiclesRequest) (*fleetv1.SearchNearestVehiclesResponse, error) {
	if req.GetPoint() == nil {
		return nil, status.Error(codes.InvalidArgument, "point is required")
	}
	k := int(req.GetLimit())
	switch {
	case k < 0:
		return nil, status.Error(codes.InvalidArgument, "negative limit")
	case k == 0:
		k = defaultNearest
	case k > maxNearest:
		k = maxNearest
	}
	var statuses []Status
	for _, st := range req.GetStatuses() {
		statuses = append(statuses, fromProtoStatus(st))
	}
	p := geo.Point{Lat: req.GetPoint().GetLatitude(), Lon: req.GetPoint().GetLongitude()}
	res, err := g.s.Nearest(ctx, p, k, req.GetMaxRadiusM(), statuses, req.GetGroup())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.SearchNearestVehiclesResponse{}
	for i := range res {
		out.Vehicles = append(out.Vehicles, &fleetv1.NearbyVehicle{Vehicle: toProtoVehicle(&res[i].Vehicle), DistanceM: res[i].DistanceM})
	}
	return out, nil
}

type rangeReq interface {
	GetVehicleId() string
	GetStartTime() *timestamppb.Timestamp
	GetEndTime() *timestamppb.Timestamp
}

func checkTimes(req rangeReq) error {
	if req.GetStartTime() == nil || req.GetEndTime() == nil {
		return status.Error(codes.InvalidArgument, "start_time and end_time are required")
	}
	if req.GetStartTime().CheckValid() != nil || req.GetEndTime().CheckValid() != nil {
		return status.Error(codes.InvalidArgument, "invalid timestamp")
	}
	return nil
}

func (g *grpcServer) GetTrack(ctx context.Context, req *fleetv1.GetTrackRequest) (*fleetv1.GetTrackResponse, error) {
	if err := checkTimes(req); err != nil {
		return nil, err
	}
	fixes, total, err := g.s.Track(ctx, req.GetVehicleId(), req.GetStartTime().AsTime(), req.GetEndTime().AsTime(), req.GetSimplifyToleranceM())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.GetTrackResponse{TotalFixes: int32(total), Fixes: make([]*fleetv1.Fix, len(fixes))}
	for i := range fixes {
		out.Fixes[i] = toProtoFix(&fixes[i])
	}
	return out, nil
}

func (g *grpcServer) ListTrips(ctx context.Context, req *fleetv1.ListTripsRequest) (*fleetv1.ListTripsResponse, error) {
	if err := checkTimes(req); err != nil {
		return nil, err
	}
	trips, _, err := g.s.Trips(ctx, req.GetVehicleId(), req.GetStartTime().AsTime(), req.GetEndTime().AsTime())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.ListTripsResponse{}
	for _, t := range trips {
		out.Trips = append(out.Trips, &fleetv1.Trip{
			StartTime:     timestamppb.New(t.Start.Time),
			EndTime:       timestamppb.New(t.End.Time),
			StartPosition: &fleetv1.LatLng{Latitude: t.Start.Lat, Longitude: t.Start.Lon},
			EndPosition:   &fleetv1.LatLng{Latitude: t.End.Lat, Longitude: t.End.Lon},
			DistanceM:     t.DistanceM,
			Duration:      durationpb.New(t.Duration),
			MaxSpeedKmh:   t.MaxSpeedKmh,
			AvgSpeedKmh:   t.AvgSpeedKmh,
			IdleDuration:  durationpb.New(t.IdleDuration),
		})
	}
	return out, nil
}

func (g *grpcServer) ListStops(ctx context.Context, req *fleetv1.ListStopsRequest) (*fleetv1.ListStopsResponse, error) {
	if err := checkTimes(req); err != nil {
		return nil, err
	}
	_, stops, err := g.s.Trips(ctx, req.GetVehicleId(), req.GetStartTime().AsTime(), req.GetEndTime().AsTime())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.ListStopsResponse{}
	for _, st := range stops {
		out.Stops = append(out.Stops, &fleetv1.Stop{
			StartTime: timestamppb.New(st.Start),
			EndTime:   timestamppb.New(st.End),
			Position:  &fleetv1.LatLng{Latitude: st.Position.Lat, Longitude: st.Position.Lon},
			Duration:  durationpb.New(st.Duration),
			DataGap:   st.DataGap,
		})
	}
	return out, nil
}

func (g *grpcServer) RegisterVehicle(ctx context.Context, req *fleetv1.RegisterVehicleRequest) (*fleetv1.RegisterVehicleResponse, error) {
	v, err := g.s.RegisterVehicle(ctx, Info{ID: req.GetVehicleId(), Name: req.GetName(), Plate: req.GetPlate(),
		Groups: req.GetGroups(), Metadata: req.GetMetadata()})
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.RegisterVehicleResponse{Vehicle: toProtoVehicle(&v)}, nil
}

func (g *grpcServer) UpdateVehicle(ctx context.Context, req *fleetv1.UpdateVehicleRequest) (*fleetv1.UpdateVehicleResponse, error) {
	fields := UpdateFields{Name: true, Plate: true, Groups: true, Metadata: true}
	if paths := req.GetUpdateMask().GetPaths(); len(paths) > 0 {
		fields = UpdateFields{}
		for _, p := range paths {
			switch p {
			case "name":
				fields.Name = true
			case "plate":
				fields.Plate = true
			case "groups":
				fields.Groups = true
			case "metadata":
				fields.Metadata = true
			default:
				return nil, status.Errorf(codes.InvalidArgument, "update_mask: unknown field %q", p)
			}
		}
	}
	v, err := g.s.UpdateVehicle(ctx, Info{ID: req.GetVehicleId(), Name: req.GetName(), Plate: req.GetPlate(),
		Groups: req.GetGroups(), Metadata: req.GetMetadata()}, fields)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.UpdateVehicleResponse{Vehicle: toProtoVehicle(&v)}, nil
}

// Converters.

func toProtoStatus(s Status) fleetv1.VehicleStatus {
	switch s {
	case StatusNeverSeen:
		return fleetv1.VehicleStatus_VEHICLE_STATUS_NEVER_SEEN
	case StatusMoving:
		return fleetv1.VehicleStatus_VEHICLE_STATUS_MOVING
	case StatusIdle:
		return fleetv1.VehicleStatus_VEHICLE_STATUS_IDLE
	case StatusStopped:
		return fleetv1.VehicleStatus_VEHICLE_STATUS_STOPPED
	case StatusOffline:
		return fleetv1.VehicleStatus_VEHICLE_STATUS_OFFLINE
	}
	return fleetv1.VehicleStatus_VEHICLE_STATUS_UNSPECIFIED
}

func fromProtoStatus(s fleetv1.VehicleStatus) Status {
	switch s {
	case fleetv1.VehicleStatus_VEHICLE_STATUS_NEVER_SEEN:
		return StatusNeverSeen
	case fleetv1.VehicleStatus_VEHICLE_STATUS_MOVING:
		return StatusMoving
	case fleetv1.VehicleStatus_VEHICLE_STATUS_IDLE:
		return StatusIdle
	case fleetv1.VehicleStatus_VEHICLE_STATUS_STOPPED:
		return StatusStopped
	case fleetv1.VehicleStatus_VEHICLE_STATUS_OFFLINE:
		return StatusOffline
	}
	return StatusUnknown
}

func ts(t interface{ IsZero() bool }, f func() *timestamppb.Timestamp) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return f()
}

func toProtoFix(f *Fix) *fleetv1.Fix {
	return &fleetv1.Fix{
		Position:   &fleetv1.LatLng{Latitude: f.Lat, Longitude: f.Lon},
		AltitudeM:  f.AltitudeM,
		SpeedKmh:   f.SpeedKmh,
		HeadingDeg: f.HeadingDeg,
		DeviceTime: timestamppb.New(f.Time),
	}
}

func toProtoVehicle(v *Vehicle) *fleetv1.Vehicle {
	out := &fleetv1.Vehicle{
		VehicleId:  v.Info.ID,
		Name:       v.Info.Name,
		Plate:      v.Info.Plate,
		Groups:     slices.Clone(v.Info.Groups),
		Metadata:   maps.Clone(v.Info.Metadata),
		Registered: v.Info.Registered,
	}
	st := v.State
	if st == nil {
		out.State = &fleetv1.VehicleState{Status: fleetv1.VehicleStatus_VEHICLE_STATUS_NEVER_SEEN}
		return out
	}
	ps := &fleetv1.VehicleState{
		Status:         toProtoStatus(st.Status),
		PreviousStatus: toProtoStatus(st.PrevStatus),
		StatusTime:     ts(st.StatusTime, func() *timestamppb.Timestamp { return timestamppb.New(st.StatusTime) }),
		LastSeenTime:   ts(st.LastSeen, func() *timestamppb.Timestamp { return timestamppb.New(st.LastSeen) }),
		LastDeviceTime: ts(st.LastDeviceTime, func() *timestamppb.Timestamp { return timestamppb.New(st.LastDeviceTime) }),
		LastSentTime:   ts(st.LastSentTime, func() *timestamppb.Timestamp { return timestamppb.New(st.LastSentTime) }),
		LastSequence:   st.LastSequence,
		OdometerM:      st.OdometerM,
		OdometerSource: fleetv1.OdometerSource_ODOMETER_SOURCE_GPS,
		GpsOdometerM:   st.GPSOdometerM,
		EngineHours:    st.EngineHours,
		Records:        st.Records,
	}
	if st.OdoFromDevice {
		ps.OdometerSource = fleetv1.OdometerSource_ODOMETER_SOURCE_DEVICE
	}
	if st.HasFix {
		ps.LastFix = toProtoFix(&st.Fix)
	}
	opt := func(f telemetry.Field, v float64) *float64 {
		if st.Fields&f != 0 {
			return &v
		}
		return nil
	}
	if st.Fields&telemetry.HasIgnition != 0 {
		ign := st.Ignition
		ps.Ignition = &ign
	}
	ps.FuelLevelL = opt(telemetry.HasFuelLitres, st.FuelLitres)
	ps.FuelLevelPct = opt(telemetry.HasFuelPercent, st.FuelPercent)
	ps.ExternalVoltageV = opt(telemetry.HasExternalVoltage, st.ExternalVoltage)
	out.State = ps
	return out
}

// String helps log lines and test failures.
func (v Vehicle) String() string {
	return fmt.Sprintf("%s(%s)", v.Info.ID, v.Status())
}

func (g *grpcServer) DeleteVehicle(ctx context.Context, req *fleetv1.DeleteVehicleRequest) (*fleetv1.DeleteVehicleResponse, error) {
	v, err := g.s.DeleteVehicle(ctx, req.GetVehicleId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.DeleteVehicleResponse{Vehicle: toProtoVehicle(&v)}, nil
}

// exportFormats maps the API's formats to pkg/export's.
var exportFormats = map[fleetv1.ExportFormat]export.Format{
	fleetv1.ExportFormat_EXPORT_FORMAT_GPX:     export.GPX,
	fleetv1.ExportFormat_EXPORT_FORMAT_GEOJSON: export.GeoJSON,
	fleetv1.ExportFormat_EXPORT_FORMAT_CSV:     export.CSV,
}

// exportChunkBytes bounds one ExportTrackResponse: well under gRPC's default 4 MiB
// message limit, large enough that the per-message overhead does not matter.
const exportChunkBytes = 64 << 10

func (g *grpcServer) ExportTrack(req *fleetv1.ExportTrackRequest, stream grpc.ServerStreamingServer[fleetv1.ExportTrackResponse]) error {
	if err := checkTimes(req); err != nil {
		return err
	}
	format, ok := exportFormats[req.GetFormat()]
	if !ok {
		return status.Errorf(codes.InvalidArgument, "format %v: want GPX, GEOJSON or CSV", req.GetFormat())
	}
	// Validate before the header goes out, so a bad request is an error, not a document.
	from, to := req.GetStartTime().AsTime(), req.GetEndTime().AsTime()
	if err := checkRange(req.GetVehicleId(), from, to); err != nil {
		return g.s.grpcError(err)
	}
	c := &chunker{send: stream.Send}
	w, err := export.NewTrackWriter(&c.buf, format, req.GetVehicleId())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "format: %v", err)
	}
	// Errors from sending (the client went away) pass as they are; only the store's are
	// domain errors for the table.
	var sendErr error
	err = g.s.TrackPages(stream.Context(), req.GetVehicleId(), from, to, func(fixes []Fix) error {
		for i := range fixes {
			f := &fixes[i]
			if err := w.Write(export.Fix{Time: f.Time, Lat: f.Lat, Lon: f.Lon, AltitudeM: f.AltitudeM, SpeedKmh: f.SpeedKmh, HeadingDeg: f.HeadingDeg}); err != nil {
				return err
			}
			c.fixes++
			if c.buf.Len() >= exportChunkBytes {
				if sendErr = c.flush(); sendErr != nil {
					return sendErr
				}
			}
		}
		// The page goes out before the next is read.
		sendErr = c.flush()
		return sendErr
	})
	switch {
	case sendErr != nil:
		return sendErr
	case err != nil:
		return g.s.grpcError(err)
	}
	if err := w.Close(); err != nil {
		return g.s.grpcError(err)
	}
	return c.flush()
}

// chunker collects the formatted document and sends it in ExportTrackResponses of at
// most exportChunkBytes.
type chunker struct {
	buf   bytes.Buffer
	fixes int32 // fixes written since the last send
	send  func(*fleetv1.ExportTrackResponse) error
}

func (c *chunker) flush() error {
	for c.buf.Len() > 0 || c.fixes > 0 {
		// The message owns a copy: gRPC may still hold it when the buffer is reused.
		data := bytes.Clone(c.buf.Next(exportChunkBytes))
		if err := c.send(&fleetv1.ExportTrackResponse{Data: data, Fixes: c.fixes}); err != nil {
			return err
		}
		c.fixes = 0
	}
	return nil
}
