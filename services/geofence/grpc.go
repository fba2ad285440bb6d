package geofence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// This file is the gRPC edge: it converts between fleet.v1 messages and the engine's
// types and maps errors to status codes.

type grpcServer struct {
	fleetv1.UnimplementedGeofenceServiceServer
	s *Service
}

var _ fleetv1.GeofenceServiceServer = (*grpcServer)(nil)

// Register registers fleet.v1.GeofenceService on gs.
func (s *Service) Register(gs *grpc.Server) {
	fleetv1.RegisterGeofenceServiceServer(gs, &grpcServer{s: s})
}

var alertToProto = map[fence.Alert]fleetv1.ZoneAlert{
	fence.AlertEnter:          fleetv1.ZoneAlert_ZONE_ALERT_ENTER,
	fence.AlertExit:           fleetv1.ZoneAlert_ZONE_ALERT_EXIT,
	fence.AlertBoth:           fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT,
	fence.AlertDwell:          fleetv1.ZoneAlert_ZONE_ALERT_DWELL,
	fence.AlertMustStayInside: fleetv1.ZoneAlert_ZONE_ALERT_MUST_STAY_INSIDE,
}

// specFromProto converts a request's zone; it validates only what the conversion needs
// (fence.Compile checks the rest).
func specFromProto(z *fleetv1.Zone) (fence.Spec, error) {
	if z == nil {
		return fence.Spec{}, status.Error(codes.InvalidArgument, "zone is required")
	}
	spec := fence.Spec{
		ID: z.GetZoneId(), Name: z.GetName(), GeoJSON: z.GetGeojson(),
		RadiusM: z.GetRadiusM(), BufferM: z.GetBufferM(),
		Tags: z.GetTags(), Vehicles: z.GetVehicleIds(), Groups: z.GetGroupIds(),
		SpeedLimitKmh: z.GetSpeedLimitKmh(), DwellMinutes: z.GetDwellMinutes(),
	}
	switch z.GetAlert() {
	case fleetv1.ZoneAlert_ZONE_ALERT_UNSPECIFIED:
		spec.Alert = fence.AlertBoth
	default:
		for a, p := range alertToProto {
			if p == z.GetAlert() {
				spec.Alert = a
			}
		}
		if spec.Alert == "" {
			return spec, status.Errorf(codes.InvalidArgument, "invalid zone: unknown alert %d", z.GetAlert())
		}
	}
	if sc := z.GetSchedule(); sc != nil {
		s := &fence.Schedule{Start: sc.GetStartTime(), End: sc.GetEndTime(), TimeZone: sc.GetTimeZone()}
		for _, d := range sc.GetDaysOfWeek() {
			if d < 0 || d > 6 {
				return spec, status.Errorf(codes.InvalidArgument, "invalid zone: bad schedule: day of week %d outside 0 (Sunday)..6 (Saturday)", d)
			}
			s.Days = append(s.Days, time.Weekday(d))
		}
		spec.Schedule = s
	}
	return spec, nil
}

func zoneToProto(z *fence.Zone) *fleetv1.Zone {
	out := &fleetv1.Zone{
		ZoneId: z.ID, Name: z.Name, Geojson: z.GeoJSON, RadiusM: z.RadiusM, BufferM: z.BufferM,
		Tags: z.Tags, VehicleIds: z.Vehicles, GroupIds: z.Groups,
		SpeedLimitKmh: z.SpeedLimitKmh, Alert: alertToProto[z.Alert], DwellMinutes: z.DwellMinutes,
		Shape: z.Shape, Revision: z.Revision,
	}
	if !z.UpdateTime.IsZero() {
		out.UpdateTime = timestamppb.New(z.UpdateTime)
	}
	if sc := z.Schedule; sc != nil {
		ps := &fleetv1.ZoneSchedule{StartTime: sc.Start, EndTime: sc.End, TimeZone: sc.TimeZone}
		for _, d := range sc.Days {
			ps.DaysOfWeek = append(ps.DaysOfWeek, int32(d))
		}
		out.Schedule = ps
	}
	return out
}

