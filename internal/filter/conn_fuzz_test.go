package filter

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzPacketScanner feeds a stream in pieces of any size: the codes the
// scanner reports are those of a whole-stream parse, however the stream
// was cut.
func FuzzPacketScanner(f *testing.F) {
	pkt := func(code byte, data string) []byte {
		var b bytes.Buffer
		binary.Write(&b, binary.BigEndian, uint32(len(data)+1))
		b.WriteByte(code)
		b.WriteString(data)
		return b.Bytes()
	}
	f.Add(append(append(pkt('O', "\x00\x00\x00\x02"), pkt('M', "<>\x00")...), pkt('A', "")...), uint8(1))
	f.Add(append(pkt('B', "body"), 0, 0, 0, 0, 0, 0, 0, 1, 'Q'), uint8(3))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint8) {
		var want []byte
		for rest := stream; len(rest) >= 4; {
			n := binary.BigEndian.Uint32(rest[:4])
			rest = rest[4:]
			if n == 0 {
				continue
			}
			if len(rest) == 0 {
				break
			}
			want = append(want, rest[0])
			if uint64(n) >= uint64(len(rest)) {
				break
			}
			rest = rest[n:]
		}
		var p packetScanner
		var got []byte
		step := int(cut%16) + 1
		for i := 0; i < len(stream); i += step {
			p.feed(stream[i:min(i+step, len(stream))], func(c byte) { got = append(got, c) })
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("codes %q, want %q (pieces of %d)", got, want, step)
		}
	})
}
