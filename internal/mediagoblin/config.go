package mediagoblin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Defaults MediaGoblin applies when mediagoblin.ini does not set a key
// (mediagoblin/config_spec.ini).
const (
	DefaultSQLEngine   = "sqlite:///%(here)s/mediagoblin.db"
	DefaultEmailSender = "notice@mediagoblin.example.org"
)

// Backend is the kind of database MediaGoblin stores its data in.
type Backend string

// The backends MediaGoblin supports.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// ErrConfig is wrapped by every error about a missing or unusable
// mediagoblin.ini.
var ErrConfig = errors.New("mediagoblin config")

// Config is what bouncemilter needs from MediaGoblin's configuration.
type Config struct {
	// Path is the file that was read: mediagoblin_local.ini when it
	// exists beside the requested file, as MediaGoblin itself prefers it.
	Path string
	// Backend and Source say where the database is: for SQLite the
	// absolute path of the database file, for PostgreSQL a URL that pgx
	// understands (it may hold a password: do not log it, use
	// SourceRedacted).
	Backend Backend
	Source  string
	// EmailSender is email_sender_address: MediaGoblin's From and envelope
	// sender, so the address bounces come back to.
	EmailSender string
	// ReadOnly makes Open connect so that the database refuses writes
	// (SQLite mode=ro; PostgreSQL default_transaction_read_only): what
	// sync uses, which must never change MediaGoblin's data. Not read from
	// the file.
	ReadOnly bool
}

// SourceRedacted is Source with any password replaced, fit for logs.
func (c Config) SourceRedacted() string {
	if c.Backend != Postgres {
		return c.Source
	}
	u, err := url.Parse(c.Source)
	if err != nil {
		return "postgresql://(unparsable)"
	}
	return u.Redacted()
}

// LoadConfig reads the [mediagoblin] section of MediaGoblin's ini file at
// path. When a mediagoblin_local.ini exists in the same directory it is read
// instead: MediaGoblin looks for it first and uses it in place of
// mediagoblin.ini, not merged with it.
//
// The file is configobj syntax. Only what bouncemilter needs is understood:
// sections, key = value lines, quoted values, comments, and ConfigParser
// style interpolation of %(name)s as MediaGoblin sets it up (see lookup).
func LoadConfig(path string) (Config, error) {
	if path == "" {
		return Config{}, fmt.Errorf("%w: no path given", ErrConfig)
	}
	local := filepath.Join(filepath.Dir(path), "mediagoblin_local.ini")
	if filepath.Base(path) == "mediagoblin.ini" {
		if _, err := os.Stat(local); err == nil {
			path = local
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	sections, err := parseINI(data)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrConfig, abs, err)
	}
	here := filepath.Dir(abs)
	look := lookup(sections, "mediagoblin", abs)
	get := func(key, def string) (string, error) {
		v, ok := sections["mediagoblin"][key]
		if !ok {
			// MediaGoblin's validator fills in config_spec.ini's default,
			// and its %(here)s is the ini's directory even when the file
			// sets a here of its own (checked with MediaGoblin 0.15).
			return strings.ReplaceAll(def, "%(here)s", here), nil
		}
		return interpolate(v, look)
	}
	cfg := Config{Path: abs}
	engine, err := get("sql_engine", DefaultSQLEngine)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s: sql_engine: %v", ErrConfig, abs, err)
	}
	cfg.Backend, cfg.Source, err = parseEngine(engine, here)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s: sql_engine: %v", ErrConfig, abs, err)
	}
	if cfg.EmailSender, err = get("email_sender_address", DefaultEmailSender); err != nil {
		return Config{}, fmt.Errorf("%w: %s: email_sender_address: %v", ErrConfig, abs, err)
	}
	if !strings.Contains(cfg.EmailSender, "@") {
		return Config{}, fmt.Errorf("%w: %s: email_sender_address %q is not an address", ErrConfig, abs, cfg.EmailSender)
	}
	return cfg, nil
}

