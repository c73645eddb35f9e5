package accesslog_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/accesslog"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// fakeMediaGoblin answers a sign-up as MediaGoblin does: POST
// /auth/register/ with a valid form redirects (302) to the new profile,
// /u/<username>/, which answers 200.
func fakeMediaGoblin(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/auth/register/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.FormValue("username") == "" {
			fmt.Fprint(w, "<form>register</form>")
			return
		}
		http.Redirect(w, r, "/u/"+r.FormValue("username")+"/", http.StatusFound)
	})
	mux.HandleFunc("/u/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "profile") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// signUp registers username through the web server at base, following the
// redirect as a browser does, optionally claiming to be forwarded for
// another client.
func signUp(t *testing.T, base, username, forwardedFor string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	get := func(method, path string, body string) *http.Response {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if forwardedFor != "" {
			req.Header.Set("X-Forwarded-For", forwardedFor)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	get("GET", "/auth/register/", "")
	get("GET", "/media/other.css", "")
	resp := get("POST", "/auth/register/", url.Values{"username": {username}, "email": {username + "@nowhere.example"}}.Encode())
	if resp.Request.URL.Path != "/u/"+username+"/" {
		t.Fatalf("sign-up ended at %s", resp.Request.URL)
	}
}

func waitListening(t *testing.T, addr string, errLog string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(errLog)
			t.Fatalf("web server did not listen on %s: %s", addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// links reads the logs as sync does and returns username → "ip source".
func links(t *testing.T, trusted []netip.Prefix, logs ...string) map[string]string {
	t.Helper()
	l := accesslog.NewLinker(accesslog.Options{TrustedProxies: trusted})
	for _, p := range logs {
		if _, _, err := accesslog.Read(context.Background(), p, accesslog.Position{}, l.Add); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	ls, amb := l.Result()
	if len(amb) > 0 {
		t.Errorf("ambiguous: %v", amb)
	}
	out := map[string]string{}
	for _, k := range ls {
		out[k.Username] = k.IP.String() + " " + k.Source
	}
	return out
}

func checkSignupLog(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sign-up log:\n%s", data)
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		e, err := accesslog.ParseLine(line)
		if err != nil {
			t.Errorf("%q: %v", line, err)
			continue
		}
		if e.Format != accesslog.Signup || !strings.HasSuffix(e.Path, "/auth/register/") {
			t.Errorf("logged %q: only /auth/register/ belongs in the sign-up log", line)
		}
	}
}

// oddUser requests path as a client sending "Authorization: Basic" with
// a user name holding spaces, brackets, quotes and backslashes; the web
// server logs that name as %u / $remote_user.
func oddUser(t *testing.T, base, path string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.SetBasicAuth(`a "b" [x] \ ] "`, "pw") // the name ends at its first ':'
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// checkCombinedLog checks that every line of a combined log parses.
func checkCombinedLog(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if _, err := accesslog.ParseLine(line); err != nil {
			t.Errorf("%q: %v", line, err)
		}
	}
}

// contrib/nginx/bouncemilter.conf, included as shipped, in front of a
// MediaGoblin stand-in.
func TestContribNginx(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx"
	}
	_, statErr := os.Stat(nginx)
	testenv.Require(t, statErr == nil, "nginx is not installed (apt-get install nginx-light)")
	testenv.Require(t, os.Geteuid() == 0, "running nginx on a private prefix needs root here")
	backend := fakeMediaGoblin(t)
	dir := t.TempDir()
	addr := testenv.FreeAddr(t, "127.0.0.1")
	conf := fmt.Sprintf(`
user root root;
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	include %[2]s;
	server {
		listen %[3]s;
		access_log %[1]s/access.log combined;
		access_log %[1]s/signup.log bouncemilter_signup if=$bouncemilter_signup;
		location / {
			proxy_pass %[4]s;
		}
	}
}
`, dir, filepath.Join(testenv.RepoRoot(t), "contrib", "nginx", "bouncemilter.conf"), addr, backend.URL)
	confPath := filepath.Join(dir, "nginx.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	cmd := exec.Command(nginx, "-p", dir, "-c", confPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, addr, filepath.Join(dir, "error.log"))

	// nginx logs the name with no auth configured.
	oddUser(t, "http://"+addr, "/")
	signUp(t, "http://"+addr, "direct", "")
	signUp(t, "http://"+addr, "proxied", "198.51.100.7")
	// nginx writes its log when the request ends; give it a moment.
	time.Sleep(200 * time.Millisecond)
	checkSignupLog(t, filepath.Join(dir, "signup.log"))
	checkCombinedLog(t, filepath.Join(dir, "access.log"))

	got := links(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, filepath.Join(dir, "signup.log"))
	want := map[string]string{"direct": "127.0.0.1 signup-log", "proxied": "198.51.100.7 signup-log"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sign-up log links %v, want %v", got, want)
	}
	// The combined log alone links both to the address nginx saw.
	got = links(t, nil, filepath.Join(dir, "access.log"))
	want = map[string]string{"direct": "127.0.0.1 combined-log", "proxied": "127.0.0.1 combined-log"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("combined log links %v, want %v", got, want)
	}
}

// contrib/apache/bouncemilter.conf, included as shipped, in front of a
// MediaGoblin stand-in.
func TestContribApache(t *testing.T) {
	const modules = "/usr/lib/apache2/modules"
	httpd, err := exec.LookPath("apache2")
	if err != nil {
		httpd = "/usr/sbin/apache2"
	}
	_, statErr := os.Stat(httpd)
	testenv.Require(t, statErr == nil, "Apache is not installed (apt-get install apache2)")
	backend := fakeMediaGoblin(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	addr := testenv.FreeAddr(t, "127.0.0.1")
	conf := fmt.Sprintf(`
ServerRoot %[1]s
ServerName localhost
Listen %[3]s
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
Mutex file:%[1]s default
ErrorLog %[1]s/error.log
LoadModule mpm_event_module %[5]s/mod_mpm_event.so
LoadModule authz_core_module %[5]s/mod_authz_core.so
LoadModule setenvif_module %[5]s/mod_setenvif.so
LoadModule proxy_module %[5]s/mod_proxy.so
LoadModule proxy_http_module %[5]s/mod_proxy_http.so
LoadModule auth_basic_module %[5]s/mod_auth_basic.so
LoadModule authn_core_module %[5]s/mod_authn_core.so
LoadModule authn_file_module %[5]s/mod_authn_file.so
LoadModule authz_user_module %[5]s/mod_authz_user.so
Define APACHE_LOG_DIR %[1]s
LogFormat "%%h %%l %%u %%t \"%%r\" %%>s %%O \"%%{Referer}i\" \"%%{User-Agent}i\"" combined
CustomLog %[1]s/access.log combined
Include %[2]s
ProxyPass / %[4]s/
ProxyPassReverse / %[4]s/
<Location /private/>
	AuthType Basic
	AuthName private
	AuthUserFile %[1]s/htpasswd
	Require valid-user
</Location>
`, dir, filepath.Join(testenv.RepoRoot(t), "contrib", "apache", "bouncemilter.conf"), addr, backend.URL, modules)
	os.WriteFile(filepath.Join(dir, "htpasswd"), nil, 0o644)
	confPath := filepath.Join(dir, "httpd.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	cmd := exec.Command(httpd, "-X", "-f", confPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, addr, filepath.Join(dir, "error.log"))

	// Apache logs the name of a failed login where auth is configured.
	oddUser(t, "http://"+addr, "/private/")
	signUp(t, "http://"+addr, "direct", "")
	signUp(t, "http://"+addr, "proxied", "198.51.100.7")
	time.Sleep(200 * time.Millisecond)
	signupLog := filepath.Join(dir, "mediagoblin-signup.log")
	checkSignupLog(t, signupLog)
	checkCombinedLog(t, filepath.Join(dir, "access.log"))

	got := links(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, signupLog)
	want := map[string]string{"direct": "127.0.0.1 signup-log", "proxied": "198.51.100.7 signup-log"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sign-up log links %v, want %v", got, want)
	}
	got = links(t, nil, filepath.Join(dir, "access.log"))
	want = map[string]string{"direct": "127.0.0.1 combined-log", "proxied": "127.0.0.1 combined-log"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("combined log links %v, want %v", got, want)
	}
}
