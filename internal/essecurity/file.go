// Package essecurity reads deploy/elasticsearch-security.json, the one declarative
// account of who may do what in Elasticsearch: the roles of the binaries and of
// operators, in the shape of Elasticsearch's role API, and the users and API keys
// that hold them. Apply creates them in a secured cluster; `webserver
// setup-security` runs it, and so do the compose set-up and the security tests,
// so the roles operators deploy are the ones the tests prove.
package essecurity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
)

// File is the declarative file.
type File struct {
	Roles   map[string]Role   `json:"roles"`
	Users   map[string]User   `json:"users"`
	APIKeys map[string]APIKey `json:"api_keys,omitempty"`
}

// Role is the body of Elasticsearch's PUT _security/role/<name>, limited to what
// this project's roles use.
type Role struct {
	Description string            `json:"description,omitempty"`
	Cluster     []string          `json:"cluster,omitempty"`
	Indices     []IndexPrivileges `json:"indices,omitempty"`
}

// IndexPrivileges grants privileges on the indices matching Names.
type IndexPrivileges struct {
	Names      []string `json:"names"`
	Privileges []string `json:"privileges"`
}

// User is a native user; its password is read from the secret PasswordSecret
// names (a file of that name in the secrets directory: /run/secrets in compose).
type User struct {
	Roles          []string `json:"roles"`
	PasswordSecret string   `json:"password_secret"`
}

// APIKey is an API key limited to Roles' privileges. Its encoded value, which
// ELASTICSEARCH_API_KEY(_FILE) takes, is written to the secret Secret names
// when the key is created, which happens only if that secret does not exist yet.
type APIKey struct {
	Roles      []string `json:"roles"`
	Secret     string   `json:"secret"`
	Expiration string   `json:"expiration,omitempty"` // e.g. "90d"; none by default
}

// prefixVar is the one placeholder the file may use, in index names.
const prefixVar = "${ES_INDEX_PREFIX}"

// Load reads and checks the file at path, with indexPrefix (ES_INDEX_PREFIX) in
// place of ${ES_INDEX_PREFIX}.
func Load(path, indexPrefix string) (File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return File{}, err
	}
	f, err := Parse(data, indexPrefix)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// names are what Elasticsearch accepts for roles, users and keys, kept to what
// needs no escaping anywhere (file names of secrets included).
var names = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,99}$`)

// Parse reads the file's content: unknown fields, undefined roles, missing
// secrets and any placeholder but ${ES_INDEX_PREFIX} are errors naming where
// they are.
func Parse(data []byte, indexPrefix string) (File, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return File{}, fmt.Errorf("not a valid security file: %w", err)
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(f.Roles) == 0 {
		bad("roles: none defined")
	}
	for _, name := range slices.Sorted(maps.Keys(f.Roles)) {
		r := f.Roles[name]
		if !names.MatchString(name) {
			bad("roles: %q is not a usable name (letters, digits, _ . -)", name)
		}
		if len(r.Cluster) == 0 && len(r.Indices) == 0 {
			bad("roles.%s: grants nothing", name)
		}
		for i, ip := range r.Indices {
			if len(ip.Names) == 0 || len(ip.Privileges) == 0 {
				bad("roles.%s.indices[%d]: needs names and privileges", name, i)
			}
			for j, n := range ip.Names {
				expanded := strings.ReplaceAll(n, prefixVar, indexPrefix)
				if strings.Contains(expanded, "${") {
					bad("roles.%s.indices[%d].names: %q: the only placeholder is %s", name, i, n, prefixVar)
				}
				ip.Names[j] = expanded
			}
		}
	}
	holders := func(kind, name string, roles []string, secretField, secret string) {
		if !names.MatchString(name) {
			bad("%s: %q is not a usable name (letters, digits, _ . -)", kind, name)
		}
		if len(roles) == 0 {
			bad("%s.%s.roles: none given", kind, name)
		}
		for _, r := range roles {
			if _, ok := f.Roles[r]; !ok {
				bad("%s.%s.roles: %q is not defined under roles", kind, name, r)
			}
		}
		if !names.MatchString(secret) {
			bad("%s.%s.%s: %q is not a usable secret name (a file name: letters, digits, _ . -)", kind, name, secretField, secret)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.Users)) {
		u := f.Users[name]
		holders("users", name, u.Roles, "password_secret", u.PasswordSecret)
	}
	for _, name := range slices.Sorted(maps.Keys(f.APIKeys)) {
		k := f.APIKeys[name]
		holders("api_keys", name, k.Roles, "secret", k.Secret)
	}
	if len(problems) > 0 {
		return File{}, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return f, nil
}

// Privileges are the cluster and index privileges the named user or API key holds
// through its roles, each list sorted and without repeats; ok is false if no user
// or key has that name.
func (f File) Privileges(holder string) (cluster, index []string, ok bool) {
	var roles []string
	if u, isUser := f.Users[holder]; isUser {
		roles, ok = u.Roles, true
	} else if k, isKey := f.APIKeys[holder]; isKey {
		roles, ok = k.Roles, true
	}
	for _, r := range roles {
		cluster = append(cluster, f.Roles[r].Cluster...)
		for _, ip := range f.Roles[r].Indices {
			index = append(index, ip.Privileges...)
		}
	}
	slices.Sort(cluster)
	slices.Sort(index)
	return slices.Compact(cluster), slices.Compact(index), ok
}

// Renamed returns a copy of f in which every role, user and API key name (and
// every secret) starts with prefix, so that several tests can apply the file to
// one cluster side by side.
func (f File) Renamed(prefix string) File {
	out := File{Roles: map[string]Role{}, Users: map[string]User{}, APIKeys: map[string]APIKey{}}
	rename := func(roles []string) []string {
		r := make([]string, len(roles))
		for i, n := range roles {
			r[i] = prefix + n
		}
		return r
	}
	for n, r := range f.Roles {
		out.Roles[prefix+n] = r
	}
	for n, u := range f.Users {
		out.Users[prefix+n] = User{Roles: rename(u.Roles), PasswordSecret: prefix + u.PasswordSecret}
	}
	for n, k := range f.APIKeys {
		out.APIKeys[prefix+n] = APIKey{Roles: rename(k.Roles), Secret: prefix + k.Secret, Expiration: k.Expiration}
	}
	return out
}
