package dsn

import (
	"bytes"
	"io"
	"maps"
	"mime"
	"mime/quotedprintable"
	"testing"
)

// goQuotedPrintable is what Go's quotedprintable reader makes of src, read
// up to n bytes or its first error.
func goQuotedPrintable(src []byte, n int) []byte {
	b, _ := io.ReadAll(io.LimitReader(quotedprintable.NewReader(bytes.NewReader(src)), int64(n)))
	return b
}

func TestQuotedPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"caf=C3=A9\r\n", "caf\xc3\xa9\r\n"},
		{"soft=\r\nbreak=\nand =\n", "softbreakand "},
		{"trailing   \t\r\nblanks  \n", "trailing\r\nblanks\n"},
		{"lower =c3=a9", "lower \xc3\xa9"},
		{"literal =x and =4", "literal =x and =4"},
		{"end=", "end"},
		{"stop=\rhere", "stop"},
		{"bad\x01byte", "bad"},
		{"=\t x\nnext", "=\t x\nnext"},
	} {
		if got := appendQuotedPrintable(nil, []byte(tc.in), 1<<20); string(got) != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
		if got := goQuotedPrintable([]byte(tc.in), 1<<20); string(got) != tc.want {
			t.Errorf("%q: Go's reader gives %q, the table says %q", tc.in, got, tc.want)
		}
	}
}

func FuzzQuotedPrintable(f *testing.F) {
	for _, s := range []string{"caf=C3=A9\r\n", "a=\r\nb", "x  \n=", "=4", "= \n", "=\r", "\x7f", "abc=\t\r\n"} {
		f.Add([]byte(s), 100)
	}
	f.Fuzz(func(t *testing.T, src []byte, n int) {
		if hasLongLine(src, 4000) || n < 0 {
			return // Go's reader fails on a line longer than its buffer
		}
		n %= 1 << 16
		if got, want := appendQuotedPrintable(nil, src, n), goQuotedPrintable(src, n); !bytes.Equal(got, want) {
			t.Errorf("%q (n %d): got %q, Go's reader %q", src, n, got, want)
		}
	})
}

func FuzzMediaType(f *testing.F) {
	for _, s := range []string{"text/plain", "text/plain; charset=us-ascii", `multipart/report; report-type=delivery-status;
	boundary="abc/def=="`, "Text/HTML;Charset=UTF-8;", "message/rfc822 ;", "text/plain; a=1; a=2", "text", "text/", `a/b; c="d\"e"`,
		"text/plain; name*=utf-8''x", "text/plain; x=", "text/plain;; a=b", "text/plain; a=b c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		params := map[string]string{}
		typ, ok := parseSimpleMediaType(v, func(k, p string) { params[k] = p })
		if !ok {
			return
		}
		wantType, wantParams, err := mime.ParseMediaType(v)
		if err != nil {
			t.Fatalf("%q: read as %q %v, but mime.ParseMediaType fails: %v", v, typ, params, err)
		}
		if typ != wantType || !maps.Equal(params, wantParams) {
			t.Errorf("%q: read as %q %v, mime.ParseMediaType reads %q %v", v, typ, params, wantType, wantParams)
		}
	})
}
