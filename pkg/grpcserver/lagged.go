package grpcserver

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A watch stream whose reader falls further behind than its server-side buffer ends with
// RESOURCE_EXHAUSTED, a message starting with "lagged:" that says how to resume, and the
// resume cursor in the trailer ResumeCursorKey. The server never grows memory for a reader
// that does not read (docs/security.md, resource bounds).
const (
	laggedPrefix    = "lagged: "
	ResumeCursorKey = "fleetwire-resume-cursor"
)

// Lagged ends a watch stream whose reader fell behind. cursor is where to resume (the
// service documents its meaning); how says what to call.
func Lagged(ctx context.Context, cursor, how string) error {
	if cursor != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(ResumeCursorKey, cursor))
	}
	return status.Error(codes.ResourceExhausted, laggedPrefix+how)
}

// IsLagged reports whether err ended a watch because its reader lagged.
func IsLagged(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), laggedPrefix)
}
