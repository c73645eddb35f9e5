package metrics

import "testing"

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("22891 (cat) R 22886 22886 19001 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 837811 3133440 424 18446744073709551615 94648580890624\n"))
	f.Add([]byte("1 (a) b) (c) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 5 6 7\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStat(b)
	})
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want procStat
		err  bool
	}{
		{"22891 (cat) R 22886 22886 19001 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 837811 3133440 424 18446744073709551615 9\n",
			procStat{startTicks: 837811, vsize: 3133440, rss: 424}, false},
		// A command name can hold spaces and parentheses.
		{"7 (a) b (c) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 5 6 7\n", procStat{5, 6, 7}, false},
		{"7 (short) S 0 0 0\n", procStat{}, true},
		{"7 no parens\n", procStat{}, true},
		{"7 (x) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 5 -6 7\n", procStat{}, true},
	} {
		got, err := parseStat([]byte(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
