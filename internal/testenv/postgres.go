package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresEnv names the environment variable that gives the PostgreSQL
// server for tests: a URL of a role that may create databases, e.g.
// postgres://bouncemilter:bouncemilter@127.0.0.1:5432/postgres, as
// scripts/services.sh exports it.
const PostgresEnv = "BOUNCEMILTER_TEST_PG"

// Postgres creates a new, empty database for the test on the server that
// BOUNCEMILTER_TEST_PG names, drops it when the test ends, and returns a URL
// that connects to it as the same role. It Requires the variable to be set
// and the server to answer.
func Postgres(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(PostgresEnv)
	Require(t, admin != "", PostgresEnv+` is not set (run eval "$(scripts/services.sh)" as root)`)
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s: want a postgres:// URL, got %q", PostgresEnv, admin)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	Require(t, err == nil, fmt.Sprintf("PostgreSQL at %s does not answer: %v", u.Redacted(), err))
	defer conn.Close(ctx)

	name := databaseName(t.Name())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		// FORCE (PostgreSQL 13) ends the sessions a test left open.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})

	db := *u
	db.Path = "/" + name
	db.RawPath = ""
	return db.String()
}

// databaseName makes a database name from the test's name, that says whose
// database it is when one is left behind, and a random suffix, within
// PostgreSQL's 63 bytes.
func databaseName(test string) string {
	var b strings.Builder
	b.WriteString("bmtest_")
	for _, r := range strings.ToLower(test) {
		if b.Len() >= 45 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(suffix[:]))
	return b.String()
}
