package codec

import (
	"encoding/binary"
	"fmt"
)

// Record is one AVL record as the device encoded it, units untouched.
type Record struct {
	TimestampMs int64 // milliseconds since the Unix epoch, UTC
	Priority    uint8 // 0 low, 1 high, 2 panic
	Lon, Lat    int32 // degrees × 10⁷
	Altitude    int16 // metres
	Angle       uint16
	Satellites  uint8
	Speed       uint16 // km/h
	EventID     uint16 // the IO element that triggered the record (0: periodic)
	Generation  uint8  // Codec 16 only: how the record was generated
	IO          []IO
}

// IO is one IO element. Fixed-size values (1, 2, 4 or 8 bytes) are in Value, unsigned
// big-endian; variable-length Codec 8E values are in Raw with Size 0.
type IO struct {
	ID    uint16
	Size  uint8
	Value uint64
	Raw   []byte // aliases the decoded body
}

// Packet is the content of one AVL body: its codec and its records.
type Packet struct {
	Codec   byte
	Records []Record

	io []IO // arena the records' IO slices point into, reused across Decode calls
}

// recordMin is the smallest record of any codec: timestamp, priority, GPS element and
// the shortest IO section (Codec 8: event ID, total and four zero counts).
const recordMin = 8 + 1 + 15 + 6

// Decode parses an AVL body (codec ID through N2) into p, reusing p's memory. The body
// must hold exactly N1 records and end with N2 = N1. IO values of variable length alias
// body, so body must outlive the records.
func (p *Packet) Decode(body []byte) error {
	if len(body) < 3 {
		return fmt.Errorf("%w: %d-byte body", ErrTruncated, len(body))
	}
	codec := body[0]
	switch codec {
	case Codec8, Codec8E, Codec16:
	default:
		return fmt.Errorf("%w: %#02x", ErrCodec, codec)
	}
	n1, n2 := int(body[1]), int(body[len(body)-1])
	if n1 != n2 {
		return fmt.Errorf("%w: N1 %d, N2 %d", ErrCount, n1, n2)
	}
	if n1 == 0 {
		return fmt.Errorf("%w: no records", ErrCount)
	}
	data := body[2 : len(body)-1]
	if len(data) < n1*recordMin {
		return fmt.Errorf("%w: %d records cannot fit in %d bytes", ErrCount, n1, len(data))
	}
	p.Codec = codec
	p.Records = p.Records[:0]
	p.io = p.io[:0]
	d := reader{b: data}
	for i := range n1 {
		var r Record
		if err := d.record(codec, &r, &p.io); err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		p.Records = append(p.Records, r)
	}
	if d.off != len(data) {
		return fmt.Errorf("%w: %d bytes left after %d records", ErrCount, len(data)-d.off, n1)
	}
	// The arena may have moved while growing: point every record at its final slice.
	off := 0
	for i := range p.Records {
		n := len(p.Records[i].IO)
		p.Records[i].IO = p.io[off : off+n : off+n]
		off += n
	}
	return nil
}

type reader struct {
	b   []byte
	off int
	err error
}

func (d *reader) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = fmt.Errorf("%w: need %d bytes at offset %d of %d", ErrCount, n, d.off, len(d.b))
		return false
	}
	return true
}

func (d *reader) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *reader) u16() uint16 {
	if !d.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b[d.off:])
	d.off += 2
	return v
}

func (d *reader) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}

func (d *reader) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