// UseDatabase points c at another database URL, in sql_engine's syntax:
// bouncemilter's own PostgreSQL role (only the grants it needs) instead of
// MediaGoblin's, whose password mediagoblin.ini may hold. A relative
// SQLite path is taken relative to the ini's directory.
func (c *Config) UseDatabase(engine string) error {
	backend, source, err := parseEngine(engine, filepath.Dir(c.Path))
	if err != nil {
		return fmt.Errorf("%w: database: %v", ErrConfig, err)
	}
	c.Backend, c.Source = backend, source
	return nil
}

// parseEngine turns an SQLAlchemy URL into a backend and a source.
//
//	sqlite:////abs/path.db          absolute path
//	sqlite:///rel.db                relative; taken relative to the ini's
//	                                directory (MediaGoblin is normally run
//	                                from there, and a daemon's working
//	                                directory is not)
//	postgresql://user:pw@host:5432/db, postgresql:///db,
//	postgresql://user@/db?host=/var/run/postgresql,
//	postgresql+psycopg2://…, postgres://…
//
// The URL is split as SQLAlchemy's make_url splits it, not as net/url
// would: in a password SQLAlchemy takes '/', '?', '#' and ':' literally
// (base64 passwords have '/'), where url.Parse ends the authority at the
// '/' and can turn "mg:2024/s3cret@db/x" into host "mg", port 2024. The
// PostgreSQL source is then rebuilt with net/url, which percent-encodes
// each part for pgx. No error quotes the URL or any part of it that may
// hold the password: a mangled URL's "host" can be the end of a password.
func parseEngine(engine, here string) (Backend, string, error) {
	m := sqlaURLRE().FindStringSubmatchIndex(engine)
	if m == nil {
		return "", "", errors.New("not a database URL (dialect://…)")
	}
	group := func(i int) (string, bool) {
		if m[2*i] < 0 {
			return "", false
		}
		return engine[m[2*i]:m[2*i+1]], true
	}
	scheme, _ := group(1)
	username, hasUser := group(2)
	password, _ := group(3)
	ipv6host, isIPv6 := group(4)
	host, _ := group(5)
	port, hasPort := group(6)
	database, _ := group(7)
	query, hasQuery := group(8)
	dialect, _, _ := strings.Cut(scheme, "+") // drop the DBAPI driver name
	switch strings.ToLower(dialect) {
	case "sqlite":
		// SQLAlchemy's pysqlite reads only the database part, raw (it is
		// not percent-decoded), and ignores any host.
		if hasUser || host != "" || isIPv6 || hasPort {
			return "", "", errors.New("an SQLite URL has no user or host: sqlite:///relative/path or sqlite:////absolute/path")
		}
		if database == "" || database == ":memory:" {
			return "", "", fmt.Errorf("%q: an in-memory or empty SQLite database cannot be shared", engine)
		}
		p := database // sqlite:///rel → rel, sqlite:////abs → /abs
		if !filepath.IsAbs(p) {
			p = filepath.Join(here, p)
		}
		return SQLite, filepath.Clean(p), nil
	case "postgresql", "postgres":
	default:
		return "", "", fmt.Errorf("unsupported database %q (MediaGoblin supports sqlite and postgresql)", dialect)
	}
	u := &url.URL{Scheme: "postgresql"}
	// SQLAlchemy percent-decodes the user name and password only
	// (urllib.parse.unquote: a malformed escape stays as it is), and
	// leaves out an empty one.
	user, err := sqlaUnquote(username)
	if err != nil {
		return "", "", fmt.Errorf("user name: %v", err)
	}
	pw, err := sqlaUnquote(password)
	if err != nil {
		return "", "", fmt.Errorf("password: %v", err)
	}
	switch {
	case pw != "":
		u.User = url.UserPassword(user, pw)
	case user != "":
		u.User = url.User(user)
	}
	if isIPv6 {
		host = ipv6host
	}
	if !validHost(host, isIPv6) {
		// Not quoted: SQLAlchemy ends the password at its first '@', so
		// what follows an unencoded '@' lands here.
		return "", "", errors.New("the host is not a host name or address (a password with '@' must have it written %40)")
	}
	if isIPv6 {
		host = "[" + host + "]"
	}
	if hasPort {
		// SQLAlchemy refuses what int() does not take, an empty port too.
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return "", "", errors.New("the port is not a number from 0 to 65535 (a password with '@' must have it written %40)")
		}
		host += ":" + strconv.FormatUint(n, 10)
	}
	u.Host = host
	if database == "" {
		return "", "", errors.New("no database name")
	}
	u.Path = "/" + database // raw: SQLAlchemy does not decode it
	if hasQuery {
		if u.RawQuery, err = sqlaQuery(query); err != nil {
			return "", "", err
		}
	}
	return Postgres, u.String(), nil
}

