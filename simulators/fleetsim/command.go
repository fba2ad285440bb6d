package fleetsim

import (
	"fmt"
	"strconv"
	"time"
)

// CommandKind mirrors fleet.v1.CommandKind.
type CommandKind int

// Command kinds a simulated tracker understands.
const (
	CommandUnspecified CommandKind = iota
	CommandImmobilize
	CommandResume
	CommandLocateNow
	CommandSetReportInterval
)

// ReplyStatus mirrors fleet.v1.CommandReplyStatus.
type ReplyStatus int

// Reply statuses.
const (
	ReplyUnspecified ReplyStatus = iota
	ReplyAccepted
	ReplyRejected
	ReplyExecuted
)

// Command is a command as the tracker sees it.
type Command struct {
	ID      string
	Vehicle string
	Kind    CommandKind
	Params  map[string]string
	Expire  time.Time // zero: never
	// MaxSpeedKmh (HasMaxSpeed) is the highest speed at which an IMMOBILIZE may cut the
	// engine; without it the tracker uses DefaultImmobilizeMaxKmh.
	MaxSpeedKmh float64
	HasMaxSpeed bool
}

// DefaultImmobilizeMaxKmh is the tracker's own limit for an IMMOBILIZE that names none.
const DefaultImmobilizeMaxKmh = 5

type cmdReply struct {
	Status   ReplyStatus
	Detail   string
	SpeedKmh float64 // the tracker's own speed when it decided (HasSpeed)
	HasSpeed bool
}

// rememberedCommands bounds how many command ids a tracker remembers for idempotence.
const rememberedCommands = 64

// command executes cmd on its vehicle and returns the replies in order (ACCEPTED then
// EXECUTED, or REJECTED). A command id seen before is answered again, not executed again.
// The second result is false when the vehicle is not part of this fleet.
func (s *Sim) command(cmd Command, out emitter) ([]cmdReply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byID[cmd.Vehicle]
	if !ok {
		return nil, false
	}
	if prev, ok := v.commands[cmd.ID]; ok {
		return prev, true
	}
	replies := s.execute(v, cmd, out)
	if v.commands == nil {
		v.commands = make(map[string][]cmdReply)
	}
	if len(v.cmdOrder) >= rememberedCommands {
		delete(v.commands, v.cmdOrder[0])
		v.cmdOrder = v.cmdOrder[1:]
	}
	v.commands[cmd.ID] = replies
	v.cmdOrder = append(v.cmdOrder, cmd.ID)
	return replies, true
}

func reject(format string, a ...any) []cmdReply {
	return []cmdReply{{Status: ReplyRejected, Detail: fmt.Sprintf(format, a...)}}
}

func (s *Sim) execute(v *vehicle, cmd Command, out emitter) []cmdReply {
	now := s.at(s.now)
	if cmd.ID == "" {
		return reject("command id missing")
	}
	if !cmd.Expire.IsZero() && now.After(cmd.Expire) {
		return reject("expired at %s", cmd.Expire.UTC().Format(time.RFC3339))
	}
	accepted := cmdReply{Status: ReplyAccepted}
	switch cmd.Kind {
	case CommandImmobilize:
		// The tracker checks its own speed, whatever the platform believed: a cut engine
		// at speed can kill, and the fixes the platform judged may have been forged.
		limit := float64(DefaultImmobilizeMaxKmh)
		if cmd.HasMaxSpeed {
			limit = cmd.MaxSpeedKmh
		}
		sp := v.speed * 3.6
		if sp > limit {
			return []cmdReply{{Status: ReplyRejected, Detail: fmt.Sprintf("speed %.0f km/h above %g km/h", sp, limit), SpeedKmh: sp, HasSpeed: true}}
		}
		v.immobilized = true
		accepted.SpeedKmh, accepted.HasSpeed = sp, true
		return []cmdReply{accepted, {Status: ReplyExecuted, Detail: "engine cut", SpeedKmh: sp, HasSpeed: true}}
	case CommandResume:
		v.immobilized = false
		return []cmdReply{accepted, {Status: ReplyExecuted, Detail: "engine enabled"}}
	case CommandLocateNow:
		s.locate(v, out)
		return []cmdReply{accepted, {Status: ReplyExecuted, Detail: "position reported"}}
	case CommandSetReportInterval:
		moving, parked := v.movingIv, v.parkedIv
		set := false
		for key, dst := range map[string]*float64{"moving_s": &moving, "parked_s": &parked} {
			raw, ok := cmd.Params[key]
			if !ok {
				continue
			}
			sec, err := strconv.ParseFloat(raw, 64)
			if err != nil || !(sec >= 1 && sec <= 86400) {
				return reject("%s %q: want seconds in 1..86400", key, raw)
			}
			*dst, set = sec, true
		}
		if !set {
			return reject("params moving_s or parked_s required")
		}
		v.movingIv, v.parkedIv = moving, parked
		return []cmdReply{accepted, {Status: ReplyExecuted, Detail: fmt.Sprintf("moving %gs, parked %gs", moving, parked)}}
	}
	return reject("unknown command kind %d", cmd.Kind)
}
