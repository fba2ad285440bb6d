package auth

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// MaxTokenTTL bounds a token's lifetime when one is given (ten years).
const MaxTokenTTL = 10 * 365 * 24 * time.Hour

type tokenServer struct {
	fleetv1.UnimplementedTokenServiceServer
	t *Tokens
}

var _ fleetv1.TokenServiceServer = (*tokenServer)(nil)

// Register registers fleet.v1.TokenService on gs.
func (t *Tokens) Register(gs *grpc.Server) {
	fleetv1.RegisterTokenServiceServer(gs, &tokenServer{t: t})
}

func tokenToProto(ti TokenInfo) *fleetv1.Token {
	out := &fleetv1.Token{Id: ti.ID, Name: ti.Name, Role: fleetv1.Role(ti.Role), Groups: ti.Groups, CreatedAt: timestamppb.New(ti.CreatedAt), CreatedBy: ti.CreatedBy}
	if !ti.ExpiresAt.IsZero() {
		out.ExpiresAt = timestamppb.New(ti.ExpiresAt)
	}
	if !ti.RevokedAt.IsZero() {
		out.RevokedAt = timestamppb.New(ti.RevokedAt)
	}
	return out
}

func tokenError(err error) error {
	switch {
	case errors.Is(err, ErrTokenNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrBadTokenName), errors.Is(err, ErrBadRole):
		return status.Error(codes.InvalidArgument, err.Error())
	default:
		return status.Error(codes.Unavailable, "token store unavailable")
	}
}

func (s *tokenServer) CreateToken(ctx context.Context, req *fleetv1.CreateTokenRequest) (*fleetv1.CreateTokenResponse, error) {
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if req.GetTtlSeconds() < 0 || ttl > MaxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_seconds %d: want 0 (no expiry) up to %d", req.GetTtlSeconds(), int64(MaxTokenTTL/time.Second))
	}
	ti, secret, err := s.t.Create(ctx, req.GetName(), Role(req.GetRole()), req.GetGroups(), ttl, Who(ctx))
	if err != nil {
		return nil, tokenError(err)
	}
	return &fleetv1.CreateTokenResponse{Token: tokenToProto(ti), Secret: secret}, nil
}

func (s *tokenServer) ListTokens(context.Context, *fleetv1.ListTokensRequest) (*fleetv1.ListTokensResponse, error) {
	resp := &fleetv1.ListTokensResponse{}
	for _, ti := range s.t.List() {
		resp.Tokens = append(resp.Tokens, tokenToProto(ti))
	}
	return resp, nil
}

func (s *tokenServer) RevokeToken(ctx context.Context, req *fleetv1.RevokeTokenRequest) (*fleetv1.RevokeTokenResponse, error) {
	ti, err := s.t.Revoke(ctx, req.GetId())
	if err != nil {
		return nil, tokenError(err)
	}
	return &fleetv1.RevokeTokenResponse{Token: tokenToProto(ti)}, nil
}