func invalid(err error) error {
	if errors.Is(err, fence.ErrInvalidZone) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

func newZoneID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "z-" + hex.EncodeToString(b[:])
}

// compileForWrite validates spec and encodes it for the bucket.
func compileForWrite(spec fence.Spec) (*fence.Zone, []byte, error) {
	spec.UpdateTime = time.Now().UTC()
	z, err := fence.Compile(spec)
	if err != nil {
		return nil, nil, invalid(err)
	}
	data, err := json.Marshal(z.Spec)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "encode zone: %v", err)
	}
	return z, data, nil
}

func (g *grpcServer) CreateZone(ctx context.Context, req *fleetv1.CreateZoneRequest) (*fleetv1.CreateZoneResponse, error) {
	spec, err := specFromProto(req.GetZone())
	if err != nil {
		return nil, err
	}
	if spec.ID == "" {
		spec.ID = newZoneID()
	}
	z, data, err := compileForWrite(spec)
	if err != nil {
		return nil, err
	}
	kv, err := g.s.bucket(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	rev, err := kv.Create(ctx, z.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, status.Errorf(codes.AlreadyExists, "zone %s exists", z.ID)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store zone %s: %v", z.ID, err)
	}
	z.Revision = rev
	g.s.awaitZone(ctx, z.ID, rev, false)
	return &fleetv1.CreateZoneResponse{Zone: zoneToProto(z)}, nil
}

func (g *grpcServer) UpdateZone(ctx context.Context, req *fleetv1.UpdateZoneRequest) (*fleetv1.UpdateZoneResponse, error) {
	spec, err := specFromProto(req.GetZone())
	if err != nil {
		return nil, err
	}
	if err := fence.ValidID(spec.ID); err != nil {
		return nil, invalid(err)
	}
	z, data, err := compileForWrite(spec)
	if err != nil {
		return nil, err
	}
	kv, err := g.s.bucket(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	cur, err := kv.Get(ctx, z.ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, status.Errorf(codes.NotFound, "zone %s not found", z.ID)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read zone %s: %v", z.ID, err)
	}
	expect := cur.Revision()
	if r := req.GetExpectedRevision(); r != 0 {
		if r != expect {
			return nil, status.Errorf(codes.Aborted, "zone %s is at revision %d, not %d", z.ID, expect, r)
		}
	}
	rev, err := kv.Update(ctx, z.ID, data, expect)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return nil, status.Errorf(codes.Aborted, "zone %s changed concurrently; read it and retry", z.ID)
		}
		return nil, status.Errorf(codes.Unavailable, "store zone %s: %v", z.ID, err)
	}
	z.Revision = rev
	g.s.awaitZone(ctx, z.ID, rev, false)
	return &fleetv1.UpdateZoneResponse{Zone: zoneToProto(z)}, nil
}

func (g *grpcServer) DeleteZone(ctx context.Context, req *fleetv1.DeleteZoneRequest) (*fleetv1.DeleteZoneResponse, error) {
	id := req.GetZoneId()
	if err := fence.ValidID(id); err != nil {
		return nil, invalid(err)
	}
	kv, err := g.s.bucket(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if _, err := kv.Get(ctx, id); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, status.Errorf(codes.NotFound, "zone %s not found", id)
	} else if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read zone %s: %v", id, err)
	}
	if err := kv.Delete(ctx, id); err != nil {
		return nil, status.Errorf(codes.Unavailable, "delete zone %s: %v", id, err)
	}
	if err := g.s.st.ForgetZone(ctx, id); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	g.s.awaitZone(ctx, id, 0, true)
	return &fleetv1.DeleteZoneResponse{}, nil
}

func (g *grpcServer) zone(id string) (*fence.Zone, error) {
	if err := fence.ValidID(id); err != nil {
		return nil, invalid(err)
	}
	z, ok := g.s.Zones().Zone(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "zone %s not found", id)
	}
	return z, nil
}

func (g *grpcServer) GetZone(_ context.Context, req *fleetv1.GetZoneRequest) (*fleetv1.GetZoneResponse, error) {
	z, err := g.zone(req.GetZoneId())
	if err != nil {
		return nil, err
	}
	return &fleetv1.GetZoneResponse{Zone: zoneToProto(z)}, nil
}

