package grpcserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
)

var (
	errMissing = errors.New("thing not found")
	errBad     = errors.New("bad thing")
)

func TestErrorTable(t *testing.T) {
	table := grpcserver.ErrorTable{Service: "things", Rules: []grpcserver.ErrorRule{
		{Err: errMissing, Code: codes.NotFound},
		{Err: errBad, Code: codes.InvalidArgument},
	}}
	driver := errors.New("dial tcp 10.1.2.3:6379: connect: connection refused")
	tests := []struct {
		name     string
		in       error
		want     codes.Code
		wantMsg  string // substring of the client's message
		hidden   string // must not reach the client
		wantLogs bool
	}{
		{"nil", nil, codes.OK, "", "", false},
		{"sentinel", fmt.Errorf("thing t1: %w", errMissing), codes.NotFound, "thing t1: thing not found", "", false},
		{"second rule", fmt.Errorf("%w: too long", errBad), codes.InvalidArgument, "too long", "", false},
		{"status passes through", status.Error(codes.Aborted, "retry"), codes.Aborted, "retry", "", false},
		{"outage hides driver text", fmt.Errorf("load v1: %w", apierr.Unavailable("redis", driver)), codes.Unavailable, "things is unavailable", "10.1.2.3", true},
		{"outage wins over a sentinel", fmt.Errorf("%w: %w", errMissing, apierr.Unavailable("nats", driver)), codes.Unavailable, "retry later", "connection refused", true},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), codes.Canceled, "cancelled", "", false},
		{"unknown is internal", driver, codes.Internal, "internal error", "10.1.2.3", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			err := table.Status(slog.New(slog.NewTextHandler(&logs, nil)), tt.in)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v, want %v (%v)", got, tt.want, err)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", msg, tt.wantMsg)
			}
			if tt.hidden != "" && strings.Contains(msg, tt.hidden) {
				t.Errorf("message %q reveals %q", msg, tt.hidden)
			}
			if logged := logs.Len() > 0; logged != tt.wantLogs {
				t.Errorf("logged %v (%q), want %v", logged, logs.String(), tt.wantLogs)
			}
			if tt.wantLogs && tt.hidden != "" && !strings.Contains(logs.String(), tt.hidden) {
				t.Errorf("log %q lacks the driver's text %q", logs.String(), tt.hidden)
			}
		})
	}
}
