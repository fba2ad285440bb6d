package dispatch

// The gRPC edge: AlertService and CommandService, converting between fleet.v1 messages
// and the domain types, and mapping domain errors to status codes.

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// Register registers AlertService and CommandService on gs.
func (s *Service) Register(gs *grpc.Server) {
	fleetv1.RegisterAlertServiceServer(gs, &alertServer{s: s})
	fleetv1.RegisterCommandServiceServer(gs, &commandServer{s: s})
}

type alertServer struct {
	fleetv1.UnimplementedAlertServiceServer
	s *Service
}

type commandServer struct {
	fleetv1.UnimplementedCommandServiceServer
	s *Service
}

var (
	_ fleetv1.AlertServiceServer   = (*alertServer)(nil)
	_ fleetv1.CommandServiceServer = (*commandServer)(nil)
)

// errTable is the edge's whole error mapping (pkg/grpcserver.ErrorTable's rule).
var errTable = grpcserver.ErrorTable{Service: "dispatch", Rules: []grpcserver.ErrorRule{
	{Err: ErrNotFound, Code: codes.NotFound},
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrBadTransition, Code: codes.FailedPrecondition},
	{Err: ErrConflict, Code: codes.Aborted},
}}

// grpcError converts a domain error for the client.
func (s *Service) grpcError(err error) error { return errTable.Status(s.log, err) }

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tm(t *timestamppb.Timestamp) time.Time {
	if t == nil || t.CheckValid() != nil {
		return time.Time{}
	}
	return t.AsTime()
}

func pageSize(n int32) int {
	switch {
	case n <= 0:
		return defaultPageSize
	case n > maxPageSize:
		return maxPageSize
	}
	return int(n)
}

// AlertToProto converts an alert to its wire form.
func AlertToProto(a *Alert) *fleetv1.Alert {
	pa := &fleetv1.Alert{
		AlertId: a.ID, VehicleId: a.Vehicle, Kind: a.Kind,
		Severity: fleetv1.AlertSeverity(a.Severity), State: fleetv1.AlertState(a.State),
		IncidentKey: a.IncidentKey, Sources: a.Sources, Message: a.Message,
		FirstTime: ts(a.FirstTime), LastTime: ts(a.LastTime), CreateTime: ts(a.CreateTime),
		Occurrences: uint32(a.Occurrences), SpeedKmh: a.SpeedKmh, Attributes: a.Attributes,
		AcknowledgedBy: a.AckBy, AcknowledgeTime: ts(a.AckTime), AcknowledgeNote: a.AckNote,
		ResolvedBy: a.ResolvedBy, ResolveTime: ts(a.ResolveTime), ResolveNote: a.ResolveNote,
		Confidence: fleetv1.AlertConfidence(a.Confidence),
	}
	for _, e := range a.Evidence {
		pa.Evidence = append(pa.Evidence, &fleetv1.AlertEvidence{Kind: e.Kind, Detail: e.Detail, Time: ts(e.Time)})
	}
	for _, d := range a.Deliveries {
		pa.Deliveries = append(pa.Deliveries, &fleetv1.AlertDelivery{
			Sink: d.Sink, State: fleetv1.AlertDeliveryState(d.State), Attempts: uint32(d.Attempts),
			LastAttemptTime: ts(d.LastAttempt), LastStatusCode: int32(d.LastStatus), LastError: d.LastError,
			DeliveredTime: ts(d.DeliveredTime),
		})
	}
	if a.HasPosition {
		pa.Position = &fleetv1.LatLng{Latitude: a.Lat, Longitude: a.Lon}
	}
	return pa
}