func tagged(zones []*fence.Zone, tag string) []*fence.Zone {
	if tag == "" {
		return zones
	}
	var out []*fence.Zone
	for _, z := range zones {
		if slices.Contains(z.Tags, tag) {
			out = append(out, z)
		}
	}
	return out
}

func (g *grpcServer) ListZones(_ context.Context, req *fleetv1.ListZonesRequest) (*fleetv1.ListZonesResponse, error) {
	resp := &fleetv1.ListZonesResponse{}
	for _, z := range tagged(g.s.Zones().Zones(), req.GetTag()) {
		resp.Zones = append(resp.Zones, zoneToProto(z))
	}
	return resp, nil
}

func (g *grpcServer) ExportZones(_ context.Context, req *fleetv1.ExportZonesRequest) (*fleetv1.ExportZonesResponse, error) {
	b, err := fence.ExportFeatureCollection(tagged(g.s.Zones().Zones(), req.GetTag()))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "export: %v", err)
	}
	return &fleetv1.ExportZonesResponse{Geojson: string(b)}, nil
}

func (g *grpcServer) VehiclesInZone(ctx context.Context, req *fleetv1.VehiclesInZoneRequest) (*fleetv1.VehiclesInZoneResponse, error) {
	z, err := g.zone(req.GetZoneId())
	if err != nil {
		return nil, err
	}
	vs, err := g.s.st.VehiclesInZone(ctx, z.ID)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	return &fleetv1.VehiclesInZoneResponse{VehicleIds: vs}, nil
}

func (g *grpcServer) ZonesForVehicle(ctx context.Context, req *fleetv1.ZonesForVehicleRequest) (*fleetv1.ZonesForVehicleResponse, error) {
	v := req.GetVehicleId()
	if err := telemetry.ValidVehicleID(v); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "vehicle_id: %v", err)
	}
	states, err := g.s.st.Load(ctx, []string{v})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	ix := g.s.Zones()
	resp := &fleetv1.ZonesForVehicleResponse{}
	for _, m := range states[v].Zones {
		z, ok := ix.Zone(m.ZoneID)
		if !ok {
			continue // deleted since
		}
		resp.Zones = append(resp.Zones, &fleetv1.ZoneMembership{ZoneId: z.ID, ZoneName: z.Name, Since: timestamppb.New(m.Since)})
	}
	return resp, nil
}

func (g *grpcServer) ZonesAtPoint(_ context.Context, req *fleetv1.ZonesAtPointRequest) (*fleetv1.ZonesAtPointResponse, error) {
	p := req.GetPoint()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "point is required")
	}
	r := telemetry.Record{Lat: p.GetLatitude(), Lon: p.GetLongitude(), FixValid: true}
	if err := r.CheckPosition(); err != nil && !errors.Is(err, telemetry.ErrNullIsland) {
		return nil, status.Errorf(codes.InvalidArgument, "point: %v", err)
	}
	resp := &fleetv1.ZonesAtPointResponse{}
	for _, z := range g.s.Zones().At(r.Lat, r.Lon) {
		resp.Zones = append(resp.Zones, zoneToProto(z))
	}
	return resp, nil
}

// eventFilter returns the event-stream subject for the request's vehicle (or all).
func eventFilter(vehicle string) string {
	if vehicle == "" {
		return bus.EventSourceFilter(Source)
	}
	return bus.EventFilter(Source, "*", vehicle)
}

func checkFilters(zone, vehicle string, needOne bool) error {
	if needOne && zone == "" && vehicle == "" {
		return status.Error(codes.InvalidArgument, "zone_id or vehicle_id is required")
	}
	if zone != "" {
		if err := fence.ValidID(zone); err != nil {
			return invalid(err)
		}
	}
	if vehicle != "" {
		if err := telemetry.ValidVehicleID(vehicle); err != nil {
			return status.Errorf(codes.InvalidArgument, "vehicle_id: %v", err)
		}
	}
	return nil
}

