package audit

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

type server struct {
	fleetv1.UnimplementedAuditServiceServer
	r *Reader
}

var _ fleetv1.AuditServiceServer = (*server)(nil)

// Register registers fleet.v1.AuditService on gs.
func (r *Reader) Register(gs *grpc.Server) { fleetv1.RegisterAuditServiceServer(gs, &server{r: r}) }

func (s *server) ListAuditRecords(ctx context.Context, req *fleetv1.ListAuditRecordsRequest) (*fleetv1.ListAuditRecordsResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit < 0 || limit > 1000:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d: want 0..1000", limit)
	case limit == 0:
		limit = 100
	}
	recs, last, err := s.r.List(ctx, req.GetAfterSeq(), limit, req.GetPrincipal())
	if err != nil {
		return nil, status.Error(codes.Unavailable, "audit trail unavailable")
	}
	return &fleetv1.ListAuditRecordsResponse{Records: recs, LastSeq: last}, nil
}
