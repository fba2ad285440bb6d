package codec

import (
	"bytes"
	"testing"
)

// FuzzFrame feeds arbitrary bytes through the TCP path (frame, then AVL or Codec 12
// body). Whatever decodes must re-encode to the same body: the decoder accepts nothing
// it cannot account for byte by byte.
func FuzzFrame(f *testing.F) {
	for _, v := range []string{vecV1, vecV2, vecV3, vecV5, vecV6} {
		f.Add(hx(f, v))
	}
	for _, v := range [][]string{vecH1, vecH2, vecH3, vecGetinfo, vecDoutResp} {
		f.Add(hx(f, v...))
	}
	var p Packet
	f.Fuzz(func(t *testing.T, frame []byte) {
		body, _, err := ParseFrame(frame)
		if err != nil {
			return
		}
		if len(body) > 0 && body[0] == Codec12 {
			m, err := DecodeMessage(body)
			if err == nil && !bytes.Equal(AppendMessage(nil, m.Type, string(m.Text)), body) {
				t.Fatalf("Codec 12 round trip differs for %x", body)
			}
			return
		}
		if err := p.Decode(body); err != nil {
			return
		}
		again, err := AppendBody(nil, p.Codec, p.Records)
		if err != nil {
			t.Fatalf("decoded packet does not encode: %v", err)
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("round trip differs:\n got %x\nwant %x", again, body)
		}
	})
}

// FuzzUDP feeds arbitrary datagrams through the UDP path.
func FuzzUDP(f *testing.F) {
	f.Add(hx(f, vecV4))
	var p Packet
	f.Fuzz(func(t *testing.T, dgram []byte) {
		h, body, err := ParseUDP(dgram)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendUDP(nil, h, body), dgram) {
			t.Fatalf("header round trip differs for %x", dgram)
		}
		_ = p.Decode(body)
	})
}

// FuzzCodec12 feeds arbitrary Codec 12 bodies.
func FuzzCodec12(f *testing.F) {
	f.Add(AppendMessage(nil, TypeResponse, "DOUT1:1 DOUT2:0"))
	f.Add(AppendMessage(nil, TypeCommand, "getgps"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := DecodeMessage(body)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendMessage(nil, m.Type, string(m.Text)), body) {
			t.Fatalf("round trip differs for %x", body)
		}
	})
}
