package dispatch

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/auth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// alertInScope refuses, as not found, an alert whose vehicle the caller may not see. The
// gRPC guard hides such alerts from every response by itself, but acknowledging or
// resolving addresses an alert by id: the check must come before the change.
func (g *alertServer) alertInScope(ctx context.Context, id uint64) error {
	if !auth.FromContext(ctx).Scoped() {
		return nil
	}
	a, err := g.s.st.GetAlert(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && !auth.VehicleVisible(ctx, a.Vehicle)) {
		return status.Errorf(codes.NotFound, "alert %d not found", id)
	}
	return g.s.grpcError(err)
}

// commandAllowed checks a change to a stored command: a command of a vehicle the caller
// may not see is not found, and changing one needs the role sending its kind needs
// (auth.CommandRole: a queued IMMOBILIZE is withdrawn by a supervisor, as it is sent).
func (g *commandServer) commandAllowed(ctx context.Context, id string) error {
	c, err := g.s.st.GetCommand(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && !auth.VehicleVisible(ctx, c.Vehicle)) {
		return status.Errorf(codes.NotFound, "command %s not found", id)
	}
	if err != nil {
		return g.s.grpcError(err)
	}
	if err := auth.Require(ctx, auth.CommandRole(fleetv1.CommandKind(c.Kind))); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}
