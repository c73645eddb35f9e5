package dsn

import (
	"sync"
	"unsafe"
)

// arena holds the bytes that the parse of one message copies out of it:
// the header fields it keeps, the text a person would read, and that text
// lowercased. They are most of what a parse allocates, and in a fresh
// process every new heap page costs a page fault; an arena reused from
// message to message costs its pages once.
//
// The strings an arena hands out are valid until it is put back in the
// pool, which parseBytes does once the report is detached (Report.detach
// copies every string of the report into memory of its own), so that
// nothing the caller gets points into it. A nil *arena allocates each
// string on the heap, for the code and tests that parse no whole message.
type arena struct {
	buf []byte
	// fields, entities and msgs hold the header fields, MIME entities
	// and messages of a parse: typed, so that the collector sees the
	// pointers in them.
	fields   slab[headerField]
	entities slab[entity]
	msgs     slab[msg]
}

// slab hands out the elements of one slice, then, when they run out, new
// ones from the heap.
type slab[T any] struct {
	items []T
	used  int
}

// take returns n zero elements.
func (s *slab[T]) take(n int) []T {
	if s.used+n > len(s.items) {
		return make([]T, n)
	}
	t := s.items[s.used : s.used+n : s.used+n]
	s.used += n
	return t
}

// reset zeroes what was taken, so that nothing it pointed to is kept
// alive, and takes from the start again.
func (s *slab[T]) reset() {
	clear(s.items[:s.used])
	s.used = 0
}

// arenaSize is the capacity of a pooled arena: the copies of a typical
// bounce (its text, at most maxTextBytes, lowered once, and the header
// fields kept) fit. What does not fit goes to the heap.
const arenaSize = 128 << 10

var arenaPool = sync.Pool{New: func() any {
	return &arena{
		buf:      make([]byte, 0, arenaSize),
		fields:   slab[headerField]{items: make([]headerField, 512)},
		entities: slab[entity]{items: make([]entity, 16)},
		msgs:     slab[msg]{items: make([]msg, 2)},
	}
}}

func getArena() *arena { return arenaPool.Get().(*arena) }

// putArena empties a and returns it to the pool. Nothing it handed out
// may be used after this.
func putArena(a *arena) {
	a.buf = a.buf[:0]
	a.fields.reset()
	a.entities.reset()
	a.msgs.reset()
	arenaPool.Put(a)
}

// headerFields returns n header fields, to fill.
func (a *arena) headerFields(n int) []headerField {
	if a == nil {
		return make([]headerField, n)
	}
	return a.fields.take(n)
}

// entity returns a zero entity, to fill.
func (a *arena) entity() *entity {
	if a == nil {
		return new(entity)
	}
	return &a.entities.take(1)[0]
}

// msg returns a zero msg, to fill.
func (a *arena) msg() *msg {
	if a == nil {
		return new(msg)
	}
	return &a.msgs.take(1)[0]
}

// alloc returns n bytes of the arena, or of the heap when they do not fit.
// Once the caller has written them, it must not change them again: they
// are handed out as a string.
func (a *arena) alloc(n int) []byte {
	if a == nil || len(a.buf)+n > cap(a.buf) {
		return make([]byte, n)
	}
	start := len(a.buf)
	a.buf = a.buf[:start+n]
	return a.buf[start : start+n : start+n]
}

// shrink gives back the end of b, the last bytes alloc handed out, beyond
// its first n: what a copy that came out shorter than it could have been
// did not use.
func (a *arena) shrink(b []byte, n int) {
	if a.isLast(unsafe.SliceData(b), len(b)) {
		a.buf = a.buf[:len(a.buf)-len(b)+n]
	}
}

// isLast reports whether the n bytes at p are the last the arena handed
// out.
func (a *arena) isLast(p *byte, n int) bool {
	return a != nil && n > 0 && n <= len(a.buf) && p == unsafe.SliceData(a.buf[len(a.buf)-n:])
}

// string returns a copy of b.
func (a *arena) string(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	dst := a.alloc(len(b))
	copy(dst, b)
	return unsafe.String(unsafe.SliceData(dst), len(dst))
}

// join returns prev+sep+s. When prev is the last string the arena handed
// out, it is extended in place (its own bytes stay as they are), so that
// a value joined from many lines is not copied again for each.
func (a *arena) join(prev, sep, s string) string {
	n := len(prev) + len(sep) + len(s)
	if a.isLast(unsafe.StringData(prev), len(prev)) && len(a.buf)+len(sep)+len(s) <= cap(a.buf) {
		a.buf = append(append(a.buf, sep...), s...)
		return unsafe.String(unsafe.StringData(prev), n)
	}
	dst := a.alloc(n)
	copy(dst[copy(dst, prev):], sep)
	copy(dst[len(prev)+len(sep):], s)
	return unsafe.String(unsafe.SliceData(dst), n)
}

// lower lowercases A to Z only, so that indexes into the result are
// indexes into s (strings.ToLower may change the length of non-ASCII and
// invalid UTF-8 text). The lowered copy, when one is needed, is made in the
// arena: one allocation and a loop without appends, the bytes never
// changed once the string is made of them.
func (a *arena) lower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := a.alloc(len(s))
			copy(b, s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return unsafe.String(unsafe.SliceData(b), len(b))
		}
	}
	return s
}

// strings calls fn with a pointer to each string of the report: every
// string field of the report, of its recipients and of its original.
// TestReportStringsAll holds it to the fields the types have.
func (r *Report) strings(fn func(*string)) {
	fn(&r.Kind)
	fn(&r.Format)
	fn(&r.ReportingMTA)
	for i := range r.Recipients {
		rc := &r.Recipients[i]
		fn(&rc.Address)
		fn(&rc.OriginalAddress)
		fn(&rc.Action)
		fn(&rc.Status)
		fn(&rc.Reason)
		fn(&rc.Diagnostic)
		fn(&rc.RemoteMTA)
	}
	o := &r.Original
	fn(&o.MessageID)
	fn(&o.From)
	fn(&o.To)
	fn(&o.Subject)
	fn(&o.Date)
}

// detach copies every string of the report into one block of its own, so
// that the report shares no memory with the message (which the caller may
// reuse) or with the arena (which the next message reuses). One
// allocation a report, instead of one a string. The recipients of a report
// often share a string (one diagnostic for the addresses of one line):
// equal strings share one copy, as they shared the text they came from,
// so that a hundred recipients do not cost a hundred copies of it.
func (r *Report) detach() {
	// Keyed by the strings as they are before the copy: the map is gone
	// before the memory they are in is reused.
	var copied map[string]string
	if len(r.Recipients) > 1 {
		copied = make(map[string]string)
	}
	n := 0
	r.strings(func(s *string) {
		if *s == "" {
			return
		}
		if copied != nil {
			if _, ok := copied[*s]; ok {
				return
			}
			copied[*s] = ""
		}
		n += len(*s)
	})
	if n == 0 {
		return
	}
	block := make([]byte, 0, n)
	r.strings(func(s *string) {
		if *s == "" {
			return
		}
		if c := copied[*s]; c != "" {
			*s = c
			return
		}
		start := len(block)
		block = append(block, *s...)
		c := unsafe.String(&block[start], len(*s))
		if copied != nil {
			copied[*s] = c
		}
		*s = c
	})
}
