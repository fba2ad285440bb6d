// Package redisconn opens the Redis connections the services share, marked so that an
// outage is recognisable: every error that is not Redis's own answer (a refused or broken
// connection, a timeout, a closed pool) wraps apierr.ErrUnavailable. The stores return
// driver errors as they are; the edges answer Unavailable for these and keep the driver's
// text, which names hosts and keys, out of client replies.
package redisconn

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/apierr"
)

// ErrMalformedURL is returned by Open for a URL it cannot parse; the URL itself is left
// out of the error, since it may carry a password.
var ErrMalformedURL = errors.New("redis url is malformed")

// Open parses url, connects and pings (bounded by ctx), and marks outages.
func Open(ctx context.Context, url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		// The parser's message may quote the URL, password included.
		return nil, ErrMalformedURL
	}
	c := redis.NewClient(opts)
	MarkOutages(c)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis %s: %w", opts.Addr, err)
	}
	return c, nil
}

// MarkOutages makes every outage error c returns wrap apierr.ErrUnavailable. Redis's
// replies (redis.Nil, WRONGTYPE, a failed transaction) are answers, not outages, and are
// left as they are, as are the caller's cancelled or expired contexts.
func MarkOutages(c redis.UniversalClient) { c.AddHook(outageHook{}) }

type outageHook struct{}

// DialHook leaves dial errors alone: the client's retry logic inspects them; the command
// that needed the connection reports the outage through ProcessHook.
func (outageHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (outageHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if m := mark(err); m != err {
			cmd.SetErr(m)
			return m
		}
		return err
	}
}

func (outageHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil {
				if m := mark(e); m != e {
					cmd.SetErr(m)
				}
			}
		}
		return mark(err)
	}
}

// mark wraps err with ErrUnavailable unless it is Redis's answer or the caller's context.
func mark(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		return err
	}
	return apierr.Unavailable("redis", err)
}
