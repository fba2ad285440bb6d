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
	"net"
	neturl "net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/apierr"
)

// ErrMalformedURL is returned by Open for a URL it cannot parse; the URL itself is left
// out of the error, since it may carry a password.
var ErrMalformedURL = errors.New("redis url is malformed")

// Open parses url, connects and pings (bounded by ctx), and marks outages.
//
// url is redis://[user:password@]host:port[/db] (or rediss:// for TLS) for one server, or
// redis-sentinel://[user:password@]host:port[,host:port...]/master-name[?db=N] for a
// primary watched by Redis Sentinel: the client asks the sentinels where the primary is,
// and again when it fails over, so the services follow a failover without a restart.
// The password is the data nodes'; sentinels without authentication are assumed (set
// sentinel_password=... in the query when they have one).
func Open(ctx context.Context, url string) (*redis.Client, error) {
	var (
		c    *redis.Client
		addr string
	)
	if strings.HasPrefix(url, SentinelScheme+"://") {
		fo, err := ParseSentinelURL(url)
		if err != nil {
			return nil, err
		}
		c = redis.NewFailoverClient(fo)
		addr = fo.MasterName + " via " + strings.Join(fo.SentinelAddrs, ",")
	} else {
		opts, err := redis.ParseURL(url)
		if err != nil {
			// The parser's message may quote the URL, password included.
			return nil, ErrMalformedURL
		}
		c = redis.NewClient(opts)
		addr = opts.Addr
	}
	MarkOutages(c)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	return c, nil
}

// SentinelScheme is the URL scheme of a Sentinel-managed primary.
const SentinelScheme = "redis-sentinel"

// ParseSentinelURL reads redis-sentinel://[user:password@]h1:p1,h2:p2/master[?db=N&sentinel_password=...].
func ParseSentinelURL(raw string) (*redis.FailoverOptions, error) {
	rest, ok := strings.CutPrefix(raw, SentinelScheme+"://")
	if !ok {
		return nil, ErrMalformedURL
	}
	fo := &redis.FailoverOptions{}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		user, pass, hasPass := strings.Cut(rest[:at], ":")
		if hasPass {
			fo.Username, fo.Password = user, pass
		} else {
			fo.Password = user
		}
		rest = rest[at+1:]
	}
	hosts, path, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, ErrMalformedURL
	}
	path, query, _ := strings.Cut(path, "?")
	fo.MasterName = path
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			if _, _, err := net.SplitHostPort(h); err != nil {
				return nil, ErrMalformedURL
			}
			fo.SentinelAddrs = append(fo.SentinelAddrs, h)
		}
	}
	if fo.MasterName == "" || len(fo.SentinelAddrs) == 0 {
		return nil, ErrMalformedURL
	}
	q, err := neturl.ParseQuery(query)
	if err != nil {
		return nil, ErrMalformedURL
	}
	if v := q.Get("db"); v != "" {
		if fo.DB, err = strconv.Atoi(v); err != nil || fo.DB < 0 {
			return nil, ErrMalformedURL
		}
	}
	fo.SentinelPassword = q.Get("sentinel_password")
	return fo, nil
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
