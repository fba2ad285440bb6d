package auth

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

type identityServer struct {
	fleetv1.UnimplementedIdentityServiceServer
}

// RegisterIdentity registers fleet.v1.IdentityService on gs: it answers WhoAmI from the
// principal the Guard attached to the call.
func RegisterIdentity(gs *grpc.Server) {
	fleetv1.RegisterIdentityServiceServer(gs, identityServer{})
}

func (identityServer) WhoAmI(ctx context.Context, _ *fleetv1.WhoAmIRequest) (*fleetv1.WhoAmIResponse, error) {
	p := FromContext(ctx)
	if p == nil {
		// A server without a Guard has no principals (a service's own tests).
		return nil, status.Error(codes.Unauthenticated, "no principal: the server runs without authentication")
	}
	return &fleetv1.WhoAmIResponse{Name: p.Name, Role: fleetv1.Role(p.Role), Groups: p.Groups, Via: p.Via}, nil
}
