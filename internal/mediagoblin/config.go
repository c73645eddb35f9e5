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
	"strings"
	"sync"
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
// style interpolation of %(name)s from the same section, the [DEFAULT]
// section, and %(here)s, the directory of the file.
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
	mg := sections["mediagoblin"]
	get := func(key, def string) (string, error) {
		v, ok := mg[key]
		if !ok {
			v = def
		}
		return interpolate(v, here, mg, sections["DEFAULT"])
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
//	postgresql+psycopg2://…, postgres://…
func parseEngine(engine, here string) (Backend, string, error) {
	scheme, rest, ok := strings.Cut(engine, "://")
	if !ok {
		return "", "", fmt.Errorf("%q is not a database URL", engine)
	}
	dialect, _, _ := strings.Cut(scheme, "+") // drop the DBAPI driver name
	switch strings.ToLower(dialect) {
	case "sqlite":
		if !strings.HasPrefix(rest, "/") || len(rest) == 1 {
			return "", "", fmt.Errorf("%q: an in-memory or empty SQLite database cannot be shared", engine)
		}
		p := rest[1:] // sqlite:///rel → rel, sqlite:////abs → /abs
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(here, p)
		}
		return SQLite, filepath.Clean(p), nil
	case "postgresql", "postgres":
		u, err := url.Parse("postgresql://" + rest)
		if err != nil {
			return "", "", fmt.Errorf("%s: %v", redact(engine), err)
		}
		if strings.Trim(u.Path, "/") == "" {
			return "", "", fmt.Errorf("%s: no database name", u.Redacted())
		}
		return Postgres, u.String(), nil
	default:
		return "", "", fmt.Errorf("unsupported database %q (MediaGoblin supports sqlite and postgresql)", dialect)
	}
}

func redact(engine string) string {
	if u, err := url.Parse(engine); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// Compiled on first use, not at the start of every command.
var interpRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`%\(([^)]*)\)s`) })

// interpolate expands %(name)s as configobj's "ConfigParser" interpolation
// does, which MediaGoblin enables.
func interpolate(v, here string, section, defaults map[string]string) (string, error) {
	for depth := 0; strings.Contains(v, "%("); depth++ {
		if depth > 10 {
			return "", fmt.Errorf("interpolation of %q too deep", v)
		}
		var missing string
		v = interpRE().ReplaceAllStringFunc(v, func(m string) string {
			name := m[2 : len(m)-2]
			if r, ok := section[name]; ok {
				return r
			}
			if r, ok := defaults[name]; ok {
				return r
			}
			if name == "here" {
				return here
			}
			missing = name
			return m
		})
		if missing != "" {
			return "", fmt.Errorf("%%(%s)s is not defined", missing)
		}
		if !interpRE().MatchString(v) {
			break
		}
	}
	return v, nil
}

// parseINI reads configobj syntax into section → key → value. Subsections
// ([[name]]) are skipped: nothing bouncemilter reads lives in one.
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
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = value", n)
		}
		if depth != 1 {
			if cur == "" && depth == 0 {
				// configobj allows keys before any section; keep them
				// where interpolation can see them as defaults.
				if out["DEFAULT"] == nil {
					out["DEFAULT"] = map[string]string{}
				}
				out["DEFAULT"][strings.TrimSpace(key)], _ = unquote(val)
			}
			continue
		}
		v, err := unquote(val)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		out[cur][strings.TrimSpace(key)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// unquote returns a configobj value: a quoted string without its quotes, or
// an unquoted one without a trailing comment.
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
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	} else if i := strings.Index(s, "\t#"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s), nil
}