func (d *reader) bytes(n int) []byte {
	if !d.need(n) {
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

func (d *reader) uint(size int) uint64 {
	switch size {
	case 1:
		return uint64(d.u8())
	case 2:
		return uint64(d.u16())
	case 4:
		return uint64(d.u32())
	}
	return d.u64()
}

// record reads one record; its IO elements are appended to arena and r.IO is set to the
// appended part (re-pointed by Decode once the arena stops growing).
func (d *reader) record(codec byte, r *Record, arena *[]IO) error {
	r.TimestampMs = int64(d.u64())
	r.Priority = d.u8()
	r.Lon = int32(d.u32())
	r.Lat = int32(d.u32())
	r.Altitude = int16(d.u16())
	r.Angle = d.u16()
	r.Satellites = d.u8()
	r.Speed = d.u16()

	wide := codec == Codec8E // IDs and counts of 2 bytes
	idWide := codec != Codec8
	cnt := func() int {
		if wide {
			return int(d.u16())
		}
		return int(d.u8())
	}
	id := func() uint16 {
		if idWide {
			return d.u16()
		}
		return uint16(d.u8())
	}
	r.EventID = id()
	if codec == Codec16 {
		r.Generation = d.u8()
	}
	total := cnt()
	start := len(*arena)
	for _, size := range [...]int{1, 2, 4, 8} {
		n := cnt()
		// Each element needs at least its id and value; refuse counts the rest of the
		// body cannot hold before appending anything.
		idLen := 1
		if idWide {
			idLen = 2
		}
		if !d.need(n * (idLen + size)) {
			return d.err
		}
		for range n {
			e := IO{ID: id(), Size: uint8(size)}
			e.Value = d.uint(size)
			*arena = append(*arena, e)
		}
	}
	if codec == Codec8E {
		n := int(d.u16())
		if !d.need(n * 4) {
			return d.err
		}
		for range n {
			e := IO{ID: d.u16()}
			l := int(d.u16())
			e.Raw = d.bytes(l)
			*arena = append(*arena, e)
		}
	}
	if d.err != nil {
		return d.err
	}
	got := len(*arena) - start
	if got != total {
		return fmt.Errorf("%w: total says %d elements, sections hold %d", ErrIOElement, total, got)
	}
	r.IO = (*arena)[start:]
	return nil
}

// AppendBody appends the AVL body (codec ID through N2) of records in codec. It is the
// inverse of Decode, for devices simulated in tests and in fleetsim. IO elements are
// grouped by size in the order given; in Codec 8 an ID above 255 is an error, as is a
// variable-length element outside Codec 8E or more than 255 records.
func AppendBody(dst []byte, codec byte, recs []Record) ([]byte, error) {
	switch codec {
	case Codec8, Codec8E, Codec16:
	default:
		return dst, fmt.Errorf("%w: %#02x", ErrCodec, codec)
	}
	if len(recs) == 0 || len(recs) > 255 {
		return dst, fmt.Errorf("%w: %d records", ErrCount, len(recs))
	}
	dst = append(dst, codec, byte(len(recs)))
	wide := codec == Codec8E
	idWide := codec != Codec8
	putCnt := func(n int) {
		if wide {
			dst = binary.BigEndian.AppendUint16(dst, uint16(n))
		} else {
			dst = append(dst, byte(n))
		}
	}
	putID := func(id uint16) {
		if idWide {
			dst = binary.BigEndian.AppendUint16(dst, id)
		} else {
			dst = append(dst, byte(id))
		}
	}
	for i := range recs {
		r := &recs[i]
		dst = binary.BigEndian.AppendUint64(dst, uint64(r.TimestampMs))
		dst = append(dst, r.Priority)
		dst = binary.BigEndian.AppendUint32(dst, uint32(r.Lon))
		dst = binary.BigEndian.AppendUint32(dst, uint32(r.Lat))
		dst = binary.BigEndian.AppendUint16(dst, uint16(r.Altitude))
		dst = binary.BigEndian.AppendUint16(dst, r.Angle)
		dst = append(dst, r.Satellites)
		dst = binary.BigEndian.AppendUint16(dst, r.Speed)
		var bySize [4]int
		nx := 0
		for _, e := range r.IO {
			if codec == Codec8 && e.ID > 255 {
				return dst, fmt.Errorf("%w: id %d does not fit Codec 8", ErrIOElement, e.ID)
			}
			switch e.Size {
			case 1:
				bySize[0]++
			case 2:
				bySize[1]++
			case 4:
				bySize[2]++
			case 8:
				bySize[3]++
			case 0:
				if codec != Codec8E {
					return dst, fmt.Errorf("%w: variable-length element %d needs Codec 8E", ErrIOElement, e.ID)
				}
				nx++
			default:
				return dst, fmt.Errorf("%w: element %d of %d bytes", ErrIOElement, e.ID, e.Size)
			}
		}
		if codec == Codec8 && r.EventID > 255 {
			return dst, fmt.Errorf("%w: event id %d does not fit Codec 8", ErrIOElement, r.EventID)
		}
		putID(r.EventID)
		if codec == Codec16 {
			dst = append(dst, r.Generation)
		}
		putCnt(len(r.IO))
		for si, size := range [...]uint8{1, 2, 4, 8} {
			putCnt(bySize[si])
			for _, e := range r.IO {
				if e.Size != size {
					continue
				}
				putID(e.ID)
				switch size {
				case 1:
					dst = append(dst, byte(e.Value))
				case 2:
					dst = binary.BigEndian.AppendUint16(dst, uint16(e.Value))
				case 4:
					dst = binary.BigEndian.AppendUint32(dst, uint32(e.Value))
				case 8:
					dst = binary.BigEndian.AppendUint64(dst, e.Value)
				}
			}
		}
		if codec == Codec8E {
			putCnt(nx)
			for _, e := range r.IO {
				if e.Size == 0 {
					dst = binary.BigEndian.AppendUint16(dst, e.ID)
					dst = binary.BigEndian.AppendUint16(dst, uint16(len(e.Raw)))
					dst = append(dst, e.Raw...)
				}
			}
		}
	}
	return append(dst, byte(len(recs))), nil
}
