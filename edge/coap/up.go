package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// retryAfter is the Max-Age of a 5.03 answer: how long the device should wait before
// sending again (RFC 7252 §5.9.3.4).
const retryAfter = 5

// up handles POST /up/<kind>: verify the device, check the payload, store it, and only
// then answer 2.04 Changed.
func (g *Gateway) up(ctx context.Context, w mux.ResponseWriter, r *mux.Message) {
	kind := r.RouteParams.Vars["kind"]
	vehicle, n, err := g.store(ctx, kind, r)
	c := code(err)
	if r.Code() != codes.POST {
		c, err = codes.MethodNotAllowed, errors.New("only POST on /up/<kind>")
	}
	if !knownKind(kind) {
		kind = "other" // a metric label, so only the protocol's kinds
	}
	g.met.requests.WithLabelValues(kind, c.String()).Inc()
	if err != nil {
		g.refuse(w, c, vehicle, err)
		return
	}
	g.met.records.Add(float64(n))
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
}

// refuse answers an error code with a short diagnostic payload (RFC 7252 §5.5.2) and
// counts it; an outage is logged, not counted as the device's fault.
func (g *Gateway) refuse(w mux.ResponseWriter, c codes.Code, vehicle string, err error) {
	msg := truncate(err.Error())
	var opts []message.Option
	if c == codes.ServiceUnavailable {
		g.log.Warn("coap: request not stored", "vehicle", vehicle, "err", msg)
		opts = append(opts, message.Option{ID: message.MaxAge, Value: []byte{retryAfter}})
		msg = "temporarily unavailable, send again"
	} else {
		g.rej.Add(reason(err), vehicle, errors.New(msg))
		if c == codes.Unauthorized {
			msg = "unknown device or wrong secret" // the same for every cause
		}
	}
	_ = w.SetResponse(c, message.TextPlain, bytes.NewReader([]byte(msg)), opts...)
}

func knownKind(kind string) bool {
	for _, k := range bus.Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// authenticate reads and verifies a request's credentials.
func (g *Gateway) authenticate(ctx context.Context, r *mux.Message) (string, error) {
	q, _ := r.Options().Queries()
	c, err := parseCredentials(q)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.StoreTimeout)
	defer cancel()
	if err := g.ver.Verify(ctx, c.id, c.secret); err != nil {
		return c.id, err
	}
	return c.id, nil
}

// store authenticates, checks and stores one POST; it returns the device's vehicle (for
// logs) and the number of records stored.
func (g *Gateway) store(ctx context.Context, kind string, r *mux.Message) (string, int, error) {
	vehicle, err := g.authenticate(ctx, r)
	if err != nil {
		return vehicle, 0, err
	}
	if !knownKind(kind) {
		return vehicle, 0, fmt.Errorf("%w: %q", ErrUnknownKind, truncate(kind))
	}
	cf, cfErr := r.Options().ContentFormat()
	json, err := isJSON(cf, cfErr == nil)
	if err != nil {
		return vehicle, 0, err
	}
	var body []byte
	if b := r.Body(); b != nil {
		if body, err = io.ReadAll(io.LimitReader(b, wire.MaxMessageBytes+1)); err != nil {
			return vehicle, 0, fmt.Errorf("%w: read body: %v", wire.ErrMalformed, err)
		}
	}
	n, bad, err := checkUp(vehicle, kind, body, json)
	if err != nil {
		return vehicle, 0, err
	}
	for _, e := range bad {
		// Stored anyway, with the rest of the batch: the services drop and count the
		// record; the gateway says so once.
		g.rej.Add(wire.Reason(&e), vehicle, &e)
	}
	start := time.Now()
	if err := g.publish(ctx, vehicle, kind, body, json); err != nil {
		return vehicle, 0, err
	}
	g.met.storeDur.Observe(time.Since(start).Seconds())
	return vehicle, n, nil
}

// publish stores body on vehicle's subject of kind and waits for JetStream's
// acknowledgement. The message id is a keyed digest of the payload, so a request the device
// sends again after a lost response is dropped by the stream's duplicate window, and no
// other device can predict it.
func (g *Gateway) publish(ctx context.Context, vehicle, kind string, body []byte, json bool) error {
	msg := &nats.Msg{Subject: bus.UpSubject(vehicle, kind), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, wire.GatewayMsgID(g.cfg.MsgIDKey, vehicle, []byte("coap"), []byte(kind), body))
	if json {
		msg.Header.Set(wire.HeaderContentType, wire.ContentTypeJSON)
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.StoreTimeout)
	defer cancel()
	if _, err := g.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	return nil
}
