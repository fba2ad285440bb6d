package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// queuedCommands bounds the commands waiting for one device to acknowledge the previous
// notification; beyond it a command is dropped (the dispatcher sends it again until the
// device replies).
const queuedCommands = 16

// observer is one device's observation of /down/cmd: its NATS subscription to its command
// subject, and the peer, token and format its notifications go to.
type observer struct {
	vehicle string
	cc      mux.Conn
	token   message.Token
	json    bool

	sub     *nats.Subscription
	cmds    chan []byte
	done    chan struct{}
	stopped bool
}

// stop ends the observation: no more commands are taken from NATS, the sender exits.
// Called with the gateway's lock held.
func (o *observer) stop() {
	if o.stopped {
		return
	}
	o.stopped = true
	if o.sub != nil {
		_ = o.sub.Unsubscribe()
	}
	close(o.done)
}

// down handles GET /down/cmd: with Observe 0 it registers the device for its commands
// (replacing an earlier registration, from an old address after a NAT rebinding); with
// Observe 1 it deregisters; a plain GET answers 2.05 with no command.
func (g *Gateway) down(ctx context.Context, w mux.ResponseWriter, r *mux.Message) {
	vehicle, err := g.authenticate(ctx, r)
	if err == nil && r.Code() != codes.GET {
		err = errors.New("only GET on /down/cmd")
		g.met.requests.WithLabelValues("cmd", codes.MethodNotAllowed.String()).Inc()
		g.refuse(w, codes.MethodNotAllowed, vehicle, err)
		return
	}
	if err != nil {
		c := code(err)
		g.met.requests.WithLabelValues("cmd", c.String()).Inc()
		g.refuse(w, c, vehicle, err)
		return
	}
	accept, aerr := r.Options().Accept()
	json := aerr == nil && accept == message.AppJSON
	cf := message.AppOctets
	if json {
		cf = message.AppJSON
	}
	obs, oerr := r.Options().Observe()
	switch {
	case oerr == nil && obs == 0:
		if err := g.observe(ctx, vehicle, w.Conn(), r.Token(), json); err != nil {
			c := code(err)
			g.met.requests.WithLabelValues("cmd", c.String()).Inc()
			g.refuse(w, c, vehicle, err)
			return
		}
		g.met.requests.WithLabelValues("cmd", codes.Content.String()).Inc()
		_ = w.SetResponse(codes.Content, cf, nil, message.Option{ID: message.Observe, Value: []byte{0}})
		return
	case oerr == nil && obs == 1:
		g.mu.Lock()
		if o := g.observers[vehicle]; o != nil {
			o.stop()
			delete(g.observers, vehicle)
			g.met.observers.Dec()
		}
		g.mu.Unlock()
	}
	g.met.requests.WithLabelValues("cmd", codes.Content.String()).Inc()
	_ = w.SetResponse(codes.Content, cf, nil)
}

// ErrTooManyObservers: MaxObservers devices already observe /down/cmd.
var ErrTooManyObservers = errors.New("too many observers")

// observe registers vehicle's observation through cc with token.
func (g *Gateway) observe(ctx context.Context, vehicle string, cc mux.Conn, token message.Token, json bool) error {
	o := &observer{
		vehicle: vehicle, cc: cc, token: append(message.Token(nil), token...), json: json,
		cmds: make(chan []byte, queuedCommands), done: make(chan struct{}),
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.observers[vehicle]
	if old == nil && len(g.observers) >= g.cfg.MaxObservers {
		return fmt.Errorf("%w: %d", ErrTooManyObservers, g.cfg.MaxObservers)
	}
	sub, err := g.nc.Subscribe(bus.CommandSubject(vehicle), func(m *nats.Msg) {
		select {
		case o.cmds <- m.Data:
		case <-o.done:
		default:
			g.met.commands.WithLabelValues("dropped").Inc()
		}
	})
	if err != nil {
		return fmt.Errorf("%w: subscribe: %v", ErrStore, err)
	}
	o.sub = sub
	if old != nil {
		old.stop()
	} else {
		g.met.observers.Inc()
	}
	g.observers[vehicle] = o
	// The peer forgotten (idle, gateway stopping): its observation ends with it.
	cc.AddOnClose(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.observers[vehicle] == o {
			o.stop()
			delete(g.observers, vehicle)
			g.met.observers.Dec()
		}
	})
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.notify(ctx, o)
	}()
	return nil
}

// notify sends o's commands one at a time as confirmable notifications, each waiting for
// the device's acknowledgement (the library retransmits until it comes or NotifyTimeout).
func (g *Gateway) notify(ctx context.Context, o *observer) {
	seq := uint32(1)
	for {
		var data []byte
		select {
		case <-ctx.Done():
			return
		case <-o.done:
			return
		case data = <-o.cmds:
		}
		payload, cf, err := g.encodeCommand(o, data)
		if err != nil {
			g.rej.Add("bad_command", o.vehicle, err)
			continue
		}
		seq = (seq + 1) & 0xFFFFFF // Observe is 24 bits (RFC 7641 §4.4)
		if err := g.send(ctx, o, seq, cf, payload); err != nil {
			g.met.commands.WithLabelValues("undelivered").Inc()
			g.log.Warn("coap: command not delivered", "vehicle", o.vehicle, "err", truncate(err.Error()))
			continue
		}
		g.met.commands.WithLabelValues("notified").Inc()
	}
}

func (g *Gateway) send(ctx context.Context, o *observer, seq uint32, cf message.MediaType, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.NotifyTimeout)
	defer cancel()
	m := o.cc.AcquireMessage(ctx)
	defer o.cc.ReleaseMessage(m)
	m.SetCode(codes.Content)
	m.SetToken(o.token)
	m.SetObserve(seq)
	m.SetContentFormat(cf)
	m.SetType(message.Confirmable)
	m.SetBody(bytes.NewReader(payload))
	return o.cc.WriteMessage(m)
}

// encodeCommand checks a DeviceCommand from the platform and encodes it in the format the
// device asked for (Accept on its registration).
func (g *Gateway) encodeCommand(o *observer, data []byte) ([]byte, message.MediaType, error) {
	var dc fleetv1.DeviceCommand
	if err := proto.Unmarshal(data, &dc); err != nil || dc.GetCommandId() == "" {
		return nil, 0, fmt.Errorf("undecodable DeviceCommand (%d bytes)", len(data))
	}
	if !o.json {
		return data, message.AppOctets, nil
	}
	b, err := protojson.Marshal(&dc)
	return b, message.AppJSON, err
}
