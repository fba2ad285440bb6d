package maintenance

import (
	"context"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// This file is the gRPC edge: fleet.v1.MaintenanceService over the domain operations.

type grpcServer struct {
	fleetv1.UnimplementedMaintenanceServiceServer
	s *Service
}

var _ fleetv1.MaintenanceServiceServer = (*grpcServer)(nil)

// Register registers fleet.v1.MaintenanceService on gs.
func (s *Service) Register(gs *grpc.Server) {
	fleetv1.RegisterMaintenanceServiceServer(gs, &grpcServer{s: s})
}

// errTable is the edge's whole error mapping (pkg/grpcserver.ErrorTable's rule).
var errTable = grpcserver.ErrorTable{Service: Source, Rules: []grpcserver.ErrorRule{
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrNotFound, Code: codes.NotFound},
	{Err: ErrGroupsFromRegistry, Code: codes.FailedPrecondition},
}}

// grpcError converts a domain error for the client.
func (s *Service) grpcError(err error) error { return errTable.Status(s.log, err) }

func needVehicle(id string) error {
	if err := telemetry.ValidVehicleID(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "vehicle_id %q: %v", id, err)
	}
	return nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) (time.Time, error) {
	if t == nil {
		return time.Time{}, nil
	}
	if err := t.CheckValid(); err != nil {
		return time.Time{}, status.Errorf(codes.InvalidArgument, "timestamp: %v", err)
	}
	return t.AsTime(), nil
}

func opt(v float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	return &v
}

func optBool(v, ok bool) *bool {
	if !ok {
		return nil
	}
	return &v
}

func planToProto(p Plan) *fleetv1.MaintenancePlan {
	return &fleetv1.MaintenancePlan{
		PlanId: p.ID, Name: p.Name, VehicleId: p.VehicleID, GroupId: p.GroupID,
		EveryKm: p.EveryKm, EveryEngineHours: p.EveryHours, EveryDays: p.EveryDays,
		DueSoonKm: p.SoonKm, DueSoonEngineHours: p.SoonHours, DueSoonDays: p.SoonDays,
		Items: p.Items, CreateTime: ts(p.Created),
	}
}

func planFromProto(p *fleetv1.MaintenancePlan) (Plan, error) {
	created, err := fromTS(p.GetCreateTime())
	if err != nil {
		return Plan{}, err
	}
	return Plan{
		ID: p.GetPlanId(), Name: p.GetName(), VehicleID: p.GetVehicleId(), GroupID: p.GetGroupId(),
		EveryKm: p.GetEveryKm(), EveryHours: p.GetEveryEngineHours(), EveryDays: p.GetEveryDays(),
		SoonKm: p.GetDueSoonKm(), SoonHours: p.GetDueSoonEngineHours(), SoonDays: p.GetDueSoonDays(),
		Items: p.GetItems(), Created: created,
	}, nil
}

var planStates = map[PlanState]fleetv1.PlanState{
	StateOK: fleetv1.PlanState_PLAN_STATE_OK, StateDueSoon: fleetv1.PlanState_PLAN_STATE_DUE_SOON,
	StateOverdue: fleetv1.PlanState_PLAN_STATE_OVERDUE,
}

func statusToProto(s Status) *fleetv1.PlanStatus {
	out := &fleetv1.PlanStatus{
		PlanId: s.PlanID, PlanName: s.PlanName, VehicleId: s.VehicleID, State: planStates[s.State],
		RemainingKm: opt(s.RemainingKm, s.HasKm), RemainingEngineHours: opt(s.RemainingHours, s.HasHours),
		RemainingDays: opt(s.RemainingDays, s.HasDays), DueOdometerKm: opt(s.DueKm, s.HasKm),
		DueEngineHours: opt(s.DueHours, s.HasHours), LastServiceTime: ts(s.LastService),
		Urgency: s.Urgency,
	}
	if s.HasDays {
		out.DueTime = ts(s.DueTime)
	}
	return out
}

