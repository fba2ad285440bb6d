package codec

import (
	"encoding/binary"
	"fmt"
)

// UDPHeader is the channel header in front of every UDP datagram.
type UDPHeader struct {
	PacketID    uint16 // echoed in the acknowledgement
	AVLPacketID uint8  // the device's counter of AVL packets, echoed too
	IMEI        string
}

// udpPacketType is the only packet type Teltonika devices send ("not usable byte", 0x01).
const udpPacketType = 0x01

// ParseUDP splits a datagram into its channel header and AVL body (codec ID through N2;
// UDP carries no CRC). The length field must match the datagram exactly.
func ParseUDP(dgram []byte) (UDPHeader, []byte, error) {
	var h UDPHeader
	if len(dgram) < 2+2+1+1+2 {
		return h, nil, fmt.Errorf("%w: %d-byte datagram", ErrTruncated, len(dgram))
	}
	if n := int(binary.BigEndian.Uint16(dgram)); n != len(dgram)-2 {
		return h, nil, fmt.Errorf("%w: length says %d, datagram holds %d", ErrLength, n, len(dgram)-2)
	}
	h.PacketID = binary.BigEndian.Uint16(dgram[2:])
	if dgram[4] != udpPacketType {
		return h, nil, fmt.Errorf("%w: packet type %#02x", ErrUDPHeader, dgram[4])
	}
	h.AVLPacketID = dgram[5]
	n, err := IMEILen(dgram[6:])
	if err != nil {
		return h, nil, err
	}
	if len(dgram) < 8+n {
		return h, nil, fmt.Errorf("%w: IMEI of %d bytes", ErrTruncated, n)
	}
	if h.IMEI, err = CheckIMEI(dgram[8 : 8+n]); err != nil {
		return h, nil, err
	}
	return h, dgram[8+n:], nil
}

// AppendUDP appends a datagram carrying body under h (what a device sends).
func AppendUDP(dst []byte, h UDPHeader, body []byte) []byte {
	n := 2 + 1 + 1 + 2 + len(h.IMEI) + len(body)
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	dst = binary.BigEndian.AppendUint16(dst, h.PacketID)
	dst = append(dst, udpPacketType, h.AVLPacketID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.IMEI)))
	dst = append(dst, h.IMEI...)
	return append(dst, body...)
}

// AppendUDPAck appends the server's answer to the datagram under h: accepted records
// (0 when nothing was stored, so the device sends again).
func AppendUDPAck(dst []byte, h UDPHeader, accepted int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, 5)
	dst = binary.BigEndian.AppendUint16(dst, h.PacketID)
	return append(dst, udpPacketType, h.AVLPacketID, byte(accepted))
}

// ParseUDPAck reads a server acknowledgement (what a device receives).
func ParseUDPAck(b []byte) (packetID uint16, avlPacketID uint8, accepted int, err error) {
	if len(b) != 7 || binary.BigEndian.Uint16(b) != 5 || b[4] != udpPacketType {
		return 0, 0, 0, fmt.Errorf("%w: ack % x", ErrUDPHeader, b)
	}
	return binary.BigEndian.Uint16(b[2:]), b[5], int(b[6]), nil
}