// sqlaURLRE is SQLAlchemy 1.4's URL pattern (sqlalchemy/engine/url.py,
// _parse_url), group for group. Go's regexp picks the submatches a
// backtracking engine like Python's would, and like re.match it need not
// reach the end of the string. Groups: 1 dialect+driver, 2 user (up to a
// ':' or '/', so it may hold '@'), 3 password (up to the first '@' after
// it), 4 bracketed IPv6 host, 5 other host, 6 port, 7 database, 8 query.
var sqlaURLRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([\w+]+)://` +
		`(?:([^:/]*)(?::([^@]*))?@)?` +
		`(?:(?:\[([^/?]+)\]|([^/:?]+))?(?::([^/?]*))?)?` +
		`(?:/([^?]*))?` +
		`(?:\?(.*))?`)
})

// sqlaUnquote decodes %XX as Python's urllib.parse.unquote does, which
// SQLAlchemy uses: a '%' not followed by two hex digits is kept as it is,
// and '+' is not a space. Python would put U+FFFD for bytes that are not
// UTF-8; a password like that cannot be what the admin meant, so it is
// refused (without quoting it).
func sqlaUnquote(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	if !utf8.Valid(b) {
		return "", errors.New("percent-encoded bytes that are not UTF-8")
	}
	return string(b), nil
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// validHost accepts what can be passed on to pgx unchanged: host names and
// IPv4 addresses (a ',' separates several hosts for libpq, as it does for
// psycopg2), IPv6 addresses without a zone. The empty host is the local
// socket.
func validHost(h string, ipv6 bool) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case ipv6 && (ishex(c) || c == ':' || c == '.'):
		case !ipv6 && ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-_,", c) >= 0):
		default:
			return false
		}
	}
	return !ipv6 || h != ""
}

// sqlaQuery reads a URL's query as SQLAlchemy does (urllib.parse.parse_qsl:
// pairs split at '&', '+' is a space, a pair without '=' or with an empty
// value is dropped), SQLAlchemy passes each to psycopg2, so to libpq, as a
// connection parameter: host=/var/run/postgresql is the common one. It
// returns them encoded for pgx, whose decoder, like libpq's, does not take
// '+' for a space. Values are never quoted in errors: password= is one.
func sqlaQuery(q string) (string, error) {
	var out []string
	seen := map[string]bool{}
	for _, pair := range strings.Split(q, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || v == "" {
			continue
		}
		k, kerr := sqlaUnquote(strings.ReplaceAll(k, "+", " "))
		v, verr := sqlaUnquote(strings.ReplaceAll(v, "+", " "))
		if kerr != nil || verr != nil {
			return "", errors.New("query: percent-encoded bytes that are not UTF-8")
		}
		if seen[k] {
			// SQLAlchemy would pass a list, which psycopg2 cannot use.
			return "", fmt.Errorf("query: %q given twice", k)
		}
		seen[k] = true
		out = append(out, queryEscape(k)+"="+queryEscape(v))
	}
	return strings.Join(out, "&"), nil
}

func queryEscape(s string) string {
	// url.QueryEscape writes a space as '+' and a '+' as %2B, so every
	// '+' left is a space.
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// Compiled on first use, not at the start of every command.
var interpRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`%\(([^)]*)\)s`) })

