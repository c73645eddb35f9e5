package mediagoblin

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name        string
		ini         string
		backend     Backend
		source      string // "HERE" stands for the ini's directory
		sender      string
		wantErrText bool
	}{
		{
			name:    "defaults",
			ini:     "[mediagoblin]\ndirect_remote_path = /mgoblin_static/\n",
			backend: SQLite, source: "HERE/mediagoblin.db", sender: DefaultEmailSender,
		},
		{
			name:    "no mediagoblin section",
			ini:     "[plugins]\n[[mediagoblin.plugins.geolocation]]\n",
			backend: SQLite, source: "HERE/mediagoblin.db", sender: DefaultEmailSender,
		},
		{
			name:    "here interpolated",
			ini:     "[mediagoblin]\nsql_engine = sqlite:///%(here)s/data/mg.db\nemail_sender_address = \"mg@example.org\"\n",
			backend: SQLite, source: "HERE/data/mg.db", sender: "mg@example.org",
		},
		{
			name:    "absolute sqlite",
			ini:     "[mediagoblin]\nsql_engine = sqlite:////srv/mg/mediagoblin.db # the database\n",
			backend: SQLite, source: "/srv/mg/mediagoblin.db", sender: DefaultEmailSender,
		},
		{
			name:    "relative sqlite is beside the ini",
			ini:     "[mediagoblin]\nsql_engine = sqlite:///mediagoblin.db\n",
			backend: SQLite, source: "HERE/mediagoblin.db", sender: DefaultEmailSender,
		},
		{
			name:    "other key interpolated",
			ini:     "[DEFAULT]\nbase = /var/lib/mg\n[mediagoblin]\nsql_engine = 'sqlite:///%(base)s/mg.db'\n",
			backend: SQLite, source: "/var/lib/mg/mg.db", sender: DefaultEmailSender,
		},
		{
			name:    "postgresql with password",
			ini:     "[mediagoblin]\nsql_engine = postgresql://mg:secret@db.example:5432/mediagoblin\nemail_sender_address = noreply@example.org\n",
			backend: Postgres, source: "postgresql://mg:secret@db.example:5432/mediagoblin", sender: "noreply@example.org",
		},
		{
			name:    "postgresql over the local socket",
			ini:     "[mediagoblin]\nsql_engine = postgresql:///mediagoblin\n",
			backend: Postgres, source: "postgresql:///mediagoblin", sender: DefaultEmailSender,
		},
		{
			name:    "psycopg2 driver name dropped",
			ini:     "[mediagoblin]\nsql_engine = postgresql+psycopg2://mg@localhost/mg\n",
			backend: Postgres, source: "postgresql://mg@localhost/mg", sender: DefaultEmailSender,
		},
		{
			name:    "key in a subsection is not ours",
			ini:     "[mediagoblin]\n[[jinja2]]\nsql_engine = postgresql:///wrong\n[plugins]\n",
			backend: SQLite, source: "HERE/mediagoblin.db", sender: DefaultEmailSender,
		},
		{name: "mysql unsupported", ini: "[mediagoblin]\nsql_engine = mysql://x@y/z\n", wantErrText: true},
		{name: "memory sqlite", ini: "[mediagoblin]\nsql_engine = sqlite://\n", wantErrText: true},
		{name: "not a url", ini: "[mediagoblin]\nsql_engine = mediagoblin.db\n", wantErrText: true},
		{name: "postgres without database", ini: "[mediagoblin]\nsql_engine = postgresql://host/\n", wantErrText: true},
		{name: "undefined interpolation", ini: "[mediagoblin]\nsql_engine = sqlite:///%(nowhere)s/x.db\n", wantErrText: true},
		{name: "garbage line", ini: "[mediagoblin]\nthis is not ini\n", wantErrText: true},
		{name: "unterminated header", ini: "[mediagoblin\n", wantErrText: true},
		{name: "sender without at", ini: "[mediagoblin]\nemail_sender_address = root\n", wantErrText: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mediagoblin.ini")
			writeFile(t, path, tt.ini)
			cfg, err := LoadConfig(path)
			if tt.wantErrText {
				if err == nil {
					t.Fatalf("LoadConfig: no error, got %+v", cfg)
				}
				if !errors.Is(err, ErrConfig) {
					t.Errorf("error %v does not wrap ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tt.source
			if len(want) >= 4 && want[:4] == "HERE" {
				want = dir + want[4:]
			}
			if cfg.Backend != tt.backend || cfg.Source != want || cfg.EmailSender != tt.sender {
				t.Errorf("got %s %q %q, want %s %q %q", cfg.Backend, cfg.Source, cfg.EmailSender, tt.backend, want, tt.sender)
			}
			if cfg.Path != path {
				t.Errorf("Path = %q, want %q", cfg.Path, path)
			}
		})
	}
}

func TestLoadConfigPrefersLocal(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mediagoblin.ini"), "[mediagoblin]\nemail_sender_address = main@example.org\n")
	writeFile(t, filepath.Join(dir, "mediagoblin_local.ini"), "[mediagoblin]\nemail_sender_address = local@example.org\n")
	cfg, err := LoadConfig(filepath.Join(dir, "mediagoblin.ini"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EmailSender != "local@example.org" || cfg.Path != filepath.Join(dir, "mediagoblin_local.ini") {
		t.Errorf("got %q from %s, want mediagoblin_local.ini's", cfg.EmailSender, cfg.Path)
	}
}

func TestLoadConfigMissing(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "mediagoblin.ini"))
	if !errors.Is(err, ErrConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want ErrConfig and not-exist", err)
	}
}

func TestSourceRedacted(t *testing.T) {
	cfg := Config{Backend: Postgres, Source: "postgresql://mg:secret@db:5432/mg"}
	if got := cfg.SourceRedacted(); got != "postgresql://mg:xxxxx@db:5432/mg" {
		t.Errorf("SourceRedacted = %q", got)
	}
}

func FuzzParseINI(f *testing.F) {
	f.Add([]byte("[mediagoblin]\nsql_engine = sqlite:///%(here)s/mediagoblin.db\n"))
	f.Add([]byte("[a]\n[[b]]\nk = 'v' # c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		secs, err := parseINI(data)
		if err != nil {
			return
		}
		for name, s := range secs {
			look := lookup(secs, name, "/here/mediagoblin.ini")
			for _, v := range s {
				interpolate(v, look)
			}
		}
	})
}

func TestUseDatabase(t *testing.T) {
	cfg := Config{Path: "/srv/mg/mediagoblin.ini", Backend: Postgres, Source: "postgresql://mediagoblin:secret@db/mediagoblin"}
	if err := cfg.UseDatabase("postgresql:///mediagoblin"); err != nil || cfg.Backend != Postgres || cfg.Source != "postgresql:///mediagoblin" {
		t.Errorf("UseDatabase = %+v, %v", cfg, err)
	}
	if err := cfg.UseDatabase("sqlite:///mediagoblin.db"); err != nil || cfg.Backend != SQLite || cfg.Source != "/srv/mg/mediagoblin.db" {
		t.Errorf("UseDatabase = %+v, %v", cfg, err)
	}
	if err := cfg.UseDatabase("mysql://x/y"); err == nil {
		t.Error("UseDatabase took mysql")
	}
}
