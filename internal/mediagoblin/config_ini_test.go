package mediagoblin

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadConfigLikeMediaGoblin: sql_engine as MediaGoblin 0.15's
// read_mediagoblin_config (configobj 5.0.8) reads it. The expected paths
// were printed by that function's code run on configobj 5.0.8 with
// config_spec.ini's [DEFAULT] and sql_engine default (the cases on here,
// data_basedir, root keys and [[DEFAULT]] checked against the installed
// MediaGoblin too); "" where it raises; HERE is the ini's directory; the
// comment is the sql_engine it returned.
func TestLoadConfigLikeMediaGoblin(t *testing.T) {
	tests := []struct{ name, ini, source string }{
		{"hash without space ends a value", "[mediagoblin]\nsql_engine = sqlite:////srv/mg/mediagoblin.db#old\n", "/srv/mg/mediagoblin.db"},                                                      // "sqlite:////srv/mg/mediagoblin.db"
		{"hash in quotes is kept", "[mediagoblin]\nsql_engine = \"sqlite:////srv/mg/a#b.db\" # c\n", "/srv/mg/a#b.db"},                                                                           // "sqlite:////srv/mg/a#b.db"
		{"DEFAULT here is overridden", "[DEFAULT]\nhere = /elsewhere\n[mediagoblin]\nsql_engine = sqlite:///%(here)s/mg.db\n", "HERE/mg.db"},                                                     // "sqlite:///HERE/mg.db"
		{"DEFAULT __file__ is overridden", "[DEFAULT]\n__file__ = /elsewhere.ini\n[mediagoblin]\nsql_engine = sqlite:///%(__file__)s.db\n", "HERE/mediagoblin.ini.db"},                           // "sqlite:///HERE/mediagoblin.ini.db"
		{"__file__ is the ini", "[mediagoblin]\nsql_engine = sqlite:///%(__file__)s.db\n", "HERE/mediagoblin.ini.db"},                                                                            // "sqlite:///HERE/mediagoblin.ini.db"
		{"root here shadows MediaGoblin's", "here = /root-level\n[mediagoblin]\nsql_engine = sqlite:///%(here)s/mg.db\n", "/root-level/mg.db"},                                                   // "sqlite:////root-level/mg.db"
		{"section here shadows MediaGoblin's", "[mediagoblin]\nhere = /in-section\nsql_engine = sqlite:///%(here)s/mg.db\n", "/in-section/mg.db"},                                                // "sqlite:////in-section/mg.db"
		{"default sql_engine ignores a root here", "here = /root-level\n[mediagoblin]\n", "HERE/mediagoblin.db"},                                                                                 // "sqlite:///HERE/mediagoblin.db"
		{"data_basedir default", "[mediagoblin]\nsql_engine = sqlite:///%(data_basedir)s/mediagoblin.db\n", "HERE/user_dev/mediagoblin.db"},                                                      // "sqlite:///HERE/user_dev/mediagoblin.db"
		{"data_basedir from DEFAULT", "[DEFAULT]\ndata_basedir = /var/lib/mg\n[mediagoblin]\nsql_engine = sqlite:///%(data_basedir)s/mediagoblin.db\n", "/var/lib/mg/mediagoblin.db"},            // "sqlite:////var/lib/mg/mediagoblin.db"
		{"data_basedir default ignores a root here", "here = /root-level\n[mediagoblin]\nsql_engine = sqlite:///%(data_basedir)s/mediagoblin.db\n", "HERE/user_dev/mediagoblin.db"},              // "sqlite:///HERE/user_dev/mediagoblin.db"
		{"root before DEFAULT", "base = /root-level\n[DEFAULT]\nbase = /default-section\n[mediagoblin]\nsql_engine = sqlite:///%(base)s/mg.db\n", "/root-level/mg.db"},                           // "sqlite:////root-level/mg.db"
		{"section before root", "base = /root-level\n[mediagoblin]\nbase = /in-section\nsql_engine = sqlite:///%(base)s/mg.db\n", "/in-section/mg.db"},                                           // "sqlite:////in-section/mg.db"
		{"subsection DEFAULT before root", "base = /root-level\n[mediagoblin]\nsql_engine = sqlite:///%(base)s/mg.db\n[[DEFAULT]]\nbase = /sub-default\n", "/sub-default/mg.db"},                 // "sqlite:////sub-default/mg.db"
		{"other subsection not looked in", "[DEFAULT]\nbase = /default-section\n[mediagoblin]\nsql_engine = sqlite:///%(base)s/mg.db\n[[jinja2]]\nbase = /jinja2\n", "/default-section/mg.db"},   // "sqlite:////default-section/mg.db"
		{"DEFAULT value resolved from the section", "[DEFAULT]\na = %(b)s/x\nb = /default-section\n[mediagoblin]\nb = /in-section\nsql_engine = sqlite:///%(a)s/mg.db\n", "/in-section/x/mg.db"}, // "sqlite:////in-section/x/mg.db"
		{"root value resolved from the section", "a = %(b)s/x\n[mediagoblin]\nb = /in-section\nsql_engine = sqlite:///%(a)s/mg.db\n", "/in-section/x/mg.db"},                                     // "sqlite:////in-section/x/mg.db"
		{"other section not looked in", "[other]\nbase = /other\n[mediagoblin]\nsql_engine = sqlite:///%(base)s/mg.db\n", ""},                                                                    // MissingInterpolationOption
		{"loop", "[mediagoblin]\nsql_engine = sqlite:///%(a)s\na = %(sql_engine)s\n", ""},                                                                                                        // InterpolationLoopError
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mediagoblin.ini")
			writeFile(t, path, tt.ini)
			cfg, err := LoadConfig(path)
			if tt.source == "" {
				if err == nil {
					t.Fatalf("accepted: %s", cfg.Source)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Replace(tt.source, "HERE", dir, 1); cfg.Source != want {
				t.Errorf("Source = %q, want %q", cfg.Source, want)
			}
		})
	}
}
