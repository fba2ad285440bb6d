package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The auth callout: nats-server sends every login that is not a static user (config.go)
// to AuthCalloutSubject as a signed jwt.AuthorizationRequestClaims; the responder checks
// the username (device id) and password (device secret) against the registry and answers
// with a jwt.AuthorizationResponseClaims carrying a user JWT that the server then enforces:
// DevicePermissions for that id, placed in the platform account, expiring after a bounded
// time (the device logs in again, and is checked again). A refusal carries a reason the
// server logs; the device only learns "Authorization Violation".

// DefaultDeviceTTL bounds how long a device login stays valid without a fresh check. The
// registry watch disconnects revoked devices at once; the expiry is the backstop (a
// responder that was down when the revocation happened, a kick that failed).
const DefaultDeviceTTL = time.Hour

// MaxDeviceSubs bounds a device connection's subscriptions: it needs two (its commands and
// its reply inbox); a few more leave room for a reconnecting client's overlap.
const MaxDeviceSubs = 8

// calloutXKeyHeader carries the server's public curve key on an encrypted login request
// (server.AuthRequestXKeyHeader).
const calloutXKeyHeader = "Nats-Server-Xkey"

// Kicker disconnects one client connection of one server.
type Kicker interface {
	Kick(ctx context.Context, serverID string, clientID uint64) error
}

// SystemKicker disconnects clients with nats-server's system-account request
// $SYS.REQ.SERVER.<server id>.KICK {"cid": N} (server.KickClientReq): it works against the
// embedded server and any server of an external cluster alike. NC is a connection of the
// kicker identity in the system account.
type SystemKicker struct{ NC *nats.Conn }

// Kick implements Kicker.
func (k SystemKicker) Kick(ctx context.Context, serverID string, clientID uint64) error {
	req, _ := json.Marshal(map[string]uint64{"cid": clientID})
	msg, err := k.NC.RequestWithContext(ctx, "$SYS.REQ.SERVER."+serverID+".KICK", req)
	if err != nil {
		return fmt.Errorf("kick client %d on %s: %w", clientID, serverID, err)
	}
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err == nil && resp.Error != nil {
		return fmt.Errorf("kick client %d on %s: %s", clientID, serverID, resp.Error.Description)
	}
	return nil
}

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	Devices *Devices
	// IssuerSeed is the account nkey seed whose public key is the server's auth_callout
	// issuer: the server trusts only answers it signed.
	IssuerSeed []byte
	// TTL of a device login (DefaultDeviceTTL when 0); each login gets up to 10 % less, at
	// random, so a fleet that connected together does not log in again together.
	TTL time.Duration
	// XKeySeed is the curve nkey seed (SX...) whose public key is the server's auth_callout
	// xkey, or nil. With it the server encrypts each login request (which carries the
	// device's password) to this key and accepts only answers encrypted back to it, so the
	// password never crosses the network between server and responder in the clear.
	XKeySeed []byte
	// Kicker disconnects revoked and rotated devices; nil: they keep their connection until
	// its login expires (TTL).
	Kicker Kicker
	Log    *slog.Logger
}

// Responder answers device logins.
type Responder struct {
	cfg    ResponderConfig
	issuer nkeys.KeyPair
	xkey   nkeys.KeyPair // nil: requests arrive unencrypted

	mu    sync.Mutex
	conns map[string][]clientRef // device id → connections it authorised (newest last)

	accepted, refused, kicked atomic.Uint64
	lastRefusalLog            atomic.Int64
	refusedSinceLog           atomic.Uint64
}

type clientRef struct {
	server string
	cid    uint64
	secret string // prefix of the hash of the secret it logged in with (Change.SecretHash)
}

// maxRefsPerDevice bounds what is remembered per device: a device has one connection; a
// few cover reconnects whose old connection the server has not noticed gone yet.
const maxRefsPerDevice = 4