func (g *grpcServer) ListZoneEvents(ctx context.Context, req *fleetv1.ListZoneEventsRequest) (*fleetv1.ListZoneEventsResponse, error) {
	zone, vehicle := req.GetZoneId(), req.GetVehicleId()
	if err := checkFilters(zone, vehicle, true); err != nil {
		return nil, err
	}
	to := time.Now()
	if req.GetTo() != nil {
		to = req.GetTo().AsTime()
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > g.s.cfg.MaxListEvents {
		limit = g.s.cfg.MaxListEvents
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{eventFilter(vehicle)}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if req.GetFrom() != nil {
		from := req.GetFrom().AsTime()
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	cons, err := g.s.b.JS.OrderedConsumer(ctx, bus.EventStream, cc)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read events: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read events: %v", err)
	}
	resp := &fleetv1.ListZoneEventsResponse{}
	pending := info.NumPending
	for pending > 0 {
		mb, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "read events: %v", err)
		}
		got := 0
		for m := range mb.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = md.NumPending
			if !md.Timestamp.Before(to) {
				pending = 0
				break
			}
			var e fleetv1.Event
			if err := proto.Unmarshal(m.Data(), &e); err != nil {
				continue
			}
			if zone != "" && e.GetAttributes()["zone_id"] != zone {
				continue
			}
			if len(resp.Events) == limit {
				resp.Truncated = true
				pending = 0
				break
			}
			resp.Events = append(resp.Events, &e)
		}
		if got == 0 {
			break
		}
	}
	return resp, nil
}

// watchBuffer is how many events a WatchZoneEvents stream holds for a slow reader.
const watchBuffer = 1024

func (g *grpcServer) WatchZoneEvents(req *fleetv1.WatchZoneEventsRequest, stream grpc.ServerStreamingServer[fleetv1.WatchZoneEventsResponse]) error {
	zone, vehicle := req.GetZoneId(), req.GetVehicleId()
	if err := checkFilters(zone, vehicle, false); err != nil {
		return err
	}
	// A plain subscription sees every instance's events as they are stored. They wait for
	// the client in a buffer of watchBuffer events; a client further behind than that is
	// told it lagged (with the time of the last event it received, to resume from with
	// ListZoneEvents) instead of the server holding ever more for it.
	ch := make(chan *nats.Msg, watchBuffer)
	lagged := make(chan struct{})
	var once sync.Once
	var self atomic.Pointer[nats.Subscription]
	sub, err := g.s.b.NC.Subscribe(eventFilter(vehicle), func(m *nats.Msg) {
		select {
		case ch <- m:
		default:
			once.Do(func() {
				close(lagged)
				if s := self.Load(); s != nil {
					_ = s.Unsubscribe() // nothing more is delivered for this reader
				}
			})
		}
	})
	if err != nil {
		return status.Errorf(codes.Unavailable, "watch: %v", err)
	}
	self.Store(sub)
	defer func() { _ = sub.Unsubscribe() }()
	if err := g.s.b.NC.FlushTimeout(5 * time.Second); err != nil {
		return status.Errorf(codes.Unavailable, "watch: %v", err)
	}
	// Tell the client the subscription is live (headers), so it knows later events reach it.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	resume := time.Now()
	for {
		select {
		case <-lagged: // before anything still buffered: the reader is told at once
			_ = sub.Unsubscribe()
			cursor := resume.UTC().Format(time.RFC3339Nano)
			return grpcserver.Lagged(stream.Context(), cursor,
				"the reader fell more than "+strconv.Itoa(watchBuffer)+" events behind; call ListZoneEvents with from = the trailer's "+grpcserver.ResumeCursorKey+" ("+cursor+"), then watch again")
		default:
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-lagged:
			continue
		case m := <-ch:
			var e fleetv1.Event
			if err := proto.Unmarshal(m.Data, &e); err != nil {
				continue
			}
			if zone != "" && e.GetAttributes()["zone_id"] != zone {
				continue
			}
			if err := stream.Send(&fleetv1.WatchZoneEventsResponse{Event: &e}); err != nil {
				return err
			}
			if e.GetPublishTime() != nil {
				resume = e.GetPublishTime().AsTime()
			}
		}
	}
}
