package coap

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Request errors, each answered with its own CoAP code (see code).
var (
	// ErrNoCredentials: the request names no device or no secret.
	ErrNoCredentials = errors.New("device credentials missing")
	// ErrRefused: the registry does not know the device, it is revoked, or the secret is
	// wrong. The three are answered alike so a prober learns nothing.
	ErrRefused = errors.New("device refused")
	// ErrUnknownKind: the path names no record kind of the tracker protocol.
	ErrUnknownKind = errors.New("unknown record kind")
	// ErrContentFormat: neither protobuf (application/octet-stream, or no Content-Format)
	// nor JSON (application/json).
	ErrContentFormat = errors.New("unsupported content format")
	// ErrBadReply: a CommandReply that does not decode, quotes no command, or speaks for
	// another vehicle.
	ErrBadReply = errors.New("malformed command reply")
)

// Query parameters carrying a device's credentials (docs/protocol-coap.md).
const (
	queryID     = "id"
	querySecret = "key"
	// maxSecretLen bounds a secret before it reaches the registry.
	maxSecretLen = 256
)

// credentials are a request's device id and secret.
type credentials struct{ id, secret string }

// parseCredentials reads "id=<device>" and "key=<secret>" from the Uri-Query options.
// Each must appear exactly once; the id must be a valid vehicle id.
func parseCredentials(queries []string) (credentials, error) {
	var c credentials
	var nID, nSecret int
	for _, q := range queries {
		k, v, _ := strings.Cut(q, "=")
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		switch k {
		case queryID:
			c.id, nID = v, nID+1
		case querySecret:
			c.secret, nSecret = v, nSecret+1
		}
	}
	if nID != 1 || nSecret != 1 || c.secret == "" {
		return credentials{}, fmt.Errorf("%w: want one %s= and one %s= query option", ErrNoCredentials, queryID, querySecret)
	}
	if len(c.secret) > maxSecretLen {
		return credentials{}, fmt.Errorf("%w: secret longer than %d bytes", ErrRefused, maxSecretLen)
	}
	if err := telemetry.ValidVehicleID(c.id); err != nil {
		return credentials{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return c, nil
}

// isJSON tells protobuf from JSON by the request's Content-Format.
func isJSON(cf message.MediaType, has bool) (bool, error) {
	switch {
	case !has || cf == message.AppOctets:
		return false, nil
	case cf == message.AppJSON:
		return true, nil
	}
	return false, fmt.Errorf("%w: %v", ErrContentFormat, cf)
}

// checkUp validates the payload of POST /up/<kind> from vehicle, the way the services will
// read it, so that what is refused is refused before it is stored and the device learns
// why. It returns the usable record count (0 for a reply) and the per-record problems the
// services will count. A batch is checked whole: wrong vehicle, no records, too many.
func checkUp(vehicle, kind string, body []byte, json bool) (int, []wire.RecordError, error) {
	if len(body) > wire.MaxMessageBytes {
		return 0, nil, fmt.Errorf("%w: %d bytes > %d", wire.ErrTooLarge, len(body), wire.MaxMessageBytes)
	}
	switch kind {
	case bus.KindTelemetry, bus.KindAlarm, bus.KindDiag:
		recs, bad, err := wire.DecodeBatch(vehicle, body, json)
		return len(recs), bad, err
	case bus.KindReply:
		var r fleetv1.CommandReply
		var err error
		if json {
			err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, &r)
		} else {
			err = proto.Unmarshal(body, &r)
		}
		switch {
		case err != nil:
			return 0, nil, fmt.Errorf("%w: %v", ErrBadReply, err)
		case r.GetCommandId() == "" || len(r.GetCommandId()) > 64:
			return 0, nil, fmt.Errorf("%w: command id missing or longer than 64", ErrBadReply)
		case r.GetVehicleId() != "" && r.GetVehicleId() != vehicle:
			return 0, nil, fmt.Errorf("%w: reply says vehicle %q", ErrBadReply, r.GetVehicleId())
		}
		return 0, nil, nil
	}
	return 0, nil, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
}

// code maps an error to the CoAP response code: one table for the whole edge.
func code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.Changed
	case errors.Is(err, ErrNoCredentials), errors.Is(err, ErrRefused):
		return codes.Unauthorized
	case errors.Is(err, ErrUnknownKind):
		return codes.NotFound
	case errors.Is(err, ErrContentFormat):
		return codes.UnsupportedMediaType
	case errors.Is(err, wire.ErrTooLarge):
		return codes.RequestEntityTooLarge
	case errors.Is(err, ErrStore), errors.Is(err, apierr.ErrUnavailable):
		return codes.ServiceUnavailable
	}
	return codes.BadRequest
}

// reason names a refusal for the rejection metric.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrNoCredentials):
		return "no_credentials"
	case errors.Is(err, ErrRefused):
		return "refused_device"
	case errors.Is(err, ErrUnknownKind):
		return "unknown_kind"
	case errors.Is(err, ErrContentFormat):
		return "content_format"
	case errors.Is(err, ErrBadReply):
		return "bad_reply"
	case errors.Is(err, ErrStore), errors.Is(err, apierr.ErrUnavailable):
		return "unavailable"
	}
	return wire.Reason(err)
}
