package grpcserver

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/apierr"
)

// ErrorRule maps one domain sentinel to the code a client gets.
type ErrorRule struct {
	Err  error
	Code codes.Code
}

// ErrorTable is an edge's whole mapping from domain errors to gRPC status codes, the one
// place a service's gRPC file decides what a client sees (the etcd habit: one table per
// edge). Every edge applies the same rule, in this order:
//
//   - an error that already is a status (the edge's own argument checks) passes through;
//   - apierr.ErrUnavailable (a Redis or NATS outage) answers Unavailable with a fixed
//     message; the driver's text is logged, never returned: it names hosts and keys;
//   - the first rule whose sentinel matches (errors.Is) answers its code with the domain
//     error's message, which the domain wrote for its callers;
//   - a cancelled or expired context answers Canceled or DeadlineExceeded;
//   - anything else is a bug: Internal, "internal error", logged with its text.
type ErrorTable struct {
	// Service names the service in the fixed Unavailable message ("tracking").
	Service string
	Rules   []ErrorRule
}

// Status converts err for the client; nil stays nil. log receives what the client does
// not see.
func (t ErrorTable) Status(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, apierr.ErrUnavailable) {
		log.Warn("dependency unavailable", "err", err)
		return status.Error(codes.Unavailable, t.Service+" is unavailable: a dependency did not answer; retry later")
	}
	for _, r := range t.Rules {
		if errors.Is(err, r.Err) {
			return status.Error(r.Code, err.Error())
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	log.Error("internal error", "err", err)
	return status.Error(codes.Internal, "internal error")
}
