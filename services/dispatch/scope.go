package dispatch

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/auth"
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
