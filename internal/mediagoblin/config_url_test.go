package mediagoblin

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestParseEnginePostgresLikeSQLAlchemy checks that what pgx makes of the
// source parseEngine builds is what SQLAlchemy 1.4.46's make_url makes of
// the sql_engine URL, so that bouncemilter reaches the database and role
// MediaGoblin does. The expected values were printed by make_url (empty
// where it gives None; a 0 port is no port).
func TestParseEnginePostgresLikeSQLAlchemy(t *testing.T) {
	for _, k := range []string{"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGSSLMODE", "PGAPPNAME"} {
		t.Setenv(k, "")
	}
	t.Setenv("PGPASSFILE", "/nonexistent/pgpass")
	t.Setenv("PGSERVICEFILE", "/nonexistent/pg_service.conf")
	tests := []struct {
		engine               string
		user, password, host string
		port                 uint16
		database             string
		query                map[string]string
	}{
		{"postgresql://mg:secret@db.example:5432/mediagoblin", "mg", "secret", "db.example", 5432, "mediagoblin", map[string]string{}},
		{"postgresql://mg:Zx9/ab+c=@db.example/mediagoblin", "mg", "Zx9/ab+c=", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg:2024/s3cret@db.example/mediagoblin", "mg", "2024/s3cret", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg:a#b?c:d@db.example/mediagoblin", "mg", "a#b?c:d", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg:p%40ss%2Fw%25rd@db.example:5433/mediagoblin", "mg", "p@ss/w%rd", "db.example", 5433, "mediagoblin", map[string]string{}},
		{"postgresql://mg:%zz%41@db.example/mediagoblin", "mg", "%zzA", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://m%40g:pw@db.example/mediagoblin", "m@g", "pw", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://a@b:pw@db.example/mediagoblin", "a@b", "pw", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg:p w@db.example/mediagoblin", "mg", "p w", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg:@db.example/mediagoblin", "mg", "", "db.example", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg:pw@[::1]:5432/mediagoblin", "mg", "pw", "::1", 5432, "mediagoblin", map[string]string{}},
		{"postgresql://mg:pw@[2001:db8::7]/mediagoblin", "mg", "pw", "2001:db8::7", 0, "mediagoblin", map[string]string{}},
		{"postgresql:///mediagoblin", "", "", "", 0, "mediagoblin", map[string]string{}},
		{"postgresql://mg@/mediagoblin?host=/var/run/postgresql", "mg", "", "", 0, "mediagoblin", map[string]string{"host": "/var/run/postgresql"}},
		{"postgresql://mg@/mediagoblin?host=%2Fvar%2Frun%2Fpostgresql&sslmode=disable", "mg", "", "", 0, "mediagoblin", map[string]string{"host": "/var/run/postgresql", "sslmode": "disable"}},
		{"postgresql://db.example/mediagoblin?application_name=bounce+milter&empty=", "", "", "db.example", 0, "mediagoblin", map[string]string{"application_name": "bounce milter"}},
		{"postgresql://:5433/mediagoblin", "", "", "", 5433, "mediagoblin", map[string]string{}},
		{"postgresql://db.example/my%20db", "", "", "db.example", 0, "my%20db", map[string]string{}},
		{"postgresql+psycopg2://mg@localhost/mg", "mg", "", "localhost", 0, "mg", map[string]string{}},
		{"postgres://localhost/mg", "", "", "localhost", 0, "mg", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.engine, func(t *testing.T) {
			backend, source, err := parseEngine(tt.engine, "/srv/mg")
			if err != nil || backend != Postgres {
				t.Fatalf("parseEngine = %s, %v", backend, err)
			}
			cfg, err := pgconn.ParseConfig(source)
			if err != nil {
				t.Fatalf("pgx cannot parse %q: %v", source, err)
			}
			if tt.user != "" && cfg.User != tt.user {
				t.Errorf("user %q, want %q", cfg.User, tt.user)
			}
			if cfg.Password != tt.password {
				t.Errorf("password %q, want %q", cfg.Password, tt.password)
			}
			host := tt.host
			if h, ok := tt.query["host"]; ok {
				host = h
			}
			if host != "" && cfg.Host != host {
				t.Errorf("host %q, want %q", cfg.Host, host)
			}
			if tt.port != 0 && cfg.Port != tt.port {
				t.Errorf("port %d, want %d", cfg.Port, tt.port)
			}
			if cfg.Database != tt.database {
				t.Errorf("database %q, want %q", cfg.Database, tt.database)
			}
			for k, v := range tt.query {
				switch k {
				case "host":
				case "sslmode":
					if (cfg.TLSConfig == nil) != (v == "disable") {
						t.Errorf("sslmode=%s not applied", v)
					}
				default:
					if cfg.RuntimeParams[k] != v {
						t.Errorf("query %s = %q, want %q", k, cfg.RuntimeParams[k], v)
					}
				}
			}
			if len(cfg.RuntimeParams) != len(tt.query)-countKeys(tt.query, "host", "sslmode") {
				t.Errorf("run-time parameters %v, want those of %v", cfg.RuntimeParams, tt.query)
			}
			red := Config{Backend: Postgres, Source: source}.SourceRedacted()
			if tt.password != "" && strings.Contains(red, tt.password) {
				t.Errorf("SourceRedacted %q shows the password", red)
			}
		})
	}
}

func countKeys(m map[string]string, keys ...string) int {
	n := 0
	for _, k := range keys {
		if _, ok := m[k]; ok {
			n++
		}
	}
	return n
}

// TestParseEngineRefusesWithoutQuoting: URLs make_url refuses, or parses
// into something no server can be (a host with '@' in it, from a password
// with an unencoded '@'; no database), are refused, and the message quotes
// no part of the password.
func TestParseEngineRefusesWithoutQuoting(t *testing.T) {
	for _, tt := range []struct{ engine, secret string }{
		{"postgresql://mg:p@ss@db.example/mediagoblin", "ss@db"},          // make_url: password "p", host "ss@db.example"
		{"postgresql://mg:s3cret@db.example:port/mediagoblin", "s3cret"},  // make_url: int() fails
		{"postgresql://mg:s3cret@db.example:/mediagoblin", "s3cret"},      // make_url: int('') fails
		{"postgresql://mg:s3cret@db.example", "s3cret"},                   // database None
		{"postgresql://mg:s3cret@db.example/", "s3cret"},                  // database ''
		{"postgresql://mg:s3cret@[fe80::1%25eth0]/mediagoblin", "s3cret"}, // a zone pgx would decode and libpq not
		{"postgresql://h/db?host=a&host=b", "\x00"},                       // make_url: a list psycopg2 cannot take
		{"postgresql://mg:%ff%fe@db.example/mediagoblin", "%ff"},          // not UTF-8
		{"mg:s3cret@db.example/mediagoblin", "s3cret"},                    // make_url: ArgumentError
		{"postgresql://h/db?password=s3cret&password=s3cret", "s3cret"},
	} {
		_, _, err := parseEngine(tt.engine, "/srv/mg")
		if err == nil {
			t.Errorf("%s: accepted", tt.engine)
			continue
		}
		if strings.Contains(err.Error(), tt.secret) {
			t.Errorf("%s: error %q shows the password", tt.engine, err)
		}
	}
}

// TestParseEngineSQLite: the database part as make_url gives it, raw (not
// percent-decoded), query dropped; relative paths taken from the ini's
// directory.
func TestParseEngineSQLite(t *testing.T) {
	for _, tt := range []struct{ engine, want string }{
		{"sqlite:///mediagoblin.db", "/srv/mg/mediagoblin.db"},               // make_url database "mediagoblin.db"
		{"sqlite:////srv/mg/db/mediagoblin.db", "/srv/mg/db/mediagoblin.db"}, // "/srv/mg/db/mediagoblin.db"
		{"sqlite:///data/../mg.db?mode=ro", "/srv/mg/mg.db"},                 // "data/../mg.db", query {mode: ro}
		{"sqlite:///my%20mg.db", "/srv/mg/my%20mg.db"},                       // "my%20mg.db"
		{"sqlite+pysqlite:////var/lib/mg.db", "/var/lib/mg.db"},
	} {
		backend, source, err := parseEngine(tt.engine, "/srv/mg")
		if err != nil || backend != SQLite || source != tt.want {
			t.Errorf("%s: %s %q %v, want %q", tt.engine, backend, source, err, tt.want)
		}
	}
	for _, engine := range []string{"sqlite:///", "sqlite://", "sqlite:///:memory:", "sqlite://host/mg.db"} {
		if _, _, err := parseEngine(engine, "/srv/mg"); err == nil {
			t.Errorf("%s: accepted", engine)
		}
	}
}