// NewResponder checks cfg and returns a responder.
func NewResponder(cfg ResponderConfig) (*Responder, error) {
	if cfg.Devices == nil {
		return nil, errors.New("responder: no device registry")
	}
	kp, err := nkeys.FromSeed(cfg.IssuerSeed)
	if err != nil {
		return nil, fmt.Errorf("responder: issuer seed: %w", err)
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, errors.New("responder: the issuer seed must be an account nkey seed (SA...)")
	}
	var xkp nkeys.KeyPair
	if len(cfg.XKeySeed) > 0 {
		if xkp, err = nkeys.FromCurveSeed(cfg.XKeySeed); err != nil {
			return nil, fmt.Errorf("responder: xkey seed (a curve nkey seed, SX...): %w", err)
		}
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultDeviceTTL
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Responder{cfg: cfg, issuer: kp, xkey: xkp, conns: map[string][]clientRef{}}, nil
}

// ResponderStats count the responder's decisions.
type ResponderStats struct{ Accepted, Refused, Kicked uint64 }

// Stats returns the counts so far.
func (r *Responder) Stats() ResponderStats {
	return ResponderStats{Accepted: r.accepted.Load(), Refused: r.refused.Load(), Kicked: r.kicked.Load()}
}

// Run answers logins on nc (a connection of the callout identity) and disconnects devices
// revoked or rotated while connected, until ctx ends. Several responders share the load
// through a queue group.
func (r *Responder) Run(ctx context.Context, nc *nats.Conn) error {
	wait, err := r.Start(ctx, nc)
	if err != nil {
		return err
	}
	return wait()
}

// Start is Run in two steps: it returns once the responder is subscribed (logins from then
// on are answered), and wait runs the revocation watch until ctx ends.
func (r *Responder) Start(ctx context.Context, nc *nats.Conn) (wait func() error, err error) {
	changes, err := r.cfg.Devices.Watch(ctx)
	if err != nil {
		return nil, err
	}
	sub, err := nc.QueueSubscribe(AuthCalloutSubject, "fleetwire-callout", func(m *nats.Msg) { r.handle(ctx, m) })
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", AuthCalloutSubject, err)
	}
	if err := nc.FlushTimeout(30 * time.Second); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", AuthCalloutSubject, err)
	}
	return func() error {
		defer func() { _ = sub.Unsubscribe() }()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case c, ok := <-changes:
				if !ok {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					return errors.New("device registry watch ended")
				}
				// A change that revokes, removes or re-keys a device disconnects whatever
				// logged in with what is no longer valid. Other changes (the creation itself,
				// which the watch may deliver after the device's first login) leave
				// connections made with the current secret alone.
				r.disconnect(ctx, c)
			}
		}
	}, nil
}

func (r *Responder) disconnect(ctx context.Context, c Change) {
	id := c.Device.ID
	valid := !c.Deleted && c.Device.State == DeviceActive
	var stale []clientRef
	r.mu.Lock()
	var keep []clientRef
	for _, ref := range r.conns[id] {
		if valid && ref.secret == c.SecretHash {
			keep = append(keep, ref)
		} else {
			stale = append(stale, ref)
		}
	}
	if len(keep) == 0 {
		delete(r.conns, id)
	} else {
		r.conns[id] = keep
	}
	r.mu.Unlock()
	if len(stale) == 0 || r.cfg.Kicker == nil {
		return
	}
	for _, ref := range stale {
		kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.cfg.Kicker.Kick(kctx, ref.server, ref.cid)
		cancel()
		if err != nil {
			// Most often the connection is already gone; the login's expiry is the backstop.
			r.cfg.Log.Debug("device disconnect", "device", id, "cid", ref.cid, "err", err)
			continue
		}
		r.kicked.Add(1)
		r.cfg.Log.Info("disconnected a device whose credential is no longer valid", "device", id, "cid", ref.cid)
	}
}

