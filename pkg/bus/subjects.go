package bus

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Every NATS subject Fleetwire uses is built here, so the scheme lives in one place.
//
// Device → platform:   fleet.up.<vehicle>.<kind>          (kind: tele, alarm, diag, reply)
// Stored as:           fleet.in.<partition>.<vehicle>.<kind> (stream subject transform)
// Platform → device:   fleet.down.<vehicle>.cmd
// Service events:      fleet.evt.<source>.<kind>.<vehicle>.<event>  (event: a digest of the event id)
// Dead letters:        fleet.dead.<durable>
// Live state fan-out:  fleet.live.<vehicle> (core NATS, between instances of a service)
//
// A NATS user for one tracker is confined with
//   publish:   fleet.up.<vehicle>.>
//   subscribe: fleet.down.<vehicle>.>  (plus _INBOX_<vehicle>.> for publish acknowledgements;
//   pkg/natsauth.DevicePermissions is what the server enforces)
// and consumers select with wildcards: fleet.in.*.<vehicle>.> for one vehicle,
// fleet.in.*.*.alarm for one kind.

// Record kinds a device publishes.
const (
	KindTelemetry = "tele"  // TelemetryBatch, buffered periodic records
	KindAlarm     = "alarm" // TelemetryBatch of records that carry alarms, sent at once
	KindDiag      = "diag"  // TelemetryBatch of diagnostics-only records
	KindReply     = "reply" // CommandReply
)

// Kinds lists the device kinds in a stable order.
var Kinds = []string{KindTelemetry, KindAlarm, KindDiag, KindReply}

const (
	upPrefix   = "fleet.up."
	inPrefix   = "fleet.in."
	downPrefix = "fleet.down."
	evtPrefix  = "fleet.evt."
	livePrefix = "fleet.live."
	deadPrefix = "fleet.dead."
)

// DefaultPartitions is the number of partitions of the telemetry stream. Vehicles are
// hashed onto partitions by the NATS server on ingest; each partition has one durable
// consumer per service, so instances of a service split the work by partition and every
// vehicle's records are handled, in order, by exactly one instance. It is fixed when the
// stream is created.
const DefaultPartitions = 16

// UpSubject is where a device publishes records of kind for vehicle.
func UpSubject(vehicle, kind string) string { return upPrefix + vehicle + "." + kind }

// UpWildcard matches everything every device publishes (the telemetry stream's subjects).
func UpWildcard() string { return upPrefix + ">" }

// CommandSubject is where the platform sends commands to vehicle.
func CommandSubject(vehicle string) string { return downPrefix + vehicle + ".cmd" }

// CommandWildcard matches commands to every vehicle (for simulators that play many).
func CommandWildcard() string { return downPrefix + "*.cmd" }

// PartitionFilter selects stored records of kind in partition p ("*" for every kind).
func PartitionFilter(p int, kind string) string {
	return inPrefix + strconv.Itoa(p) + ".*." + kind
}

// VehicleFilter selects every stored record of one vehicle.
func VehicleFilter(vehicle string) string { return inPrefix + "*." + vehicle + ".>" }

// PartitionOf is the partition the server assigns vehicle to: FNV-1a of the vehicle
// token modulo n, as the stream's partition() subject transform computes it.
func PartitionOf(vehicle string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(vehicle))
	return int(h.Sum32() % uint32(n))
}

// subjectTransform maps published subjects to stored ones, adding the partition token.
func subjectTransform(partitions int) (src, dest string) {
	return upPrefix + "*.*", fmt.Sprintf("%s{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", inPrefix, partitions)
}

// EventSubject is where a service publishes the event id, of kind, about vehicle. The last
// token is a digest of the id, so every event has a subject of its own: the stream itself
// then knows whether an event was ever stored (a publish expecting an empty subject), for
// as long as it retains events, well past the Nats-Msg-Id window.
func EventSubject(source, kind, vehicle, id string) string {
	return evtPrefix + source + "." + kind + "." + vehicle + "." + EventToken(id)
}

// EventToken is the subject token of event id: 26 characters of base32 SHA-256.
func EventToken(id string) string {
	sum := sha256.Sum256([]byte(id))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16]))
}

// EventFilter selects the events of source and kind about vehicle; each may be "*".
func EventFilter(source, kind, vehicle string) string {
	return evtPrefix + source + "." + kind + "." + vehicle + ".*"
}

// EventWildcard matches all events.
func EventWildcard() string { return evtPrefix + ">" }

// EventSourceFilter matches every event a source publishes.
func EventSourceFilter(source string) string { return evtPrefix + source + ".>" }

// DeadLetterSubject is where the consumer durable moves input it cannot process.
func DeadLetterSubject(durable string) string { return deadPrefix + durable }

// DeadLetterWildcard matches every dead letter.
func DeadLetterWildcard() string { return deadPrefix + ">" }

// LiveSubject carries a vehicle's committed live state from the instance that owns its
// partition to the other instances, so a watcher on any instance sees the whole fleet.
// It is core NATS: a missed live update is superseded by the next one and by the store.
func LiveSubject(vehicle string) string { return livePrefix + vehicle }

// LiveWildcard matches every live update.
func LiveWildcard() string { return livePrefix + "*" }

// LiveVehicle returns the vehicle of a live-update subject.
func LiveVehicle(subject string) (string, bool) {
	v, ok := strings.CutPrefix(subject, livePrefix)
	return v, ok && v != "" && strings.IndexByte(v, '.') < 0
}

// Address is a parsed device subject.
type Address struct {
	Partition int // -1 for a subject as published (fleet.up...)
	Vehicle   string
	Kind      string
}

// ErrUnknownSubject is returned for a subject outside the device scheme.
var ErrUnknownSubject = fmt.Errorf("unknown subject")

// ParseSubject splits a device subject, as published or as stored.
func ParseSubject(subject string) (Address, error) {
	switch {
	case strings.HasPrefix(subject, inPrefix):
		rest := subject[len(inPrefix):]
		i := strings.IndexByte(rest, '.')
		if i <= 0 {
			return Address{}, fmt.Errorf("%w: %q", ErrUnknownSubject, subject)
		}
		p, err := strconv.Atoi(rest[:i])
		if err != nil || p < 0 {
			return Address{}, fmt.Errorf("%w: bad partition in %q", ErrUnknownSubject, subject)
		}
		a, err := parseVehicleKind(rest[i+1:], subject)
		a.Partition = p
		return a, err
	case strings.HasPrefix(subject, upPrefix):
		a, err := parseVehicleKind(subject[len(upPrefix):], subject)
		a.Partition = -1
		return a, err
	}
	return Address{}, fmt.Errorf("%w: %q", ErrUnknownSubject, subject)
}

func parseVehicleKind(rest, subject string) (Address, error) {
	i := strings.IndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 || strings.IndexByte(rest[i+1:], '.') >= 0 {
		return Address{}, fmt.Errorf("%w: %q", ErrUnknownSubject, subject)
	}
	a := Address{Vehicle: rest[:i], Kind: rest[i+1:]}
	switch a.Kind {
	case KindTelemetry, KindAlarm, KindDiag, KindReply:
		return a, nil
	}
	return Address{}, fmt.Errorf("%w: kind %q in %q", ErrUnknownSubject, a.Kind, subject)
}