// CommandToProto converts a command to its wire form.
func CommandToProto(c *Command) *fleetv1.Command {
	pc := &fleetv1.Command{
		CommandId: c.ID, VehicleId: c.Vehicle, Kind: fleetv1.CommandKind(c.Kind), Params: c.Params,
		State: fleetv1.CommandState(c.State), StateReason: c.Reason, IssuedBy: c.IssuedBy,
		IssueTime: ts(c.IssueTime), ExpireTime: ts(c.ExpireTime), SentTime: ts(c.SentTime),
		UpdateTime: ts(c.UpdateTime),
	}
	for _, h := range c.History {
		pc.History = append(pc.History, &fleetv1.CommandTransition{
			State: fleetv1.CommandState(h.State), Time: ts(h.Time), Detail: h.Detail,
		})
	}
	return pc
}

func (g *alertServer) ListAlerts(ctx context.Context, req *fleetv1.ListAlertsRequest) (*fleetv1.ListAlertsResponse, error) {
	f := AlertFilter{
		Vehicle: req.GetVehicleId(), Kind: req.GetKind(),
		MinSeverity: Severity(req.GetMinSeverity()), State: AlertState(req.GetState()),
		From: tm(req.GetStartTime()), To: tm(req.GetEndTime()),
		Ascending: req.GetOldestFirst(), Limit: pageSize(req.GetPageSize()),
	}
	if auth.FromContext(ctx).Scoped() {
		// Pages and the total count only the caller's vehicles.
		f.Visible = func(v string) bool { return auth.VehicleVisible(ctx, v) }
	}
	if tok := req.GetPageToken(); tok != "" {
		id, err := strconv.ParseUint(tok, 10, 64)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "page_token %q is not one this service returned", tok)
		}
		if f.Ascending {
			f.AfterID = id
		} else {
			f.BeforeID = id
		}
	}
	list, err := g.s.ListAlerts(ctx, f)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	total, err := g.s.CountAlerts(ctx, f)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	resp := &fleetv1.ListAlertsResponse{Alerts: make([]*fleetv1.Alert, len(list)), TotalSize: int64(total)}
	for i := range list {
		resp.Alerts[i] = AlertToProto(&list[i])
	}
	if len(list) == f.Limit {
		resp.NextPageToken = strconv.FormatUint(list[len(list)-1].ID, 10)
	}
	return resp, nil
}

func (g *alertServer) WatchAlerts(req *fleetv1.WatchAlertsRequest, stream grpc.ServerStreamingServer[fleetv1.WatchAlertsResponse]) error {
	var after *uint64
	if req.AfterAlertId != nil {
		v := req.GetAfterAlertId()
		after = &v
	}
	f := AlertFilter{Vehicle: req.GetVehicleId(), MinSeverity: Severity(req.GetMinSeverity())}
	// Headers go out once the starting point is fixed, so a client that waits for them
	// (stream.Header()) knows every alert raised from then on will reach it.
	ready := func() error { return stream.SendHeader(metadata.MD{}) }
	err := g.s.WatchAlerts(stream.Context(), after, f, ready, func(a Alert) error {
		return stream.Send(&fleetv1.WatchAlertsResponse{Alert: AlertToProto(&a)})
	})
	if err != nil && stream.Context().Err() == nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return g.s.grpcError(err)
	}
	return nil
}

func (g *alertServer) AcknowledgeAlert(ctx context.Context, req *fleetv1.AcknowledgeAlertRequest) (*fleetv1.AcknowledgeAlertResponse, error) {
	if err := g.alertInScope(ctx, req.GetAlertId()); err != nil {
		return nil, err
	}
	a, err := g.s.SetAlertState(ctx, req.GetAlertId(), AlertAcknowledged, req.GetWho(), req.GetNote())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.AcknowledgeAlertResponse{Alert: AlertToProto(&a)}, nil
}

func (g *alertServer) ResolveAlert(ctx context.Context, req *fleetv1.ResolveAlertRequest) (*fleetv1.ResolveAlertResponse, error) {
	if err := g.alertInScope(ctx, req.GetAlertId()); err != nil {
		return nil, err
	}
	a, err := g.s.SetAlertState(ctx, req.GetAlertId(), AlertResolved, req.GetWho(), req.GetNote())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.ResolveAlertResponse{Alert: AlertToProto(&a)}, nil
}

