package fleetsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// Device protocols carrying the tracker protocol's own payloads over another transport.
const (
	ProtocolMQTT = "mqtt" // MQTT 3.1.1 to nats-server's MQTT listener at DeviceAddr (docs/protocol-mqtt.md)
	ProtocolCoAP = "coap" // CoAP over UDP to the CoAP gateway at DeviceAddr (docs/protocol-coap.md)
)

// uplink is one device's connection: send returns once the platform acknowledged the
// payload (MQTT PUBACK, CoAP 2.04); commands arrive on the channel given to its dialer.
type uplink interface {
	send(ctx context.Context, kind string, data []byte) error
	close()
}

// dialFunc connects vehicle id with its secret, delivering its commands to cmds.
type dialFunc func(ctx context.Context, id, secret string, cmds chan<- []byte) (uplink, error)

type pdPacket struct {
	kind string
	data []byte
}

// pdDevice is one vehicle's tracker on a device protocol: it keeps its packets until the
// platform acknowledges them, reconnecting and resending as a device does.
type pdDevice struct {
	f      *Fleet
	v      *vehicle
	secret string

	mu    sync.Mutex
	queue []pdPacket
	ready chan struct{}
}

func (d *pdDevice) enqueue(p pdPacket) {
	d.mu.Lock()
	d.queue = append(d.queue, p)
	d.mu.Unlock()
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

type pdSink struct {
	f    *Fleet
	devs []*pdDevice
	ctx  context.Context
}

func (s *pdSink) emit(v *vehicle, kind string, data []byte, recs []sample) {
	f := s.f
	if s.ctx.Err() != nil {
		f.unsent.Add(1)
		return
	}
	if f.observer != nil {
		p := Packet{Vehicle: v.id, Kind: kind, Records: len(recs), FirstSeq: recs[0].seq, LastSeq: recs[len(recs)-1].seq,
			DeviceTime: timeFromUnixNano(recs[len(recs)-1].unixNano), Late: f.sim.late, Sent: time.Now()}
		f.observer(p)
	}
	f.published.Add(1)
	s.devs[v.idx].enqueue(pdPacket{kind: kind, data: append([]byte(nil), data...)})
}

// runDevices plays the fleet as devices of cfg.Protocol.
func (f *Fleet) runDevices(ctx context.Context) error {
	var dial dialFunc
	switch f.cfg.Protocol {
	case ProtocolMQTT:
		dial = dialMQTT(f.cfg.DeviceAddr)
	case ProtocolCoAP:
		dial = dialCoAP(f.cfg.DeviceAddr)
	default:
		return fmt.Errorf("%w: protocol %q", ErrConfig, f.cfg.Protocol)
	}
	devs := make([]*pdDevice, len(f.sim.vehicles))
	for i, v := range f.sim.vehicles {
		devs[i] = &pdDevice{f: f, v: v, secret: f.cfg.DeviceSecrets[v.id], ready: make(chan struct{}, 1)}
	}
	sink := &pdSink{f: f, devs: devs, ctx: ctx}
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(ctx, dial, sink) }()
	}
	f.log.Info("fleet simulator running as devices", "protocol", f.cfg.Protocol, "vehicles", len(devs), "addr", f.cfg.DeviceAddr, "seed", f.cfg.Seed)
	wallStart := time.Now()
	simStart := f.sim.Now()
	tick := time.NewTicker(f.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-tick.C:
			elapsed := time.Duration(float64(now.Sub(wallStart)) * f.cfg.Speedup)
			f.sim.advance(simStart.Add(elapsed), sink)
		}
	}
}

