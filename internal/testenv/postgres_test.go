package testenv

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPostgres(t *testing.T) {
	ctx := context.Background()
	var dbURL string
	t.Run("fresh", func(t *testing.T) {
		dbURL = Postgres(t)
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var tables int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("a new database has %d tables", tables)
		}
		// The test's own role owns it: it may create what it likes.
		if _, err := conn.Exec(ctx, `CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)`); err != nil {
			t.Fatal(err)
		}
	})
	if dbURL == "" {
		return // the subtest was skipped and said why
	}
	name := dbURL[strings.LastIndex(dbURL, "/")+1:]
	if !strings.HasPrefix(name, "bmtest_testpostgres_fresh_") {
		t.Errorf("database name %q does not say whose it is", name)
	}

	// The subtest's cleanup dropped it.
	conn, err := pgx.Connect(ctx, os.Getenv(PostgresEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after the test", name)
	}
}

func TestDatabaseName(t *testing.T) {
	for _, test := range []string{
		"TestX",
		"TestSync/first_sync/PostgreSQL",
		strings.Repeat("TestVeryLongName", 10),
		"Test/ünïcode and spaces",
	} {
		name := databaseName(test)
		if len(name) > 63 {
			t.Errorf("databaseName(%q) = %q: %d bytes, more than PostgreSQL's 63", test, name, len(name))
		}
		if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("databaseName(%q) = %q: not a plain identifier", test, name)
		}
		if name == databaseName(test) {
			t.Errorf("databaseName(%q) gives the same name twice", test)
		}
	}
}