func (g *commandServer) SendCommand(ctx context.Context, req *fleetv1.SendCommandRequest) (*fleetv1.SendCommandResponse, error) {
	var ttl time.Duration
	if d := req.GetTtl(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ttl: %v", err)
		}
		ttl = d.AsDuration()
		if ttl <= 0 {
			return nil, status.Error(codes.InvalidArgument, "ttl must be positive")
		}
	}
	c, err := g.s.SendCommand(ctx, req.GetVehicleId(), CommandKind(req.GetKind()), req.GetParams(), req.GetWho(), ttl)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.SendCommandResponse{Command: CommandToProto(&c)}, nil
}

func (g *commandServer) GetCommand(ctx context.Context, req *fleetv1.GetCommandRequest) (*fleetv1.GetCommandResponse, error) {
	if req.GetCommandId() == "" {
		return nil, status.Error(codes.InvalidArgument, "command_id is required")
	}
	c, err := g.s.GetCommand(ctx, req.GetCommandId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.GetCommandResponse{Command: CommandToProto(&c)}, nil
}

func (g *commandServer) CancelCommand(ctx context.Context, req *fleetv1.CancelCommandRequest) (*fleetv1.CancelCommandResponse, error) {
	if req.GetCommandId() == "" {
		return nil, status.Error(codes.InvalidArgument, "command_id is required")
	}
	// The role and scope depend on the stored command: read it before any change.
	if err := g.commandAllowed(ctx, req.GetCommandId()); err != nil {
		return nil, err
	}
	c, err := g.s.CancelCommand(ctx, req.GetCommandId(), req.GetWho(), req.GetNote())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.CancelCommandResponse{Command: CommandToProto(&c)}, nil
}

func (g *commandServer) ListCommands(ctx context.Context, req *fleetv1.ListCommandsRequest) (*fleetv1.ListCommandsResponse, error) {
	list, err := g.s.ListCommands(ctx, CommandFilter{
		Vehicle: req.GetVehicleId(), State: CommandState(req.GetState()), Limit: pageSize(req.GetPageSize()),
	})
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	resp := &fleetv1.ListCommandsResponse{Commands: make([]*fleetv1.Command, len(list))}
	for i := range list {
		resp.Commands[i] = CommandToProto(&list[i])
	}
	return resp, nil
}

// bulkFilter is the filter of a bulk request. Empty filters without all select nothing:
// a forgotten argument must not resolve the whole feed.
func bulkFilter(ctx context.Context, all bool, vehicle, kind string, sev fleetv1.AlertSeverity, state fleetv1.AlertState, start, end *timestamppb.Timestamp) (AlertFilter, error) {
	f := AlertFilter{Vehicle: vehicle, Kind: kind, MinSeverity: Severity(sev), State: AlertState(state), From: tm(start), To: tm(end)}
	if !all && f.Vehicle == "" && f.Kind == "" && f.MinSeverity == 0 && f.State == 0 && f.From.IsZero() && f.To.IsZero() {
		return f, status.Error(codes.InvalidArgument, "give alert_ids, a filter, or all")
	}
	if auth.FromContext(ctx).Scoped() {
		f.Visible = func(v string) bool { return auth.VehicleVisible(ctx, v) }
	}
	return f, nil
}

// bulkChange runs a bulk change and audits each alert as its single-alert method.
func (g *alertServer) bulkChange(ctx context.Context, ids []uint64, hasFilter bool, f AlertFilter, to AlertState, who, note string) ([]uint64, []*fleetv1.AlertChangeFailure, int64, error) {
	if len(ids) > 0 && hasFilter {
		return nil, nil, 0, status.Error(codes.InvalidArgument, "alert_ids and filters are exclusive")
	}
	var failures []*fleetv1.AlertChangeFailure
	var allowed []uint64
	for _, id := range ids {
		// A scoped caller's unseen alert is not found, exactly as for a single change.
		if err := g.alertInScope(ctx, id); err != nil {
			st := status.Convert(err)
			failures = append(failures, &fleetv1.AlertChangeFailure{AlertId: id, Code: st.Code().String(), Message: st.Message()})
			continue
		}
		allowed = append(allowed, id)
	}
	if len(ids) > 0 && len(allowed) == 0 {
		return nil, failures, 0, nil
	}
	method := "/fleet.v1.AlertService/AcknowledgeAlert"
	single := func(id uint64) proto.Message {
		return &fleetv1.AcknowledgeAlertRequest{AlertId: id, Who: who, Note: note}
	}
	if to == AlertResolved {
		method = "/fleet.v1.AlertService/ResolveAlert"
		single = func(id uint64) proto.Message { return &fleetv1.ResolveAlertRequest{AlertId: id, Who: who, Note: note} }
	}
	res, err := g.s.SetAlertsState(ctx, allowed, f, to, who, note, func(id uint64, err error) {
		if err != nil {
			err = g.s.grpcError(err)
		}
		auth.Audit(ctx, method, single(id), err)
	})
	if err != nil && len(res.Changed) == 0 {
		return nil, nil, 0, g.s.grpcError(err)
	}
	for _, fl := range res.Failed {
		st := status.Convert(g.s.grpcError(fl.Err))
		failures = append(failures, &fleetv1.AlertChangeFailure{AlertId: fl.ID, Code: st.Code().String(), Message: st.Message()})
	}
	return res.Changed, failures, int64(res.Remaining), nil
}

func (g *alertServer) AcknowledgeAlerts(ctx context.Context, req *fleetv1.AcknowledgeAlertsRequest) (*fleetv1.AcknowledgeAlertsResponse, error) {
	hasFilter := req.GetAll() || req.GetVehicleId() != "" || req.GetKind() != "" || req.GetMinSeverity() != 0 || req.GetStartTime() != nil || req.GetEndTime() != nil
	var f AlertFilter
	if len(req.GetAlertIds()) == 0 {
		var err error
		if f, err = bulkFilter(ctx, req.GetAll(), req.GetVehicleId(), req.GetKind(), req.GetMinSeverity(), 0, req.GetStartTime(), req.GetEndTime()); err != nil {
			return nil, err
		}
	}
	changed, failures, remaining, err := g.bulkChange(ctx, req.GetAlertIds(), hasFilter, f, AlertAcknowledged, req.GetWho(), req.GetNote())
	if err != nil {
		return nil, err
	}
	return &fleetv1.AcknowledgeAlertsResponse{ChangedAlertIds: changed, Failures: failures, RemainingSize: remaining}, nil
}

func (g *alertServer) ResolveAlerts(ctx context.Context, req *fleetv1.ResolveAlertsRequest) (*fleetv1.ResolveAlertsResponse, error) {
	hasFilter := req.GetAll() || req.GetVehicleId() != "" || req.GetKind() != "" || req.GetMinSeverity() != 0 || req.GetState() != 0 || req.GetStartTime() != nil || req.GetEndTime() != nil
	var f AlertFilter
	if len(req.GetAlertIds()) == 0 {
		var err error
		if f, err = bulkFilter(ctx, req.GetAll(), req.GetVehicleId(), req.GetKind(), req.GetMinSeverity(), req.GetState(), req.GetStartTime(), req.GetEndTime()); err != nil {
			return nil, err
		}
	}
	changed, failures, remaining, err := g.bulkChange(ctx, req.GetAlertIds(), hasFilter, f, AlertResolved, req.GetWho(), req.GetNote())
	if err != nil {
		return nil, err
	}
	return &fleetv1.ResolveAlertsResponse{ChangedAlertIds: changed, Failures: failures, RemainingSize: remaining}, nil
}