func serviceToProto(e ServiceEntry) *fleetv1.ServiceRecord {
	out := &fleetv1.ServiceRecord{
		ServiceId: e.ID, VehicleId: e.VehicleID, PlanId: e.PlanID, ServiceTime: ts(e.Time),
		OdometerKm: opt(e.OdometerKm, e.HasOdometer), EngineHours: opt(e.EngineHours, e.HasHours),
		Notes: e.Notes, Cost: e.Cost, Currency: e.Currency,
	}
	for _, it := range e.Items {
		out.Items = append(out.Items, &fleetv1.ServiceItem{Name: it.Name, Cost: it.Cost, Notes: it.Notes})
	}
	return out
}

var severities = map[Severity]fleetv1.FaultSeverity{
	SeverityLow: fleetv1.FaultSeverity_FAULT_SEVERITY_LOW, SeverityMedium: fleetv1.FaultSeverity_FAULT_SEVERITY_MEDIUM,
	SeverityHigh: fleetv1.FaultSeverity_FAULT_SEVERITY_HIGH, SeverityCritical: fleetv1.FaultSeverity_FAULT_SEVERITY_CRITICAL,
}

func faultToProto(f FaultCode) *fleetv1.FaultCode {
	return &fleetv1.FaultCode{
		Code: f.Code, Description: f.Description, Severity: severities[f.Severity], Active: f.Active,
		FirstSeenTime: ts(f.FirstSeen), LastSeenTime: ts(f.LastSeen), ClearedTime: ts(f.Cleared),
		Occurrences: int32(min(f.Occurrences, math.MaxInt32)), StandardFormat: f.Standard,
	}
}

func (g *grpcServer) CreatePlan(ctx context.Context, req *fleetv1.CreatePlanRequest) (*fleetv1.CreatePlanResponse, error) {
	if req.GetPlan() == nil {
		return nil, status.Error(codes.InvalidArgument, "plan missing")
	}
	p, err := planFromProto(req.GetPlan())
	if err != nil {
		return nil, err
	}
	p, err = g.s.CreatePlan(ctx, p)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.CreatePlanResponse{Plan: planToProto(p)}, nil
}