// lookup returns how %(name)s is resolved in section sec, as configobj's
// ConfigParser interpolation (InterpolationEngine._fetch) does in the
// ConfigObj MediaGoblin builds (mediagoblin/init/config.py): the section
// itself, its [[DEFAULT]] subsection, then the keys before any section,
// then [DEFAULT]. A value found elsewhere is interpolated again from sec,
// not from where it was found, as _fetch always starts from the owning
// section. MediaGoblin sets [DEFAULT]'s here to the ini's directory and
// __file__ to its path, overriding the file's, and gives [DEFAULT] the
// keys of config_spec.ini's [DEFAULT] the file does not set: only
// data_basedir = %(here)s/user_dev, already interpolated with the ini's
// directory (so a here set before any section does not move it).
func lookup(sections map[string]map[string]string, sec, path string) func(string) (string, bool) {
	defaults := map[string]string{"data_basedir": filepath.Dir(path) + "/user_dev"}
	for k, v := range sections["DEFAULT"] {
		defaults[k] = v
	}
	defaults["here"] = filepath.Dir(path)
	defaults["__file__"] = path
	chain := []map[string]string{sections[sec], sections[sec+subDefault], sections[""], defaults}
	return func(name string) (string, bool) {
		for _, m := range chain {
			if v, ok := m[name]; ok {
				return v, true
			}
		}
		return "", false
	}
}

// subDefault is appended to a section's name for its [[DEFAULT]]
// subsection; no section name read from a line holds a NUL.
const subDefault = "\x00DEFAULT"

// Interpolation stops beyond this: a few keys that each repeat the next
// twice would otherwise grow without bound.
const maxInterpolated = 64 << 10

// interpolate expands %(name)s as configobj's "ConfigParser" interpolation
// does, which MediaGoblin enables, looking names up with look.
func interpolate(v string, look func(string) (string, bool)) (string, error) {
	for depth := 0; strings.Contains(v, "%("); depth++ {
		if depth > 10 {
			// configobj raises InterpolationLoopError on a cycle.
			return "", fmt.Errorf("interpolation of %q too deep", v)
		}
		var missing string
		v = interpRE().ReplaceAllStringFunc(v, func(m string) string {
			name := m[2 : len(m)-2]
			if r, ok := look(name); ok {
				return r
			}
			missing = name
			return m
		})
		if missing != "" {
			return "", fmt.Errorf("%%(%s)s is not defined", missing)
		}
		if len(v) > maxInterpolated {
			return "", errors.New("interpolation grows too long")
		}
		if !interpRE().MatchString(v) {
			break
		}
	}
	return v, nil
}

// parseINI reads configobj syntax into section → key → value. The keys
// before any section are the section "". Subsections ([[name]]) are
// skipped, nothing bouncemilter reads lives in one, except [[DEFAULT]],
// which interpolation looks in (see lookup).
func parseINI(data []byte) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	cur := ""  // the top-level section we are in
	depth := 0 // 1 in a top-level section, more in a subsection
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			d := 0
			for d < len(line) && line[d] == '[' {
				d++
			}
			end := strings.Index(line, strings.Repeat("]", d))
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated section header", n)
			}
			name := strings.TrimSpace(line[d:end])
			if d == 1 {
				cur = name
				if out[cur] == nil {
					out[cur] = map[string]string{}
				}
			}
			depth = d
			if d == 2 && name == "DEFAULT" && cur != "" {
				depth = 1 // read its keys, into cur+subDefault
				cur = strings.TrimSuffix(cur, subDefault) + subDefault
				if out[cur] == nil {
					out[cur] = map[string]string{}
				}
			} else if d == 2 {
				cur = strings.TrimSuffix(cur, subDefault)
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = value", n)
		}
		if depth > 1 {
			continue
		}
		v, err := unquote(val)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		if out[cur] == nil { // keys before any section
			out[cur] = map[string]string{}
		}
		out[cur][strings.TrimSpace(key)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// unquote returns a configobj value: a quoted string without its quotes, or
// an unquoted one without a trailing comment. configobj's value pattern
// (_valueexp) ends an unquoted value at its first '#', space before it or
// not: sqlite:////srv/mg.db#old is sqlite:////srv/mg.db.
func unquote(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if q := s[0]; q == '"' || q == '\'' {
		if strings.HasPrefix(s, `"""`) || strings.HasPrefix(s, `'''`) {
			return "", errors.New("multi-line values are not supported")
		}
		end := strings.IndexByte(s[1:], q)
		if end < 0 {
			return "", errors.New("unterminated quoted value")
		}
		return s[1 : 1+end], nil
	}
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s), nil
}
