package teltonika

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// pendingCommand is a command written to the device and not yet answered. Codec 12
// responses carry no command id, so they are matched to commands in the order sent.
type pendingCommand struct {
	id   string
	sent time.Time
}

type commandResult struct {
	status fleetv1.CommandReplyStatus
	detail string
}

// Bounds of a session's command bookkeeping.
const (
	maxPending    = 8  // commands in flight to one device; beyond, the oldest is forgotten
	rememberedIDs = 64 // answered command ids kept to answer a repeat without re-executing
)

// command handles a DeviceCommand for this session's vehicle: supported kinds go to the
// device as Codec 12, the rest are answered REJECTED at once, as a tracker would.
func (s *session) command(ctx context.Context, data []byte) {
	g := s.g
	var dc fleetv1.DeviceCommand
	if err := proto.Unmarshal(data, &dc); err != nil || dc.GetCommandId() == "" || len(dc.GetCommandId()) > 64 {
		g.rej.Add("bad_command", s.vehicle, fmt.Errorf("undecodable DeviceCommand (%d bytes)", len(data)))
		return
	}
	id := dc.GetCommandId()
	s.cmu.Lock()
	prev, answered := s.done[id]
	inFlight := false
	for _, p := range s.pending {
		inFlight = inFlight || p.id == id
	}
	s.cmu.Unlock()
	switch {
	case answered:
		s.reply(ctx, id, prev) // a repeat: answer again, do not execute again
		return
	case inFlight:
		return
	}
	if dc.GetVehicleId() != "" && dc.GetVehicleId() != s.vehicle {
		s.finish(ctx, id, fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED, "command addressed to another vehicle", "rejected")
		return
	}
	if exp := dc.GetExpireTime(); exp != nil && !time.Now().Before(exp.AsTime()) {
		s.finish(ctx, id, fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED,
			"expired at "+exp.AsTime().UTC().Format(time.RFC3339), "expired")
		return
	}
	var text string
	switch dc.GetKind() {
	case fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE:
		text = g.cfg.Commands.Immobilize
	case fleetv1.CommandKind_COMMAND_KIND_RESUME:
		text = g.cfg.Commands.Resume
	case fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW:
		text = g.cfg.Commands.LocateNow
	}
	if text == "" {
		s.finish(ctx, id, fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED,
			fmt.Sprintf("%v is not supported by Teltonika devices through this gateway", dc.GetKind()), "unsupported")
		return
	}
	// The lock is held until ACCEPTED is stored, so the device's response (read by the
	// session's reader, which needs the lock to match it) is always published after it.
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if len(s.pending) >= maxPending {
		s.pending = s.pending[1:] // its reply timeout will mark it failed
	}
	frame := codec.AppendFrame(nil, codec.AppendMessage(nil, codec.TypeCommand, text))
	if err := s.write(frame); err != nil {
		g.log.Warn("teltonika: command not delivered", "vehicle", s.vehicle, "command_id", id, "err", err)
		g.met.commands.WithLabelValues("undelivered").Inc()
		return
	}
	s.pending = append(s.pending, pendingCommand{id: id, sent: time.Now()})
	g.met.commands.WithLabelValues("sent").Inc()
	s.reply(ctx, id, commandResult{status: fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_ACCEPTED, detail: "sent to the device as " + text})
}

// ErrUnsolicited is a Codec 12 response with no command waiting for it.
var ErrUnsolicited = errors.New("Codec 12 response without a pending command")

// response completes the oldest pending command with the device's Codec 12 answer.
func (s *session) response(ctx context.Context, body []byte) error {
	m, err := codec.DecodeMessage(body)
	if err != nil {
		return err
	}
	if m.Type != codec.TypeResponse {
		return fmt.Errorf("%w: device sent a command (type %#02x)", codec.ErrCommandFormat, m.Type)
	}
	s.cmu.Lock()
	if len(s.pending) == 0 {
		s.cmu.Unlock()
		s.g.rej.Add("unsolicited_response", s.vehicle, ErrUnsolicited, "text", truncate(string(m.Text)))
		return nil
	}
	p := s.pending[0]
	s.pending = s.pending[1:]
	s.cmu.Unlock()
	text := truncate(strings.TrimSpace(string(m.Text)))
	status, result := fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED, "executed"
	if refusal(text) {
		status, result = fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED, "rejected"
	}
	s.finish(ctx, p.id, status, text, result)
	return nil
}

// refusal recognises the answers Teltonika firmware gives to a command it cannot carry out.
func refusal(text string) bool {
	t := strings.ToLower(text)
	if t == "" {
		return true
	}
	for _, w := range []string{"error", "unknown command", "not supported", "invalid", "wrong"} {
		if strings.Contains(t, w) {
			return true
		}
	}
	return false
}

// finish records the final answer to command id and publishes it.
func (s *session) finish(ctx context.Context, id string, status fleetv1.CommandReplyStatus, detail, result string) {
	res := commandResult{status: status, detail: detail}
	s.cmu.Lock()
	if _, ok := s.done[id]; !ok {
		if len(s.order) >= rememberedIDs {
			delete(s.done, s.order[0])
			s.order = s.order[1:]
		}
		s.order = append(s.order, id)
	}
	s.done[id] = res
	s.cmu.Unlock()
	s.g.met.commands.WithLabelValues(result).Inc()
	s.reply(ctx, id, res)
}

// reply publishes a CommandReply for the vehicle, stored in JetStream like a tracker's.
func (s *session) reply(ctx context.Context, id string, res commandResult) {
	data, err := proto.Marshal(&fleetv1.CommandReply{
		CommandId: id, VehicleId: s.vehicle, Status: res.status, Detail: res.detail,
		DeviceTime: timestamppb.Now(),
	})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.g.cfg.StoreTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: bus.UpSubject(s.vehicle, bus.KindReply), Data: data}
	if _, err := s.g.js.PublishMsg(ctx, msg); err != nil {
		s.g.log.Warn("teltonika: command reply not stored", "vehicle", s.vehicle, "command_id", id, "status", res.status, "err", err)
	}
}