// run keeps the device connected and its queue flowing until ctx ends.
func (d *pdDevice) run(ctx context.Context, dial dialFunc, sink *pdSink) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := d.session(ctx, dial, sink)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.f.pubErrors.Add(1)
			if d.f.failing.CompareAndSwap(false, true) {
				d.f.log.Warn("device session failed; reconnecting with back-off", "protocol", d.f.cfg.Protocol, "vehicle", d.v.id, "err", err)
			}
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// session is one connection: commands answered as they come, packets sent in order, each
// waiting for its acknowledgement.
func (d *pdDevice) session(ctx context.Context, dial dialFunc, sink *pdSink) error {
	cmds := make(chan []byte, 16)
	up, err := dial(ctx, d.v.id, d.secret, cmds)
	if err != nil {
		return err
	}
	defer up.close()
	for {
		select {
		case data := <-cmds:
			d.command(data, sink)
			continue
		default:
		}
		d.mu.Lock()
		var p pdPacket
		has := len(d.queue) > 0
		if has {
			p = d.queue[0]
		}
		d.mu.Unlock()
		if !has {
			select {
			case <-ctx.Done():
				return nil
			case data := <-cmds:
				d.command(data, sink)
			case <-d.ready:
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := up.send(sctx, p.kind, p.data)
		cancel()
		if err != nil {
			return err // not acknowledged: resent on the next connection
		}
		d.mu.Lock()
		d.queue[0] = pdPacket{}
		d.queue = d.queue[1:]
		d.mu.Unlock()
		d.f.acked.Add(1)
		if d.f.failing.CompareAndSwap(true, false) {
			d.f.log.Info("device sessions recovered")
		}
	}
}

// command executes a DeviceCommand and queues its replies like any other packet.
func (d *pdDevice) command(data []byte, sink *pdSink) {
	replies, err := d.f.handleCommand(bus.CommandSubject(d.v.id), data, sink)
	if err != nil {
		d.f.badCommands.Add(1)
		return
	}
	if replies == nil {
		return
	}
	d.f.commands.Add(1)
	for _, r := range replies {
		b, err := proto.Marshal(r)
		if err != nil {
			continue
		}
		d.enqueue(pdPacket{kind: bus.KindReply, data: b})
		d.f.replies.Add(1)
	}
}

// mqttUplink is a device on nats-server's MQTT listener: QoS 1 publishes (complete on the
// server's PUBACK), commands by a subscription to its own command topic.
type mqttUplink struct{ c paho.Client }

func dialMQTT(addr string) dialFunc {
	return func(_ context.Context, id, secret string, cmds chan<- []byte) (uplink, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetUsername(id).SetPassword(secret).SetCleanSession(true).SetAutoReconnect(false).
			SetConnectTimeout(30 * time.Second).SetWriteTimeout(30 * time.Second))
		if err := waitToken(c.Connect()); err != nil {
			return nil, fmt.Errorf("mqtt connect %s: %w", id, err)
		}
		topic := "fleet/down/" + id + "/cmd"
		if err := waitToken(c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
			select {
			case cmds <- append([]byte(nil), m.Payload()...):
			default: // the device is busy; the dispatcher sends the command again
			}
		})); err != nil {
			c.Disconnect(0)
			return nil, fmt.Errorf("mqtt subscribe %s: %w", topic, err)
		}
		return mqttUplink{c}, nil
	}
}

func waitToken(t paho.Token) error {
	if !t.WaitTimeout(60 * time.Second) {
		return errors.New("no answer within 60 s")
	}
	return t.Error()
}

func (u mqttUplink) send(_ context.Context, kind string, data []byte) error {
	r := u.c.OptionsReader()
	return waitToken(u.c.Publish("fleet/up/"+r.Username()+"/"+kind, 1, false, data))
}

func (u mqttUplink) close() { u.c.Disconnect(100) }

// coapUplink is a device on the CoAP gateway: confirmable POSTs answered 2.04 once
// stored, commands by observing /down/cmd.
type coapUplink struct {
	c     *udpclient.Conn
	creds []message.Option
	obs   interface {
		Cancel(context.Context, ...message.Option) error
	}
}

func dialCoAP(addr string) dialFunc {
	return func(ctx context.Context, id, secret string, cmds chan<- []byte) (uplink, error) {
		c, err := udp.Dial(addr)
		if err != nil {
			return nil, fmt.Errorf("coap dial: %w", err)
		}
		u := &coapUplink{c: c, creds: []message.Option{
			{ID: message.URIQuery, Value: []byte("id=" + id)}, {ID: message.URIQuery, Value: []byte("key=" + secret)},
		}}
		octx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		refused := make(chan codes.Code, 1)
		obs, err := c.Observe(octx, "/down/cmd", func(m *pool.Message) {
			if m.Code() != codes.Content {
				select {
				case refused <- m.Code():
				default:
				}
				return
			}
			if m.Body() == nil {
				return
			}
			b, _ := io.ReadAll(m.Body())
			if len(b) == 0 {
				return
			}
			select {
			case cmds <- b:
			default:
			}
		}, u.creds...)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("coap observe: %w", err)
		}
		select {
		case code := <-refused:
			_ = c.Close()
			return nil, fmt.Errorf("coap observe refused: %v", code)
		default:
		}
		u.obs = obs
		return u, nil
	}
}

func (u *coapUplink) send(ctx context.Context, kind string, data []byte) error {
	resp, err := u.c.Post(ctx, "/up/"+kind, message.AppOctets, bytes.NewReader(data), u.creds...)
	if err != nil {
		return err
	}
	if resp.Code() != codes.Changed {
		return fmt.Errorf("coap POST /up/%s: %v", kind, resp.Code())
	}
	return nil
}

func (u *coapUplink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = u.obs.Cancel(ctx)
	_ = u.c.Close()
}
