package registry

import "testing"

// SameAddress decides whether a bounce's address is a sign-up's: exactly,
// but for the ASCII case of the domain.
func TestSameAddress(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		same bool
	}{
		{"a@example.net", "a@EXAMPLE.net", true},
		{"A@example.net", "a@example.net", false},
		{"/a@example.net", "a@example.net", false},
		{`"a@b"@example.net`, "a@b@example.net", false},
		{"noat", "noat", true},
		// Unicode lowercasing would make these one: the Kelvin sign
		// and capital I with dot fold onto ASCII letters.
		{"\u212aim@example.net", "kim@example.net", false},
		{"v\u0130ctim@example.net", "victim@example.net", false},
		{"kim@EXAMPLE.NET", "kim@example.net", true},
	} {
		if got := SameAddress(tt.a, tt.b); got != tt.same {
			t.Errorf("SameAddress(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}

// EmailKey lowercases A to Z only: no other letter may fold onto an
// ASCII one and make a look-alike share a real address's key.
func TestEmailKey(t *testing.T) {
	for in, want := range map[string]string{
		" Kim@Example.NET ":       "kim@example.net",
		"\u212aim@example.net":    "\u212aim@example.net",
		"V\u0130ctim@example.net": "v\u0130ctim@example.net",
		"\u00c9lise@example.net":  "\u00c9lise@example.net",
		"kim@example.net":         "kim@example.net",
	} {
		if got := EmailKey(in); got != want {
			t.Errorf("EmailKey(%q) = %q, want %q", in, got, want)
		}
	}
}
