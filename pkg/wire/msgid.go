package wire

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Message ids (Nats-Msg-Id) on the telemetry stream. JetStream's duplicate window is per
// stream, not per subject: a message whose id equals one stored in the last window is
// dropped, whatever its subject. A publisher whose ids another can predict can therefore be
// silenced by that other publishing first, on its own subject, with the predicted id
// (docs/security.md, "Message ids"). Ids must be unpredictable to everyone but their
// publisher, and the same for a publisher's own resends:
//
//   - a gateway (Teltonika, CoAP) derives them with HMAC-SHA256 under a per-deployment
//     key from the vehicle and what identifies the record batch (GatewayMsgID): the same
//     packet resent gives the same id, and no device knows the key;
//   - a tracker publishing over NATS uses "<its own id>-<32 or more random hex digits>",
//     drawn once per batch and kept for its resends (docs/protocol.md).
//
// MsgIDOwnedBy tells the services whether an id follows the rule for the subject's
// vehicle; one that does not is a squatting attempt and is rejected.

// MsgIDKeyBytes is the size of a gateway's message id key.
const MsgIDKeyBytes = 32

// NewMsgIDKey returns a fresh random key.
func NewMsgIDKey() []byte {
	k := make([]byte, MsgIDKeyBytes)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go 1.24+)
	return k
}

// ErrMsgIDKey reports an unusable key.
var ErrMsgIDKey = errors.New("message id key")

// ParseMsgIDKey reads a key written as hex (what LoadOrCreateMsgIDKey stores and
// deployments put in a secret): at least 16 bytes.
func ParseMsgIDKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: want hex: %v", ErrMsgIDKey, err)
	}
	if len(k) < 16 {
		return nil, fmt.Errorf("%w: %d bytes, want at least 16", ErrMsgIDKey, len(k))
	}
	return k, nil
}

// LoadOrCreateMsgIDKey reads the hex key in path, creating it (mode 0600) when missing.
func LoadOrCreateMsgIDKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := NewMsgIDKey()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMsgIDKey, err)
		}
		_, werr := f.WriteString(hex.EncodeToString(k) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("%w: %v", ErrMsgIDKey, werr)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMsgIDKey, err)
	}
	return ParseMsgIDKey(string(data))
}

// GatewayMsgID is the message id a gateway gives a batch of vehicle's records:
// "<vehicle>-g<32 hex digits of HMAC-SHA256(key, vehicle, parts...)>". Each part is
// length-prefixed, so no two different inputs share the MAC's input.
func GatewayMsgID(key []byte, vehicle string, parts ...[]byte) string {
	m := hmac.New(sha256.New, key)
	write := func(b []byte) {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
		m.Write(n[:])
		m.Write(b)
	}
	write([]byte(vehicle))
	for _, p := range parts {
		write(p)
	}
	return vehicle + "-g" + hex.EncodeToString(m.Sum(nil)[:16])
}

// MsgIDOwnedBy reports whether id may stand on a message of vehicle's subject: empty (no
// deduplication asked for) or beginning with "<vehicle>-".
func MsgIDOwnedBy(id, vehicle string) bool {
	return id == "" || (len(id) > len(vehicle) && strings.HasPrefix(id, vehicle) && id[len(vehicle)] == '-')
}
