//go:build integration

package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// setup-security makes the file's accounts usable, and running it again changes
// nothing it should keep: the API key already handed out stays valid.
func TestSetupSecurityCreatesTheFilesAccountsAndCanRunAgain(t *testing.T) {
	secured := testenv.SecuredElasticsearch(t)
	prefix := testenv.IndexPrefix(t, secured.AdminURL)
	tag := strings.ReplaceAll(prefix, "-", "_")
	file := filepath.Join(t.TempDir(), "security.json")
	os.WriteFile(file, []byte(`{
  "roles": {"`+tag+`_reader": {"cluster": ["monitor"], "indices": [{"names": ["${ES_INDEX_PREFIX}-*"], "privileges": ["read"]}]}},
  "users": {"`+tag+`_user": {"roles": ["`+tag+`_reader"], "password_secret": "user_password"}},
  "api_keys": {"`+tag+`_key": {"roles": ["`+tag+`_reader"], "secret": "key"}}
}`), 0o600)
	secrets := t.TempDir()
	os.WriteFile(filepath.Join(secrets, "user_password"), []byte("a-password-of-"+tag+"\n"), 0o600)
	t.Cleanup(func() {
		secured.Do(t, secured.Superuser(), http.MethodDelete, "/_security/user/"+tag+"_user", nil)
		secured.Do(t, secured.Superuser(), http.MethodDelete, "/_security/api_key", map[string]any{"name": tag + "_key"})
		secured.Do(t, secured.Superuser(), http.MethodDelete, "/_security/role/"+tag+"_reader", nil)
	})
	env := testenv.WithEnv(secured.SuperuserEnv(), map[string]string{"ES_INDEX_PREFIX": prefix})
	setup := func() string {
		t.Helper()
		out := &testenv.Buffer{}
		if err := run(context.Background(), []string{"webserver", "setup-security", "--file", file, "--secrets", secrets}, func(k string) string { return env[k] }, out); err != nil {
			t.Fatalf("setup-security: %v\n%s", err, out)
		}
		return out.String()
	}
	first := setup()
	for _, want := range []string{"role " + tag + "_reader created", "user " + tag + "_user created", "api key " + tag + "_key created"} {
		if !strings.Contains(first, want) {
			t.Errorf("the first run does not say %q:\n%s", want, first)
		}
	}
	key, err := os.ReadFile(filepath.Join(secrets, "key"))
	if err != nil {
		t.Fatalf("the API key's secret: %v", err)
	}
	second := setup()
	for _, want := range []string{"role " + tag + "_reader updated", "user " + tag + "_user updated", "api key " + tag + "_key kept"} {
		if !strings.Contains(second, want) {
			t.Errorf("the second run does not say %q:\n%s", want, second)
		}
	}
	for name, auth := range map[string]string{
		"the user": testenv.Basic(tag+"_user", "a-password-of-"+tag),
		"the key":  "ApiKey " + strings.TrimSpace(string(key)),
	} {
		if code, body := secured.Do(t, auth, http.MethodGet, "/"+prefix+"-*/_count", nil); code != http.StatusOK {
			t.Errorf("%s may not count its indices: %d %s", name, code, body)
		}
		if code, body := secured.Do(t, auth, http.MethodPost, "/"+prefix+"-x/_doc", map[string]any{"a": 1}); code != http.StatusForbidden {
			t.Errorf("%s may write, outside its role: %d %s", name, code, body)
		}
	}
	for _, secret := range []string{"a-password-of-" + tag, strings.TrimSpace(string(key))} {
		if strings.Contains(first+second, secret) {
			t.Error("setup-security printed a secret")
		}
	}
}
