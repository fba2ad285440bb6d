package devices

// The gRPC edge: fleet.v1.DeviceService, converting between fleet.v1 messages and the
// registry's types, and mapping errors to status codes through one table.

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// Register registers DeviceService on gs.
func (s *Service) Register(gs *grpc.Server) {
	fleetv1.RegisterDeviceServiceServer(gs, &server{s: s})
}

type server struct {
	fleetv1.UnimplementedDeviceServiceServer
	s *Service
}

var _ fleetv1.DeviceServiceServer = (*server)(nil)

// errTable is the edge's whole error mapping (pkg/grpcserver.ErrorTable's rule). A
// registry outage is marked by the service (outage) and answers Unavailable.
var errTable = grpcserver.ErrorTable{Service: Name, Rules: []grpcserver.ErrorRule{
	{Err: natsauth.ErrDeviceNotFound, Code: codes.NotFound},
	{Err: natsauth.ErrDeviceExists, Code: codes.AlreadyExists},
	{Err: natsauth.ErrInvalidDeviceID, Code: codes.InvalidArgument},
	{Err: natsauth.ErrBadDeviceField, Code: codes.InvalidArgument},
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: natsauth.ErrDeviceRevoked, Code: codes.FailedPrecondition},
}}

func (s *Service) grpcError(err error) error { return errTable.Status(s.log, err) }

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// DeviceToProto converts a device to its wire form.
func DeviceToProto(d natsauth.Device) *fleetv1.Device {
	st := fleetv1.DeviceState_DEVICE_STATE_ACTIVE
	if d.State != natsauth.DeviceActive {
		st = fleetv1.DeviceState_DEVICE_STATE_REVOKED
	}
	return &fleetv1.Device{
		DeviceId: d.ID, Model: d.Model, Protocol: d.Protocol, State: st,
		CreatedAt: ts(d.Created), RotatedAt: ts(d.Rotated), RevokedAt: ts(d.Revoked), ChangedBy: d.By,
	}
}

func credentialToProto(c Credential) *fleetv1.DeviceCredential {
	return &fleetv1.DeviceCredential{NatsUrl: c.NATSURL, User: c.User, Password: c.Password}
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

func (g *server) AddDevice(ctx context.Context, req *fleetv1.AddDeviceRequest) (*fleetv1.AddDeviceResponse, error) {
	d, cred, err := g.s.Add(ctx, natsauth.Device{ID: req.GetDeviceId(), Model: req.GetModel(), Protocol: req.GetProtocol()}, auth.Who(ctx))
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.AddDeviceResponse{Device: DeviceToProto(d), Credential: credentialToProto(cred)}, nil
}

func (g *server) GetDevice(ctx context.Context, req *fleetv1.GetDeviceRequest) (*fleetv1.GetDeviceResponse, error) {
	d, err := g.s.Get(ctx, req.GetDeviceId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.GetDeviceResponse{Device: DeviceToProto(d)}, nil
}

func (g *server) ListDevices(ctx context.Context, req *fleetv1.ListDevicesRequest) (*fleetv1.ListDevicesResponse, error) {
	list, next, err := g.s.List(ctx, req.GetPageToken(), pageSize(req.GetPageSize()))
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	resp := &fleetv1.ListDevicesResponse{NextPageToken: next, Devices: make([]*fleetv1.Device, 0, len(list))}
	for _, d := range list {
		resp.Devices = append(resp.Devices, DeviceToProto(d))
	}
	return resp, nil
}

func (g *server) RevokeDevice(ctx context.Context, req *fleetv1.RevokeDeviceRequest) (*fleetv1.RevokeDeviceResponse, error) {
	d, err := g.s.Revoke(ctx, req.GetDeviceId(), auth.Who(ctx))
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.RevokeDeviceResponse{Device: DeviceToProto(d)}, nil
}

func (g *server) RotateDevice(ctx context.Context, req *fleetv1.RotateDeviceRequest) (*fleetv1.RotateDeviceResponse, error) {
	d, cred, err := g.s.Rotate(ctx, req.GetDeviceId(), auth.Who(ctx))
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.RotateDeviceResponse{Device: DeviceToProto(d), Credential: credentialToProto(cred)}, nil
}
