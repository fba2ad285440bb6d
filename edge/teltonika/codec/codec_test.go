package codec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// hx joins annotated hex pieces into bytes; spaces are ignored.
func hx(t testing.TB, pieces ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(pieces, ""), " ", ""))
	if err != nil {
		t.Fatalf("bad hex in test vector: %v", err)
	}
	return b
}

// Public vectors V1–V6 from the shared Teltonika test data (testdata/teltonika/README.md beside the repository) (Teltonika's wiki
// examples and frames from Traccar's test suite).
const (
	vecV1 = "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF"
	vecV2 = "000000000000004308020000016B40D57B480100000000000000000000000000000001010101000000000000016B40D5C198010000000000000000000000000000000101010101000000020000252C"
	vecV3 = "000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994"
	vecV4 = "003DCAFE0105000F33353230393330383634303336353508010000016B4F815B30010000000000000000000000000000000103021503010101425DBC000001"
	vecV5 = "000000000000004508010000015eb70a86d00024089d4d21dee3860137005f12005f000e06ef01f00150011503c800450108b5000bb6000642382718005fcd057ace19d3430f57440000000001000002bf"
	vecV6 = "00000000000000a38e0100000178b11c9e1000040bbbc91f03190c002100e113001300000010000600ef0100f00100150300c800004501001e070005004237e00018000a00ce166200430f970024059f000300f10000665900c70000001e00100000a1b500000002010000115756315a5a5a32455a38363031353338380119002950303239392c50303637352c50303637342c50303637322c50303637312c50303437312c50324241430100001ad8"
)

// Hand-built vectors, one field per piece, laid out from the specification. Length and
// CRC were computed independently of this package (CRC-16/ARC, poly 0xA001 reflected).
var (
	// H1: Codec 8, one moving record with ignition, movement, GSM 4, GNSS fix, external
	// 12.850 V, battery 4.012 V, speed 42, PDOP 1.2, HDOP 0.8, odometer 123456 m and an
	// unknown 8-byte element 78 (iButton).
	vecH1 = []string{
		"00000000", "00000046", // preamble, length 70
		"08", "01", // codec 8, N1
		"000001A20244E800", "01", // 2026-11-22T08:00:00Z, priority high
		"07FD6CE8", "1F4DEE68", "0022", "005A", "0B", "002A", // lon 13.4049, lat 52.5201, alt 34, angle 90, 11 sats, 42 km/h
		"EF", "0B", // event IO 239, 11 elements
		"04", "EF01", "F001", "1504", "4501", // 1-byte: 239=1 240=1 21=4 69=1
		"05", "423232", "430FAC", "18002A", "B5000C", "B60008", // 2-byte: 66=12850 67=4012 24=42 181=12 182=8
		"01", "100001E240", // 4-byte: 16=123456
		"01", "4E0102030405060708", // 8-byte: 78=0x0102030405060708
		"01",       // N2
		"0000847D", // CRC
	}
	// H2: Codec 8E, two records. Record 1 (no fix, ignition off): tow, unplug, fuel 55 %,
	// NX 281 DTCs "P0301,P0420" and NX 256 "ABC". Record 2 (panic priority): jamming 2,
	// crash 1, and element 300 (above Codec 8's one-byte ids) = 42 in 4 bytes.
	vecH2 = []string{
		"00000000", "0000007E", // length 126
		"8E", "02",
		"000001A20244E800", "00",
		"07FD6CE8", "1F4DEE68", "0022", "0000", "00", "0000", // last fix kept, angle/sats/speed 0
		"00F6", "0006", // event 246, 6 elements
		"0003", "00EF00", "00F601", "00FC01", // 239=0 246=1 252=1
		"0001", "00590037", // 89=55
		"0000", "0000", // no 4- or 8-byte elements
		"0002", "0119", "000B", "50303330312C5030343230", "0100", "0003", "414243", // NX
		"000001A20244FB88", "02", // +5 s, panic
		"07FD6CE8", "1F4DEE68", "0022", "0000", "00", "0000",
		"00F9", "0003", // event 249, 3 elements
		"0002", "00F902", "00F701", // 249=2 247=1
		"0000", "0001", "012C0000002A", "0000", "0000", // 300=42
		"02",
		"000088D6",
	}
	// H3: Codec 16 (two-byte ids, one-byte counts, generation type), southern and western
	// hemisphere, below sea level: lon -13.4049, lat -52.5201, alt -10, angle 359, 5 sats,
	// 100 km/h; generation 7 (periodical); 239=1, 350=5, 180=258.
	vecH3 = []string{
		"00000000", "0000002D", // length 45
		"10", "01",
		"000001A20244E800", "01",
		"F8029318", "E0B21198", "FFF6", "0167", "05", "0064",
		"00EF", "07", "03", // event 239, generation 7, 3 elements
		"02", "00EF01", "015E05",
		"01", "00B40102",
		"00", "00",
		"01",
		"00002004",
	}
	// H4: Codec 12. "getinfo" is the wiki's example; the others are built the same way.
	vecGetinfo  = []string{"00000000", "0000000F", "0C", "01", "05", "00000007", "676574696E666F", "01", "00004312"}
	vecSetdigo  = []string{"00000000", "00000013", "0C", "01", "05", "0000000B", "7365746469676F75742031", "01", "000087A2"} // "setdigout 1"
	vecGetgps   = []string{"00000000", "0000000E", "0C", "01", "05", "00000006", "676574677073", "01", "0000CCD7"}           // "getgps"
	vecDoutResp = []string{"00000000", "00000017", "0C", "01", "06", "0000000F", "444F5554313A3120444F5554323A30", "01", "000091A7"}
)

