package essecurity

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const sample = `{
  "roles": {
    "writer": {"cluster": ["monitor"], "indices": [{"names": ["${ES_INDEX_PREFIX}-*"], "privileges": ["create_doc"]}]},
    "reader": {"indices": [{"names": ["${ES_INDEX_PREFIX}-*"], "privileges": ["read", "maintenance"]}]}
  },
  "users": {"ingest": {"roles": ["writer", "reader"], "password_secret": "ingest_password"}},
  "api_keys": {"api": {"roles": ["reader"], "secret": "api_key"}}
}`

func TestTheIndexPrefixReplacesItsPlaceholderInIndexNames(t *testing.T) {
	f, err := Parse([]byte(sample), "frames")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Roles["writer"].Indices[0].Names; !slices.Equal(got, []string{"frames-*"}) {
		t.Errorf("writer's index names = %v, want [frames-*]", got)
	}
}

func TestAHolderHasTheUnionOfItsRolesPrivileges(t *testing.T) {
	f, err := Parse([]byte(sample), "annotations")
	if err != nil {
		t.Fatal(err)
	}
	cluster, index, ok := f.Privileges("ingest")
	if !ok || !slices.Equal(cluster, []string{"monitor"}) || !slices.Equal(index, []string{"create_doc", "maintenance", "read"}) {
		t.Errorf("ingest holds cluster %v, index %v (found %v); want [monitor], [create_doc maintenance read]", cluster, index, ok)
	}
	if _, index, ok := f.Privileges("api"); !ok || !slices.Equal(index, []string{"maintenance", "read"}) {
		t.Errorf("api key holds index %v (found %v), want [maintenance read]", index, ok)
	}
	if _, _, ok := f.Privileges("nobody"); ok {
		t.Error("an undeclared holder was found")
	}
}

func TestAFileThatCannotBeAppliedAsWrittenIsRefusedNamingWhere(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"an unknown field", `{"roles": {"r": {"cluster": ["monitor"], "run_as": ["x"]}}}`, `unknown field "run_as"`},
		{"no roles", `{"users": {}}`, "roles: none defined"},
		{"a role granting nothing", `{"roles": {"r": {}}}`, "roles.r: grants nothing"},
		{"index privileges without names", `{"roles": {"r": {"indices": [{"privileges": ["read"]}]}}}`, "roles.r.indices[0]: needs names and privileges"},
		{"another placeholder", `{"roles": {"r": {"indices": [{"names": ["${PREFIX}-*"], "privileges": ["read"]}]}}}`, "the only placeholder is ${ES_INDEX_PREFIX}"},
		{"an undefined role", `{"roles": {"r": {"cluster": ["monitor"]}}, "users": {"u": {"roles": ["w"], "password_secret": "p"}}}`, `users.u.roles: "w" is not defined under roles`},
		{"a user without a secret", `{"roles": {"r": {"cluster": ["monitor"]}}, "users": {"u": {"roles": ["r"]}}}`, `users.u.password_secret: "" is not a usable secret name`},
		{"a secret outside the directory", `{"roles": {"r": {"cluster": ["monitor"]}}, "api_keys": {"k": {"roles": ["r"], "secret": "../k"}}}`, `api_keys.k.secret: "../k" is not a usable secret name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file), "annotations")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRenamingPrefixesEveryNameAndTheReferencesToThem(t *testing.T) {
	f, err := Parse([]byte(sample), "annotations")
	if err != nil {
		t.Fatal(err)
	}
	r := f.Renamed("t1_")
	if _, ok := r.Roles["t1_writer"]; !ok {
		t.Errorf("roles after renaming: %v", r.Roles)
	}
	if u := r.Users["t1_ingest"]; !slices.Equal(u.Roles, []string{"t1_writer", "t1_reader"}) || u.PasswordSecret != "t1_ingest_password" {
		t.Errorf("user after renaming: %+v", u)
	}
	if k := r.APIKeys["t1_api"]; !slices.Equal(k.Roles, []string{"t1_reader"}) || k.Secret != "t1_api_key" {
		t.Errorf("api key after renaming: %+v", k)
	}
}

func TestASecretsDirectoryNeverReplacesASecretAndKeepsNewOnesPrivate(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.Read("key"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing secret = %v, want fs.ErrNotExist", err)
	}
	if err := d.Write("key", "first"); err != nil {
		t.Fatal(err)
	}
	if err := d.Write("key", "second"); err == nil {
		t.Error("a second Write replaced the secret")
	}
	if v, err := d.Read("key"); err != nil || v != "first" {
		t.Errorf("Read = %q, %v; want first", v, err)
	}
	info, err := os.Stat(filepath.Join(string(d), "key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the secret's mode is %v (%v), want 0600", info.Mode().Perm(), err)
	}
}
