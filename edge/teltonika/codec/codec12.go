package codec

import (
	"encoding/binary"
	"fmt"
)

// Codec 12 message types: a command from the server, a response from the device.
const (
	TypeCommand  byte = 0x05
	TypeResponse byte = 0x06
)

// MaxCommandText bounds a Codec 12 command or response. Teltonika's GPRS commands are
// SMS texts (at most a few hundred bytes); getinfo-style responses stay under 1 KiB.
const MaxCommandText = 4 << 10

// Message is one Codec 12 command or response.
type Message struct {
	Type byte
	Text []byte // aliases the decoded body
}

// DecodeMessage parses a Codec 12 body: codec ID, quantity 1, type, size (4), text,
// quantity 2. One message per body; both quantities must be 1.
func DecodeMessage(body []byte) (Message, error) {
	var m Message
	if len(body) < 1+1+1+4+1 {
		return m, fmt.Errorf("%w: %d-byte body", ErrCommandFormat, len(body))
	}
	if body[0] != Codec12 {
		return m, fmt.Errorf("%w: %#02x", ErrCodec, body[0])
	}
	if body[1] != 1 || body[len(body)-1] != 1 {
		return m, fmt.Errorf("%w: quantities %d and %d, want 1", ErrCommandFormat, body[1], body[len(body)-1])
	}
	m.Type = body[2]
	if m.Type != TypeCommand && m.Type != TypeResponse {
		return m, fmt.Errorf("%w: type %#02x", ErrCommandFormat, m.Type)
	}
	n := binary.BigEndian.Uint32(body[3:])
	if n > MaxCommandText || int(n) != len(body)-8 {
		return m, fmt.Errorf("%w: size %d in a %d-byte body", ErrCommandFormat, n, len(body))
	}
	m.Text = body[7 : 7+n]
	return m, nil
}

// AppendMessage appends a Codec 12 body of type typ carrying text.
func AppendMessage(dst []byte, typ byte, text string) []byte {
	dst = append(dst, Codec12, 1, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(text)))
	dst = append(dst, text...)
	return append(dst, 1)
}