func ioMap(r Record) map[uint16]uint64 {
	m := map[uint16]uint64{}
	for _, e := range r.IO {
		if e.Size != 0 {
			m[e.ID] = e.Value
		}
	}
	return m
}

func decodeTCP(t *testing.T, frame []byte) Packet {
	t.Helper()
	body, rest, err := ParseFrame(frame)
	if err != nil {
		t.Fatalf("ParseFrame: %v", err)
	}
	if len(rest) != 0 {
		t.Fatalf("got %d bytes after the frame, want 0", len(rest))
	}
	var p Packet
	if err := p.Decode(body); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return p
}

func TestCRC16(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"check value of CRC-16/ARC", []byte("123456789"), 0xBB3D},
		{"empty", nil, 0},
		{"V1 body", hx(t, vecV1)[8 : 8+0x36], 0xC7CF},
		{"getinfo body", hx(t, vecGetinfo...)[8:23], 0x4312},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CRC16(tt.in); got != tt.want {
				t.Errorf("got %04x, want %04x", got, tt.want)
			}
		})
	}
}

func TestPublicVectors(t *testing.T) {
	type rec struct {
		ts       int64
		prio     uint8
		lat, lon int32
		alt      int16
		angle    uint16
		sats     uint8
		speed    uint16
		event    uint16
		io       map[uint16]uint64
		nx       map[uint16]string
	}
	tests := []struct {
		name  string
		frame string
		codec byte
		recs  []rec
	}{
		{"V1 codec 8", vecV1, Codec8, []rec{{ts: 1560161086000, prio: 1, event: 1,
			io: map[uint16]uint64{21: 3, 1: 1, 66: 24079, 241: 24602, 78: 0}}}},
		{"V2 codec 8 two records", vecV2, Codec8, []rec{
			{ts: 1560160861000, prio: 1, event: 1, io: map[uint16]uint64{1: 0}},
			{ts: 1560160879000, prio: 1, event: 1, io: map[uint16]uint64{1: 1}}}},
		{"V3 codec 8E", vecV3, Codec8E, []rec{{ts: 1560166592000, prio: 1, event: 1,
			io: map[uint16]uint64{1: 1, 17: 29, 16: 22949000, 11: 0x3544C87A, 14: 0x1DD7E06A}}}},
		{"V5 codec 8 moving", vecV5, Codec8, []rec{{ts: 1506309474000, prio: 0,
			lat: 568255366, lon: 604544333, alt: 311, angle: 95, sats: 18, speed: 95, event: 0,
			io: map[uint16]uint64{239: 1, 240: 1, 80: 1, 21: 3, 200: 0, 69: 1, 181: 11, 182: 6, 66: 14375, 24: 95, 205: 1402, 206: 6611, 67: 3927, 68: 0}}}},
		{"V6 codec 8E with NX", vecV6, Codec8E, []rec{{ts: 1617879146000, prio: 0,
			lat: 520296716, lon: 67877833, alt: 33, angle: 225, sats: 19, speed: 19, event: 0,
			io: map[uint16]uint64{239: 1, 240: 1, 21: 3, 200: 0, 69: 1, 30: 7, 66: 14304, 24: 10, 206: 5730, 67: 3991, 36: 1439, 241: 26201, 199: 30, 16: 41397},
			nx: map[uint16]string{256: "WV1ZZZ2EZ86015388", 281: "P0299,P0675,P0674,P0672,P0671,P0471,P2BAC"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decodeTCP(t, hx(t, tt.frame))
			if p.Codec != tt.codec {
				t.Errorf("codec: got %#x, want %#x", p.Codec, tt.codec)
			}
			if len(p.Records) != len(tt.recs) {
				t.Fatalf("records: got %d, want %d", len(p.Records), len(tt.recs))
			}
			for i, w := range tt.recs {
				g := p.Records[i]
				if g.TimestampMs != w.ts || g.Priority != w.prio || g.Lat != w.lat || g.Lon != w.lon ||
					g.Altitude != w.alt || g.Angle != w.angle || g.Satellites != w.sats || g.Speed != w.speed || g.EventID != w.event {
					t.Errorf("record %d: got %+v, want %+v", i, g, w)
				}
				if got := ioMap(g); !equalMaps(got, w.io) {
					t.Errorf("record %d IO: got %v, want %v", i, got, w.io)
				}
				nx := map[uint16]string{}
				for _, e := range g.IO {
					if e.Size == 0 {
						nx[e.ID] = string(e.Raw)
					}
				}
				if len(nx) != len(w.nx) {
					t.Errorf("record %d NX: got %v, want %v", i, nx, w.nx)
				}
				for id, v := range w.nx {
					if nx[id] != v {
						t.Errorf("record %d NX %d: got %q, want %q", i, id, nx[id], v)
					}
				}
			}
		})
	}
}

func equalMaps(a, b map[uint16]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestUDPVector(t *testing.T) {
	h, body, err := ParseUDP(hx(t, vecV4))
	if err != nil {
		t.Fatalf("ParseUDP: %v", err)
	}
	if h.PacketID != 0xCAFE || h.AVLPacketID != 5 || h.IMEI != "352093086403655" {
		t.Errorf("header: got %+v, want packet CAFE, AVL 5, IMEI 352093086403655", h)
	}
	var p Packet
	if err := p.Decode(body); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(p.Records) != 1 || p.Records[0].TimestampMs != 1560407006000 || p.Records[0].EventID != 1 {
		t.Fatalf("got %+v, want one record at 1560407006000, event 1", p.Records)
	}
	if got, want := ioMap(p.Records[0]), map[uint16]uint64{21: 3, 1: 1, 66: 23996}; !equalMaps(got, want) {
		t.Errorf("IO: got %v, want %v", got, want)
	}
	ack := AppendUDPAck(nil, h, len(p.Records))
	if got, want := hex.EncodeToString(ack), "0005cafe010501"; got != want {
		t.Errorf("ack: got %s, want %s", got, want)
	}
	// The encoder rebuilds the same datagram.
	if got := AppendUDP(nil, h, body); !bytes.Equal(got, hx(t, vecV4)) {
		t.Errorf("AppendUDP: got %x, want %s", got, vecV4)
	}
}

func TestHandBuiltVectors(t *testing.T) {
	t.Run("H1 codec 8", func(t *testing.T) {
		p := decodeTCP(t, hx(t, vecH1...))
		r := p.Records[0]
		if p.Codec != Codec8 || r.TimestampMs != 1795334400000 || r.Priority != 1 || r.Lon != 134049000 || r.Lat != 525201000 ||
			r.Altitude != 34 || r.Angle != 90 || r.Satellites != 11 || r.Speed != 42 || r.EventID != 239 {
			t.Errorf("got %+v", r)
		}
		want := map[uint16]uint64{239: 1, 240: 1, 21: 4, 69: 1, 66: 12850, 67: 4012, 24: 42, 181: 12, 182: 8, 16: 123456, 78: 0x0102030405060708}
		if got := ioMap(r); !equalMaps(got, want) {
			t.Errorf("IO: got %v, want %v", got, want)
		}
	})
	t.Run("H2 codec 8E", func(t *testing.T) {
		p := decodeTCP(t, hx(t, vecH2...))
		if len(p.Records) != 2 {
			t.Fatalf("records: got %d, want 2", len(p.Records))
		}
		r0, r1 := p.Records[0], p.Records[1]
		if got, want := ioMap(r0), map[uint16]uint64{239: 0, 246: 1, 252: 1, 89: 55}; !equalMaps(got, want) {
			t.Errorf("record 0 IO: got %v, want %v", got, want)
		}
		var nx []string
		for _, e := range r0.IO {
			if e.Size == 0 {
				nx = append(nx, string(e.Raw))
			}
		}
		if strings.Join(nx, "|") != "P0301,P0420|ABC" {
			t.Errorf("record 0 NX: got %q, want [P0301,P0420 ABC]", nx)
		}
		if r1.Priority != 2 || r1.TimestampMs != 1795334405000 || r1.EventID != 249 {
			t.Errorf("record 1: got %+v", r1)
		}
		if got, want := ioMap(r1), map[uint16]uint64{249: 2, 247: 1, 300: 42}; !equalMaps(got, want) {
			t.Errorf("record 1 IO: got %v, want %v", got, want)
		}
	})
	t.Run("H3 codec 16", func(t *testing.T) {
		p := decodeTCP(t, hx(t, vecH3...))
		r := p.Records[0]
		if p.Codec != Codec16 || r.Lon != -134049000 || r.Lat != -525201000 || r.Altitude != -10 || r.Angle != 359 ||
			r.Satellites != 5 || r.Speed != 100 || r.EventID != 239 || r.Generation != 7 {
			t.Errorf("got %+v", r)
		}
		if got, want := ioMap(r), map[uint16]uint64{239: 1, 350: 5, 180: 258}; !equalMaps(got, want) {
			t.Errorf("IO: got %v, want %v", got, want)
		}
	})
}

// The encoder is the decoder's inverse on every vector, so simulated devices send what
// real ones do.
func TestEncoderRebuildsVectors(t *testing.T) {
	frames := map[string][]byte{
		"V1": hx(t, vecV1), "V2": hx(t, vecV2), "V3": hx(t, vecV3), "V5": hx(t, vecV5), "V6": hx(t, vecV6),
		"H1": hx(t, vecH1...), "H2": hx(t, vecH2...), "H3": hx(t, vecH3...),
	}
	for name, frame := range frames {
		t.Run(name, func(t *testing.T) {
			p := decodeTCP(t, frame)
			body, err := AppendBody(nil, p.Codec, p.Records)
			if err != nil {
				t.Fatalf("AppendBody: %v", err)
			}
			if got := AppendFrame(nil, body); !bytes.Equal(got, frame) {
				t.Errorf("got  %x\nwant %x", got, frame)
			}
		})
	}
}

func TestCodec12Vectors(t *testing.T) {
	tests := []struct {
		name  string
		frame []string
		typ   byte
		text  string
	}{
		{"getinfo command (wiki)", vecGetinfo, TypeCommand, "getinfo"},
		{"setdigout command", vecSetdigo, TypeCommand, "setdigout 1"},
		{"getgps command", vecGetgps, TypeCommand, "getgps"},
		{"digital output response", vecDoutResp, TypeResponse, "DOUT1:1 DOUT2:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := hx(t, tt.frame...)
			body, _, err := ParseFrame(frame)
			if err != nil {
				t.Fatalf("ParseFrame: %v", err)
			}
			m, err := DecodeMessage(body)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if m.Type != tt.typ || string(m.Text) != tt.text {
				t.Errorf("got type %#x %q, want %#x %q", m.Type, m.Text, tt.typ, tt.text)
			}
			if got := AppendFrame(nil, AppendMessage(nil, tt.typ, tt.text)); !bytes.Equal(got, frame) {
				t.Errorf("encode: got %x, want %x", got, frame)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	v1 := hx(t, vecV1)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(v1)) }
	// A V1 body whose N1 and N2 say 2 while it holds one record, with a correct CRC.
	twoOfOne := func() []byte {
		body := bytes.Clone(v1[8 : 8+0x36])
		body[1], body[len(body)-1] = 2, 2
		return AppendFrame(nil, body)
	}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"partial frame", v1[:30], ErrTruncated},
		{"partial header", v1[:5], ErrTruncated},
		{"wrong preamble", mut(func(b []byte) []byte { b[0] = 0xFF; return b }), ErrPreamble},
		{"absurd length", mut(func(b []byte) []byte { b[4] = 0x7F; return b }), ErrLength},
		{"zero length", hx(t, "00000000", "00000000", "00000000"), ErrLength},
		{"CRC mismatch", mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrCRC},
		{"body bit flip", mut(func(b []byte) []byte { b[20] ^= 0x40; return b }), ErrCRC},
		{"N1 differs from N2", mut(func(b []byte) []byte {
			body := b[8 : 8+0x36]
			body[1] = 2
			return AppendFrame(nil, body)
		}), ErrCount},
		{"count disagrees with body", twoOfOne(), ErrCount},
		{"unknown codec", AppendFrame(nil, []byte{0x0D, 1, 1}), ErrCodec},
		{"zero records", AppendFrame(nil, []byte{0x08, 0, 0}), ErrCount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _, err := ParseFrame(tt.frame)
			if err == nil {
				var p Packet
				err = p.Decode(body)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBadUDP(t *testing.T) {
	v4 := hx(t, vecV4)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"short", v4[:6], ErrTruncated},
		{"length disagrees", v4[:len(v4)-1], ErrLength},
		{"packet type", func() []byte { b := bytes.Clone(v4); b[4] = 2; return b }(), ErrUDPHeader},
		{"IMEI not digits", func() []byte { b := bytes.Clone(v4); b[9] = 'x'; return b }(), ErrIMEI},
		{"IMEI length absurd", func() []byte { b := bytes.Clone(v4); b[7] = 0xF0; return b }(), ErrIMEI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseUDP(tt.in); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestIMEI(t *testing.T) {
	hs := hx(t, "000F333536333037303432343431303133")
	n, err := IMEILen(hs)
	if err != nil || n != 15 {
		t.Fatalf("IMEILen: got %d, %v; want 15", n, err)
	}
	if imei, err := CheckIMEI(hs[2:]); err != nil || imei != "356307042441013" {
		t.Errorf("CheckIMEI: got %q, %v; want 356307042441013", imei, err)
	}
	if !bytes.Equal(AppendIMEI(nil, "356307042441013"), hs) {
		t.Errorf("AppendIMEI does not rebuild the handshake")
	}
	if _, err := IMEILen([]byte{0xFF, 0xFF}); !errors.Is(err, ErrIMEI) {
		t.Errorf("65535-byte IMEI: got %v, want ErrIMEI", err)
	}
}

func TestBadCodec12(t *testing.T) {
	good := AppendMessage(nil, TypeResponse, "ok")
	tests := []struct {
		name string
		body []byte
	}{
		{"short", good[:5]},
		{"size too big", func() []byte { b := bytes.Clone(good); b[6] = 9; return b }()},
		{"two quantities", func() []byte { b := bytes.Clone(good); b[1] = 2; return b }()},
		{"bad type", func() []byte { b := bytes.Clone(good); b[2] = 9; return b }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeMessage(tt.body); err == nil {
				t.Errorf("got no error for % x", tt.body)
			}
		})
	}
}
