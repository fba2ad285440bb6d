// Package apierr holds the error every layer shares: ErrUnavailable, the mark of a
// dependency outage (Redis, NATS) as opposed to a bug or bad input. Stores and bus
// adapters wrap driver errors with it; the edges (pkg/grpcserver's ErrorTable) answer
// Unavailable for it and log the driver's text, which never reaches a client: it names
// hosts, ports and sometimes keys.
package apierr

import (
	"context"
	"errors"
)

// ErrUnavailable marks a dependency outage: retrying later may succeed.
var ErrUnavailable = errors.New("dependency unavailable")

// Unavailable wraps err, a driver's error from the dependency named what ("redis",
// "nats"), so that errors.Is(err, ErrUnavailable) holds and the driver's error stays
// reachable for logs. nil stays nil; a cancelled or expired context is the caller's doing,
// not an outage, and is returned as it is.
func Unavailable(what string, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &outage{what: what, err: err}
}

type outage struct {
	what string
	err  error
}

func (o *outage) Error() string   { return o.what + ": " + o.err.Error() }
func (o *outage) Unwrap() []error { return []error{ErrUnavailable, o.err} }
