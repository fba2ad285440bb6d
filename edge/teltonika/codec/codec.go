// Package codec reads and writes Teltonika's binary tracker protocol: the TCP IMEI
// handshake and AVL frames, the UDP channel header, AVL data in Codec 8, Codec 8 Extended
// and Codec 16, and GPRS commands in Codec 12. It does no I/O beyond what a caller hands
// it and knows nothing of NATS or the platform's record; the gateway (package teltonika)
// does the mapping.
//
// Layout (Teltonika "Data Sending Protocols"; docs/protocol-teltonika.md):
//
//	TCP frame: 00000000 | length (4) | body | 0000 CRC-16/IBM (4)
//	body:      codec ID (1) | N1 (1) | records | N2 (1)          (length counts the body)
//	UDP:       length (2) | packet ID (2) | 01 | AVL packet ID (1) | IMEI length (2) | IMEI | body
//
// Every decoder is bounded by the bytes it is given: it never allocates more than a
// small multiple of its input and returns an error wrapping one of the sentinels below
// for anything it does not understand.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Codec IDs.
const (
	Codec8  byte = 0x08
	Codec8E byte = 0x8E
	Codec16 byte = 0x10
	Codec12 byte = 0x0C
)

// MaxBody is the largest body length accepted in any frame. Teltonika devices send at
// most 1280 bytes per AVL packet (512 for the FM63 family); a larger announced length is
// a broken or hostile peer, and a reader would otherwise allocate whatever it claims.
const MaxBody = 64 << 10

// Decode errors. Each names one way a peer can be wrong; the gateway counts them by
// reason (Reason).
var (
	ErrTruncated     = errors.New("frame shorter than its header says")
	ErrPreamble      = errors.New("frame does not start with the zero preamble")
	ErrLength        = errors.New("announced data length out of bounds")
	ErrCRC           = errors.New("CRC-16 mismatch")
	ErrCodec         = errors.New("unknown codec")
	ErrCount         = errors.New("record count disagrees with the body")
	ErrIMEI          = errors.New("malformed IMEI")
	ErrUDPHeader     = errors.New("malformed UDP channel header")
	ErrIOElement     = errors.New("malformed IO element")
	ErrCommandFormat = errors.New("malformed Codec 12 message")
)

// Reason names a decode failure for metrics and logs.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTruncated):
		return "partial_frame"
	case errors.Is(err, ErrPreamble):
		return "bad_preamble"
	case errors.Is(err, ErrLength):
		return "bad_length"
	case errors.Is(err, ErrCRC):
		return "crc_mismatch"
	case errors.Is(err, ErrCodec):
		return "unknown_codec"
	case errors.Is(err, ErrCount):
		return "count_mismatch"
	case errors.Is(err, ErrIMEI):
		return "bad_imei"
	case errors.Is(err, ErrUDPHeader):
		return "bad_udp_header"
	case errors.Is(err, ErrIOElement):
		return "bad_io_element"
	case errors.Is(err, ErrCommandFormat):
		return "bad_command_message"
	}
	return "malformed"
}

// CRC16 is CRC-16/IBM (also called ARC): reflected polynomial 0xA001, initial value 0.
// Table-driven: it runs over every frame twice (check and message id), and bit by bit it
// was a fifth of the gateway's CPU under load.
func CRC16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc = crc>>8 ^ crcTable[byte(crc)^c]
	}
	return crc
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
		t[i] = crc
	}
	return t
}()

// FrameHeaderLen is the preamble and length that precede a TCP body; FrameTrailerLen is
// the CRC that follows it.
const (
	FrameHeaderLen  = 8
	FrameTrailerLen = 4
)

// BodyLen checks a TCP frame header (preamble and length) and returns the body length.
func BodyLen(hdr []byte) (int, error) {
	if len(hdr) < FrameHeaderLen {
		return 0, ErrTruncated
	}
	if binary.BigEndian.Uint32(hdr) != 0 {
		return 0, fmt.Errorf("%w: %x", ErrPreamble, hdr[:4])
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	// codec ID, a count and the repeated count are the least any body holds.
	if n < 3 || n > MaxBody {
		return 0, fmt.Errorf("%w: %d bytes", ErrLength, n)
	}
	return int(n), nil
}

// CheckCRC verifies the 4-byte CRC field that follows body.
func CheckCRC(body, trailer []byte) error {
	if len(trailer) < FrameTrailerLen {
		return ErrTruncated
	}
	got := binary.BigEndian.Uint32(trailer)
	if want := uint32(CRC16(body)); got != want {
		return fmt.Errorf("%w: frame says %04x, body gives %04x", ErrCRC, got, want)
	}
	return nil
}

// ParseFrame splits a whole TCP frame into its body after checking preamble, length
// and CRC. Bytes after the frame are returned as rest.
func ParseFrame(frame []byte) (body, rest []byte, err error) {
	n, err := BodyLen(frame)
	if err != nil {
		return nil, nil, err
	}
	end := FrameHeaderLen + n + FrameTrailerLen
	if len(frame) < end {
		return nil, nil, fmt.Errorf("%w: %d of %d bytes", ErrTruncated, len(frame), end)
	}
	body = frame[FrameHeaderLen : FrameHeaderLen+n]
	if err := CheckCRC(body, frame[FrameHeaderLen+n:end]); err != nil {
		return nil, nil, err
	}
	return body, frame[end:], nil
}

// AppendFrame wraps body in a TCP frame (preamble, length, CRC).
func AppendFrame(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	dst = append(dst, body...)
	return binary.BigEndian.AppendUint32(dst, uint32(CRC16(body)))
}

// AppendAck appends the TCP acknowledgement of n accepted records.
func AppendAck(dst []byte, n int) []byte { return binary.BigEndian.AppendUint32(dst, uint32(n)) }

// IMEI handshake.
const (
	// HandshakeAccept and HandshakeRefuse are the server's one-byte answers.
	HandshakeAccept byte = 0x01
	HandshakeRefuse byte = 0x00
	// MaxIMEILen bounds the handshake; an IMEI is 15 digits (an IMEISV 16).
	MaxIMEILen = 17
	minIMEILen = 8
)

// IMEILen checks the 2-byte length that opens a TCP session.
func IMEILen(hdr []byte) (int, error) {
	if len(hdr) < 2 {
		return 0, ErrTruncated
	}
	n := int(binary.BigEndian.Uint16(hdr))
	if n < minIMEILen || n > MaxIMEILen {
		return 0, fmt.Errorf("%w: length %d", ErrIMEI, n)
	}
	return n, nil
}

// CheckIMEI returns the IMEI as a string when it is all decimal digits.
func CheckIMEI(b []byte) (string, error) {
	if len(b) < minIMEILen || len(b) > MaxIMEILen {
		return "", fmt.Errorf("%w: length %d", ErrIMEI, len(b))
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return "", fmt.Errorf("%w: non-digit byte %#x", ErrIMEI, c)
		}
	}
	return string(b), nil
}

// AppendIMEI appends the handshake a device sends.
func AppendIMEI(dst []byte, imei string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(imei)))
	return append(dst, imei...)
}