// handle answers one login request.
func (r *Responder) handle(ctx context.Context, m *nats.Msg) {
	data := m.Data
	// The server names its own curve key when it encrypts (auth_callout xkey set).
	serverXKey := m.Header.Get(calloutXKeyHeader)
	switch {
	case serverXKey != "" && r.xkey == nil:
		r.cfg.Log.Error("the server encrypts login requests (auth_callout xkey) but this responder has no xkey seed")
		return
	case serverXKey == "" && r.xkey != nil:
		// Configured for encryption, the server did not encrypt: a server without the
		// xkey setting, or something else publishing here. Answer nothing.
		r.cfg.Log.Error("unencrypted login request while an xkey is configured: is the server's auth_callout xkey set?")
		return
	case r.xkey != nil:
		var err error
		if data, err = r.xkey.Open(m.Data, serverXKey); err != nil {
			r.cfg.Log.Warn("undecryptable auth callout request", "err", err)
			return
		}
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		r.cfg.Log.Warn("unreadable auth callout request", "err", err)
		return // the server times the login out and refuses it
	}
	userKey, serverID := req.UserNkey, req.Server.ID
	id, secret := req.ConnectOptions.Username, req.ConnectOptions.Password
	respond := func(userJWT, reason string) {
		rc := jwt.NewAuthorizationResponseClaims(userKey)
		rc.Audience = serverID
		rc.Jwt = userJWT
		rc.Error = reason
		token, err := rc.Encode(r.issuer)
		if err != nil {
			r.cfg.Log.Error("encode auth callout response", "err", err)
			return
		}
		out := []byte(token)
		if r.xkey != nil {
			if out, err = r.xkey.Seal(out, serverXKey); err != nil {
				r.cfg.Log.Error("encrypt auth callout response", "err", err)
				return
			}
		}
		_ = m.Respond(out)
	}

	dev, err := r.verify(ctx, id, secret)
	if err != nil {
		r.refuse(id, req.ClientInformation.Host, err)
		respond("", refusalReason(err))
		return
	}
	uc := jwt.NewUserClaims(userKey)
	uc.Name = dev.ID
	uc.Audience = Account // the account the device is placed in (non-operator mode)
	ttl := r.cfg.TTL - time.Duration(rand.Int64N(int64(r.cfg.TTL/10)+1))
	uc.Expires = time.Now().Add(ttl).Unix()
	p := DevicePermissions(dev.ID)
	uc.Pub.Allow.Add(p.PubAllow...)
	uc.Sub.Allow.Add(p.SubAllow...)
	uc.Limits.Subs = MaxDeviceSubs
	userJWT, err := uc.Encode(r.issuer)
	if err != nil {
		r.cfg.Log.Error("encode device user", "device", dev.ID, "err", err)
		respond("", "internal error")
		return
	}
	r.remember(dev.ID, clientRef{server: serverID, cid: req.ClientInformation.ID, secret: hashHex(secret)[:16]})
	r.accepted.Add(1)
	respond(userJWT, "")
}

func (r *Responder) verify(ctx context.Context, id, secret string) (Device, error) {
	if id == "" {
		return Device{}, errAnonymous
	}
	if err := ValidDeviceID(id); err != nil {
		return Device{}, err
	}
	return r.cfg.Devices.Verify(ctx, id, secret)
}

var errAnonymous = errors.New("no username")

// refusalReason is what the server logs for a refused login: it says which rule refused
// it, never whether the id exists (that would help guess ids).
func refusalReason(err error) string {
	switch {
	case errors.Is(err, errAnonymous):
		return "anonymous login refused: connect with a device id and secret"
	case errors.Is(err, ErrInvalidDeviceID):
		return "invalid device id"
	case errors.Is(err, ErrDeviceRevoked):
		return "device revoked"
	}
	return "unknown device or wrong secret"
}

// refuse counts a refusal and logs it, at most one line per 10 seconds with the count since
// the last line: a storm of made-up ids must not become a storm of log lines.
func (r *Responder) refuse(id, host string, err error) {
	r.refused.Add(1)
	r.refusedSinceLog.Add(1)
	now := time.Now().UnixNano()
	last := r.lastRefusalLog.Load()
	if now-last < int64(10*time.Second) || !r.lastRefusalLog.CompareAndSwap(last, now) {
		return
	}
	n := r.refusedSinceLog.Swap(0)
	r.cfg.Log.Warn("device login refused", "device", truncate(id), "host", truncate(host), "reason", refusalReason(err), "refused_since_last_line", n)
}

func (r *Responder) remember(id string, ref clientRef) {
	r.mu.Lock()
	refs := append(r.conns[id], ref)
	if len(refs) > maxRefsPerDevice {
		refs = refs[len(refs)-maxRefsPerDevice:]
	}
	r.conns[id] = refs
	r.mu.Unlock()
}