func (g *grpcServer) ListPlans(ctx context.Context, req *fleetv1.ListPlansRequest) (*fleetv1.ListPlansResponse, error) {
	plans, err := g.s.ListPlans(ctx, req.GetVehicleId(), req.GetGroupId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.ListPlansResponse{}
	for _, p := range plans {
		out.Plans = append(out.Plans, planToProto(p))
	}
	return out, nil
}

func (g *grpcServer) DeletePlan(ctx context.Context, req *fleetv1.DeletePlanRequest) (*fleetv1.DeletePlanResponse, error) {
	if req.GetPlanId() == "" {
		return nil, status.Error(codes.InvalidArgument, "plan_id missing")
	}
	if err := g.s.DeletePlan(ctx, req.GetPlanId()); err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.DeletePlanResponse{}, nil
}

func (g *grpcServer) SetGroup(ctx context.Context, req *fleetv1.SetGroupRequest) (*fleetv1.SetGroupResponse, error) {
	grp := Group{ID: req.GetGroupId(), Vehicles: req.GetVehicleIds()}
	if err := g.s.SetGroup(ctx, grp); err != nil {
		return nil, g.s.grpcError(err)
	}
	stored, err := g.s.st.GetGroup(ctx, grp.ID)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.SetGroupResponse{Members: int32(len(stored.Vehicles))}, nil
}

func (g *grpcServer) RecordService(ctx context.Context, req *fleetv1.RecordServiceRequest) (*fleetv1.RecordServiceResponse, error) {
	r := req.GetService()
	if r == nil {
		return nil, status.Error(codes.InvalidArgument, "service missing")
	}
	if err := needVehicle(r.GetVehicleId()); err != nil {
		return nil, err
	}
	t, err := fromTS(r.GetServiceTime())
	if err != nil {
		return nil, err
	}
	e := ServiceEntry{
		ID: r.GetServiceId(), VehicleID: r.GetVehicleId(), PlanID: r.GetPlanId(), Time: t,
		OdometerKm: r.GetOdometerKm(), HasOdometer: r.OdometerKm != nil,
		EngineHours: r.GetEngineHours(), HasHours: r.EngineHours != nil,
		Notes: r.GetNotes(), Cost: r.GetCost(), Currency: r.GetCurrency(),
	}
	for _, it := range r.GetItems() {
		e.Items = append(e.Items, ServiceItem{Name: it.GetName(), Cost: it.GetCost(), Notes: it.GetNotes()})
	}
	e, st, err := g.s.RecordService(ctx, e)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.RecordServiceResponse{Service: serviceToProto(e)}
	if st != nil {
		out.Status = statusToProto(*st)
	}
	return out, nil
}

func (g *grpcServer) ListServiceLog(ctx context.Context, req *fleetv1.ListServiceLogRequest) (*fleetv1.ListServiceLogResponse, error) {
	if err := needVehicle(req.GetVehicleId()); err != nil {
		return nil, err
	}
	entries, err := g.s.ListServiceLog(ctx, req.GetVehicleId(), req.GetPlanId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.ListServiceLogResponse{}
	for _, e := range entries {
		out.Services = append(out.Services, serviceToProto(e))
		out.TotalCost += e.Cost
	}
	return out, nil
}

func (g *grpcServer) ListDue(ctx context.Context, req *fleetv1.ListDueRequest) (*fleetv1.ListDueResponse, error) {
	q := DueQuery{
		HorizonKm: req.GetHorizonKm(), HorizonHours: req.GetHorizonEngineHours(), HorizonDays: req.GetHorizonDays(),
		Vehicle: req.GetVehicleId(), Group: req.GetGroupId(), Limit: int(req.GetLimit()),
	}
	for _, st := range req.GetStates() {
		for k, v := range planStates {
			if v == st {
				q.States = append(q.States, k)
			}
		}
	}
	items, err := g.s.ListDue(ctx, q)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.ListDueResponse{}
	for _, it := range items {
		out.Items = append(out.Items, statusToProto(it))
	}
	return out, nil
}

func (g *grpcServer) GetVehicleHealth(ctx context.Context, req *fleetv1.GetVehicleHealthRequest) (*fleetv1.GetVehicleHealthResponse, error) {
	if err := needVehicle(req.GetVehicleId()); err != nil {
		return nil, err
	}
	h, err := g.s.VehicleHealth(ctx, req.GetVehicleId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	st := h.State
	vh := &fleetv1.VehicleHealth{
		VehicleId: st.VehicleID, OdometerM: st.OdometerM, EngineHours: st.EngineHours,
		LastRecordTime: ts(st.LastTime), Mil: optBool(st.MIL, st.HasMIL),
		FuelLevelL:       opt(st.Fuel.Smoothed, st.Fuel.HasLevel),
		ExternalVoltageV: opt(st.ExternalV, st.HasExternalV), BatteryVoltageV: opt(st.BatteryV, st.HasBatteryV),
		CoolantTempC: opt(st.CoolantC, st.HasCoolant), Rpm: opt(st.RPM, st.HasRPM),
		Ignition: optBool(st.Ignition, st.HasIgnition), ActiveAlerts: h.Alerts,
	}
	for _, p := range h.Plans {
		vh.Plans = append(vh.Plans, statusToProto(p))
	}
	for _, f := range h.Faults {
		vh.ActiveFaultCodes = append(vh.ActiveFaultCodes, f.Code)
		vh.Faults = append(vh.Faults, faultToProto(f))
	}
	return &fleetv1.GetVehicleHealthResponse{Health: vh}, nil
}

func (g *grpcServer) ListFaultCodes(ctx context.Context, req *fleetv1.ListFaultCodesRequest) (*fleetv1.ListFaultCodesResponse, error) {
	if err := needVehicle(req.GetVehicleId()); err != nil {
		return nil, err
	}
	fs, err := g.s.FaultCodes(ctx, req.GetVehicleId(), req.GetActiveOnly())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.ListFaultCodesResponse{}
	for _, f := range fs {
		out.Faults = append(out.Faults, faultToProto(f))
	}
	return out, nil
}

func (g *grpcServer) SetFuelProfile(ctx context.Context, req *fleetv1.SetFuelProfileRequest) (*fleetv1.SetFuelProfileResponse, error) {
	pp := req.GetProfile()
	if pp == nil {
		return nil, status.Error(codes.InvalidArgument, "profile missing")
	}
	if err := needVehicle(pp.GetVehicleId()); err != nil {
		return nil, err
	}
	p := fuel.Profile{CapacityL: pp.GetTankCapacityL(), SensorKey: pp.GetSensorIoKey(), StepL: pp.GetSensorStepL(), LagSec: pp.GetSensorLagS()}
	for _, c := range pp.GetCalibration() {
		p.Calibration = append(p.Calibration, fuel.CalPoint{Raw: c.GetRaw(), Litres: c.GetLitres()})
	}
	p, err := g.s.SetFuelProfile(ctx, pp.GetVehicleId(), p)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.FuelProfile{VehicleId: pp.GetVehicleId(), TankCapacityL: p.CapacityL, SensorIoKey: p.SensorKey, SensorStepL: p.StepL, SensorLagS: p.LagSec}
	for _, c := range p.Calibration {
		out.Calibration = append(out.Calibration, &fleetv1.CalibrationPoint{Raw: c.Raw, Litres: c.Litres})
	}
	return &fleetv1.SetFuelProfileResponse{Profile: out}, nil
}

func fuelLine(e FuelEvent) *fleetv1.FuelEventLine {
	l := &fleetv1.FuelEventLine{
		StartTime: ts(e.Start), EndTime: ts(e.End), Litres: e.Litres,
		LevelBeforeL: e.Before, LevelAfterL: e.After, EventId: e.ID,
	}
	if e.Confidence > 0 {
		l.Confidence = &e.Confidence
	}
	switch e.Kind {
	case fuel.KindRefuel:
		l.Kind = fleetv1.FuelEventKind_FUEL_EVENT_KIND_REFUEL
	case fuel.KindDrain:
		l.Kind = fleetv1.FuelEventKind_FUEL_EVENT_KIND_DRAIN
	}
	if e.HasPosition {
		l.Position = &fleetv1.LatLng{Latitude: e.Lat, Longitude: e.Lon}
	}
	return l
}

func reportToProto(r FuelReport) *fleetv1.FuelReport {
	out := &fleetv1.FuelReport{
		VehicleId: r.VehicleID, StartLevelL: r.StartL, EndLevelL: r.EndL, RefuelledL: r.RefuelledL,
		DrainedL: r.DrainedL, ConsumedL: r.ConsumedL, DistanceKm: r.DistanceKm, LitresPer_100Km: r.Per100Km,
		IdleLitres: r.IdleL, IdleHours: r.IdleHours, HasData: r.HasData,
	}
	for _, e := range r.Refuels {
		out.Refuels = append(out.Refuels, fuelLine(e))
	}
	for _, e := range r.Drains {
		out.Drains = append(out.Drains, fuelLine(e))
	}
	return out
}

func (g *grpcServer) GetFuelReport(ctx context.Context, req *fleetv1.GetFuelReportRequest) (*fleetv1.GetFuelReportResponse, error) {
	from, err := fromTS(req.GetFromTime())
	if err != nil {
		return nil, err
	}
	to, err := fromTS(req.GetToTime())
	if err != nil {
		return nil, err
	}
	if req.GetFromTime() == nil {
		return nil, status.Error(codes.InvalidArgument, "from_time missing")
	}
	reports, total, err := g.s.FuelReports(ctx, req.GetVehicleId(), req.GetGroupId(), from, to)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	out := &fleetv1.GetFuelReportResponse{Total: reportToProto(total)}
	for _, r := range reports {
		out.Reports = append(out.Reports, reportToProto(r))
	}
	return out, nil
}
