package wire

import (
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// IsJSON reports whether a message's payload is the JSON form of the tracker protocol
// (header Content-Type: application/json) rather than protobuf binary.
func IsJSON(h nats.Header) bool {
	return h != nil && h.Get(HeaderContentType) == ContentTypeJSON
}

// decodedMsg is a message's records, decoded once for every service of a shared delivery.
type decodedMsg struct {
	vehicle string
	recs    []telemetry.Record
	bad     []RecordError
	err     error
}

// DecodeMsg decodes the tracker records of a message a consumer delivered, for vehicle
// (its subject's), as DecodeBatch does. In a shared delivery the services decode the
// message once between them (bus.Msg.Once); each caller gets its own copy of the record
// slice, so it may change the records' fields, but the maps and slices inside a record
// (IO, alarms, fault codes) are shared with the other services and must be treated as
// read-only, as decoded input always is.
func DecodeMsg(m *bus.Msg, vehicle string) ([]telemetry.Record, []RecordError, error) {
	d := m.Once(func() any { return decodeMsg(m, vehicle) }).(*decodedMsg)
	if d.vehicle != vehicle {
		d = decodeMsg(m, vehicle)
	}
	return slices.Clone(d.recs), d.bad, d.err
}

// decodeMsg refuses, before decoding, a message whose Nats-Msg-Id is not vehicle's
// (MsgIDOwnedBy): the documented rule for ids, which JetStream itself cannot check. It
// does not save the message such an id may have suppressed — ids that cannot be
// predicted do (msgid.go) — but the squatter's own message counts for nothing, and the
// attempt is counted and logged (reason foreign_msg_id).
func decodeMsg(m *bus.Msg, vehicle string) *decodedMsg {
	d := &decodedMsg{vehicle: vehicle}
	if m.Header != nil {
		if id := m.Header.Get(jetstream.MsgIDHeader); !MsgIDOwnedBy(id, vehicle) {
			d.err = fmt.Errorf("%w: %.64q", ErrForeignMsgID, id)
			return d
		}
	}
	d.recs, d.bad, d.err = DecodeBatch(vehicle, m.Data, IsJSON(m.Header))
	return d
}
